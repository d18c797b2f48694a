//! What `grpc.health.v1.Health` reports, on the mutual-TLS listener and on the plaintext probe
//! listener (`--health-listen`) alike: both serve the same reporter.
//!
//! Every service (the four `opconnect.v1` services and the overall `""`) is `SERVING` while the
//! database answers, `NOT_SERVING` while it does not, and `NOT_SERVING` for good from the start
//! of the shutdown drain. The database is checked every [`CHECK_INTERVAL`] under
//! [`CHECK_TIMEOUT`], and at once when a call fails with `UNAVAILABLE` ([`DbCheck::nudge`]).
//! Changes are applied under one lock, so a check that finishes during the drain can never turn
//! the instance back to `SERVING`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::pb::v1::{
    assignment_service_server, call_duration_service_server, call_record_service_server,
    platform_service_server,
};
use crate::store::Store;

/// How often the database is checked while nothing fails.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long one check may take before the database counts as unreachable: a database that
/// takes longer to answer `SELECT 1` is of no use to callers either.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// The least time between two checks, so that a burst of failing calls does not turn into a
/// burst of checks.
const MIN_CHECK_GAP: Duration = Duration::from_millis(100);

/// Every service whose status is reported: the overall server (`""`) and the four services.
const SERVICES: [&str; 5] = [
    "",
    assignment_service_server::SERVICE_NAME,
    call_record_service_server::SERVICE_NAME,
    call_duration_service_server::SERVICE_NAME,
    platform_service_server::SERVICE_NAME,
];

/// Where the instance is in its life, as far as health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The database answered the last check.
    Serving,
    /// The last check failed.
    DatabaseDown,
    /// Shutting down: nothing turns the instance back to `SERVING`.
    Draining,
}

/// The instance's health: the reporter both listeners serve, and its state.
#[derive(Debug, Clone)]
pub(crate) struct ServiceHealth {
    reporter: HealthReporter,
    /// Held while statuses change, so that a check and the drain never interleave.
    phase: Arc<Mutex<Phase>>,
    check: DbCheck,
}

/// Asks for a database check now; cheap to clone. Nudges coalesce: many failing calls cause
/// one check.
#[derive(Debug, Clone, Default)]
pub(crate) struct DbCheck(Arc<Notify>);

impl DbCheck {
    /// A call failed in a way that may mean the database is gone: check it now.
    pub(crate) fn nudge(&self) {
        self.0.notify_one();
    }

    /// Resolves once a check has been asked for since the last time it resolved.
    pub(crate) async fn requested(&self) {
        self.0.notified().await;
    }
}

impl ServiceHealth {
    /// Every service `SERVING`, and the `grpc.health.v1.Health` service reporting it (clone
    /// it for each listener).
    pub(crate) async fn new() -> (Self, HealthServer<impl Health>) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let health = Self {
            reporter,
            phase: Arc::new(Mutex::new(Phase::Serving)),
            check: DbCheck::default(),
        };
        health.set_all(ServingStatus::Serving).await;
        (health, service)
    }

    /// The handle calls use to ask for a check.
    pub(crate) fn db_check(&self) -> DbCheck {
        self.check.clone()
    }

    /// Turns every service `NOT_SERVING` for the rest of the process's life.
    pub(crate) async fn drain(&self) {
        let mut phase = self.phase.lock().await;
        *phase = Phase::Draining;
        self.set_all(ServingStatus::NotServing).await;
    }

    /// Applies the outcome of one database check, logging each change once.
    async fn database(&self, outcome: Result<(), String>) {
        let mut phase = self.phase.lock().await;
        let next = match (&outcome, *phase) {
            (_, Phase::Draining) => return,
            (Ok(()), _) => Phase::Serving,
            (Err(_), _) => Phase::DatabaseDown,
        };
        if next == *phase {
            return;
        }
        match outcome {
            Ok(()) => {
                tracing::info!("database reachable again; health SERVING");
                self.set_all(ServingStatus::Serving).await;
            }
            Err(error) => {
                tracing::error!(%error, "database unreachable; health NOT_SERVING");
                self.set_all(ServingStatus::NotServing).await;
            }
        }
        *phase = next;
    }

    async fn set_all(&self, status: ServingStatus) {
        for service in SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Checks the database every [`CHECK_INTERVAL`], and when nudged, until `stop`.
    pub(crate) fn spawn_monitor(&self, store: Store, stop: CancellationToken) -> JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "no answer to a health check within {} ms",
                        CHECK_TIMEOUT.as_millis()
                    )),
                };
                health.database(outcome).await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(MIN_CHECK_GAP) => {}
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(CHECK_INTERVAL - MIN_CHECK_GAP) => {}
                    () = health.check.requested() => {}
                }
            }
        })
    }
}

/// Serves `health` alone, in plaintext HTTP/2, on `listener`: the probe listener. Any other
/// service is `UNIMPLEMENTED` (tonic's answer for an unknown path); there is no reflection and
/// no identity layer, since probes present no client certificate. Runs until aborted.
pub(crate) fn spawn_probe_listener<S: Health>(
    listener: TcpListener,
    health: HealthServer<S>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = Server::builder()
            .http2_keepalive_interval(Some(super::HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(super::HTTP2_KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(Some(super::MAX_CONCURRENT_STREAMS))
            .http2_max_local_error_reset_streams(Some(super::MAX_LOCAL_ERROR_RESET_STREAMS))
            .add_service(health)
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the health probe listener stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn phase(health: &ServiceHealth) -> Phase {
        *health.phase.lock().await
    }

    /// A failed check turns the instance down and a good one up again; once draining, no
    /// check turns it back.
    #[tokio::test]
    async fn checks_move_the_phase_until_the_drain() {
        let (health, _service) = ServiceHealth::new().await;
        assert_eq!(phase(&health).await, Phase::Serving);
        health.database(Err("refused".into())).await;
        assert_eq!(phase(&health).await, Phase::DatabaseDown);
        health.database(Ok(())).await;
        assert_eq!(phase(&health).await, Phase::Serving);
        health.drain().await;
        health.database(Ok(())).await;
        assert_eq!(phase(&health).await, Phase::Draining);
        health.database(Err("refused".into())).await;
        assert_eq!(phase(&health).await, Phase::Draining);
    }
}
