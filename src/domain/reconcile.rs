//! Reconciliation: matching the call durations a carrier reports to the platform's call
//! records, call by call, and summing the result into a report's totals.

/// How a call's two measurements compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReconClass {
    /// Both sides report the same duration, to the millisecond.
    Exact,
    /// Both sides report a duration and they differ by at most the tolerance.
    WithinTolerance,
    /// Both sides report a duration and they differ by more than the tolerance.
    Mismatch,
    /// The platform recorded a successful call the carrier has not reported.
    MissingCarrierRecord,
    /// The carrier reported a call the platform has no record of.
    MissingPlatformRecord,
}

impl ReconClass {
    /// Every class, in declaration order.
    pub const ALL: [ReconClass; 5] = [
        Self::Exact,
        Self::WithinTolerance,
        Self::Mismatch,
        Self::MissingCarrierRecord,
        Self::MissingPlatformRecord,
    ];

    /// Position of the class in [`ReconClass::ALL`], used to index per-class counters.
    fn index(self) -> usize {
        match self {
            Self::Exact => 0,
            Self::WithinTolerance => 1,
            Self::Mismatch => 2,
            Self::MissingCarrierRecord => 3,
            Self::MissingPlatformRecord => 4,
        }
    }
}

/// The platform's side of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformSide {
    /// The platform's duration of the call in milliseconds (normally 0 for a failed call).
    pub duration_ms: i64,
    /// Whether the call was connected; only a successful call needs a carrier duration.
    pub successful: bool,
}

/// Default tolerance: 2 s.
pub const DEFAULT_TOLERANCE_MS: i64 = 2_000;

/// Classifies one call from the platform's side and the carrier's duration, either of which
/// may be missing.
///
/// Both present: a difference of 0 is [`ReconClass::Exact`], at most `tolerance_ms`
/// [`ReconClass::WithinTolerance`], anything more [`ReconClass::Mismatch`]. A carrier duration
/// for a *failed* platform call is compared against the platform's duration (normally 0) like
/// any other. A negative tolerance counts as 0.
///
/// Platform only: a successful call is [`ReconClass::MissingCarrierRecord`]; a failed one is
/// `None`, since a failed call needs no carrier duration and is not compared at all.
/// Carrier only: [`ReconClass::MissingPlatformRecord`]. Neither: `None`.
pub fn classify(
    platform: Option<PlatformSide>,
    carrier_ms: Option<i64>,
    tolerance_ms: i64,
) -> Option<ReconClass> {
    match (platform, carrier_ms) {
        (Some(platform), Some(carrier_ms)) => {
            // `abs_diff` and the unsigned tolerance cannot overflow, whatever the inputs.
            let difference = carrier_ms.abs_diff(platform.duration_ms);
            let tolerance = u64::try_from(tolerance_ms).unwrap_or(0);
            Some(if difference == 0 {
                ReconClass::Exact
            } else if difference <= tolerance {
                ReconClass::WithinTolerance
            } else {
                ReconClass::Mismatch
            })
        }
        (Some(platform), None) if platform.successful => Some(ReconClass::MissingCarrierRecord),
        (Some(_), None) | (None, None) => None,
        (None, Some(_)) => Some(ReconClass::MissingPlatformRecord),
    }
}

/// Running totals of a reconciliation report, fed one classified call at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconTotals {
    /// Calls per class, indexed by [`ReconClass`]'s position in [`ReconClass::ALL`].
    counts: [i64; 5],
    /// Sum of the platform's durations of the compared calls that have a platform side.
    platform_ms: i64,
    /// Sum of the carrier's durations of the compared calls that have a carrier side.
    carrier_ms: i64,
}

impl ReconTotals {
    /// Adds one classified call.
    ///
    /// `platform_ms` grows by the platform duration of every call with a platform side
    /// ([`ReconClass::Exact`], [`ReconClass::WithinTolerance`], [`ReconClass::Mismatch`],
    /// [`ReconClass::MissingCarrierRecord`]); `carrier_ms` by the carrier duration of every call
    /// with a carrier side (`Exact`, `WithinTolerance`, `Mismatch`,
    /// [`ReconClass::MissingPlatformRecord`]). A duration given for the side a class lacks is
    /// ignored. Sums saturate instead of overflowing.
    pub fn add(&mut self, class: ReconClass, platform_ms: Option<i64>, carrier_ms: Option<i64>) {
        let count = &mut self.counts[class.index()];
        *count = count.saturating_add(1);
        let (has_platform, has_carrier) = match class {
            ReconClass::Exact | ReconClass::WithinTolerance | ReconClass::Mismatch => (true, true),
            ReconClass::MissingCarrierRecord => (true, false),
            ReconClass::MissingPlatformRecord => (false, true),
        };
        if has_platform {
            self.platform_ms = self.platform_ms.saturating_add(platform_ms.unwrap_or(0));
        }
        if has_carrier {
            self.carrier_ms = self.carrier_ms.saturating_add(carrier_ms.unwrap_or(0));
        }
    }

    /// Number of calls added under `class`.
    pub fn count(&self, class: ReconClass) -> i64 {
        self.counts[class.index()]
    }

