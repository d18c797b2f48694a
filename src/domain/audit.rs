//! Audit events (DESIGN §8): who did what, when, and how it ended. An event carries the
//! action's key fields and counts, never record content; phone numbers in it are masked.

use std::collections::BTreeMap;

/// Most characters of one detail value: a client's value (a filter, a reason) is kept no longer
/// than this.
pub const MAX_DETAIL_CHARS: usize = 500;

/// Most characters of a carrier or tenant id kept from a request (valid ids are shorter).
pub const MAX_ID_CHARS: usize = 128;

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEvent {
    /// When the action ended, Unix milliseconds.
    pub time_ms: i64,
    /// Who acted: `carrier/<id>` or `platform/<name>`.
    pub identity: String,
    /// The RPC's name, `AssignNumber`.
    pub action: String,
    /// The carrier concerned; empty when none.
    pub carrier_id: String,
    /// The tenant concerned; empty when none.
    pub tenant_id: String,
    /// The gRPC code name of the outcome, `OK`.
    pub outcome: String,
    /// First cursor or revision a read delivered.
    pub first_position: Option<i64>,
    /// Last cursor or revision a read delivered.
    pub last_position: Option<i64>,
    /// Records delivered, received or redacted.
    pub record_count: i64,
    /// Key request fields and results by name.
    pub details: BTreeMap<String, String>,
}

impl AuditEvent {
    /// An event of `identity` doing `action`, ending now with `outcome`.
    pub fn new(identity: impl Into<String>, action: &str, outcome: &str) -> Self {
        Self {
            time_ms: now_ms(),
            identity: identity.into(),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            ..Self::default()
        }
    }

    /// The event with `carrier` as the carrier concerned (as sent: cut to
    /// [`MAX_ID_CHARS`]).
    pub fn carrier(mut self, carrier: impl AsRef<str>) -> Self {
        self.carrier_id = carrier.as_ref().chars().take(MAX_ID_CHARS).collect();
        self
    }

    /// The event with `tenant` as the tenant concerned (cut to [`MAX_ID_CHARS`]).
    pub fn tenant(mut self, tenant: impl AsRef<str>) -> Self {
        self.tenant_id = tenant.as_ref().chars().take(MAX_ID_CHARS).collect();
        self
    }

    /// The event with one more detail, cut to [`MAX_DETAIL_CHARS`].
    pub fn detail(mut self, name: &str, value: impl ToString) -> Self {
        let value: String = value.to_string().chars().take(MAX_DETAIL_CHARS).collect();
        self.details.insert(name.to_owned(), value);
        self
    }

    /// The event with `count` records.
    pub fn count(mut self, count: i64) -> Self {
        self.record_count = count;
        self
    }
}

/// The current time in Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Which audit events a listing wants; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// At or after this time (Unix ms).
    pub from_ms: Option<i64>,
    /// Before this time (Unix ms).
    pub before_ms: Option<i64>,
    /// Only this identity.
    pub identity: Option<String>,
    /// Only this carrier.
    pub carrier_id: Option<String>,
    /// Only this tenant.
    pub tenant_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Details are cut to their bound, whole characters.
    #[test]
    fn details_are_bounded() {
        let e = AuditEvent::new("platform/ops", "EraseTenantData", "OK")
            .detail("reason", "é".repeat(900));
        assert_eq!(e.details["reason"].chars().count(), MAX_DETAIL_CHARS);
    }
}
