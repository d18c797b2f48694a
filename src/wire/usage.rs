//! Usage between the wire and the domain: granularity in, figures out.

use super::time::{duration_from_ms, timestamp};
use crate::domain::usage::{DurationSource, Granularity, UsageFigure};
use crate::pb::v1 as pb;

/// The granularity of a usage summary; unspecified is a day.
pub(crate) fn granularity_from_pb(raw: i32) -> Result<Granularity, String> {
    match pb::UsageGranularity::try_from(raw) {
        Ok(pb::UsageGranularity::Unspecified | pb::UsageGranularity::Day) => Ok(Granularity::Day),
        Ok(pb::UsageGranularity::Month) => Ok(Granularity::Month),
        Err(_) => Err("must be USAGE_GRANULARITY_DAY or USAGE_GRANULARITY_MONTH".into()),
    }
}

/// One figure of a usage summary.
pub(crate) fn usage_figure_to_pb(f: &UsageFigure) -> pb::UsageFigure {
    pb::UsageFigure {
        number: f.number.clone(),
        period_start: Some(timestamp(f.period_start_ms)),
        duration_source: match f.source {
            DurationSource::Operator => pb::DurationSource::Operator,
            DurationSource::Platform => pb::DurationSource::Platform,
        } as i32,
        calls: f.calls,
        total_duration: Some(duration_from_ms(f.total_ms)),
        minutes: f.minutes(),
    }
}
