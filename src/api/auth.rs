//! Who may call: carrier-facing services take only registered, active carriers, within their
//! limits; PlatformService only platform identities. The caller comes from
//! [`crate::identity::IdentityLayer`].

use std::sync::Arc;

use tonic::Request;

use super::limits::{Limits, StreamPermit};
use crate::domain::carrier::{Carrier, CarrierStatus};
use crate::domain::ids::CarrierId;
use crate::error::ApiError;
use crate::identity::Caller;
use crate::store::Store;

/// Decides whether a caller may use a service, from its identity and the carrier registry.
#[derive(Debug, Clone)]
pub(crate) struct Authorizer {
    store: Store,
    limits: Arc<Limits>,
}

impl Authorizer {
    /// An authorizer checking carriers against `store` and `limits`.
    pub(crate) fn new(store: Store, limits: Arc<Limits>) -> Self {
        Self { store, limits }
    }

    /// The calling carrier, which must be within its call rate, registered and active. The
    /// rate is checked first, so a carrier past it costs no database read.
    pub(crate) async fn carrier<T>(&self, request: &Request<T>) -> Result<Carrier, ApiError> {
        match caller(request)? {
            Caller::Carrier(id) => {
                self.limits.check_rate(&id)?;
                self.active_carrier(&id).await
            }
            Caller::Platform(_) => Err(ApiError::role_denied("carrier")),
        }
    }

    /// A permit for one more open stream of `carrier`, or `STREAM_LIMIT`.
    pub(crate) fn stream_permit(&self, carrier: &Carrier) -> Result<StreamPermit, ApiError> {
        self.limits.stream_permit(&carrier.id)
    }

    /// The carrier `id`, if it is registered and active; streams repeat this check.
    pub(crate) async fn active_carrier(&self, id: &CarrierId) -> Result<Carrier, ApiError> {
        let carrier = self
            .store
            .carrier(id.as_str())
            .await?
            .ok_or_else(ApiError::carrier_unknown)?;
        if carrier.status == CarrierStatus::Suspended {
            return Err(ApiError::carrier_suspended());
        }
        Ok(carrier)
    }

    /// The calling platform identity's name.
    pub(crate) fn platform<T>(&self, request: &Request<T>) -> Result<String, ApiError> {
        match caller(request)? {
            Caller::Platform(name) => Ok(name),
            Caller::Carrier(_) => Err(ApiError::role_denied("platform")),
        }
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::identity_missing("no client identity".into()))
}
