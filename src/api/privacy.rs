//! The data-protection RPCs of `PlatformService` (DESIGN §8): tenant erasure, the audit log's
//! listing, and each retention class's status. Export streams are in `export.rs`.

use tonic::Status;

use super::audited::platform_identity;
use super::page_token::{decode_page_token, encode_page_token, page_size};
use super::stream::Streams;
use crate::domain::Violations;
use crate::domain::audit::{AuditEvent, AuditFilter};
use crate::domain::ids::{CarrierId, TenantId};
use crate::error::{ApiError, ApiResult};
use crate::pb::v1 as pb;
use crate::retention::{DataClass, RetentionPolicy};
use crate::store::{Erased, Store};
use crate::wire::time::{duration_from_ms, optional_time_ms, timestamp};

/// Longest erasure reason, in characters.
const MAX_REASON_CHARS: usize = 500;
/// Longest identity filter, in characters.
const MAX_IDENTITY_CHARS: usize = 200;

/// A reason: 1 to [`MAX_REASON_CHARS`] characters, none of them control characters.
fn parse_reason(raw: &str) -> Result<String, String> {
    let chars = raw.chars().count();
    if chars == 0 || chars > MAX_REASON_CHARS || raw.chars().any(char::is_control) {
        return Err(format!(
            "must be 1 to {MAX_REASON_CHARS} characters without control characters"
        ));
    }
    Ok(raw.to_owned())
}

/// `EraseTenantData`: refused while the tenant has assigned numbers; otherwise redacts
/// everything of the tenant and audits the run with its counts and reason.
pub(crate) async fn erase(
    store: &Store,
    streams: &Streams,
    caller: &str,
    req: pb::EraseTenantDataRequest,
) -> Result<pb::EraseTenantDataResponse, Status> {
    let mut v = Violations::default();
    let tenant = v.check("tenant_id", TenantId::parse(&req.tenant_id));
    let reason = v.check("reason", parse_reason(&req.reason));
    let (tenant, reason) = v
        .finish_with(|| Some((tenant?, reason?)))
        .map_err(ApiError::from)?;
    let event = AuditEvent::new(platform_identity(caller), "EraseTenantData", "")
        .tenant(tenant.as_str())
        .detail("reason", &reason);
    let result: ApiResult<Erased> = async {
        let assigned = store.assigned_numbers(&tenant).await?;
        if assigned > 0 {
            return Err(ApiError::tenant_has_assigned_numbers(assigned));
        }
        Ok(store.erase_tenant(&tenant).await?)
    }
    .await;
    let result = result.map_err(Status::from);
    let mut event = match &result {
        Ok(e) => event
            .count(i64::try_from(e.total()).unwrap_or(i64::MAX))
            .detail("call_records", e.call_records)
            .detail("quality_records", e.quality_records)
            .detail("durations", e.durations)
            .detail("number_events", e.number_events)
            .detail("numbers", e.numbers)
            .detail("upload_summaries", e.upload_summaries),
        Err(_) => event,
    };
    event.time_ms = crate::store::now_ms();
    event.outcome = match &result {
        Ok(_) => "OK".into(),
        Err(status) => crate::rpc_log::code_name(status.code()).into(),
    };
    streams.audit(event).await;
    let erased = result?;
    tracing::info!(
        tenant = %tenant.as_str(),
        rows = erased.total(),
        "tenant data erased"
    );
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    Ok(pb::EraseTenantDataResponse {
        call_records: n(erased.call_records),
        quality_records: n(erased.quality_records),
        durations: n(erased.durations),
        number_events: n(erased.number_events),
        numbers: n(erased.numbers),
        upload_summaries: n(erased.upload_summaries),
    })
}

