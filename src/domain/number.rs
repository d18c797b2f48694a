//! A telephone number's state and the rules of its life:
//! provisioned → assigned → (updated) → unassigned (provisioned again) → released.
//!
//! Each transition is a pure function from the current state to the next one plus the event
//! kind it emits, or `None` when the request changes nothing (an idempotent retry).

use serde::{Deserialize, Serialize};

use super::ids::{CarrierId, E164, SipUri, TenantId};

/// Where a number is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NumberStatus {
    /// Provisioned to a tenant, not assigned.
    Provisioned,
    /// Assigned in the Teams admin center.
    Assigned,
    /// Released; out of service at the platform.
    Released,
}

/// What an assigned number is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NumberUsage {
    /// A Teams user.
    CallingUser,
    /// A voice application.
    VoiceApp,
    /// A conferencing bridge.
    Conference,
}

/// A capability of a number in the carrier's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Capability {
    /// Calls from the PSTN.
    InboundCalling,
    /// Calls to the PSTN.
    OutboundCalling,
    /// SMS in (informational).
    InboundSms,
    /// SMS out (informational).
    OutboundSms,
}

/// The kind of a change to a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Provisioned (new, or again after release).
    Provisioned,
    /// Assigned.
    Assigned,
    /// Assignment changed.
    Updated,
    /// Unassigned.
    Unassigned,
    /// Released.
    Released,
}

impl EventKind {
    /// Stable code stored in the database.
    pub fn code(self) -> i16 {
        match self {
            Self::Provisioned => 1,
            Self::Assigned => 2,
            Self::Updated => 3,
            Self::Unassigned => 4,
            Self::Released => 5,
        }
    }

    /// The kind stored under `code`.
    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            1 => Self::Provisioned,
            2 => Self::Assigned,
            3 => Self::Updated,
            4 => Self::Unassigned,
            5 => Self::Released,
            _ => return None,
        })
    }
}

/// The assignment of a number: what it is assigned to and where calls go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// What the number is used for.
    pub usage: NumberUsage,
    /// Opaque id of the user, app or bridge.
    pub target_id: String,
    /// Where the carrier routes calls for the number.
    pub sip_uri: SipUri,
    /// Opaque calling profile id; may be empty.
    pub calling_profile_id: String,
    /// Opaque emergency location id; may be empty.
    pub location_id: String,
}

/// The full state of a number, as stored and as sent to carriers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberState {
    /// The number.
    pub number: E164,
    /// The carrier that owns it, for good.
    pub carrier_id: CarrierId,
    /// The tenant it is (or was last) provisioned to.
    pub tenant_id: TenantId,
    /// Where it is in its life.
    pub status: NumberStatus,
    /// Capabilities, sorted and distinct.
    pub capabilities: Vec<Capability>,
    /// ISO country code or empty.
    pub iso_country_code: String,
    /// The assignment, present exactly when `status` is `Assigned`.
    pub assignment: Option<Assignment>,
    /// When it last changed (Unix milliseconds).
    pub update_time_ms: i64,
    /// Revision of its last change.
    pub revision: i64,
    /// Whether the tenant's personal data was erased: an assignment's target and SIP URI are
    /// then empty. A new assignment clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

/// What a provisioning request asks for one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioning {
    /// Target tenant.
    pub tenant_id: TenantId,
    /// Capabilities, sorted and distinct.
    pub capabilities: Vec<Capability>,
    /// ISO country code or empty.
    pub iso_country_code: String,
}

/// Why a transition is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    /// The number is provisioned or assigned already (to something else).
    AlreadyProvisioned,
    /// The number belongs to another carrier.
    OwnedByOtherCarrier,
    /// A released number cannot be assigned.
    NotAssignable,
    /// Only an assigned number can be unassigned.
    NotAssigned,
}

/// A state change: the event kind and the state after it.
pub type Transition = Option<(EventKind, NumberState)>;

