//! Wiring: TLS, identity layer, services, health, reflection, retention, graceful shutdown.
//!
//! [`App::build`] binds the listener and opens the store, so callers (and tests, with port 0)
//! learn the address before serving; [`App::run_until`] serves until a shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::api::assignment::AssignmentApi;
use crate::api::durations::CallDurationApi;
use crate::api::platform::PlatformApi;
use crate::api::records::CallRecordApi;
use crate::api::{Authorizer, Limits, StreamBounds, Streams};
use crate::config::Settings;
use crate::identity::IdentityLayer;
use crate::metrics::StreamMetrics;
use crate::pb::v1::assignment_service_server::AssignmentServiceServer;
use crate::pb::v1::call_duration_service_server::CallDurationServiceServer;
use crate::pb::v1::call_record_service_server::CallRecordServiceServer;
use crate::pb::v1::platform_service_server::PlatformServiceServer;
use crate::retention::{self, RetentionPolicy};
use crate::store::{Store, StoreOptions};

/// Why the server could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A TLS file is missing or unreadable.
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS material is not usable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The database could not be opened or migrated.
    #[error("database {url}: {source}")]
    Store {
        /// The URL without credentials.
        url: String,
        /// The cause.
        source: crate::store::StoreError,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(String),
    /// Serving failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A bound, ready-to-serve gateway.
pub struct App {
    listener: TcpListener,
    tls: ServerTlsConfig,
    store: Store,
    settings: Settings,
    metrics: Arc<StreamMetrics>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::TlsFile {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// The URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Warns when the client CA is the committed development CA.
fn warn_if_development_ca(ca_pem: &[u8]) {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(ca_pem) else {
        return;
    };
    let Ok(cert) = pem.parse_x509() else {
        return;
    };
    let is_dev = cert
        .subject()
        .iter_common_name()
        .any(|cn| cn.as_str() == Ok(crate::pki::DEV_CA_COMMON_NAME));
    if is_dev {
        tracing::warn!(
            "running on the DEVELOPMENT CA from certs/: its private key is public; never use it in production"
        );
    }
}

/// Installs ring as rustls's process-wide crypto provider (two providers in the tree would
/// make rustls panic on first use); repeated calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl App {
    /// Loads TLS material, opens and migrates the store, and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, ServerError> {
        install_crypto_provider();
        let cert = read("server certificate", &settings.tls_cert)?;
        let key = read("server key", &settings.tls_key)?;
        let ca = read("client CA", &settings.client_ca)?;
        warn_if_development_ca(&ca);
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(ca));
        let store = Store::open(&StoreOptions {
            url: settings.database_url.clone(),
            max_connections: settings.database_max_connections,
            acquire_timeout: Duration::from_secs(5),
        })
        .await
        .map_err(|source| ServerError::Store {
            url: redact(&settings.database_url),
            source,
        })?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        Ok(Self {
            listener,
            tls,
            store,
            settings,
            metrics: Arc::default(),
        })
    }

    /// The server's stream accounting (open streams, buffered bytes).
    pub fn metrics(&self) -> Arc<StreamMetrics> {
        self.metrics.clone()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends open streams with
    /// UNAVAILABLE and waits at most the grace period for calls to finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let App {
            listener,
            tls,
            store,
            settings,
            metrics,
        } = self;
        let streams_end = CancellationToken::new();
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<AssignmentServiceServer<AssignmentApi>>()
            .await;
        health
            .set_serving::<PlatformServiceServer<PlatformApi>>()
            .await;
        health
            .set_serving::<CallRecordServiceServer<CallRecordApi>>()
            .await;
        health
            .set_serving::<CallDurationServiceServer<CallDurationApi>>()
            .await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;

        let change_listener = store.spawn_listener(streams_end.clone());
        let purges = retention::spawn(
            store.clone(),
            RetentionPolicy::from_settings(&settings),
            Duration::from_secs(settings.purge_interval_secs.max(1)),
            streams_end.clone(),
        );
        match listener.local_addr() {
            Ok(addr) => {
                tracing::info!(database = %redact(&settings.database_url), "listening on {addr}")
            }
            Err(e) => tracing::warn!(error = %e, "listener has no local address"),
        }

        let limits = Arc::new(Limits::new(
            settings.max_streams_per_carrier,
            settings.rate_limit_per_carrier,
        ));
        let auth = Authorizer::new(store.clone(), limits);
        let bounds = StreamBounds {
            max_records: settings.max_records_per_upload,
            idle: Duration::from_secs(settings.upload_idle_timeout_secs.max(1)),
        };
        let max_message = settings.max_message_bytes;
        let streams = Streams::new(
            auth.clone(),
            store.feed().clone(),
            streams_end.clone(),
            metrics.clone(),
        );
        let stopping = streams_end.clone();
        let grace = Duration::from_secs(settings.shutdown_grace_secs);
        let health_on_stop = health.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!(grace_secs = grace.as_secs(), "shutting down");
            health_on_stop
                .set_not_serving::<AssignmentServiceServer<AssignmentApi>>()
                .await;
            health_on_stop
                .set_not_serving::<CallRecordServiceServer<CallRecordApi>>()
                .await;
            health_on_stop
                .set_not_serving::<CallDurationServiceServer<CallDurationApi>>()
                .await;
            health_on_stop
                .set_not_serving::<PlatformServiceServer<PlatformApi>>()
                .await;
            stopping.cancel();
        };
        let serve = Server::builder()
            .tls_config(tls)?
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(IdentityLayer::new(&settings.trust_domain))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                AssignmentServiceServer::new(AssignmentApi::new(
                    store.clone(),
                    auth.clone(),
                    streams.clone(),
                ))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            )
            .add_service(
                CallRecordServiceServer::new(CallRecordApi::new(
                    store.clone(),
                    auth.clone(),
                    streams.clone(),
                ))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            )
            .add_service(
                CallDurationServiceServer::new(CallDurationApi::new(
                    store.clone(),
                    auth.clone(),
                    streams.clone(),
                    metrics.clone(),
                    bounds,
                ))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            )
            .add_service(
                PlatformServiceServer::new(PlatformApi::new(
                    store.clone(),
                    auth,
                    streams,
                    metrics,
                    bounds,
                ))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            )
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), signal);
        tokio::pin!(serve);
        let result = tokio::select! {
            result = &mut serve => result.map_err(ServerError::from),
            () = async { streams_end.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("grace period over; dropping remaining connections");
                Ok(())
            }
        };
        streams_end.cancel();
        purges.abort();
        if let Some(task) = change_listener {
            task.abort();
        }
        if let Err(e) = store.close().await {
            tracing::warn!(error = %e, "closing the database");
        }
        tracing::info!("stopped");
        result
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
