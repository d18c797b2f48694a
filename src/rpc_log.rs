//! The per-RPC log line, written once when a call really ends, and the request id that ties it
//! to the call's other lines and to the client.
//!
//! For a unary call or an early error the end is when the response is ready; for a stream it is
//! when the response body's trailers carry the final `grpc-status`, so a stream that fails after
//! its first message is logged with that failure, not as OK. A stream the client abandons is
//! logged `CANCELLED`.
//!
//! The line's fields are stable (they are what log queries and alerts match on): `method`,
//! `caller`, `request_id`, `code` (the gRPC code name, `PERMISSION_DENIED`), `elapsed_ms` and
//! `bytes` (response bytes sent). It is written outside the request's span, so the fields appear
//! once, at the top level of a JSON line.

use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

use crate::metrics::StreamMetrics;
use tonic::codegen::http::{self, HeaderMap, HeaderValue, Response};

use crate::server::health::DbCheck;

/// The metadata key that carries a call's request id, in the request and the response.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id taken from a client; a longer one is replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

// === impl RequestId ===

/// The id of one call: the client's `x-request-id` when it is 1 to 128 printable ASCII
/// characters (space to `~`), otherwise 16 hex digits made here. Returned to the client in the
/// response's `x-request-id` header and carried by every log line of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(String);

