//! The per-RPC log line, written once when a call really ends. For a unary call or an early
//! error that is when the response is ready; for a stream it is when the response body's
//! trailers carry the final `grpc-status`, so a stream that fails after its first message is
//! logged with that failure, not as OK. A stream the client abandons is logged `CANCELLED`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tonic::codegen::http::{HeaderMap, Response};

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
    started: Instant,
) -> Response<tonic::body::Body> {
    if let Some(code) = code_of(response.headers()) {
        log_end(code, started, 0);
        return response;
    }
    response.map(|inner| {
        tonic::body::Body::new(LoggedBody {
            inner,
            started,
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
    started: Instant,
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
            log_end(code, self.started, self.bytes);
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
