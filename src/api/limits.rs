//! Per-carrier limits, so that no carrier can take the gateway from another: a cap on open
//! streams (each stream holds its permit for its whole life, not just its handler's future) and
//! a call rate (a token bucket per carrier, from governor). Keys are carrier ids from
//! CA-issued certificates, never free client input, so the maps stay small.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::ids::CarrierId;
use crate::error::ApiError;
use crate::metrics::StreamMetrics;

/// A carrier's right to one open stream; the stream keeps it until it ends.
#[derive(Debug)]
pub(crate) struct StreamPermit(#[allow(dead_code)] OwnedSemaphorePermit);

/// The limits of one server instance.
#[derive(Debug)]
pub(crate) struct Limits {
    max_streams: u32,
    streams: Mutex<HashMap<CarrierId, Arc<Semaphore>>>,
    /// `None` when the rate limit is off.
    rate: Option<(u32, DefaultKeyedRateLimiter<CarrierId>)>,
    clock: DefaultClock,
    /// Where refusals are counted.
    metrics: Arc<StreamMetrics>,
}

impl Limits {
    /// `max_streams` open streams per carrier; `per_second` calls per second per carrier, with
    /// a burst of twice that (0: no rate limit).
    pub(crate) fn new(max_streams: u32, per_second: u32, metrics: Arc<StreamMetrics>) -> Self {
        let rate = NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            let quota = Quota::per_second(rate).allow_burst(burst);
            (per_second, DefaultKeyedRateLimiter::hashmap(quota))
        });
        Self {
            max_streams,
            streams: Mutex::default(),
            rate,
            clock: DefaultClock::default(),
            metrics,
        }
    }

    /// A permit for one more open stream of `carrier`, or `STREAM_LIMIT`.
    pub(crate) fn stream_permit(&self, carrier: &CarrierId) -> Result<StreamPermit, ApiError> {
        let semaphore = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(carrier.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_streams as usize)))
            .clone();
        semaphore
            .try_acquire_owned()
            .map(StreamPermit)
            .map_err(|_| {
                self.metrics.limited("stream_limit");
                ApiError::stream_limit(self.max_streams)
            })
    }

    /// Counts one call (or stream open) of `carrier` against its rate, or `RATE_LIMIT` with the
    /// time until the next one is allowed.
    pub(crate) fn check_rate(&self, carrier: &CarrierId) -> Result<(), ApiError> {
        let Some((per_second, limiter)) = &self.rate else {
            return Ok(());
        };
        limiter.check_key(carrier).map_err(|not_until| {
            self.metrics.limited("rate_limit");
            ApiError::rate_limit(*per_second, not_until.wait_time_from(self.clock.now()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrier(id: &str) -> CarrierId {
        CarrierId::parse(id).unwrap()
    }

    /// Permits are per carrier and come back when a stream ends.
    #[test]
    fn streams_are_capped_per_carrier() {
        let limits = Limits::new(2, 0, Arc::default());
        let a = limits.stream_permit(&carrier("ca")).unwrap();
        let _b = limits.stream_permit(&carrier("ca")).unwrap();
        let refused = limits.stream_permit(&carrier("ca")).unwrap_err();
        assert_eq!(refused.reason().as_str(), "STREAM_LIMIT");
        assert!(
            limits.stream_permit(&carrier("cb")).is_ok(),
            "another carrier"
        );
        drop(a);
        assert!(
            limits.stream_permit(&carrier("ca")).is_ok(),
            "after one ended"
        );
    }

    /// A burst of twice the rate passes, the next call waits, other carriers are unaffected.
    #[test]
    fn calls_are_rate_limited_per_carrier() {
        let limits = Limits::new(1, 5, Arc::default());
        for _ in 0..10 {
            limits.check_rate(&carrier("ca")).unwrap();
        }
        let refused = limits.check_rate(&carrier("ca")).unwrap_err();
        assert_eq!(refused.reason().as_str(), "RATE_LIMIT");
        limits.check_rate(&carrier("cb")).unwrap();
        assert!(
            Limits::new(1, 0, Arc::default())
                .check_rate(&carrier("ca"))
                .is_ok(),
            "off"
        );
    }
}
