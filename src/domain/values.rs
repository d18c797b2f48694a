//! Validated values of records: call ids, points in time, call durations, SIP codes and
//! ratios. Each constructor enforces the value's bounds and says what is wrong otherwise, in
//! words a carrier's engineer understands; a value that exists is valid.

use serde::{Deserialize, Serialize};

/// The platform's call id: 1 to 128 printable ASCII characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    /// Parses a call id.
    pub fn parse(raw: &str) -> Result<Self, String> {
        super::ids::parse_opaque_id(raw).map(Self)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A point in time in Unix milliseconds, in [2000-01-01, 2100-01-01): earlier or later times
/// in a call record are mistakes, not calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(i64);

impl UnixMillis {
    /// 2000-01-01T00:00:00Z.
    pub const MIN: i64 = 946_684_800_000;
    /// 2100-01-01T00:00:00Z, excluded.
    pub const END: i64 = 4_102_444_800_000;

    /// The time `ms`, if it lies in the accepted range.
    pub fn new(ms: i64) -> Result<Self, String> {
        if (Self::MIN..Self::END).contains(&ms) {
            Ok(Self(ms))
        } else {
            Err("must lie between 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z".into())
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A call's connected duration in milliseconds: from 0 to 24 hours.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct DurationMs(i64);

impl DurationMs {
    /// The longest call a record may report: 24 hours.
    pub const MAX: i64 = 24 * 60 * 60 * 1000;

    /// The duration `ms`, if it lies from 0 to 24 hours.
    pub fn new(ms: i64) -> Result<Self, String> {
        if (0..=Self::MAX).contains(&ms) {
            Ok(Self(ms))
        } else {
            Err("must be between 0 and 24 hours".into())
        }
    }

    /// The duration in milliseconds.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A final SIP response code, 100 to 699.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SipCode(i32);

impl SipCode {
    /// The code `raw`, if it is a SIP response code.
    pub fn parse(raw: i32) -> Result<Self, String> {
        if (100..=699).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err("must be a SIP response code from 100 to 699".into())
        }
    }

    /// The code.
    pub fn get(self) -> i32 {
        self.0
    }
}

/// A share of a whole, from 0 to 1 (packet loss, concealed samples).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ratio(f64);

impl Ratio {
    /// The ratio `x`, if it is a number from 0 to 1 (NaN is not).
    pub fn new(x: f64) -> Result<Self, String> {
        bounded(x, 1.0).map(Self)
    }

    /// The ratio.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// `x` if it is a number from 0 to `max` (NaN is not).
pub fn bounded(x: f64, max: f64) -> Result<f64, String> {
    if (0.0..=max).contains(&x) {
        Ok(x)
    } else {
        Err(format!("must be a number from 0 to {max}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Call ids are opaque but bounded: 1 to 128 printable characters without spaces.
    #[test]
    fn call_ids_are_bounded() {
        assert_eq!(CallId::parse("c-1").unwrap().as_str(), "c-1");
        assert!(CallId::parse(&"x".repeat(128)).is_ok());
        for bad in ["", "a b", "é", &"x".repeat(129)] {
            assert!(CallId::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Times from 2000 (included) to 2100 (excluded) are accepted.
    #[test]
    fn times_lie_in_this_century() {
        assert!(UnixMillis::new(UnixMillis::MIN).is_ok());
        assert!(UnixMillis::new(UnixMillis::MIN - 1).is_err());
        assert!(UnixMillis::new(UnixMillis::END - 1).is_ok());
        assert!(UnixMillis::new(UnixMillis::END).is_err());
        assert!(UnixMillis::new(i64::MIN).is_err());
    }

    /// Durations from 0 to 24 hours, both included.
    #[test]
    fn durations_are_at_most_a_day() {
        assert_eq!(DurationMs::new(0).unwrap().get(), 0);
        assert!(DurationMs::new(DurationMs::MAX).is_ok());
        assert!(DurationMs::new(DurationMs::MAX + 1).is_err());
        assert!(DurationMs::new(-1).is_err());
    }

    /// SIP codes are 100 to 699.
    #[test]
    fn sip_codes_are_three_digit_classes_one_to_six() {
        assert!(SipCode::parse(100).is_ok());
        assert!(SipCode::parse(699).is_ok());
        for bad in [0, 99, 700, -200] {
            assert!(SipCode::parse(bad).is_err(), "{bad}");
        }
    }

    /// Ratios are 0 to 1; NaN and infinities are refused.
    #[test]
    fn ratios_are_shares() {
        assert_eq!(Ratio::new(0.25).unwrap().get(), 0.25);
        for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(Ratio::new(bad).is_err(), "{bad}");
        }
    }
}
