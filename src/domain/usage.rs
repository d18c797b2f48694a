//! A tenant's usage: calls and minutes per number and UTC day or month, counted with the
//! carrier's duration where the carrier reported one and the platform's otherwise.

use std::collections::BTreeMap;

use super::calendar::period_start_ms;

/// The length of the periods usage is summed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Granularity {
    /// UTC calendar days; the default.
    #[default]
    Day,
    /// UTC calendar months.
    Month,
}

/// Whose measurement a call's duration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DurationSource {
    /// The carrier's reported duration (preferred: it is what the carrier bills).
    Operator,
    /// The platform's own duration, used when the carrier has reported none.
    Platform,
}

/// One successful platform call of the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCall {
    /// The tenant's number: the caller of an outbound call, the callee of an inbound one; empty
    /// when withheld.
    pub number: String,
    /// Start of the call in Unix milliseconds; decides the period it counts in.
    pub start_time_ms: i64,
    /// The platform's duration in milliseconds.
    pub platform_ms: i64,
    /// The duration reported by the carrier that carried the call, if it reported one.
    pub carrier_ms: Option<i64>,
}

/// Usage of one number in one period from one source.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageFigure {
    /// The tenant's number; empty for calls whose number was withheld.
    pub number: String,
    /// Start of the UTC day or month in Unix milliseconds.
    pub period_start_ms: i64,
    /// Whose durations `total_ms` sums.
    pub source: DurationSource,
    /// Number of calls.
    pub calls: i64,
    /// Sum of the calls' durations in milliseconds.
    pub total_ms: i64,
}

impl UsageFigure {
    /// The total duration in minutes (`total_ms / 60_000`), fractions included.
    pub fn minutes(&self) -> f64 {
        self.total_ms as f64 / 60_000.0
    }
}

/// Calls and milliseconds summed so far for one (number, period, source).
#[derive(Debug, Clone, Copy, Default)]
struct Sum {
    /// Calls added.
    calls: i64,
    /// Their durations in milliseconds.
    total_ms: i64,
}

/// Sums usage call by call, so the store can page through a tenant's calls without holding
/// them all.
///
/// Each call counts once: under [`DurationSource::Operator`] with its carrier duration when
/// there is one, else under [`DurationSource::Platform`] with its platform duration. The
/// caller passes only successful calls. Sums saturate instead of overflowing.
#[derive(Debug, Default)]
pub struct UsageAggregator {
    /// Day or month periods.
    granularity: Granularity,
    /// Sums by number, then by (period start, source); keyed by number first so a call for a
    /// number already seen is summed without allocating its number again.
    sums: BTreeMap<String, BTreeMap<(i64, DurationSource), Sum>>,
}

impl UsageAggregator {
    /// An empty aggregator over periods of `granularity`.
    pub fn new(granularity: Granularity) -> Self {
        Self {
            granularity,
            sums: BTreeMap::new(),
        }
    }

    /// Counts one call.
    pub fn add(&mut self, call: &UsageCall) {
        let (source, duration_ms) = match call.carrier_ms {
            Some(carrier_ms) => (DurationSource::Operator, carrier_ms),
            None => (DurationSource::Platform, call.platform_ms),
        };
        let period = period_start_ms(call.start_time_ms, self.granularity);
        let by_period = match self.sums.get_mut(call.number.as_str()) {
            Some(by_period) => by_period,
            None => self.sums.entry(call.number.clone()).or_default(),
        };
        let sum = by_period.entry((period, source)).or_default();
        sum.calls = sum.calls.saturating_add(1);
        sum.total_ms = sum.total_ms.saturating_add(duration_ms);
    }

