//! One error type for every RPC, mapped to `tonic::Status` with AIP-193 details in one place.
//!
//! Every status carries exactly one `ErrorInfo` (domain `opconnect.v1`), plus `BadRequest` for
//! invalid input and `RetryInfo` where a retry can succeed. Every reason the gateway sends is a
//! [`Reason`]; its code follows from it. Messages never carry internals: database errors are
//! logged here and reach the client as a generic message.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::domain::Violation;
use crate::domain::durations::Tally;
use crate::domain::number::TransitionError;
use crate::store::{Constraint, StoreError};

/// The `ErrorInfo.domain` of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "opconnect.v1";

/// Every `ErrorInfo.reason` the gateway sends (DESIGN §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client certificate carries no usable identity.
    IdentityMissing,
    /// The calling carrier is not registered.
    CarrierUnknown,
    /// The carrier is suspended.
    CarrierSuspended,
    /// The caller's role may not use this service.
    RoleDenied,
    /// A request field is invalid (with `BadRequest`).
    InvalidField,
    /// The events after a watch's start revision were purged.
    RevisionCompacted,
    /// The records after a stream's cursor were purged.
    CursorExpired,
    /// A start revision past the carrier's current revision.
    RevisionAhead,
    /// A cursor past the newest record.
    CursorAhead,
    /// No such number (for this caller).
    NumberNotFound,
    /// No such carrier.
    CarrierNotFound,
    /// No completed upload under this id.
    UploadNotFound,
    /// A carrier with this id exists with other attributes.
    CarrierExists,
    /// The number is provisioned with other attributes.
    NumberAlreadyProvisioned,
    /// The number belongs to another carrier.
    NumberOwnedByOtherCarrier,
    /// The number is released and cannot be assigned.
    NumberNotAssignable,
    /// The number is not assigned.
    NumberNotAssigned,
    /// A tenant's data cannot be erased while it has assigned numbers.
    TenantHasAssignedNumbers,
    /// The server is shutting down.
    ServerShuttingDown,
    /// The database is unreachable or failed.
    StoreUnavailable,
    /// The carrier has as many streams open on this instance as it may.
    StreamLimit,
    /// The carrier calls faster than its rate.
    RateLimit,
    /// A client stream sent more records than one stream may.
    UploadTooLarge,
    /// A client stream went quiet for longer than it may.
    UploadIdle,
    /// A write kept conflicting with concurrent writes (deadlocks, serialization failures)
    /// after the server's own retries; the client may retry.
    StoreConflict,
    /// The request would store a key that is stored already (found by the database).
    DuplicateKey,
    /// The request breaks a rule of the stored data that only the database checked (a
    /// reference to a missing row, a missing value).
    ConstraintViolated,
    /// A bug or an unexpected state.
    Internal,
}

