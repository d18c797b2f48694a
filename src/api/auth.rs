//! Who may call: carrier-facing services take only registered, active carriers; PlatformService
//! only platform identities. The caller comes from [`crate::identity::IdentityLayer`].

use tonic::Request;

use crate::domain::carrier::{Carrier, CarrierStatus};
use crate::domain::ids::CarrierId;
use crate::error::ApiError;
use crate::identity::Caller;
use crate::store::Store;

/// Decides whether a caller may use a service, from its identity and the carrier registry.
#[derive(Debug, Clone)]
pub(crate) struct Authorizer {
    store: Store,
}

impl Authorizer {
    /// An authorizer checking carriers against `store`.
    pub(crate) fn new(store: Store) -> Self {
        Self { store }
    }

    /// The calling carrier, which must be registered and active.
    pub(crate) async fn carrier<T>(&self, request: &Request<T>) -> Result<Carrier, ApiError> {
        match caller(request)? {
            Caller::Carrier(id) => self.active_carrier(&id).await,
            Caller::Platform(_) => Err(ApiError::role_denied("carrier")),
        }
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
