//! When and how long to wait before trying again: which status codes are worth a retry, the
//! server's `RetryInfo`, and jittered exponential backoff otherwise.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The longest wait a server's `RetryInfo` can impose; a larger value is capped, so that a
/// misconfigured limit cannot park a collector for hours.
const MAX_SERVER_DELAY: Duration = Duration::from_secs(300);

/// Whether a failed call may succeed when simply tried again.
///
/// - `UNAVAILABLE`, `ABORTED`, `DEADLINE_EXCEEDED`: yes (a restart, a transient conflict, an
///   idle cut).
/// - `RESOURCE_EXHAUSTED`: only with `RetryInfo` (a stream cap or rate limit); without it the
///   request itself is too large and would fail again.
/// - `UNKNOWN`, `INTERNAL`, `CANCELLED` without an `ErrorInfo`: yes. The gateway puts an
///   `ErrorInfo` on every status it sends, so these come from the transport (a connection
///   reset mid-stream surfaces as one of them).
/// - Everything else (`INVALID_ARGUMENT`, `PERMISSION_DENIED`, `UNAUTHENTICATED`,
///   `NOT_FOUND`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`, ...): no; the caller must change
///   something first.
pub fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Aborted | Code::DeadlineExceeded => true,
        Code::ResourceExhausted => status.get_details_retry_info().is_some(),
        Code::Unknown | Code::Internal | Code::Cancelled => {
            status.get_details_error_info().is_none()
        }
        _ => false,
    }
}

/// The wait the server asked for in `RetryInfo`, capped.
pub fn server_delay(status: &Status) -> Option<Duration> {
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .map(|d| d.min(MAX_SERVER_DELAY))
}

/// The `ErrorInfo` reason of a status, empty when it has none.
pub fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// Backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// The first wait (before jitter).
    pub initial: Duration,
    /// The longest wait (before jitter).
    pub max: Duration,
    /// Give up after this many failures in a row; `None`: never (a watcher meant to run for
    /// months).
    pub max_attempts: Option<u32>,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

/// Jittered exponential backoff that honours the server's `RetryInfo`. One per client loop;
/// [`Backoff::reset`] after every success.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// Failures since the last success.
    failures: u32,
    rng: XorShift,
}

impl Backoff {
    /// A backoff with no failures yet.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            rng: XorShift::seeded(),
        }
    }

    /// A success: the next failure waits the initial delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait before retrying after `status`, or `None` when it must not be retried (not
    /// retryable, or the attempts are used up).
    pub fn next_delay(&mut self, status: &Status) -> Option<Duration> {
        if !is_retryable(status) {
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.failures > max)
        {
            return None;
        }
        Some(match server_delay(status) {
            // The server knows when the permit frees up: wait that long, plus up to 10 % so
            // that clients told the same delay do not all return in the same instant.
            Some(delay) => delay + self.jitter(delay / 10),
            None => self.exponential(),
        })
    }

    /// Half of `initial × 2^(failures-1)` (capped at `max`), plus a random part up to the
    /// other half ("equal jitter"): never zero, never in lock-step with other clients.
    fn exponential(&mut self) -> Duration {
        let exponent = self.failures.saturating_sub(1).min(20);
        let base = self
            .policy
            .initial
            .saturating_mul(1 << exponent)
            .min(self.policy.max);
        base / 2 + self.jitter(base / 2)
    }

    /// A uniformly random duration in `[0, up_to]`.
    fn jitter(&mut self, up_to: Duration) -> Duration {
        let nanos = u64::try_from(up_to.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.next() % nanos.saturating_add(1))
    }
}

/// xorshift64*: jitter needs spread, not cryptographic quality, and this keeps `rand` out of
/// the library's dependencies.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn seeded() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded per process by the OS; mixing in the time separates
        // generators created in the same process.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self(hasher.finish() | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::{ErrorDetails, StatusExt};

    fn with_info(code: Code, reason: &str) -> Status {
        Status::with_error_details(
            code,
            "x",
            ErrorDetails::with_error_info(reason, "opconnect.v1", HashMap::new()),
        )
    }

    fn with_retry(code: Code, delay: Duration) -> Status {
        let mut details =
            ErrorDetails::with_error_info("STREAM_LIMIT", "opconnect.v1", HashMap::new());
        details.set_retry_info(Some(delay));
        Status::with_error_details(code, "x", details)
    }

    /// Transient codes are retried, caller mistakes never, and transport-made codes (no
    /// ErrorInfo) apart from the server's own.
    #[test]
    fn which_codes_are_retried() {
        assert!(is_retryable(&Status::unavailable("down")));
        assert!(is_retryable(&with_info(
            Code::Unavailable,
            "STORE_UNAVAILABLE"
        )));
        assert!(is_retryable(&with_info(Code::Aborted, "STORE_CONFLICT")));
        assert!(is_retryable(&Status::internal("h2 protocol error")));
        assert!(is_retryable(&Status::unknown("transport error")));
        assert!(!is_retryable(&with_info(Code::Internal, "INTERNAL")));
        assert!(is_retryable(&with_retry(
            Code::ResourceExhausted,
            Duration::from_secs(1)
        )));
        assert!(!is_retryable(&with_info(
            Code::ResourceExhausted,
            "UPLOAD_TOO_LARGE"
        )));
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::AlreadyExists,
            Code::Unimplemented,
        ] {
            assert!(!is_retryable(&with_info(code, "X")), "{code:?}");
            assert!(!is_retryable(&Status::new(code, "x")), "{code:?}");
        }
    }

    /// RetryInfo sets the wait (plus at most 10 %); without it the wait grows exponentially
    /// with jitter, up to the cap; a success starts over; non-retryable codes get no wait.
    #[test]
    fn delays() {
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_attempts: None,
        });
        let told = with_retry(Code::ResourceExhausted, Duration::from_secs(3));
        for _ in 0..50 {
            let d = backoff.next_delay(&told).unwrap();
            assert!(
                d >= Duration::from_secs(3) && d <= Duration::from_millis(3300),
                "{d:?}"
            );
        }
        let huge = with_retry(Code::Unavailable, Duration::from_secs(86_400));
        assert!(backoff.next_delay(&huge).unwrap() <= MAX_SERVER_DELAY * 11 / 10);

        backoff.reset();
        let down = Status::unavailable("down");
        let waits: Vec<Duration> = (0..8).map(|_| backoff.next_delay(&down).unwrap()).collect();
        for (i, w) in waits.iter().enumerate() {
            let base = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(2));
            assert!(*w >= base / 2 && *w <= base, "attempt {i}: {w:?}");
        }
        assert_eq!(backoff.next_delay(&with_info(Code::NotFound, "X")), None);
    }

    /// The attempts run out after `max_attempts` failures in a row.
    #[test]
    fn attempts_run_out() {
        let mut backoff = Backoff::new(BackoffPolicy {
            max_attempts: Some(2),
            ..BackoffPolicy::default()
        });
        let down = Status::unavailable("down");
        assert!(backoff.next_delay(&down).is_some());
        assert!(backoff.next_delay(&down).is_some());
        assert!(backoff.next_delay(&down).is_none());
        backoff.reset();
        assert!(backoff.next_delay(&down).is_some());
    }
}
