//! Numbers, events and carriers between the domain and the wire.

use std::collections::BTreeSet;

use super::time::timestamp;
use crate::domain::Violations;
use crate::domain::carrier::{Carrier, CarrierStatus};
use crate::domain::number::NumberEvent;
use crate::domain::number::{Capability, EventKind, NumberState, NumberStatus, NumberUsage};
use crate::pb::v1 as pb;

// === Wire → domain ===

/// Capabilities of a provisioning, each known, duplicates folded; at least one.
pub(crate) fn parse_capabilities(v: &mut Violations, raw: &[i32]) -> Vec<Capability> {
    if raw.is_empty() {
        v.push("capabilities", "must name at least one capability");
    }
    let mut caps = BTreeSet::new();
    for (i, c) in raw.iter().enumerate() {
        let cap = match pb::NumberCapability::try_from(*c) {
            Ok(pb::NumberCapability::InboundCalling) => Capability::InboundCalling,
            Ok(pb::NumberCapability::OutboundCalling) => Capability::OutboundCalling,
            Ok(pb::NumberCapability::InboundSms) => Capability::InboundSms,
            Ok(pb::NumberCapability::OutboundSms) => Capability::OutboundSms,
            _ => {
                v.push(
                    format!("capabilities[{i}]"),
                    format!("unknown capability {c}"),
                );
                continue;
            }
        };
        caps.insert(cap);
    }
    caps.into_iter().collect()
}

/// A number's usage in an assignment.
pub(crate) fn usage_from_pb(raw: i32) -> Result<NumberUsage, String> {
    match pb::NumberUsage::try_from(raw) {
        Ok(pb::NumberUsage::CallingUser) => Ok(NumberUsage::CallingUser),
        Ok(pb::NumberUsage::VoiceApp) => Ok(NumberUsage::VoiceApp),
        Ok(pb::NumberUsage::Conference) => Ok(NumberUsage::Conference),
        _ => Err("must be CALLING_USER, VOICE_APP or CONFERENCE".to_owned()),
    }
}

/// A carrier status to set.
pub(crate) fn carrier_status_from_pb(raw: i32) -> Result<CarrierStatus, String> {
    match pb::CarrierStatus::try_from(raw) {
        Ok(pb::CarrierStatus::Active) => Ok(CarrierStatus::Active),
        Ok(pb::CarrierStatus::Suspended) => Ok(CarrierStatus::Suspended),
        _ => Err("must be ACTIVE or SUSPENDED".to_owned()),
    }
}

/// A status filter: unspecified is no filter.
pub(crate) fn status_filter_from_pb(raw: i32) -> Result<Option<NumberStatus>, String> {
    match pb::NumberStatus::try_from(raw) {
        Ok(pb::NumberStatus::Unspecified) => Ok(None),
        Ok(pb::NumberStatus::Provisioned) => Ok(Some(NumberStatus::Provisioned)),
        Ok(pb::NumberStatus::Assigned) => Ok(Some(NumberStatus::Assigned)),
        Ok(pb::NumberStatus::Released) => Ok(Some(NumberStatus::Released)),
        Err(_) => Err(format!("unknown status {raw}")),
    }
}

// === Domain → wire ===

pub(crate) fn status_to_pb(status: NumberStatus) -> pb::NumberStatus {
    match status {
        NumberStatus::Provisioned => pb::NumberStatus::Provisioned,
        NumberStatus::Assigned => pb::NumberStatus::Assigned,
        NumberStatus::Released => pb::NumberStatus::Released,
    }
}

pub(crate) fn usage_to_pb(usage: NumberUsage) -> pb::NumberUsage {
    match usage {
        NumberUsage::CallingUser => pb::NumberUsage::CallingUser,
        NumberUsage::VoiceApp => pb::NumberUsage::VoiceApp,
        NumberUsage::Conference => pb::NumberUsage::Conference,
    }
}

pub(crate) fn capability_to_pb(c: Capability) -> pb::NumberCapability {
    match c {
        Capability::InboundCalling => pb::NumberCapability::InboundCalling,
        Capability::OutboundCalling => pb::NumberCapability::OutboundCalling,
        Capability::InboundSms => pb::NumberCapability::InboundSms,
        Capability::OutboundSms => pb::NumberCapability::OutboundSms,
    }
}

pub(crate) fn event_kind_to_pb(kind: EventKind) -> pb::NumberEventType {
    match kind {
        EventKind::Provisioned => pb::NumberEventType::Provisioned,
        EventKind::Assigned => pb::NumberEventType::Assigned,
        EventKind::Updated => pb::NumberEventType::Updated,
        EventKind::Unassigned => pb::NumberEventType::Unassigned,
        EventKind::Released => pb::NumberEventType::Released,
    }
}

impl From<&NumberState> for pb::TelephoneNumber {
    fn from(s: &NumberState) -> Self {
        let a = s.assignment.as_ref();
        Self {
            number: s.number.to_string(),
            tenant_id: s.tenant_id.as_str().to_owned(),
            status: status_to_pb(s.status) as i32,
            usage: a.map_or(pb::NumberUsage::Unspecified, |a| usage_to_pb(a.usage)) as i32,
            capabilities: s
                .capabilities
                .iter()
                .map(|c| capability_to_pb(*c) as i32)
                .collect(),
            assignment_target_id: a.map(|a| a.target_id.clone()).unwrap_or_default(),
            sip_uri: a.map(|a| a.sip_uri.as_str().to_owned()).unwrap_or_default(),
            calling_profile_id: a.map(|a| a.calling_profile_id.clone()).unwrap_or_default(),
            location_id: a.map(|a| a.location_id.clone()).unwrap_or_default(),
            iso_country_code: s.iso_country_code.clone(),
            update_time: Some(timestamp(s.update_time_ms)),
            revision: s.revision,
            redacted: s.redacted,
        }
    }
}

impl From<&NumberEvent> for pb::NumberEvent {
    fn from(e: &NumberEvent) -> Self {
        Self {
            revision: e.revision,
            r#type: event_kind_to_pb(e.kind) as i32,
            number: Some((&e.state).into()),
            previous: e.previous.as_ref().map(Into::into),
            commit_time: Some(timestamp(e.commit_time_ms)),
        }
    }
}

impl From<&Carrier> for pb::Carrier {
    fn from(c: &Carrier) -> Self {
        Self {
            carrier_id: c.id.to_string(),
            display_name: c.display_name.clone(),
            sip_domain: c.sip_domain.as_str().to_owned(),
            status: match c.status {
                CarrierStatus::Active => pb::CarrierStatus::Active,
                CarrierStatus::Suspended => pb::CarrierStatus::Suspended,
            } as i32,
            create_time: Some(timestamp(c.create_time_ms)),
            number_revision: c.number_revision,
        }
    }
}
