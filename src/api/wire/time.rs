//! Times and durations between the wire (`google.protobuf.Timestamp`, `Duration`) and the
//! domain's Unix milliseconds. Sub-millisecond parts of timestamps are truncated.

use prost_types::{Duration, Timestamp};

/// 2000-01-01T00:00:00Z in Unix milliseconds; earlier times are mistakes, not records.
const MIN_TIME_MS: i64 = 946_684_800_000;
/// 2100-01-01T00:00:00Z in Unix milliseconds; this and later times are mistakes too.
const MAX_TIME_MS: i64 = 4_102_444_800_000;
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

/// A wire timestamp as Unix milliseconds (sub-millisecond part truncated), within
/// [2000-01-01, 2100-01-01).
fn time_ms(ts: &Timestamp) -> Result<i64, String> {
    if !(0..NANOS_PER_SECOND).contains(&i64::from(ts.nanos)) {
        return Err("nanos must be from 0 to 999999999".into());
    }
    ts.seconds
        .checked_mul(MILLIS_PER_SECOND)
        .and_then(|ms| ms.checked_add(i64::from(ts.nanos) / NANOS_PER_MILLI))
        .filter(|ms| (MIN_TIME_MS..MAX_TIME_MS).contains(ms))
        .ok_or_else(|| "must lie between 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z".to_owned())
}

/// A required wire timestamp as Unix milliseconds.
pub(crate) fn required_time_ms(ts: Option<&Timestamp>) -> Result<i64, String> {
    ts.ok_or_else(|| "is required".to_owned()).and_then(time_ms)
}

/// An optional wire timestamp as Unix milliseconds.
pub(crate) fn optional_time_ms(ts: Option<&Timestamp>) -> Result<Option<i64>, String> {
    ts.map(time_ms).transpose()
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