/// Provisions `number` (whose current state is `current`, if it exists) for `carrier`.
pub fn provision(
    current: Option<&NumberState>,
    number: &E164,
    carrier: &CarrierId,
    request: &Provisioning,
    now_ms: i64,
) -> Result<Transition, TransitionError> {
    let fresh = NumberState {
        number: number.clone(),
        carrier_id: carrier.clone(),
        tenant_id: request.tenant_id.clone(),
        status: NumberStatus::Provisioned,
        capabilities: request.capabilities.clone(),
        iso_country_code: request.iso_country_code.clone(),
        assignment: None,
        update_time_ms: now_ms,
        revision: 0,
        redacted: false,
    };
    let Some(current) = current else {
        return Ok(Some((EventKind::Provisioned, fresh)));
    };
    if &current.carrier_id != carrier {
        return Err(TransitionError::OwnedByOtherCarrier);
    }
    match current.status {
        NumberStatus::Released => Ok(Some((EventKind::Provisioned, fresh))),
        NumberStatus::Provisioned | NumberStatus::Assigned => {
            let same = current.tenant_id == request.tenant_id
                && current.capabilities == request.capabilities
                && current.iso_country_code == request.iso_country_code;
            if same {
                Ok(None)
            } else {
                Err(TransitionError::AlreadyProvisioned)
            }
        }
    }
}

/// Assigns a number, or changes its assignment.
pub fn assign(
    current: &NumberState,
    assignment: Assignment,
    now_ms: i64,
) -> Result<Transition, TransitionError> {
    let kind = match current.status {
        NumberStatus::Released => return Err(TransitionError::NotAssignable),
        NumberStatus::Assigned if current.assignment.as_ref() == Some(&assignment) => {
            return Ok(None);
        }
        NumberStatus::Assigned => EventKind::Updated,
        NumberStatus::Provisioned => EventKind::Assigned,
    };
    let mut next = current.clone();
    next.status = NumberStatus::Assigned;
    next.assignment = Some(assignment);
    next.redacted = false;
    next.update_time_ms = now_ms;
    Ok(Some((kind, next)))
}

/// Unassigns an assigned number.
pub fn unassign(current: &NumberState, now_ms: i64) -> Result<Transition, TransitionError> {
    if current.status != NumberStatus::Assigned {
        return Err(TransitionError::NotAssigned);
    }
    let mut next = current.clone();
    next.status = NumberStatus::Provisioned;
    next.assignment = None;
    next.update_time_ms = now_ms;
    Ok(Some((EventKind::Unassigned, next)))
}

/// Releases a number (unassigning it if needed); releasing a released number changes nothing.
pub fn release(current: &NumberState, now_ms: i64) -> Transition {
    if current.status == NumberStatus::Released {
        return None;
    }
    let mut next = current.clone();
    next.status = NumberStatus::Released;
    next.assignment = None;
    next.update_time_ms = now_ms;
    Some((EventKind::Released, next))
}

/// Filters of a number listing or watch.
#[derive(Debug, Clone, Default)]
pub struct NumberFilter {
    /// Only this tenant.
    pub tenant_id: Option<TenantId>,
    /// Only this status.
    pub status: Option<NumberStatus>,
}

impl NumberFilter {
    /// Whether `state` passes the filter.
    pub fn matches(&self, state: &NumberState) -> bool {
        self.admits(&state.tenant_id, state.status)
    }

