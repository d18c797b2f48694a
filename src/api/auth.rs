//! Who may call: carrier-facing services take only registered, active carriers, within their
//! limits; PlatformService only platform identities. The caller comes from
//! [`crate::identity::IdentityLayer`].
//!
//! A carrier's registration and status are cached, so that a call costs no database read for
//! them. An entry is used only while the carrier's status epoch (bumped by every status change
//! here, by NOTIFY from other instances, and after missed notices) is the one it was read at,
//! and for at most [`CACHE_TTL`]: a suspension takes effect at once on this instance and within
//! a second even if a notice from another instance were lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tonic::Request;

use super::limits::{Limits, StreamPermit};
use crate::domain::carrier::{Carrier, CarrierStatus};
use crate::domain::ids::CarrierId;
use crate::error::ApiError;
use crate::feed::Feed;
use crate::identity::Caller;
use crate::store::Store;

/// Longest a cached carrier is trusted without reading it again.
const CACHE_TTL: Duration = Duration::from_secs(1);

/// A carrier as read, with the status epoch it was read at and when.
#[derive(Debug, Clone)]
struct Cached {
    epoch: u64,
    read_at: Instant,
    carrier: Carrier,
}

/// Decides whether a caller may use a service, from its identity and the carrier registry.
#[derive(Debug, Clone)]
pub(crate) struct Authorizer {
    store: Store,
    limits: Arc<Limits>,
    /// Registered carriers as last read; unknown ids are never cached (a later registration
    /// must be seen at once).
    cache: Arc<Mutex<HashMap<CarrierId, Cached>>>,
}

impl Authorizer {
    /// An authorizer checking carriers against `store` and `limits`.
    pub(crate) fn new(store: Store, limits: Arc<Limits>) -> Self {
        Self {
            store,
            limits,
            cache: Arc::default(),
        }
    }

    fn feed(&self) -> &Feed {
        self.store.feed()
    }

    /// The carrier `id` as registered, from the cache while its status epoch has not moved
    /// (and for at most [`CACHE_TTL`]), else from the database.
    async fn registered(&self, id: &CarrierId) -> Result<Option<Carrier>, ApiError> {
        // Read the epoch before the database: a change committed meanwhile moves it, and the
        // entry stored below is then stale at once.
        let epoch = self.feed().status_epoch(id.as_str());
        let hit = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .filter(|c| c.epoch == epoch && c.read_at.elapsed() < CACHE_TTL)
            .map(|c| c.carrier.clone());
        if let Some(carrier) = hit {
            return Ok(Some(carrier));
        }
        let read_at = Instant::now();
        let carrier = self.store.carrier(id.as_str()).await?;
        if let Some(carrier) = &carrier {
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    id.clone(),
                    Cached {
                        epoch,
                        read_at,
                        carrier: carrier.clone(),
                    },
                );
        }
        Ok(carrier)
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
            .registered(id)
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