/// The filter of an audit listing, validated.
fn audit_filter(raw: Option<&pb::AuditFilter>) -> ApiResult<AuditFilter> {
    let default = pb::AuditFilter::default();
    let f = raw.unwrap_or(&default);
    let mut v = Violations::default();
    let from_ms = v
        .check("filter.start_time", optional_time_ms(f.start_time.as_ref()))
        .flatten();
    let before_ms = v
        .check("filter.end_time", optional_time_ms(f.end_time.as_ref()))
        .flatten();
    if f.identity.chars().count() > MAX_IDENTITY_CHARS {
        v.push(
            "filter.identity",
            format!("must be at most {MAX_IDENTITY_CHARS} characters"),
        );
    }
    let carrier = (!f.carrier_id.is_empty())
        .then(|| v.check("filter.carrier_id", CarrierId::parse(&f.carrier_id)))
        .flatten();
    let tenant = (!f.tenant_id.is_empty())
        .then(|| v.check("filter.tenant_id", TenantId::parse(&f.tenant_id)))
        .flatten();
    v.finish().map_err(ApiError::from)?;
    Ok(AuditFilter {
        from_ms,
        before_ms,
        identity: (!f.identity.is_empty()).then(|| f.identity.clone()),
        carrier_id: carrier.map(|c| c.to_string()),
        tenant_id: tenant.map(|t| t.as_str().to_owned()),
    })
}

fn audit_event_to_pb(id: i64, e: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id,
        time: Some(timestamp(e.time_ms)),
        identity: e.identity,
        action: e.action,
        carrier_id: e.carrier_id,
        tenant_id: e.tenant_id,
        outcome: e.outcome,
        first_position: e.first_position,
        last_position: e.last_position,
        record_count: e.record_count,
        details: e.details.into_iter().collect(),
    }
}

/// `ListAuditEvents`: one page of the log, after everything recorded on this instance so far
/// was written.
pub(crate) async fn list_audit(
    store: &Store,
    streams: &Streams,
    req: pb::ListAuditEventsRequest,
) -> ApiResult<pb::ListAuditEventsResponse> {
    let filter = audit_filter(req.filter.as_ref())?;
    let limit = page_size(req.page_size, 100, 1000).map_err(|v| ApiError::from(vec![v]))?;
    // Tokens are bound to the filter they were made for.
    let scope = format!("audit{filter:?}");
    let after = decode_page_token(&req.page_token, &scope)
        .map_err(|v| ApiError::from(vec![v]))?
        .map(|last| last.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::invalid("page_token", "is not a token of this listing"))?
        .unwrap_or(0);
    if after == 0 {
        streams.flush_audit().await;
    }
    let mut events = store.audit_page(&filter, after, limit + 1).await?;
    let more = events.len() as u64 > limit;
    events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_page_token = match events.last() {
        Some((id, _)) if more => encode_page_token(&scope, &id.to_string()),
        _ => String::new(),
    };
    Ok(pb::ListAuditEventsResponse {
        events: events
            .into_iter()
            .map(|(id, e)| audit_event_to_pb(id, e))
            .collect(),
        next_page_token,
    })
}

/// `GetRetentionStatus`: every class's period, oldest item and last purge.
pub(crate) async fn retention_status(
    store: &Store,
    policy: &RetentionPolicy,
) -> ApiResult<pb::GetRetentionStatusResponse> {
    let mut classes = Vec::new();
    for class in DataClass::ALL {
        let period_ms = i64::try_from(policy.period(class).as_millis()).unwrap_or(i64::MAX);
        let oldest = store.oldest_written(class.key()).await?;
        let last = store.last_purge(class.key()).await?;
        classes.push(pb::RetentionClassStatus {
            data_class: class.key().to_owned(),
            period: Some(duration_from_ms(period_ms)),
            oldest_item_time: oldest.map(timestamp),
            last_purge_time: last.as_ref().map(|l| timestamp(l.end_time_ms)),
            last_purge_outcome: last.as_ref().map(|l| l.outcome.clone()).unwrap_or_default(),
            last_purge_deleted: last.map_or(0, |l| l.deleted),
        });
    }
    Ok(pb::GetRetentionStatusResponse { classes })
}
