//! Ingestion and upload tallies as the summaries the wire returns.

use super::time::timestamp;
use crate::domain::durations::{Rejection, RejectionKind, Tally};
use crate::pb::v1 as pb;

fn rejection_to_pb(r: &Rejection) -> pb::RecordRejection {
    pb::RecordRejection {
        index: r.index,
        call_id: r.call_id.clone(),
        field: r.field.clone(),
        reason: match r.kind {
            RejectionKind::InvalidField => pb::RejectionReason::InvalidField,
            RejectionKind::Conflict => pb::RejectionReason::Conflict,
            RejectionKind::CarrierUnknown => pb::RejectionReason::CarrierUnknown,
        } as i32,
        description: r.description.clone(),
    }
}

/// A tally as the ingestion summary of PlatformService.
pub(crate) fn ingestion_summary(t: &Tally) -> pb::IngestionSummary {
    pb::IngestionSummary {
        received: t.received,
        accepted: t.accepted,
        duplicates: t.duplicates,
        rejected: t.rejected,
        rejections: t.rejections.iter().map(rejection_to_pb).collect(),
    }
}

/// A tally as the upload summary of CallDurationService.
pub(crate) fn upload_summary(
    upload_id: &str,
    t: &Tally,
    complete_time_ms: i64,
) -> pb::UploadSummary {
    pb::UploadSummary {
        upload_id: upload_id.to_owned(),
        received: t.received,
        accepted: t.accepted,
        duplicates: t.duplicates,
        rejected: t.rejected,
        rejections: t.rejections.iter().map(rejection_to_pb).collect(),
        complete_time: Some(timestamp(complete_time_ms)),
        redacted: t.redacted,
    }
}