impl Reason {
    /// The reason as sent, in UPPER_SNAKE_CASE.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdentityMissing => "IDENTITY_MISSING",
            Self::CarrierUnknown => "CARRIER_UNKNOWN",
            Self::CarrierSuspended => "CARRIER_SUSPENDED",
            Self::RoleDenied => "ROLE_DENIED",
            Self::InvalidField => "INVALID_FIELD",
            Self::RevisionCompacted => "REVISION_COMPACTED",
            Self::CursorExpired => "CURSOR_EXPIRED",
            Self::RevisionAhead => "REVISION_AHEAD",
            Self::CursorAhead => "CURSOR_AHEAD",
            Self::NumberNotFound => "NUMBER_NOT_FOUND",
            Self::CarrierNotFound => "CARRIER_NOT_FOUND",
            Self::UploadNotFound => "UPLOAD_NOT_FOUND",
            Self::CarrierExists => "CARRIER_EXISTS",
            Self::NumberAlreadyProvisioned => "NUMBER_ALREADY_PROVISIONED",
            Self::NumberOwnedByOtherCarrier => "NUMBER_OWNED_BY_OTHER_CARRIER",
            Self::NumberNotAssignable => "NUMBER_NOT_ASSIGNABLE",
            Self::NumberNotAssigned => "NUMBER_NOT_ASSIGNED",
            Self::TenantHasAssignedNumbers => "TENANT_HAS_ASSIGNED_NUMBERS",
            Self::ServerShuttingDown => "SERVER_SHUTTING_DOWN",
            Self::StoreUnavailable => "STORE_UNAVAILABLE",
            Self::StreamLimit => "STREAM_LIMIT",
            Self::RateLimit => "RATE_LIMIT",
            Self::UploadTooLarge => "UPLOAD_TOO_LARGE",
            Self::UploadIdle => "UPLOAD_IDLE",
            Self::StoreConflict => "STORE_CONFLICT",
            Self::DuplicateKey => "DUPLICATE_KEY",
            Self::ConstraintViolated => "CONSTRAINT_VIOLATED",
            Self::Internal => "INTERNAL",
        }
    }

    /// The status code this reason is sent with.
    pub fn code(self) -> Code {
        match self {
            Self::IdentityMissing => Code::Unauthenticated,
            Self::CarrierUnknown | Self::CarrierSuspended | Self::RoleDenied => {
                Code::PermissionDenied
            }
            Self::InvalidField => Code::InvalidArgument,
            Self::RevisionCompacted
            | Self::CursorExpired
            | Self::NumberAlreadyProvisioned
            | Self::NumberOwnedByOtherCarrier
            | Self::NumberNotAssignable
            | Self::NumberNotAssigned
            | Self::TenantHasAssignedNumbers
            | Self::ConstraintViolated => Code::FailedPrecondition,
            Self::RevisionAhead | Self::CursorAhead => Code::OutOfRange,
            Self::NumberNotFound | Self::CarrierNotFound | Self::UploadNotFound => Code::NotFound,
            Self::CarrierExists | Self::DuplicateKey => Code::AlreadyExists,
            Self::ServerShuttingDown | Self::StoreUnavailable => Code::Unavailable,
            Self::StreamLimit | Self::RateLimit | Self::UploadTooLarge => Code::ResourceExhausted,
            Self::UploadIdle => Code::DeadlineExceeded,
            Self::StoreConflict => Code::Aborted,
            Self::Internal => Code::Internal,
        }
    }
}

