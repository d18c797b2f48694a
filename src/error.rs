//! One error type for every RPC, mapped to `tonic::Status` with AIP-193 details in one place.
//!
//! Every status carries exactly one `ErrorInfo` (domain `opconnect.v1`), plus `BadRequest` for
//! invalid input and `RetryInfo` where a retry can succeed. Messages never carry internals:
//! database errors are logged here and reach the client as a generic message.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo.domain` of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "opconnect.v1";

/// An error an RPC returns to its caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client certificate carries no usable identity.
    #[error("the client certificate carries no usable identity: {0}")]
    IdentityMissing(String),
    /// The caller is not allowed to call this method.
    #[error("{message}")]
    PermissionDenied {
        /// `CARRIER_UNKNOWN`, `CARRIER_SUSPENDED` or `ROLE_DENIED`.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// One or more request fields are invalid.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// A thing the request names does not exist (for this caller).
    #[error("{message}")]
    NotFound {
        /// `NUMBER_NOT_FOUND`, `CARRIER_NOT_FOUND`, ...
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
        /// Dynamic values (the id that was not found).
        metadata: Vec<(&'static str, String)>,
    },
    /// The request conflicts with the current state.
    #[error("{message}")]
    FailedPrecondition {
        /// `NUMBER_NOT_ASSIGNABLE`, `REVISION_COMPACTED`, ...
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
        /// Dynamic values.
        metadata: Vec<(&'static str, String)>,
    },
    /// The thing to create exists already with other content.
    #[error("{message}")]
    AlreadyExists {
        /// `CARRIER_EXISTS`, ...
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// A revision or cursor lies past the end.
    #[error("{message}")]
    OutOfRange {
        /// `REVISION_AHEAD`, `CURSOR_AHEAD`.
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
        /// Dynamic values.
        metadata: Vec<(&'static str, String)>,
    },
    /// The server is shutting down; the client should resume elsewhere or later.
    #[error("the server is shutting down; resume from your last revision")]
    ShuttingDown,
    /// The database failed or is unreachable. The cause is logged, never sent.
    #[error("store unavailable")]
    Store(#[source] sea_orm::DbErr),
    /// A bug or an unexpected state; the cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// An `INVALID_ARGUMENT` for one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The `ErrorInfo.reason` this error is sent with.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::IdentityMissing(_) => "IDENTITY_MISSING",
            Self::PermissionDenied { reason, .. }
            | Self::NotFound { reason, .. }
            | Self::FailedPrecondition { reason, .. }
            | Self::AlreadyExists { reason, .. }
            | Self::OutOfRange { reason, .. } => reason,
            Self::InvalidArgument(_) => "INVALID_FIELD",
            Self::ShuttingDown => "SERVER_SHUTTING_DOWN",
            Self::Store(_) => "STORE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::IdentityMissing(_) => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::OutOfRange { .. } => Code::OutOfRange,
            Self::ShuttingDown | Self::Store(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Store(err)
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        let reason = err.reason();
        let mut details = ErrorDetails::new();
        let mut metadata: HashMap<String, String> = HashMap::new();
        match &err {
            ApiError::InvalidArgument(violations) => {
                details.set_bad_request(violations.clone());
            }
            ApiError::NotFound { metadata: m, .. }
            | ApiError::FailedPrecondition { metadata: m, .. }
            | ApiError::OutOfRange { metadata: m, .. } => {
                metadata.extend(m.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            }
            ApiError::Store(cause) => {
                tracing::error!(error = %cause, "store error");
                details.set_retry_info(Some(Duration::from_secs(1)));
            }
            ApiError::ShuttingDown => {
                details.set_retry_info(Some(Duration::from_millis(100)));
            }
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            _ => {}
        }
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        Status::with_error_details(code, err.to_string(), details)
    }
}

/// Result of an RPC handler's inner logic.
pub type ApiResult<T> = Result<T, ApiError>;
