//! Cell parsing: one value of a record, as a CSV cell or a JSON value, into the type its field
//! has (text, whole number, real, boolean, enumeration, timestamp, duration).
//!
//! Only syntax is checked here; whether a value makes sense is the server's call.

use std::borrow::Cow;

use serde_json::Value;
use time::OffsetDateTime;
use time::error::{Parse, TryFromParsed};
use time::format_description::well_known::Rfc3339;

/// One value of a record as the file spells it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    /// A non-empty CSV cell.
    Csv(&'a str),
    /// A non-null JSON value.
    Json(&'a Value),
}

/// The unit a duration column is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Seconds,
    Milliseconds,
}

/// A proto enum as cells spell it: its short names (`inbound`) or full names, in any case.
#[derive(Debug)]
pub(crate) struct Enumeration {
    /// What the full names start with, e.g. `CALL_DIRECTION_`.
    pub(crate) prefix: &'static str,
    /// The short names, for messages: `inbound or outbound`.
    pub(crate) valid: &'static str,
    /// The value of a full name; `None` when there is no such name.
    pub(crate) from_name: fn(&str) -> Option<i32>,
}

impl<'a> Cell<'a> {
    /// A text field: any CSV cell, or a JSON string.
    pub(crate) fn text(self) -> Result<String, String> {
        match self {
            Cell::Csv(text) => Ok(text.to_owned()),
            Cell::Json(Value::String(text)) => Ok(text.clone()),
            Cell::Json(other) => Err(format!("expected a string, found {}", json_kind(other))),
        }
    }

    /// The value as text to parse: a CSV cell, or a JSON string, number or boolean.
    fn scalar(self) -> Result<Cow<'a, str>, String> {
        match self {
            Cell::Csv(text) => Ok(Cow::Borrowed(text)),
            Cell::Json(Value::String(text)) => Ok(Cow::Borrowed(text)),
            Cell::Json(Value::Number(number)) => Ok(Cow::Owned(number.to_string())),
            Cell::Json(Value::Bool(value)) => Ok(Cow::Owned(value.to_string())),
            Cell::Json(other) => Err(format!("expected a value, found {}", json_kind(other))),
        }
    }

    pub(crate) fn integer(self) -> Result<i32, String> {
        let text = self.scalar()?;
        text.parse()
            .map_err(|_| format!("not a whole number: {}", shown(&text)))
    }

    pub(crate) fn real(self) -> Result<f64, String> {
        let text = self.scalar()?;
        text.parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .ok_or_else(|| format!("not a number: {}", shown(&text)))
    }

    pub(crate) fn boolean(self) -> Result<bool, String> {
        if let Cell::Json(Value::Bool(value)) = self {
            return Ok(*value);
        }
        let text = self.scalar()?;
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("expected true, false, 1 or 0: {}", shown(&text))),
        }
    }

    pub(crate) fn timestamp(self) -> Result<prost_types::Timestamp, String> {
        let text = self.scalar()?;
        parse_rfc3339(&text).map_err(|why| format!("{why}: {}", shown(&text)))
    }

    pub(crate) fn duration(self, unit: Unit) -> Result<prost_types::Duration, String> {
        let text = self.scalar()?;
        text.parse::<f64>()
            .ok()
            .and_then(|value| duration_from(value, unit))
            .ok_or_else(|| format!("not a duration: {}", shown(&text)))
    }

    /// A value of `enumeration` other than its zero (unspecified) value.
    pub(crate) fn enumeration(self, enumeration: &Enumeration) -> Result<i32, String> {
        let text = self.scalar()?;
        let upper = text.to_ascii_uppercase();
        let name = if upper.starts_with(enumeration.prefix) {
            upper
        } else {
            format!("{}{upper}", enumeration.prefix)
        };
        (enumeration.from_name)(&name)
            .filter(|&value| value != 0)
            .ok_or_else(|| format!("expected {}: {}", enumeration.valid, shown(&text)))
    }
}

/// `value` units as a protobuf duration, rounded to the nanosecond; `None` when out of range.
pub(crate) fn duration_from(value: f64, unit: Unit) -> Option<prost_types::Duration> {
    const NANOS_PER_SECOND: i128 = 1_000_000_000;
    let nanos_per_unit = match unit {
        Unit::Seconds => 1e9,
        Unit::Milliseconds => 1e6,
    };
    let total = (value * nanos_per_unit).round();
    if !total.is_finite() {
        return None;
    }
    // Saturates far outside the i64 range of seconds, which the conversions below reject.
    let total = total as i128;
    Some(prost_types::Duration {
        seconds: i64::try_from(total / NANOS_PER_SECOND).ok()?,
        nanos: i32::try_from(total % NANOS_PER_SECOND).ok()?,
    })
}