/// An error an RPC returns to its caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request was refused for `reason`; the code follows from it.
    #[error("{message}")]
    Refused {
        /// Why.
        reason: Reason,
        /// Human-readable explanation, safe to send.
        message: String,
        /// Dynamic values (the id concerned, bounds), sent as `ErrorInfo.metadata`.
        metadata: Vec<(&'static str, String)>,
        /// When a retry can succeed: sent as `RetryInfo`.
        retry_after: Option<Duration>,
    },
    /// One or more request fields are invalid.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The server is shutting down; the client should resume elsewhere or later.
    #[error("the server is shutting down; resume from your last revision or cursor")]
    ShuttingDown,
    /// The database failed or is unreachable, or a write kept conflicting with concurrent
    /// writes ([`StoreError::Conflict`]). The cause is logged, never sent.
    #[error("{}", store_message(.0))]
    Store(#[source] StoreError),
    /// A bug or an unexpected state; the cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

fn store_message(err: &StoreError) -> &'static str {
    match err {
        StoreError::Conflict(_) => "the write conflicted with concurrent writes; retry it",
        _ => "store unavailable",
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

// === Named constructors: every refusal the API sends ===

impl ApiError {
    fn refused(reason: Reason, message: String, metadata: Vec<(&'static str, String)>) -> Self {
        Self::Refused {
            reason,
            message,
            metadata,
            retry_after: None,
        }
    }

    /// The carrier has `max` streams open on this instance; one may open when another ends.
    pub fn stream_limit(max: u32) -> Self {
        Self::Refused {
            reason: Reason::StreamLimit,
            message: format!(
                "this carrier has {max} streams open on this instance, its limit; close one or retry later"
            ),
            metadata: vec![("max_streams", max.to_string())],
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    /// The carrier calls faster than `per_second`; the next call is allowed after `wait`.
    pub fn rate_limit(per_second: u32, wait: Duration) -> Self {
        Self::Refused {
            reason: Reason::RateLimit,
            message: format!(
                "this carrier exceeds its rate of {per_second} calls per second; retry after the RetryInfo delay"
            ),
            metadata: vec![("calls_per_second", per_second.to_string())],
            retry_after: Some(wait.max(Duration::from_millis(1))),
        }
    }

    /// A client stream went past `max` records; what came before was committed, as `tally`.
    pub fn upload_too_large(max: u64, tally: &Tally) -> Self {
        Self::refused(
            Reason::UploadTooLarge,
            format!(
                "a stream may carry at most {max} records; the {} received before were committed, send the rest in another stream",
                tally.received
            ),
            tally_metadata(tally),
        )
    }

    /// A client stream sent nothing for `idle`; what came before was committed, as `tally`.
    pub fn upload_idle(idle: Duration, tally: &Tally) -> Self {
        Self::refused(
            Reason::UploadIdle,
            format!(
                "no message for {} s; the {} records received before were committed",
                idle.as_secs(),
                tally.received
            ),
            tally_metadata(tally),
        )
    }

    /// `INVALID_ARGUMENT` for one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The client certificate carries no usable identity, for the reason `why`.
    pub fn identity_missing(why: String) -> Self {
        Self::refused(
            Reason::IdentityMissing,
            format!("the client certificate carries no usable identity: {why}"),
            Vec::new(),
        )
    }

    /// The calling carrier is not registered.
    pub fn carrier_unknown() -> Self {
        Self::refused(
            Reason::CarrierUnknown,
            "this carrier is not registered at the gateway".into(),
            Vec::new(),
        )
    }

    /// The tenant still has `assigned` assigned numbers: its data cannot be erased yet.
    pub fn tenant_has_assigned_numbers(assigned: u64) -> Self {
        Self::refused(
            Reason::TenantHasAssignedNumbers,
            format!(
                "the tenant has {assigned} assigned numbers; unassign them before erasing its data"
            ),
            vec![("assigned", assigned.to_string())],
        )
    }

    /// The carrier is suspended.
    pub fn carrier_suspended() -> Self {
        Self::refused(
            Reason::CarrierSuspended,
            "this carrier is suspended".into(),
            Vec::new(),
        )
    }

    /// The service is only for `role` identities.
    pub fn role_denied(role: &str) -> Self {
        Self::refused(
            Reason::RoleDenied,
            format!("this service is only for {role} identities"),
            Vec::new(),
        )
    }

    /// The events after `start` were purged; `oldest` is the oldest retained revision.
    pub fn revision_compacted(start: i64, oldest: i64, current: i64) -> Self {
        Self::refused(
            Reason::RevisionCompacted,
            format!(
                "events after revision {start} were purged; list the numbers again and watch from the list's revision"
            ),
            vec![
                ("oldest_revision", oldest.to_string()),
                ("current_revision", current.to_string()),
            ],
        )
    }

    /// `start` lies past the carrier's `current` revision.
    pub fn revision_ahead(start: i64, current: i64) -> Self {
        Self::refused(
            Reason::RevisionAhead,
            format!("start_revision {start} is past the current revision {current}"),
            vec![("current_revision", current.to_string())],
        )
    }

    /// The records after `start` were purged; `oldest` is the oldest retained cursor.
    pub fn cursor_expired(start: i64, oldest: i64) -> Self {
        Self::refused(
            Reason::CursorExpired,
            format!(
                "records after cursor {start} were purged by retention; resume from oldestCursor - 1"
            ),
            vec![("oldestCursor", oldest.to_string())],
        )
    }

    /// `cursor` lies past the newest record, `latest`.
    pub fn cursor_ahead(cursor: i64, latest: i64) -> Self {
        Self::refused(
            Reason::CursorAhead,
            format!("cursor {cursor} is past the newest record ({latest})"),
            vec![("latestCursor", latest.to_string())],
        )
    }

    /// No number `number` (another carrier's number looks the same).
    pub fn number_not_found(number: &str) -> Self {
        Self::refused(
            Reason::NumberNotFound,
            format!("number {number} not found"),
            vec![("number", number.to_owned())],
        )
    }

    /// No carrier `id`.
    pub fn carrier_not_found(id: &str) -> Self {
        Self::refused(
            Reason::CarrierNotFound,
            format!("carrier {id} is not registered"),
            vec![("carrier_id", id.to_owned())],
        )
    }

    /// No completed upload `upload_id` of this carrier.
    pub fn upload_not_found(upload_id: &str) -> Self {
        Self::refused(
            Reason::UploadNotFound,
            format!("no completed upload {upload_id}"),
            vec![("upload_id", upload_id.to_owned())],
        )
    }

    /// The `ErrorInfo.reason` this error is sent with.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Refused { reason, .. } => *reason,
            Self::InvalidArgument(_) => Reason::InvalidField,
            Self::ShuttingDown => Reason::ServerShuttingDown,
            Self::Store(StoreError::Conflict(_)) => Reason::StoreConflict,
            Self::Store(_) => Reason::StoreUnavailable,
            Self::Internal(_) => Reason::Internal,
        }
    }
}

impl From<Vec<Violation>> for ApiError {
    fn from(violations: Vec<Violation>) -> Self {
        Self::InvalidArgument(
            violations
                .into_iter()
                .map(|v| FieldViolation::new(v.field, v.description))
                .collect(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::CarrierNotFound(id) => Self::carrier_not_found(&id),
            StoreError::CarrierExists(id) => Self::refused(
                Reason::CarrierExists,
                format!("carrier {id} exists with another name or SIP domain"),
                Vec::new(),
            ),
            StoreError::NumberNotFound(number) => Self::number_not_found(&number),
            StoreError::Transition { number, error } => {
                let (reason, what) = match error {
                    TransitionError::AlreadyProvisioned => (
                        Reason::NumberAlreadyProvisioned,
                        "is already provisioned with other attributes; release it first",
                    ),
                    TransitionError::OwnedByOtherCarrier => (
                        Reason::NumberOwnedByOtherCarrier,
                        "belongs to another carrier",
                    ),
                    TransitionError::NotAssignable => (Reason::NumberNotAssignable, "is released"),
                    TransitionError::NotAssigned => (Reason::NumberNotAssigned, "is not assigned"),
                };
                Self::refused(
                    reason,
                    format!("number {number} {what}"),
                    vec![("number", number)],
                )
            }
            StoreError::Constraint { constraint, source } => {
                tracing::warn!(error = %source, "a write broke a database constraint");
                let (reason, message, kind) = match constraint {
                    Constraint::Unique => (
                        Reason::DuplicateKey,
                        "the request would store a key that is stored already",
                        "unique",
                    ),
                    Constraint::ForeignKey => (
                        Reason::ConstraintViolated,
                        "the request refers to something that does not exist",
                        "foreign_key",
                    ),
                    Constraint::NotNull => (
                        Reason::ConstraintViolated,
                        "the request lacks a required value",
                        "not_null",
                    ),
                    Constraint::Check => (
                        Reason::ConstraintViolated,
                        "the request breaks a rule of the stored data",
                        "check",
                    ),
                };
                Self::refused(reason, message.into(), vec![("constraint", kind.into())])
            }
            StoreError::Corrupt(what) => Self::Internal(what),
            err @ (StoreError::Db(_) | StoreError::Conflict(_)) => Self::Store(err),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let reason = err.reason();
        let mut details = ErrorDetails::new();
        let mut metadata: HashMap<String, String> = HashMap::new();
        match &err {
            ApiError::InvalidArgument(violations) => {
                details.set_bad_request(violations.clone());
            }
            ApiError::Refused {
                metadata: m,
                retry_after,
                ..
            } => {
                metadata.extend(m.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
                if let Some(after) = retry_after {
                    details.set_retry_info(Some(*after));
                }
            }
            ApiError::Store(cause @ StoreError::Conflict(_)) => {
                tracing::warn!(error = %cause, "write conflicts outlived the retries");
                details.set_retry_info(Some(Duration::from_secs(1)));
            }
            ApiError::Store(cause) => {
                tracing::error!(error = %cause, "store error");
                details.set_retry_info(Some(Duration::from_secs(1)));
            }
            ApiError::ShuttingDown => {
                details.set_retry_info(Some(Duration::from_millis(100)));
            }
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
        }
        details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
        Status::with_error_details(reason.code(), err.to_string(), details)
    }
}

/// What a cut-off client stream did before it ended, as `ErrorInfo.metadata`.
fn tally_metadata(tally: &Tally) -> Vec<(&'static str, String)> {
    vec![
        ("received", tally.received.to_string()),
        ("accepted", tally.accepted.to_string()),
        ("duplicates", tally.duplicates.to_string()),
        ("rejected", tally.rejected.to_string()),
    ]
}

/// Result of an RPC handler's inner logic.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use sea_orm::DbErr;

    use super::*;

    fn status(err: StoreError) -> Status {
        Status::from(ApiError::from(err))
    }

    fn reason_and_retry(status: &Status) -> (Code, String, Option<Duration>) {
        (
            status.code(),
            status
                .get_details_error_info()
                .map(|i| i.reason)
                .unwrap_or_default(),
            status.get_details_retry_info().and_then(|r| r.retry_delay),
        )
    }

    /// Conflicts that outlived the retries are ABORTED / STORE_CONFLICT with RetryInfo;
    /// constraint violations are ALREADY_EXISTS or FAILED_PRECONDITION without it, naming
    /// only the kind of constraint; an unreachable database stays UNAVAILABLE.
    #[test]
    fn store_errors_map_to_codes_and_reasons() {
        let db = || DbErr::Custom("SELECT secret FROM internals".into());
        let conflict = status(StoreError::Conflict(db()));
        assert_eq!(
            reason_and_retry(&conflict),
            (
                Code::Aborted,
                "STORE_CONFLICT".into(),
                Some(Duration::from_secs(1))
            )
        );
        let unique = status(StoreError::Constraint {
            constraint: Constraint::Unique,
            source: db(),
        });
        assert_eq!(
            reason_and_retry(&unique),
            (Code::AlreadyExists, "DUPLICATE_KEY".into(), None)
        );
        for (constraint, kind) in [
            (Constraint::ForeignKey, "foreign_key"),
            (Constraint::NotNull, "not_null"),
            (Constraint::Check, "check"),
        ] {
            let s = status(StoreError::Constraint {
                constraint,
                source: db(),
            });
            assert_eq!(
                reason_and_retry(&s),
                (Code::FailedPrecondition, "CONSTRAINT_VIOLATED".into(), None)
            );
            let info = s.get_details_error_info().unwrap();
            assert_eq!(
                info.metadata.get("constraint").map(String::as_str),
                Some(kind)
            );
        }
        let down = status(StoreError::Db(db()));
        assert_eq!(
            reason_and_retry(&down),
            (
                Code::Unavailable,
                "STORE_UNAVAILABLE".into(),
                Some(Duration::from_secs(1))
            )
        );
        for s in [conflict, unique, down] {
            assert!(!s.message().contains("SELECT"), "{s:?}");
        }
    }
}