    /// Whether a number of `tenant_id` in `status` passes the filter.
    pub fn admits(&self, tenant_id: &TenantId, status: NumberStatus) -> bool {
        self.tenant_id.as_ref().is_none_or(|t| tenant_id == t)
            && self.status.is_none_or(|s| status == s)
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct NumberPage {
    /// The numbers, ascending.
    pub numbers: Vec<NumberState>,
    /// Whether more numbers follow the last one.
    pub more: bool,
    /// The carrier's revision when the page was read.
    pub revision: i64,
}

/// One entry of a carrier's number-event log.
#[derive(Debug, Clone)]
pub struct NumberEvent {
    /// Gapless per-carrier revision.
    pub revision: i64,
    /// What happened.
    pub kind: EventKind,
    /// The number after the event.
    pub state: NumberState,
    /// The number before the event, if it existed.
    pub previous: Option<NumberState>,
    /// Commit time, Unix milliseconds.
    pub commit_time_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrier(id: &str) -> CarrierId {
        CarrierId::parse(id).unwrap()
    }

    fn request() -> Provisioning {
        Provisioning {
            tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            capabilities: vec![Capability::InboundCalling, Capability::OutboundCalling],
            iso_country_code: "US".into(),
        }
    }

    fn assignment(target: &str) -> Assignment {
        let n = E164::parse("+14255550100").unwrap();
        let d = crate::domain::ids::SipDomain::parse("sip.contoso.example").unwrap();
        Assignment {
            usage: NumberUsage::CallingUser,
            target_id: target.into(),
            sip_uri: SipUri::default_for(&n, &d),
            calling_profile_id: String::new(),
            location_id: String::new(),
        }
    }

    fn provisioned() -> NumberState {
        let n = E164::parse("+14255550100").unwrap();
        provision(None, &n, &carrier("contoso"), &request(), 1)
            .unwrap()
            .unwrap()
            .1
    }

    #[test]
    fn a_new_number_is_provisioned() {
        let s = provisioned();
        assert_eq!(s.status, NumberStatus::Provisioned);
        assert!(s.assignment.is_none());
    }

    #[test]
    fn provisioning_again_is_a_no_op_but_another_tenant_or_carrier_is_refused() {
        let s = provisioned();
        let n = s.number.clone();
        assert_eq!(
            provision(Some(&s), &n, &carrier("contoso"), &request(), 2),
            Ok(None)
        );
        let mut other = request();
        other.tenant_id = TenantId::parse("00000000-0000-0000-0000-000000000001").unwrap();
        assert_eq!(
            provision(Some(&s), &n, &carrier("contoso"), &other, 2),
            Err(TransitionError::AlreadyProvisioned)
        );
        assert_eq!(
            provision(Some(&s), &n, &carrier("fabrikam"), &request(), 2),
            Err(TransitionError::OwnedByOtherCarrier)
        );
    }

    #[test]
    fn assign_update_unassign_release_and_provision_again() {
        let s = provisioned();
        let (k, s) = assign(&s, assignment("u1"), 2).unwrap().unwrap();
        assert_eq!(k, EventKind::Assigned);
        assert_eq!(assign(&s, assignment("u1"), 3), Ok(None));
        let (k, s) = assign(&s, assignment("u2"), 3).unwrap().unwrap();
        assert_eq!(k, EventKind::Updated);
        let (k, s) = unassign(&s, 4).unwrap().unwrap();
        assert_eq!(k, EventKind::Unassigned);
        assert_eq!(s.status, NumberStatus::Provisioned);
        assert_eq!(unassign(&s, 5), Err(TransitionError::NotAssigned));
        let (k, s) = release(&s, 5).unwrap();
        assert_eq!(k, EventKind::Released);
        assert_eq!(release(&s, 6), None);
        assert_eq!(
            assign(&s, assignment("u3"), 6),
            Err(TransitionError::NotAssignable)
        );
        let n = s.number.clone();
        let (k, s) = provision(Some(&s), &n, &carrier("contoso"), &request(), 7)
            .unwrap()
            .unwrap();
        assert_eq!(k, EventKind::Provisioned);
        assert_eq!(s.status, NumberStatus::Provisioned);
    }

    #[test]
    fn releasing_an_assigned_number_drops_its_assignment() {
        let (_, s) = assign(&provisioned(), assignment("u1"), 2)
            .unwrap()
            .unwrap();
        let (k, s) = release(&s, 3).unwrap();
        assert_eq!(k, EventKind::Released);
        assert!(s.assignment.is_none());
    }
}
