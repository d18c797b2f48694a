//! UTC calendar arithmetic on Unix milliseconds: days, months and half-open time windows.
//! The one home of these helpers; usage periods, request windows and the admin tool use them.

use super::usage::Granularity;

/// Milliseconds in a UTC day (no leap seconds in Unix time).
pub const DAY_MS: i64 = 86_400_000;

/// A half-open time window `[from_ms, to_ms)` over call start times, Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start, Unix ms.
    pub from_ms: i64,
    /// Exclusive end, Unix ms.
    pub to_ms: i64,
}

impl Window {
    /// The window `[from_ms, to_ms)`, which must be non-empty and at most `max_days` long;
    /// the error names what is wrong, for the `end_time` field.
    pub fn new(from_ms: i64, to_ms: i64, max_days: i64) -> Result<Self, String> {
        if to_ms <= from_ms {
            return Err("must be after start_time".into());
        }
        if to_ms.saturating_sub(from_ms) > max_days.saturating_mul(DAY_MS) {
            return Err(format!("must be at most {max_days} days after start_time"));
        }
        Ok(Self { from_ms, to_ms })
    }
}

/// Start of the UTC day or calendar month containing `t_ms` (Unix milliseconds).
///
/// Times before 1970 are floored like any other (euclidean division). A period starting
/// before `i64::MIN` milliseconds is clamped to `i64::MIN` instead of overflowing.
pub fn period_start_ms(t_ms: i64, granularity: Granularity) -> i64 {
    let days = t_ms.div_euclid(DAY_MS);
    let start_days = match granularity {
        Granularity::Day => days,
        Granularity::Month => {
            let (year, month, _) = civil_from_days(days);
            days_from_civil(year, month, 1)
        }
    };
    start_days.saturating_mul(DAY_MS)
}

/// The proleptic Gregorian (year, month 1–12, day 1–31) of a day counted from 1970-01-01.
///
/// Howard Hinnant's `civil_from_days`: shifts the year to start on 1 March, so the leap day is
/// the last of the year, and works in 400-year eras of 146 097 days.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era, [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day, counted from 1970-01-01, of a proleptic Gregorian date (month 1–12, day 1–31).
///
/// Howard Hinnant's `days_from_civil`, the inverse of [`civil_from_days`].
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = year - i64::from(month <= 2); // the March-based year
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = if month > 2 { month - 3 } else { month + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `days_from_civil` inverts `civil_from_days` across four centuries around the epoch.
    #[test]
    fn civil_conversions_round_trip() {
        for days in -146_097..146_097 {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    /// A window must be non-empty and no longer than its maximum.
    #[test]
    fn windows_are_bounded() {
        assert_eq!(
            Window::new(0, DAY_MS, 1),
            Ok(Window {
                from_ms: 0,
                to_ms: DAY_MS
            })
        );
        assert!(Window::new(5, 5, 1).is_err());
        assert!(Window::new(0, DAY_MS + 1, 1).is_err());
        assert!(Window::new(i64::MIN, i64::MAX, i64::MAX).is_ok());
    }
}