/// Parses an RFC 3339 date-time such as `2026-11-27T10:00:00Z` or
/// `2026-11-27T11:00:00.250+01:00` (`T` and `Z` in either case, at most nine fractional
/// digits, no leap seconds).
///
/// The `time` crate does the parsing; it is more lenient in three ways the checks here undo:
/// any byte may separate date and time, extra fractional digits are dropped, and a leap second
/// becomes the nanosecond before it. A file with any of these is more likely wrong than meant.
pub(crate) fn parse_rfc3339(text: &str) -> Result<prost_types::Timestamp, &'static str> {
    const SYNTAX: &str = "not an RFC 3339 timestamp like 2026-11-27T10:00:00Z";
    let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|error| match error {
        Parse::TryFromParsed(TryFromParsed::ComponentRange(range)) => match range.name() {
            "year" | "month" | "day" => "no such date",
            "hour" | "minute" | "second" | "nanosecond" => "no such time of day",
            _ => "offset out of range",
        },
        _ => SYNTAX,
    })?;
    // Parsed, so the date and time have their fixed widths: YYYY-MM-DDTHH:MM:SS[.fraction].
    let b = text.as_bytes();
    if !matches!(b.get(10), Some(b'T' | b't')) {
        return Err(SYNTAX);
    }
    if b.get(17..19) == Some(b"60".as_slice()) {
        return Err("no such time of day");
    }
    if b.get(19) == Some(&b'.') {
        let digits = b.iter().skip(20).take_while(|c| c.is_ascii_digit()).count();
        if digits > 9 {
            return Err("more than nine fractional digits");
        }
    }
    Ok(prost_types::Timestamp {
        seconds: parsed.unix_timestamp(),
        nanos: i32::try_from(parsed.nanosecond()).map_err(|_| SYNTAX)?,
    })
}

/// What kind of JSON value `value` is, for messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` quoted for a message, cut short if long.
pub(crate) fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    if text.chars().count() <= MAX_CHARS {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(MAX_CHARS).collect();
        format!("{cut:?}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{Duration as PbDuration, Timestamp};

    /// Durations round to the nanosecond and keep the sign in both parts.
    #[test]
    fn durations_convert_exactly() {
        let cases = [
            (0.0, Unit::Seconds, 0, 0),
            (330.5, Unit::Seconds, 330, 500_000_000),
            (86_400.000_000_001, Unit::Seconds, 86_400, 1),
            (-1.5, Unit::Seconds, -1, -500_000_000),
            (0.1, Unit::Milliseconds, 0, 100_000),
            (1500.0, Unit::Milliseconds, 1, 500_000_000),
        ];
        for (value, unit, seconds, nanos) in cases {
            assert_eq!(
                duration_from(value, unit),
                Some(PbDuration { seconds, nanos })
            );
        }
        assert_eq!(duration_from(1e30, Unit::Seconds), None);
    }

    /// Valid RFC 3339 timestamps convert to the right instant, offsets and fractions included.
    #[test]
    fn rfc3339_valid() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0, 0),
            ("2026-11-27T10:00:00Z", 1_795_773_600, 0),
            ("2026-11-27t10:00:00z", 1_795_773_600, 0),
            ("2026-11-27T11:30:00+01:30", 1_795_773_600, 0),
            ("2026-11-27T05:00:00-05:00", 1_795_773_600, 0),
            ("2026-11-27T10:00:00-00:00", 1_795_773_600, 0),
            ("2026-11-27T10:00:00.5Z", 1_795_773_600, 500_000_000),
            (
                "2026-11-27T10:00:00.123456789+00:00",
                1_795_773_600,
                123_456_789,
            ),
            ("2024-02-29T23:59:59Z", 1_709_251_199, 0),
            ("1969-12-31T23:59:59.25Z", -1, 250_000_000),
            ("0001-01-01T00:00:00Z", -62_135_596_800, 0),
            ("9999-12-31T23:59:59Z", 253_402_300_799, 0),
        ];
        for (text, seconds, nanos) in cases {
            assert_eq!(
                parse_rfc3339(text),
                Ok(Timestamp { seconds, nanos }),
                "{text}"
            );
        }
    }

    /// Anything that is not a strict RFC 3339 date-time is refused.
    #[test]
    fn rfc3339_invalid() {
        let cases = [
            "",
            "2026-11-27",
            "2026-11-27T10:00:00",
            "2026-11-27 10:00:00Z",
            "2026-11-27T10:00Z",
            "2026-11-27T10:00:00+0100",
            "2026-11-27T10:00:00+01",
            "2026-11-27T10:00:00.Z",
            "2026-11-27T10:00:00.1234567891Z",
            "2026-11-27T10:00:00Zjunk",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T10:60:00Z",
            "2026-12-31T23:59:60Z",
            "2026-11-27T10:00:00+24:00",
            "+2026-11-27T10:00:00Z",
            "2026-11-2éT10:00:00Z",
            "２026-11-27T10:00:00Z",
        ];
        for text in cases {
            assert!(parse_rfc3339(text).is_err(), "{text} was accepted");
        }
    }

    /// Refusals say why: the syntax, the date, the time of day, the offset or the precision.
    #[test]
    fn rfc3339_errors_say_why() {
        let syntax = "not an RFC 3339 timestamp like 2026-11-27T10:00:00Z";
        let cases = [
            ("yesterday", syntax),
            ("2026-11-27 10:00:00Z", syntax),
            ("2026-11-27T10:00:00", syntax),
            ("2026-02-29T00:00:00Z", "no such date"),
            ("2026-13-01T00:00:00Z", "no such date"),
            ("2026-11-27T24:00:00Z", "no such time of day"),
            ("2026-12-31T23:59:60Z", "no such time of day"),
            ("2026-11-27T10:00:00+01:60", "offset out of range"),
            (
                "2026-11-27T10:00:00.1234567891Z",
                "more than nine fractional digits",
            ),
        ];
        for (text, why) in cases {
            assert_eq!(parse_rfc3339(text), Err(why), "{text}");
        }
    }
}
