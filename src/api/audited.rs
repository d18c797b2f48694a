//! What the audit log keeps of a carrier's reads and uploads: who, which RPC, the request's
//! filters (already validated, so bounded), and for uploads the summary's counts. Never record
//! content.

use crate::domain::audit::AuditEvent;
use crate::domain::durations::Tally;
use crate::domain::ids::CarrierId;
use crate::pb::v1 as pb;

/// The identity a carrier acts as in the audit log.
pub(crate) fn carrier_identity(carrier: &CarrierId) -> String {
    format!("carrier/{carrier}")
}

/// The identity a platform caller acts as in the audit log.
pub(crate) fn platform_identity(name: &str) -> String {
    format!("platform/{name}")
}

fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    crate::wire::time::optional_time_ms(ts)
        .ok()
        .flatten()
        .map(|ms| ms.to_string())
}

/// The start of the audit event of a record stream (`action` is the RPC) with `options`.
pub(crate) fn record_read(
    action: &str,
    carrier: &CarrierId,
    options: Option<&pb::RecordStreamOptions>,
) -> AuditEvent {
    let mut event =
        AuditEvent::new(carrier_identity(carrier), action, "").carrier(carrier.as_str());
    if let Some(o) = options {
        event = event.tenant(o.tenant_id.clone());
        if let Some(c) = o.after_cursor {
            event = event.detail("after_cursor", c);
        }
        if let Some(ms) = timestamp(o.start_time.as_ref()) {
            event = event.detail("start_time_ms", ms);
        }
        if let Some(ms) = timestamp(o.end_time.as_ref()) {
            event = event.detail("end_time_ms", ms);
        }
        if o.follow {
            event = event.detail("follow", true);
        }
        if o.max_records > 0 {
            event = event.detail("max_records", o.max_records);
        }
    }
    event
}

/// The start of the audit event of a number watch.
pub(crate) fn watch_read(carrier: &CarrierId, req: &pb::WatchNumbersRequest) -> AuditEvent {
    let mut event = AuditEvent::new(carrier_identity(carrier), "WatchNumbers", "")
        .carrier(carrier.as_str())
        .tenant(req.tenant_id.clone());
    if let Some(r) = req.start_revision {
        event = event.detail("start_revision", r);
    }
    if req.include_snapshot {
        event = event.detail("include_snapshot", true);
    }
    event
}

/// The start of the audit event of a carrier's discrepancy stream.
pub(crate) fn discrepancy_read(
    carrier: &CarrierId,
    window: Option<&pb::ReconciliationWindow>,
) -> AuditEvent {
    let mut event = AuditEvent::new(carrier_identity(carrier), "ListDiscrepancies", "")
        .carrier(carrier.as_str());
    if let Some(w) = window {
        if let Some(ms) = timestamp(w.start_time.as_ref()) {
            event = event.detail("start_time_ms", ms);
        }
        if let Some(ms) = timestamp(w.end_time.as_ref()) {
            event = event.detail("end_time_ms", ms);
        }
    }
    event
}

/// The audit event of an upload or ingestion stream that ended with `outcome`: its counts.
pub(crate) fn upload(identity: String, action: &str, outcome: &str, tally: &Tally) -> AuditEvent {
    AuditEvent::new(identity, action, outcome)
        .count(tally.received)
        .detail("accepted", tally.accepted)
        .detail("duplicates", tally.duplicates)
        .detail("rejected", tally.rejected)
}
