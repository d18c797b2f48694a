//! Quality classification of a media stream: the Teams call-quality thresholds applied to a
//! stream's average metrics.

use super::records::{Classification, PoorReason, QualityMetrics};

/// Above this average network MOS degradation (MOS points) a stream is poor.
pub const MAX_AUDIO_DEGRADATION: f64 = 1.0;
/// Above this average round-trip time (milliseconds) a stream is poor.
pub const MAX_ROUND_TRIP_MS: f64 = 500.0;
/// Above this average packet loss rate (0 to 1) a stream is poor.
pub const MAX_PACKET_LOSS_RATE: f64 = 0.1;
/// Above this average jitter (milliseconds) a stream is poor.
pub const MAX_JITTER_MS: f64 = 30.0;
/// Above this average ratio of concealed samples (0 to 1) a stream is poor.
pub const MAX_CONCEALED_RATIO: f64 = 0.07;

/// Applies the thresholds to the *average* metrics (`avg_audio_degradation`,
/// `avg_round_trip_ms`, `avg_packet_loss_rate`, `avg_jitter_ms`, `avg_concealed_ratio`).
///
/// The stream is [`Classification::Poor`], with its reasons in [`PoorReason`]'s declaration
/// order, if any present metric is strictly above its threshold; otherwise
/// [`Classification::Unclassified`] if any of the five is missing; otherwise
/// [`Classification::Good`]. A NaN cannot be judged, so it counts as missing. The maxima play
/// no part: the dashboards' thresholds are defined on averages.
pub fn classify(metrics: &QualityMetrics) -> Classification {
    let checks = [
        (
            metrics.avg_audio_degradation,
            MAX_AUDIO_DEGRADATION,
            PoorReason::AudioDegradation,
        ),
        (
            metrics.avg_round_trip_ms,
            MAX_ROUND_TRIP_MS,
            PoorReason::RoundTrip,
        ),
        (
            metrics.avg_packet_loss_rate,
            MAX_PACKET_LOSS_RATE,
            PoorReason::PacketLoss,
        ),
        (metrics.avg_jitter_ms, MAX_JITTER_MS, PoorReason::Jitter),
        (
            metrics.avg_concealed_ratio,
            MAX_CONCEALED_RATIO,
            PoorReason::ConcealedRatio,
        ),
    ];
    let reasons: Vec<PoorReason> = checks
        .iter()
        .filter(|(value, limit, _)| value.is_some_and(|v| v > *limit))
        .map(|(_, _, reason)| *reason)
        .collect();
    if !reasons.is_empty() {
        Classification::Poor(reasons)
    } else if checks
        .iter()
        .any(|(value, _, _)| value.is_none_or(f64::is_nan))
    {
        Classification::Unclassified
    } else {
        Classification::Good
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metrics with every average present and comfortably good.
    fn good() -> QualityMetrics {
        QualityMetrics {
            avg_jitter_ms: Some(5.0),
            max_jitter_ms: Some(12.0),
            avg_round_trip_ms: Some(40.0),
            max_round_trip_ms: Some(90.0),
            avg_packet_loss_rate: Some(0.01),
            max_packet_loss_rate: Some(0.05),
            avg_audio_degradation: Some(0.2),
            avg_concealed_ratio: Some(0.01),
        }
    }

    /// Sets one average metric, chosen by its reason, to `value`.
    fn with(reason: PoorReason, value: Option<f64>) -> QualityMetrics {
        let mut m = good();
        match reason {
            PoorReason::AudioDegradation => m.avg_audio_degradation = value,
            PoorReason::RoundTrip => m.avg_round_trip_ms = value,
            PoorReason::PacketLoss => m.avg_packet_loss_rate = value,
            PoorReason::Jitter => m.avg_jitter_ms = value,
            PoorReason::ConcealedRatio => m.avg_concealed_ratio = value,
        }
        m
    }

    /// Every reason with its threshold, in declaration order.
    const LIMITS: [(PoorReason, f64); 5] = [
        (PoorReason::AudioDegradation, MAX_AUDIO_DEGRADATION),
        (PoorReason::RoundTrip, MAX_ROUND_TRIP_MS),
        (PoorReason::PacketLoss, MAX_PACKET_LOSS_RATE),
        (PoorReason::Jitter, MAX_JITTER_MS),
        (PoorReason::ConcealedRatio, MAX_CONCEALED_RATIO),
    ];

    /// A stream with every metric present and within its threshold is good.
    #[test]
    fn all_metrics_good_is_good() {
        assert_eq!(classify(&good()), Classification::Good);
    }

    /// A metric exactly at its threshold is not poor: the thresholds are exclusive.
    #[test]
    fn exactly_at_each_threshold_is_not_poor() {
        for (reason, limit) in LIMITS {
            assert_eq!(
                classify(&with(reason, Some(limit))),
                Classification::Good,
                "{reason:?} at {limit}"
            );
        }
    }

    /// The next representable value above each threshold makes the stream poor for that reason.
    #[test]
    fn just_above_each_threshold_is_poor() {
        for (reason, limit) in LIMITS {
            assert_eq!(
                classify(&with(reason, Some(limit.next_up()))),
                Classification::Poor(vec![reason]),
                "{reason:?} just above {limit}"
            );
        }
    }

    /// Practical values just past a threshold (500.001 ms, +1e-9) count as poor.
    #[test]
    fn small_excesses_are_poor() {
        assert_eq!(
            classify(&with(PoorReason::RoundTrip, Some(500.001))),
            Classification::Poor(vec![PoorReason::RoundTrip])
        );
        assert_eq!(
            classify(&with(PoorReason::Jitter, Some(30.001))),
            Classification::Poor(vec![PoorReason::Jitter])
        );
        assert_eq!(
            classify(&with(PoorReason::PacketLoss, Some(0.1 + 1e-9))),
            Classification::Poor(vec![PoorReason::PacketLoss])
        );
        assert_eq!(
            classify(&with(PoorReason::AudioDegradation, Some(1.0 + 1e-9))),
            Classification::Poor(vec![PoorReason::AudioDegradation])
        );
        assert_eq!(
            classify(&with(PoorReason::ConcealedRatio, Some(0.07 + 1e-9))),
            Classification::Poor(vec![PoorReason::ConcealedRatio])
        );
    }

    /// Several metrics past their thresholds give every reason, in declaration order.
    #[test]
    fn several_reasons_are_listed_in_order() {
        let metrics = QualityMetrics {
            avg_concealed_ratio: Some(0.5),
            avg_jitter_ms: Some(80.0),
            avg_audio_degradation: Some(2.5),
            ..good()
        };
        assert_eq!(
            classify(&metrics),
            Classification::Poor(vec![
                PoorReason::AudioDegradation,
                PoorReason::Jitter,
                PoorReason::ConcealedRatio,
            ])
        );
        let all_bad = QualityMetrics {
            avg_jitter_ms: Some(31.0),
            avg_round_trip_ms: Some(501.0),
            avg_packet_loss_rate: Some(0.2),
            avg_audio_degradation: Some(1.1),
            avg_concealed_ratio: Some(0.08),
            ..good()
        };
        assert_eq!(
            classify(&all_bad),
            Classification::Poor(LIMITS.iter().map(|(r, _)| *r).collect())
        );
    }

    /// One missing metric with the others fine leaves the stream unclassified.
    #[test]
    fn one_missing_metric_is_unclassified() {
        for (reason, _) in LIMITS {
            assert_eq!(
                classify(&with(reason, None)),
                Classification::Unclassified,
                "{reason:?} missing"
            );
        }
    }

    /// A missing metric does not hide another metric that is past its threshold.
    #[test]
    fn missing_metric_and_poor_metric_is_poor() {
        let metrics = QualityMetrics {
            avg_jitter_ms: None,
            avg_round_trip_ms: Some(900.0),
            ..good()
        };
        assert_eq!(
            classify(&metrics),
            Classification::Poor(vec![PoorReason::RoundTrip])
        );
    }

    /// A stream without any metric is unclassified.
    #[test]
    fn all_missing_is_unclassified() {
        assert_eq!(
            classify(&QualityMetrics::default()),
            Classification::Unclassified
        );
    }

    /// Only averages are judged: maxima far past the thresholds do not make a stream poor.
    #[test]
    fn maxima_are_not_judged() {
        let metrics = QualityMetrics {
            max_jitter_ms: Some(1000.0),
            max_round_trip_ms: Some(5000.0),
            max_packet_loss_rate: Some(1.0),
            ..good()
        };
        assert_eq!(classify(&metrics), Classification::Good);
    }

    /// A NaN average cannot be judged and counts as missing; an infinite one is poor.
    #[test]
    fn nan_counts_as_missing_and_infinity_as_poor() {
        assert_eq!(
            classify(&with(PoorReason::Jitter, Some(f64::NAN))),
            Classification::Unclassified
        );
        assert_eq!(
            classify(&with(PoorReason::Jitter, Some(f64::INFINITY))),
            Classification::Poor(vec![PoorReason::Jitter])
        );
    }
}