    /// The figures, ordered by number, period start and source (operator first).
    pub fn finish(self) -> Vec<UsageFigure> {
        self.sums
            .into_iter()
            .flat_map(|(number, by_period)| {
                by_period
                    .into_iter()
                    .map(move |((period_start_ms, source), sum)| UsageFigure {
                        number: number.clone(),
                        period_start_ms,
                        source,
                        calls: sum.calls,
                        total_ms: sum.total_ms,
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-01T00:00:00Z.
    const MAR_01: i64 = 1_772_323_200_000;
    /// 2026-03-02T00:00:00Z.
    const MAR_02: i64 = 1_772_409_600_000;
    /// 2026-03-03T00:00:00Z.
    const MAR_03: i64 = 1_772_496_000_000;
    /// One hour in milliseconds.
    const HOUR: i64 = 3_600_000;

    /// A call of `number` starting at `start_time_ms`.
    fn call(
        number: &str,
        start_time_ms: i64,
        platform_ms: i64,
        carrier_ms: Option<i64>,
    ) -> UsageCall {
        UsageCall {
            number: number.to_owned(),
            start_time_ms,
            platform_ms,
            carrier_ms,
        }
    }

    /// An expected figure.
    fn figure(
        number: &str,
        period_start_ms: i64,
        source: DurationSource,
        calls: i64,
        total_ms: i64,
    ) -> UsageFigure {
        UsageFigure {
            number: number.to_owned(),
            period_start_ms,
            source,
            calls,
            total_ms,
        }
    }

    /// Feeds `calls` to a fresh aggregator and returns its figures.
    fn aggregate(granularity: Granularity, calls: &[UsageCall]) -> Vec<UsageFigure> {
        let mut aggregator = UsageAggregator::new(granularity);
        for c in calls {
            aggregator.add(c);
        }
        aggregator.finish()
    }

    /// The last millisecond of January and the first of February fall in different days and
    /// months.
    #[test]
    fn end_of_january_and_start_of_february_are_different_periods() {
        let last_of_january = 1_769_903_999_999; // 2026-01-31T23:59:59.999Z
        let first_of_february = 1_769_904_000_000; // 2026-02-01T00:00:00Z
        assert_eq!(
            period_start_ms(last_of_january, Granularity::Day),
            1_769_817_600_000 // 2026-01-31T00:00:00Z
        );
        assert_eq!(
            period_start_ms(last_of_january, Granularity::Month),
            1_767_225_600_000 // 2026-01-01T00:00:00Z
        );
        assert_eq!(
            period_start_ms(first_of_february, Granularity::Day),
            first_of_february
        );
        assert_eq!(
            period_start_ms(first_of_february, Granularity::Month),
            first_of_february
        );
    }

    /// A leap day is its own day and belongs to February; 1 March starts a new month.
    #[test]
    fn leap_day_belongs_to_february() {
        let leap_day_noon = 1_835_438_400_000; // 2028-02-29T12:00:00Z
        assert_eq!(
            period_start_ms(leap_day_noon, Granularity::Day),
            1_835_395_200_000 // 2028-02-29T00:00:00Z
        );
        assert_eq!(
            period_start_ms(leap_day_noon, Granularity::Month),
            1_832_976_000_000 // 2028-02-01T00:00:00Z
        );
        let first_of_march = 1_835_481_600_000; // 2028-03-01T00:00:00Z
        assert_eq!(
            period_start_ms(first_of_march, Granularity::Month),
            first_of_march
        );
    }

    /// The century rules hold: 2000 and 1600 had a 29 February, 1900 did not.
    #[test]
    fn century_leap_rules_hold() {
        // 2000-02-29T12:00:00Z → 2000-02-01T00:00:00Z
        assert_eq!(
            period_start_ms(951_825_600_000, Granularity::Month),
            949_363_200_000
        );
        // 1600-02-29T06:00:00Z → 1600-02-29T00:00:00Z and 1600-02-01T00:00:00Z
        assert_eq!(
            period_start_ms(-11_670_976_800_000, Granularity::Day),
            -11_670_998_400_000
        );
        assert_eq!(
            period_start_ms(-11_670_976_800_000, Granularity::Month),
            -11_673_417_600_000
        );
        // 1900-03-01T00:00:00Z minus 1 ms is 1900-02-28, in February 1900.
        assert_eq!(
            period_start_ms(-2_203_891_200_001, Granularity::Day),
            -2_203_977_600_000
        );
        assert_eq!(
            period_start_ms(-2_203_891_200_001, Granularity::Month),
            -2_206_310_400_000
        );
    }

    /// New Year's Eve belongs to December of the old year, New Year's Day to January.
    #[test]
    fn december_and_january_are_different_months_and_years() {
        let new_years_eve = 1_767_225_599_000; // 2025-12-31T23:59:59Z
        assert_eq!(
            period_start_ms(new_years_eve, Granularity::Day),
            1_767_139_200_000 // 2025-12-31T00:00:00Z
        );
        assert_eq!(
            period_start_ms(new_years_eve, Granularity::Month),
            1_764_547_200_000 // 2025-12-01T00:00:00Z
        );
        let new_year = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        assert_eq!(period_start_ms(new_year, Granularity::Day), new_year);
        assert_eq!(period_start_ms(new_year, Granularity::Month), new_year);
    }

    /// Times before 1970 are floored to the start of their day and month, not toward zero.
    #[test]
    fn negative_timestamps_floor_to_their_period() {
        // 1969-12-31T23:59:59.999Z
        assert_eq!(period_start_ms(-1, Granularity::Day), -86_400_000);
        assert_eq!(period_start_ms(-1, Granularity::Month), -2_678_400_000);
        // 1969-07-20T20:17:00Z → 1969-07-20 and 1969-07-01
        assert_eq!(
            period_start_ms(-14_182_980_000, Granularity::Day),
            -14_256_000_000
        );
        assert_eq!(
            period_start_ms(-14_182_980_000, Granularity::Month),
            -15_897_600_000
        );
        // The epoch itself starts both periods.
        assert_eq!(period_start_ms(0, Granularity::Day), 0);
        assert_eq!(period_start_ms(0, Granularity::Month), 0);
    }

    /// The extremes of `i64` are handled without an overflow panic; below `i64::MIN` clamps.
    #[test]
    fn extreme_timestamps_do_not_overflow() {
        assert_eq!(period_start_ms(i64::MIN, Granularity::Day), i64::MIN);
        assert_eq!(period_start_ms(i64::MIN, Granularity::Month), i64::MIN);
        // i64::MAX is 292278994-08-17T07:12:55.807Z.
        assert_eq!(
            period_start_ms(i64::MAX, Granularity::Day),
            9_223_372_036_828_800_000 // 292278994-08-17T00:00:00Z
        );
        assert_eq!(
            period_start_ms(i64::MAX, Granularity::Month),
            9_223_372_035_446_400_000 // 292278994-08-01T00:00:00Z
        );
    }

    /// Calls of three numbers over two days give per-number, per-day, per-source figures,
    /// preferring the carrier's duration.
    #[test]
    fn daily_figures_match_hand_computed_fixture() {
        let calls = [
            call("+4930200", MAR_03 + 10 * HOUR, 60_000, Some(61_000)),
            call("+4930100", MAR_02 + 8 * HOUR, 120_000, None),
            call("+4930100", MAR_02 + 9 * HOUR, 30_000, Some(30_500)),
            call("+4930100", MAR_03 + 17 * HOUR, 45_000, None),
            call("+4930300", MAR_03 - 1, 90_000, Some(90_000)),
            call("+4930100", MAR_02 + 12 * HOUR, 60_000, None),
            call("+4930300", MAR_03, 15_000, None),
            call("+4930200", MAR_03 + 11 * HOUR, 20_000, Some(19_000)),
        ];
        // +4930100 on 03-02: operator 30_500 (1 call); platform 120_000 + 60_000 (2 calls)
        // +4930100 on 03-03: platform 45_000
        // +4930200 on 03-03: operator 61_000 + 19_000 = 80_000 (2 calls)
        // +4930300: operator 90_000 on 03-02 (last ms of the day); platform 15_000 on 03-03
        let expected = vec![
            figure("+4930100", MAR_02, DurationSource::Operator, 1, 30_500),
            figure("+4930100", MAR_02, DurationSource::Platform, 2, 180_000),
            figure("+4930100", MAR_03, DurationSource::Platform, 1, 45_000),
            figure("+4930200", MAR_03, DurationSource::Operator, 2, 80_000),
            figure("+4930300", MAR_02, DurationSource::Operator, 1, 90_000),
            figure("+4930300", MAR_03, DurationSource::Platform, 1, 15_000),
        ];
        assert_eq!(aggregate(Granularity::Day, &calls), expected);

        // The same calls by month: both days fall in March 2026.
        let expected = vec![
            figure("+4930100", MAR_01, DurationSource::Operator, 1, 30_500),
            figure("+4930100", MAR_01, DurationSource::Platform, 3, 225_000),
            figure("+4930200", MAR_01, DurationSource::Operator, 2, 80_000),
            figure("+4930300", MAR_01, DurationSource::Operator, 1, 90_000),
            figure("+4930300", MAR_01, DurationSource::Platform, 1, 15_000),
        ];
        assert_eq!(aggregate(Granularity::Month, &calls), expected);
    }

    /// Calls with a withheld (empty) number are summed under the empty number, listed first.
    #[test]
    fn withheld_numbers_are_summed_under_the_empty_number() {
        let calls = [
            call("+4930100", MAR_02, 60_000, None),
            call("", MAR_02 + HOUR, 10_000, None),
            call("", MAR_02 + 2 * HOUR, 20_000, None),
        ];
        let expected = vec![
            figure("", MAR_02, DurationSource::Platform, 2, 30_000),
            figure("+4930100", MAR_02, DurationSource::Platform, 1, 60_000),
        ];
        assert_eq!(aggregate(Granularity::Day, &calls), expected);
    }

    /// An aggregator fed nothing gives no figures.
    #[test]
    fn no_calls_give_no_figures() {
        assert!(UsageAggregator::new(Granularity::Month).finish().is_empty());
    }

    /// A carrier duration of 0 is still the carrier's: the call counts under Operator.
    #[test]
    fn zero_carrier_duration_counts_under_operator() {
        let calls = [call("+4930100", MAR_02, 5_000, Some(0))];
        let expected = vec![figure("+4930100", MAR_02, DurationSource::Operator, 1, 0)];
        assert_eq!(aggregate(Granularity::Day, &calls), expected);
    }

    /// `minutes` converts milliseconds to minutes, keeping fractions.
    #[test]
    fn minutes_divide_milliseconds_by_sixty_thousand() {
        let f = |total_ms| figure("+4930100", MAR_02, DurationSource::Platform, 1, total_ms);
        assert_eq!(f(0).minutes(), 0.0);
        assert_eq!(f(60_000).minutes(), 1.0);
        assert_eq!(f(90_000).minutes(), 1.5);
        assert_eq!(f(225_000).minutes(), 3.75);
        assert!((f(30_500).minutes() - 0.508_333_333).abs() < 1e-9);
    }
}
