//! The gRPC services: thin translations between the wire and the domain, plus who may call.

use tonic::Request;

use crate::domain::Violation;
use crate::domain::carrier::{Carrier, CarrierStatus};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::store::{Store, StoreError};

pub mod assignment;
mod convert;
pub mod durations;
mod ingest;
pub mod platform;
pub mod records;
pub(crate) mod records_convert;

impl From<Vec<Violation>> for ApiError {
    fn from(violations: Vec<Violation>) -> Self {
        Self::InvalidArgument(
            violations
                .into_iter()
                .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                .collect(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        use crate::domain::number::TransitionError as T;
        match err {
            StoreError::Db(db) => Self::Store(db),
            StoreError::CarrierNotFound(id) => Self::NotFound {
                reason: "CARRIER_NOT_FOUND",
                message: format!("carrier {id} is not registered"),
                metadata: vec![("carrier_id", id)],
            },
            StoreError::CarrierExists(id) => Self::AlreadyExists {
                reason: "CARRIER_EXISTS",
                message: format!("carrier {id} exists with another name or SIP domain"),
            },
            StoreError::NumberNotFound(number) => Self::NotFound {
                reason: "NUMBER_NOT_FOUND",
                message: format!("number {number} not found"),
                metadata: vec![("number", number)],
            },
            StoreError::Transition { number, error } => {
                let (reason, what) = match error {
                    T::AlreadyProvisioned => (
                        "NUMBER_ALREADY_PROVISIONED",
                        "is already provisioned with other attributes; release it first",
                    ),
                    T::OwnedByOtherCarrier => (
                        "NUMBER_OWNED_BY_OTHER_CARRIER",
                        "belongs to another carrier",
                    ),
                    T::NotAssignable => ("NUMBER_NOT_ASSIGNABLE", "is released"),
                    T::NotAssigned => ("NUMBER_NOT_ASSIGNED", "is not assigned"),
                };
                Self::FailedPrecondition {
                    reason,
                    message: format!("number {number} {what}"),
                    metadata: vec![("number", number)],
                }
            }
            StoreError::Corrupt(what) => Self::Internal(what),
        }
    }
}

/// Decides whether a caller may use a service, from its identity and the carrier registry.
#[derive(Debug, Clone)]
pub struct Authorizer {
    store: Store,
}

impl Authorizer {
    /// An authorizer checking carriers against `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The calling carrier, which must be registered and active.
    pub async fn carrier<T>(&self, request: &Request<T>) -> Result<Carrier, ApiError> {
        match caller(request)? {
            Caller::Carrier(id) => self.active_carrier(id.as_str()).await,
            Caller::Platform(_) => Err(role_denied("carrier")),
        }
    }

    /// The carrier `id`, if it is registered and active; the check streams repeat.
    pub async fn active_carrier(&self, id: &str) -> Result<Carrier, ApiError> {
        let carrier = self
            .store
            .carrier(id)
            .await?
            .ok_or_else(|| ApiError::PermissionDenied {
                reason: "CARRIER_UNKNOWN",
                message: "this carrier is not registered at the gateway".into(),
            })?;
        if carrier.status == CarrierStatus::Suspended {
            return Err(ApiError::PermissionDenied {
                reason: "CARRIER_SUSPENDED",
                message: "this carrier is suspended".into(),
            });
        }
        Ok(carrier)
    }

    /// The calling platform identity's name.
    pub fn platform<T>(&self, request: &Request<T>) -> Result<String, ApiError> {
        match caller(request)? {
            Caller::Platform(name) => Ok(name),
            Caller::Carrier(_) => Err(role_denied("platform")),
        }
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::IdentityMissing("no client identity".into()))
}

fn role_denied(role: &str) -> ApiError {
    ApiError::PermissionDenied {
        reason: "ROLE_DENIED",
        message: format!("this service is only for {role} identities"),
    }
}

/// Page size rules shared by every list: 0 means `default`, otherwise 1 to `max`.
pub(crate) fn page_size(raw: i32, default: u64, max: u64) -> Result<u64, Violation> {
    match u64::try_from(raw) {
        Ok(0) => Ok(default),
        Ok(n) if n <= max => Ok(n),
        _ => Err(Violation::new(
            "page_size",
            format!("must be between 0 (default {default}) and {max}"),
        )),
    }
}

/// Page tokens are opaque to clients: hex of the listing's filters and its last key, so a
/// token cannot be reused with other filters. They name nothing a caller cannot already see.
pub(crate) fn encode_page_token(filters: &str, last_key: &str) -> String {
    format!("{filters}\u{1f}{last_key}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Decodes a page token made by [`encode_page_token`] for the same `filters`.
pub(crate) fn decode_page_token(token: &str, filters: &str) -> Result<Option<String>, Violation> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Violation::new(
            "page_token",
            "is not a token from the previous page of this listing",
        )
    };
    if !token.len().is_multiple_of(2) || token.len() > 2048 {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    match text.split_once('\u{1f}') {
        Some((f, key)) if f == filters => Ok(Some(key.to_owned())),
        _ => Err(invalid()),
    }
}
