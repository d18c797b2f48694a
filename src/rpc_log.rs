//! The per-RPC log line, written once when a call really ends. For a unary call or an early
//! error that is when the response is ready; for a stream it is when the response body's
//! trailers carry the final `grpc-status`, so a stream that fails after its first message is
//! logged with that failure, not as OK. A stream the client abandons is logged `CANCELLED`.
//! The same moment counts the call in the RPC metrics (count and latency by method and code).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tonic::codegen::http::{HeaderMap, Response};

use crate::metrics::StreamMetrics;

/// One call, from its start to its end: what the log line and the metrics say about it.
pub(crate) struct CallEnd {
    started: Instant,
    method: String,
    /// The calling carrier; empty for platform identities.
    carrier: String,
    metrics: Option<Arc<StreamMetrics>>,
}

impl CallEnd {
    /// A call of `method` by `carrier` (empty for the platform) that starts now.
    pub(crate) fn new(
        method: String,
        carrier: String,
        metrics: Option<Arc<StreamMetrics>>,
    ) -> Self {
        Self {
            started: Instant::now(),
            method,
            carrier,
            metrics,
        }
    }

    /// Logs and counts the end of the call with `code`, after `bytes` of response.
    fn finish(&self, code: Code, bytes: u64) {
        log_end(code, self.started, bytes);
        if let Some(metrics) = &self.metrics {
            metrics.rpc(
                &self.method,
                code_name(code),
                &self.carrier,
                self.started.elapsed(),
            );
        }
    }
}

/// A gRPC code as its canonical UPPER_SNAKE_CASE name.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// How a call ended, as far as the server can tell.
fn code_of(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// Logs the end of one call; the line carries the request span's fields (method, caller).
fn log_end(code: Code, started: Instant, bytes: u64) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if code == Code::Ok {
        tracing::info!(code = ?code, elapsed_ms, bytes, "rpc finished");
    } else {
        tracing::info!(code = ?code, elapsed_ms, bytes, "rpc failed");
    }
}

/// Wraps `response` so that its end is logged: now when the status is already in the headers
/// (a unary error, a trailers-only response), otherwise when its body ends.
pub(crate) fn log_response(
    response: Response<tonic::body::Body>,
    end: CallEnd,
) -> Response<tonic::body::Body> {
    if let Some(code) = code_of(response.headers()) {
        end.finish(code, 0);
        return response;
    }
    response.map(|inner| {
        tonic::body::Body::new(LoggedBody {
            inner,
            end,
            bytes: 0,
            done: false,
            span: tracing::Span::current(),
        })
    })
}

/// A response body that logs the call's final status when the trailers pass through, or
/// `CANCELLED` if it is dropped before (the client left, the connection died).
struct LoggedBody {
    inner: tonic::body::Body,
    end: CallEnd,
    /// Response bytes sent so far (encoded messages, framing included).
    bytes: u64,
    /// Whether the end was logged.
    done: bool,
    /// The request's span, so the line carries method and caller.
    span: tracing::Span,
}

impl LoggedBody {
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            let _entered = self.span.enter();
            self.end.finish(code, self.bytes);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    let code = code_of(trailers).unwrap_or(Code::Unknown);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.finish(code);
            }
            Poll::Ready(None) => self.finish(Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A response body of the given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn trailers(code: Code) -> Frame<Bytes> {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", (code as i32).to_string().parse().unwrap());
        Frame::trailers(map)
    }

    /// The log lines written while `run` runs.
    fn logged(run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    /// Polls a response body to its end.
    fn drain(response: Response<tonic::body::Body>) {
        let mut body = response.into_body();
        futures::executor::block_on(futures::future::poll_fn(|cx| {
            loop {
                match Pin::new(&mut body).poll_frame(cx) {
                    Poll::Ready(Some(_)) => {}
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }));
    }

    fn stream(frames: Vec<Frame<Bytes>>) -> Response<tonic::body::Body> {
        Response::new(tonic::body::Body::new(Frames(frames.into())))
    }

    /// A stream that sent a message and then failed is logged with its failure, once.
    #[test]
    fn a_stream_is_logged_with_its_final_status() {
        let line = logged(|| {
            let response = log_response(
                stream(vec![
                    Frame::data(Bytes::from_static(b"12345")),
                    trailers(Code::PermissionDenied),
                ]),
                CallEnd::new("/m".into(), String::new(), None),
            );
            drain(response);
        });
        assert!(line.contains("rpc failed"), "{line}");
        assert!(line.contains("PermissionDenied"), "{line}");
        assert!(line.contains("bytes=5"), "{line}");
        assert_eq!(line.lines().count(), 1, "{line}");
    }

    /// A stream that ends with status 0 is logged as OK; one dropped before its end as
    /// CANCELLED; a status already in the headers is logged at once.
    #[test]
    fn ok_cancelled_and_trailers_only_calls_are_logged() {
        let ok = logged(|| {
            drain(log_response(
                stream(vec![trailers(Code::Ok)]),
                CallEnd::new("/m".into(), String::new(), None),
            ))
        });
        assert!(
            ok.contains("rpc finished") && ok.contains("code=Ok"),
            "{ok}"
        );
        let cancelled = logged(|| {
            let response = log_response(
                stream(vec![Frame::data(Bytes::from_static(b"x"))]),
                CallEnd::new("/m".into(), String::new(), None),
            );
            drop(response);
        });
        assert!(cancelled.contains("Cancelled"), "{cancelled}");
        let early = logged(|| {
            let status = tonic::Status::not_found("no such number");
            let _response = log_response(
                status.into_http(),
                CallEnd::new("/m".into(), String::new(), None),
            );
        });
        assert!(early.contains("NotFound"), "{early}");
    }
}
