//! A carrier registered at the gateway.

use super::ids::{CarrierId, SipDomain};

/// Whether a carrier may use the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierStatus {
    /// Allowed.
    Active,
    /// Refused with `PERMISSION_DENIED`.
    Suspended,
}

impl CarrierStatus {
    /// Stable code stored in the database.
    pub fn code(self) -> i16 {
        match self {
            Self::Active => 1,
            Self::Suspended => 2,
        }
    }

    /// The status stored under `code`; anything unknown counts as suspended (fail closed).
    pub fn from_code(code: i16) -> Self {
        if code == 1 {
            Self::Active
        } else {
            Self::Suspended
        }
    }
}

/// A carrier as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carrier {
    /// Its id (the SPIFFE path segment of its certificates).
    pub id: CarrierId,
    /// Human-readable name.
    pub display_name: String,
    /// SIP domain its numbers route into.
    pub sip_domain: SipDomain,
    /// Active or suspended.
    pub status: CarrierStatus,
    /// Registration time, Unix milliseconds.
    pub create_time_ms: i64,
    /// Current number-event revision.
    pub number_revision: i64,
    /// Every number event up to this revision has been purged.
    pub events_purged_through: i64,
}
