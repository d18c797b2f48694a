//! Times and durations between the wire (`google.protobuf.Timestamp`, `Duration`) and the
//! domain's Unix milliseconds. Sub-millisecond parts of timestamps are truncated.

use prost_types::{Duration, Timestamp};

use crate::domain::values::UnixMillis;

pub(crate) const NANOS_PER_SECOND: i64 = 1_000_000_000;
pub(crate) const NANOS_PER_MILLI: i64 = 1_000_000;
pub(crate) const MILLIS_PER_SECOND: i64 = 1_000;

/// A Unix-milliseconds time as a protobuf timestamp.
pub(crate) fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A wire timestamp as a point in time (sub-millisecond part truncated), in the range
/// [`UnixMillis`] accepts.
fn time(ts: &Timestamp) -> Result<UnixMillis, String> {
    if !(0..NANOS_PER_SECOND).contains(&i64::from(ts.nanos)) {
        return Err("nanos must be from 0 to 999999999".into());
    }
    let ms = ts
        .seconds
        .checked_mul(MILLIS_PER_SECOND)
        .and_then(|ms| ms.checked_add(i64::from(ts.nanos) / NANOS_PER_MILLI))
        // Overflow lies outside the range as well.
        .unwrap_or(i64::MIN);
    UnixMillis::new(ms)
}

/// A required wire timestamp as a point in time.
pub(crate) fn required_time(ts: Option<&Timestamp>) -> Result<UnixMillis, String> {
    ts.ok_or_else(|| "is required".to_owned()).and_then(time)
}

/// An optional wire timestamp as a point in time.
pub(crate) fn optional_time(ts: Option<&Timestamp>) -> Result<Option<UnixMillis>, String> {
    ts.map(time).transpose()
}

/// A required wire timestamp as Unix milliseconds.
pub(crate) fn required_time_ms(ts: Option<&Timestamp>) -> Result<i64, String> {
    required_time(ts).map(UnixMillis::get)
}

/// An optional wire timestamp as Unix milliseconds.
pub(crate) fn optional_time_ms(ts: Option<&Timestamp>) -> Result<Option<i64>, String> {
    Ok(optional_time(ts)?.map(UnixMillis::get))
}

/// Milliseconds as a protobuf duration (seconds and nanos share the sign, as protobuf asks).
pub(crate) fn duration_from_ms(ms: i64) -> Duration {
    Duration {
        seconds: ms / MILLIS_PER_SECOND,
        nanos: i32::try_from(ms % MILLIS_PER_SECOND * NANOS_PER_MILLI).unwrap_or(0),
    }
}

/// Fractional milliseconds as a protobuf duration, to the nearest nanosecond. Validated
/// metrics are 0 to 60 s; anything else saturates rather than panics.
pub(crate) fn duration_from_fractional_ms(ms: f64) -> Duration {
    // `as` saturates and maps NaN to 0.
    let total_nanos = (ms * NANOS_PER_MILLI as f64).round() as i64;
    Duration {
        seconds: total_nanos / NANOS_PER_SECOND,
        nanos: i32::try_from(total_nanos % NANOS_PER_SECOND).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value no validated record holds (NaN, infinities, huge) still converts without
    /// panicking: NaN is 0, the rest saturates.
    #[test]
    fn fractional_durations_never_panic() {
        assert_eq!(
            duration_from_fractional_ms(f64::NAN),
            Duration {
                seconds: 0,
                nanos: 0
            }
        );
        assert!(duration_from_fractional_ms(f64::INFINITY).seconds > 0);
        assert!(duration_from_fractional_ms(f64::NEG_INFINITY).seconds < 0);
        assert_eq!(duration_from_ms(-1_500).seconds, -1);
        assert_eq!(duration_from_ms(-1_500).nanos, -500_000_000);
    }
}