    /// Total platform duration in milliseconds of the calls with a platform side.
    pub fn platform_ms(&self) -> i64 {
        self.platform_ms
    }

    /// Total carrier duration in milliseconds of the calls with a carrier side.
    pub fn carrier_ms(&self) -> i64 {
        self.carrier_ms
    }

    /// The aggregate difference, `(carrier - platform) / platform * 100`; positive when the
    /// carrier reports more time than the platform. 0.0 when the platform total is 0.
    pub fn difference_percent(&self) -> f64 {
        if self.platform_ms == 0 {
            return 0.0;
        }
        // In f64, so the subtraction cannot overflow.
        let platform = self.platform_ms as f64;
        (self.carrier_ms as f64 - platform) / platform * 100.0
    }
}

/// One call as reconciliation sees it: either side may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconRow {
    /// The call id.
    pub call_id: String,
    /// The tenant (the platform's record where present).
    pub tenant_id: String,
    /// The call's start (the platform's record where present).
    pub start_time_ms: i64,
    /// The platform's side.
    pub platform: Option<PlatformSide>,
    /// The carrier's duration.
    pub carrier_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A successful platform call lasting `duration_ms`.
    fn ok(duration_ms: i64) -> Option<PlatformSide> {
        Some(PlatformSide {
            duration_ms,
            successful: true,
        })
    }

    /// A failed platform call, which lasts 0 ms.
    fn failed() -> Option<PlatformSide> {
        Some(PlatformSide {
            duration_ms: 0,
            successful: false,
        })
    }

    /// Classifies with the default tolerance.
    fn class(platform: Option<PlatformSide>, carrier_ms: Option<i64>) -> Option<ReconClass> {
        classify(platform, carrier_ms, DEFAULT_TOLERANCE_MS)
    }

    /// Equal durations are exact, whatever the tolerance.
    #[test]
    fn equal_durations_are_exact() {
        assert_eq!(class(ok(60_000), Some(60_000)), Some(ReconClass::Exact));
        assert_eq!(
            classify(ok(60_000), Some(60_000), 0),
            Some(ReconClass::Exact)
        );
        assert_eq!(class(ok(0), Some(0)), Some(ReconClass::Exact));
    }

    /// A difference of exactly the tolerance is within it, in either direction.
    #[test]
    fn difference_of_exactly_the_tolerance_is_within_tolerance() {
        assert_eq!(
            class(ok(60_000), Some(62_000)),
            Some(ReconClass::WithinTolerance)
        );
        assert_eq!(
            class(ok(60_000), Some(58_000)),
            Some(ReconClass::WithinTolerance)
        );
        assert_eq!(
            class(ok(60_000), Some(60_001)),
            Some(ReconClass::WithinTolerance)
        );
    }

    /// One millisecond beyond the tolerance is a mismatch, in either direction.
    #[test]
    fn difference_of_tolerance_plus_one_is_a_mismatch() {
        assert_eq!(class(ok(60_000), Some(62_001)), Some(ReconClass::Mismatch));
        assert_eq!(class(ok(60_000), Some(57_999)), Some(ReconClass::Mismatch));
    }

    /// With tolerance 0 only an exact match avoids a mismatch.
    #[test]
    fn zero_tolerance_accepts_only_exact() {
        assert_eq!(
            classify(ok(60_000), Some(60_000), 0),
            Some(ReconClass::Exact)
        );
        assert_eq!(
            classify(ok(60_000), Some(60_001), 0),
            Some(ReconClass::Mismatch)
        );
        assert_eq!(
            classify(ok(60_000), Some(59_999), 0),
            Some(ReconClass::Mismatch)
        );
    }

    /// A negative tolerance behaves like tolerance 0.
    #[test]
    fn negative_tolerance_counts_as_zero() {
        assert_eq!(
            classify(ok(60_000), Some(60_000), -5),
            Some(ReconClass::Exact)
        );
        assert_eq!(
            classify(ok(60_000), Some(60_001), -5),
            Some(ReconClass::Mismatch)
        );
    }

    /// Extreme durations are classified without an overflow panic.
    #[test]
    fn extreme_durations_do_not_overflow() {
        assert_eq!(
            classify(ok(i64::MIN), Some(i64::MAX), i64::MAX),
            Some(ReconClass::Mismatch)
        );
        assert_eq!(
            classify(ok(i64::MAX), Some(i64::MAX), i64::MAX),
            Some(ReconClass::Exact)
        );
    }

    /// A successful platform call without a carrier duration is missing a carrier record.
    #[test]
    fn successful_platform_call_without_carrier_is_missing_carrier_record() {
        assert_eq!(
            class(ok(60_000), None),
            Some(ReconClass::MissingCarrierRecord)
        );
        assert_eq!(class(ok(0), None), Some(ReconClass::MissingCarrierRecord));
    }

    /// A failed platform call without a carrier duration is not compared at all.
    #[test]
    fn failed_platform_call_without_carrier_is_not_compared() {
        assert_eq!(class(failed(), None), None);
    }

    /// A carrier duration for a failed platform call is compared against the platform's 0 ms.
    #[test]
    fn failed_platform_call_with_carrier_is_compared_against_its_duration() {
        assert_eq!(class(failed(), Some(0)), Some(ReconClass::Exact));
        assert_eq!(
            class(failed(), Some(2_000)),
            Some(ReconClass::WithinTolerance)
        );
        assert_eq!(class(failed(), Some(2_001)), Some(ReconClass::Mismatch));
    }

    /// A carrier duration with no platform record is missing a platform record.
    #[test]
    fn carrier_only_is_missing_platform_record() {
        assert_eq!(
            class(None, Some(60_000)),
            Some(ReconClass::MissingPlatformRecord)
        );
        assert_eq!(
            class(None, Some(0)),
            Some(ReconClass::MissingPlatformRecord)
        );
    }

    /// With neither side there is nothing to classify.
    #[test]
    fn neither_side_is_not_compared() {
        assert_eq!(class(None, None), None);
    }

    /// `ALL` lists every class once, in declaration (and `Ord`) order.
    #[test]
    fn all_lists_every_class_in_order() {
        for (i, class) in ReconClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i);
        }
        assert!(ReconClass::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    /// Counts, both duration totals and the percentage match a hand-computed fixture.
    #[test]
    fn totals_and_percentage_match_hand_computed_fixture() {
        // class                   platform    carrier
        // Exact                     60_000     60_000
        // WithinTolerance           30_000     31_500
        // Mismatch (failed call)         0      5_000
        // Mismatch                 100_000    106_000
        // MissingCarrierRecord      10_000          -
        // MissingPlatformRecord          -      4_000
        // platform = 60_000 + 30_000 + 0 + 100_000 + 10_000          = 200_000
        // carrier  = 60_000 + 31_500 + 5_000 + 106_000 + 4_000       = 206_500
        // percent  = (206_500 - 200_000) / 200_000 * 100 = 6_500 / 2_000 = 3.25
        let fixture = [
            (ok(60_000), Some(60_000)),
            (ok(30_000), Some(31_500)),
            (failed(), Some(5_000)),
            (ok(100_000), Some(106_000)),
            (ok(10_000), None),
            (None, Some(4_000)),
            (failed(), None), // not compared: adds nothing
        ];
        let mut totals = ReconTotals::default();
        for (platform, carrier_ms) in fixture {
            if let Some(class) = class(platform, carrier_ms) {
                totals.add(class, platform.map(|p| p.duration_ms), carrier_ms);
            }
        }
        assert_eq!(totals.count(ReconClass::Exact), 1);
        assert_eq!(totals.count(ReconClass::WithinTolerance), 1);
        assert_eq!(totals.count(ReconClass::Mismatch), 2);
        assert_eq!(totals.count(ReconClass::MissingCarrierRecord), 1);
        assert_eq!(totals.count(ReconClass::MissingPlatformRecord), 1);
        assert_eq!(totals.platform_ms(), 200_000);
        assert_eq!(totals.carrier_ms(), 206_500);
        assert!((totals.difference_percent() - 3.25).abs() < 1e-9);
    }

    /// A duration passed for the side a class lacks is not summed.
    #[test]
    fn add_ignores_the_side_a_class_lacks() {
        let mut totals = ReconTotals::default();
        totals.add(ReconClass::MissingCarrierRecord, Some(10_000), Some(7_000));
        totals.add(ReconClass::MissingPlatformRecord, Some(3_000), Some(4_000));
        assert_eq!(totals.platform_ms(), 10_000);
        assert_eq!(totals.carrier_ms(), 4_000);
    }

    /// The carrier reporting less time than the platform gives a negative percentage.
    #[test]
    fn carrier_short_of_platform_gives_negative_percentage() {
        // (90_000 - 120_000) / 120_000 * 100 = -25
        let mut totals = ReconTotals::default();
        totals.add(ReconClass::Mismatch, Some(120_000), Some(90_000));
        assert!((totals.difference_percent() + 25.0).abs() < 1e-9);
    }

    /// With a platform total of 0 the percentage is 0, even when the carrier reports time.
    #[test]
    fn zero_platform_total_gives_zero_percent() {
        let mut totals = ReconTotals::default();
        assert_eq!(totals.difference_percent(), 0.0);
        totals.add(ReconClass::MissingPlatformRecord, None, Some(60_000));
        totals.add(ReconClass::Mismatch, Some(0), Some(5_000));
        assert_eq!(totals.platform_ms(), 0);
        assert_eq!(totals.carrier_ms(), 65_000);
        assert_eq!(totals.difference_percent(), 0.0);
    }

    /// Totals saturate at the largest value instead of panicking on overflow.
    #[test]
    fn totals_saturate_instead_of_overflowing() {
        let mut totals = ReconTotals::default();
        totals.add(ReconClass::Exact, Some(i64::MAX), Some(i64::MAX));
        totals.add(ReconClass::Exact, Some(1), Some(1));
        assert_eq!(totals.platform_ms(), i64::MAX);
        assert_eq!(totals.carrier_ms(), i64::MAX);
        assert_eq!(totals.count(ReconClass::Exact), 2);
    }
}
