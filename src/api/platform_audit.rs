//! What the audit log keeps of each PlatformService write: the caller, the request's key
//! fields (ids, counts; phone numbers masked, assignment targets and SIP URIs left out) and,
//! once it ends, the outcome.

use tonic::Status;

use super::audited::platform_identity;
use crate::domain::audit::AuditEvent;
use crate::pb::v1 as pb;
use crate::telemetry::mask_number;

/// The start of the audit event of platform caller `name` doing `action`.
pub(crate) fn write(name: &str, action: &str) -> AuditEvent {
    AuditEvent::new(platform_identity(name), action, "")
}

/// The event with `number` (masked) as a detail.
fn with_number(event: AuditEvent, number: &str) -> AuditEvent {
    event.detail("number", mask_number(number))
}

/// `CreateCarrier`: the carrier and its SIP domain.
pub(crate) fn create_carrier(name: &str, r: &pb::CreateCarrierRequest) -> AuditEvent {
    write(name, "CreateCarrier")
        .carrier(&r.carrier_id)
        .detail("sip_domain", &r.sip_domain)
}

/// `SetCarrierStatus`: the carrier and the status asked for.
pub(crate) fn set_carrier_status(name: &str, r: &pb::SetCarrierStatusRequest) -> AuditEvent {
    let status = pb::CarrierStatus::try_from(r.status)
        .map_or_else(|_| r.status.to_string(), |s| s.as_str_name().to_owned());
    write(name, "SetCarrierStatus")
        .carrier(&r.carrier_id)
        .detail("status", status)
}

/// `ProvisionNumbers`: carrier, tenant and how many numbers.
pub(crate) fn provision(name: &str, r: &pb::ProvisionNumbersRequest) -> AuditEvent {
    write(name, "ProvisionNumbers")
        .carrier(&r.carrier_id)
        .tenant(&r.tenant_id)
        .count(r.numbers.len() as i64)
}

/// `AssignNumber`: the number, masked (the target and SIP URI are personal and left out).
pub(crate) fn assign(name: &str, r: &pb::AssignNumberRequest) -> AuditEvent {
    with_number(write(name, "AssignNumber"), &r.number)
}

/// `UnassignNumber`: the number, masked.
pub(crate) fn unassign(name: &str, r: &pb::UnassignNumberRequest) -> AuditEvent {
    with_number(write(name, "UnassignNumber"), &r.number)
}

/// `ReleaseNumbers`: how many numbers.
pub(crate) fn release(name: &str, r: &pb::ReleaseNumbersRequest) -> AuditEvent {
    write(name, "ReleaseNumbers").count(r.numbers.len() as i64)
}

/// The event with the outcome of `result`, and with the carrier and tenant of the number a
/// number write changed (known only from the response).
pub(crate) fn finish<T>(mut event: AuditEvent, result: &Result<T, Status>) -> AuditEvent {
    event.time_ms = crate::store::now_ms();
    event.outcome = match result {
        Ok(_) => "OK".to_owned(),
        Err(status) => crate::rpc_log::code_name(status.code()).to_owned(),
    };
    event
}

/// The carrier and tenant of `number`, for number writes.
pub(crate) fn about(event: AuditEvent, number: Option<&pb::TelephoneNumber>) -> AuditEvent {
    match number {
        Some(n) => event.tenant(&n.tenant_id),
        None => event,
    }
}