impl RequestId {
    /// The id of `request`: its own, if usable, or a new one.
    pub(crate) fn of<B>(request: &http::Request<B>) -> Self {
        request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| Self::parse(value.as_bytes()))
            .unwrap_or_else(Self::generate)
    }

    /// A client's id, if it is within bounds.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let printable = |b: &u8| (b' '..=b'~').contains(b);
        if bytes.is_empty() || bytes.len() > MAX_REQUEST_ID_LEN || !bytes.iter().all(printable) {
            return None;
        }
        std::str::from_utf8(bytes)
            .ok()
            .map(|id| Self(id.to_owned()))
    }

    /// A new id: 16 hex digits, never the same twice in one process (a counter through a
    /// bijective mix, from a per-process random start), so unlikely to repeat across processes.
    fn generate() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let seed = *SEED.get_or_init(|| {
            // std's RandomState is keyed from the OS's randomness: no `rand` needed.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            hasher.finish()
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Odd multiplier: distinct counters give distinct inputs, and the mix is a bijection.
        Self(format!(
            "{:016x}",
            mix(seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        ))
    }

    /// The id as logged.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Puts the id in `response`'s `x-request-id` header.
    pub(crate) fn stamp<B>(&self, response: &mut Response<B>) {
        // Always a valid value: printable ASCII only.
        if let Ok(value) = HeaderValue::from_str(&self.0) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
    }
}

/// SplitMix64's finalizer: a bijection of u64 that spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// === the line ===

/// The gRPC name of `code`, as the specification spells it (`PERMISSION_DENIED`).
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

/// One call, as its end-of-call line describes it; made when the call starts.
#[derive(Debug)]
pub(crate) struct Call {
    /// The gRPC path, `/package.Service/Method`.
    pub(crate) method: String,
    /// Who called (`carrier/<id>`, `platform/<name>`).
    pub(crate) caller: String,
    pub(crate) request_id: RequestId,
    pub(crate) started: Instant,
    /// Asked for a database check when the call ends `UNAVAILABLE`: the database may be gone,
    /// and health should not wait for its next periodic check to say so.
    pub(crate) on_unavailable: Option<DbCheck>,
    /// The calling carrier, as the RPC metrics' `carrier` label; empty for the platform.
    pub(crate) carrier: String,
    /// Where the call is counted (count and latency by method and code).
    pub(crate) metrics: Option<Arc<StreamMetrics>>,
}

impl Call {
    /// Logs the end of the call with `code`, having sent `bytes`.
    fn end(&self, code: Code, bytes: u64) {
        if let (Code::Unavailable, Some(check)) = (code, &self.on_unavailable) {
            check.nudge();
        }
        let elapsed = self.started.elapsed();
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let name = code_name(code);
        if let Some(metrics) = &self.metrics {
            metrics.rpc(&self.method, name, &self.carrier, elapsed);
        }
        // `parent: None`: the fields are all here; the request's span would repeat them.
        // The request id is recorded as a string (quoted in text: a client's may hold spaces).
        if code == Code::Ok {
            tracing::info!(
                parent: None,
                method = %self.method,
                caller = %self.caller,
                request_id = self.request_id.as_str(),
                code = %name,
                elapsed_ms,
                bytes,
                "rpc finished"
            );
        } else {
            tracing::info!(
                parent: None,
                method = %self.method,
                caller = %self.caller,
                request_id = self.request_id.as_str(),
                code = %name,
                elapsed_ms,
                bytes,
                "rpc failed"
            );
        }
    }
}

/// Wraps `response` so that the call's end is logged: now when the status is already in the
/// headers (a unary error, a trailers-only response), otherwise when its body ends. Stamps the
/// request id on the response's headers either way.
pub(crate) fn log_response(
    mut response: Response<tonic::body::Body>,
    call: Call,
) -> Response<tonic::body::Body> {
    call.request_id.stamp(&mut response);
    if let Some(code) = code_of(response.headers()) {
        call.end(code, 0);
        return response;
    }
    response.map(|inner| {
        tonic::body::Body::new(LoggedBody {
            inner,
            call,
            bytes: 0,
            done: false,
        })
    })
}

/// A response body that logs the call's final status when the trailers pass through, or
/// `CANCELLED` if it is dropped before (the client left, the connection died).
struct LoggedBody {
    inner: tonic::body::Body,
    call: Call,
    /// Response bytes sent so far (encoded messages, framing included).
    bytes: u64,
    /// Whether the end was logged.
    done: bool,
}

impl LoggedBody {
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.call.end(code, self.bytes);
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

    use tracing_subscriber::EnvFilter;

    use super::*;
    use crate::config::LogFormat;

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

    /// A call of carrier contoso to GetNumber with request id `req-1`.
    fn call() -> Call {
        Call {
            method: "/opconnect.v1.AssignmentService/GetNumber".into(),
            caller: "carrier/contoso".into(),
            request_id: RequestId::parse(b"req-1").unwrap(),
            started: Instant::now(),
            on_unavailable: None,
            carrier: String::new(),
            metrics: None,
        }
    }

    /// The log lines written in `format` while `run` runs.
    fn logged_as(format: LogFormat, run: impl FnOnce()) -> String {
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
        let subscriber = crate::telemetry::subscriber(
            format,
            EnvFilter::new("info"),
            move || writer.clone(),
            false,
        );
        tracing::subscriber::with_default(subscriber, run);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    fn logged(run: impl FnOnce()) -> String {
        logged_as(LogFormat::Text, run)
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
                call(),
            );
            drain(response);
        });
        assert!(line.contains("rpc failed"), "{line}");
        assert!(line.contains("code=PERMISSION_DENIED"), "{line}");
        assert!(line.contains("bytes=5"), "{line}");
        assert_eq!(line.lines().count(), 1, "{line}");
    }

    /// A stream that ends with status 0 is logged as OK; one dropped before its end as
    /// CANCELLED; a status already in the headers is logged at once.
    #[test]
    fn ok_cancelled_and_trailers_only_calls_are_logged() {
        let ok = logged(|| drain(log_response(stream(vec![trailers(Code::Ok)]), call())));
        assert!(
            ok.contains("rpc finished") && ok.contains("code=OK"),
            "{ok}"
        );
        let cancelled = logged(|| {
            let response =
                log_response(stream(vec![Frame::data(Bytes::from_static(b"x"))]), call());
            drop(response);
        });
        assert!(cancelled.contains("code=CANCELLED"), "{cancelled}");
        let early = logged(|| {
            let status = tonic::Status::not_found("no such number");
            let _response = log_response(status.into_http(), call());
        });
        assert!(early.contains("code=NOT_FOUND"), "{early}");
    }

    /// In JSON the line's fields are top-level keys with their documented names and types.
    #[test]
    fn the_json_line_has_stable_field_names() {
        let line = logged_as(LogFormat::Json, || {
            let status = tonic::Status::permission_denied("suspended");
            let _response = log_response(status.into_http(), call());
        });
        let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(value["message"], "rpc failed", "{line}");
        assert_eq!(value["method"], "/opconnect.v1.AssignmentService/GetNumber");
        assert_eq!(value["caller"], "carrier/contoso");
        assert_eq!(value["request_id"], "req-1");
        assert_eq!(value["code"], "PERMISSION_DENIED");
        assert!(value["elapsed_ms"].is_u64(), "{line}");
        assert_eq!(value["bytes"], 0);
    }

    /// Every response carries the request id, errors included.
    #[test]
    fn responses_carry_the_request_id() {
        let response = log_response(tonic::Status::not_found("x").into_http(), call());
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
        let response = log_response(stream(vec![trailers(Code::Ok)]), call());
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
    }

    /// A client's id is taken when it is 1 to 128 printable ASCII characters; otherwise an id
    /// of 16 hex digits is made, a different one each time.
    #[test]
    fn request_ids_are_bounded() {
        let with = |value: &[u8]| {
            let mut request = http::Request::new(());
            request
                .headers_mut()
                .insert(REQUEST_ID_HEADER, HeaderValue::from_bytes(value).unwrap());
            RequestId::of(&request)
        };
        assert_eq!(with(b"abc-123").as_str(), "abc-123");
        assert_eq!(with(b"with space ~").as_str(), "with space ~");
        let longest = "x".repeat(128);
        assert_eq!(with(longest.as_bytes()).as_str(), longest);
        let generated = |id: &RequestId| {
            id.as_str().len() == 16 && id.as_str().bytes().all(|b| b.is_ascii_hexdigit())
        };
        for bad in [
            "x".repeat(129).into_bytes(),
            b"tab\there".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
        ] {
            let id = with(&bad);
            assert!(generated(&id), "{bad:?} gave {id:?}");
        }
        let a = RequestId::of(&http::Request::new(()));
        let b = RequestId::of(&http::Request::new(()));
        assert!(generated(&a) && generated(&b), "{a:?} {b:?}");
        assert_ne!(a, b);
    }

    /// A call that ends UNAVAILABLE (a unary error or a stream's last status) asks for a
    /// database check; other codes do not.
    #[test]
    fn unavailable_calls_ask_for_a_database_check() {
        use futures::FutureExt;
        let requested = |check: &DbCheck| check.requested().now_or_never().is_some();
        let check = DbCheck::default();
        let watched = || Call {
            on_unavailable: Some(check.clone()),
            ..call()
        };
        let _ = log_response(tonic::Status::not_found("x").into_http(), watched());
        drain(log_response(stream(vec![trailers(Code::Ok)]), watched()));
        assert!(!requested(&check));
        let _ = log_response(tonic::Status::unavailable("db").into_http(), watched());
        assert!(requested(&check));
        drain(log_response(
            stream(vec![
                Frame::data(Bytes::from_static(b"x")),
                trailers(Code::Unavailable),
            ]),
            watched(),
        ));
        assert!(requested(&check));
    }

    /// Every code has its specification name.
    #[test]
    fn code_names() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::PermissionDenied), "PERMISSION_DENIED");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }
}
