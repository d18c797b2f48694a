//! Wiring: TLS (our accept loop, `tls`), identity layer, services, health and the probe
//! listener (`health`), reflection, retention, SIGHUP reload, graceful shutdown.
//!
//! [`App::build`] binds the listeners and opens the store, so callers (and tests, with port 0)
//! learn the addresses before serving; [`App::run_until`] serves until a shutdown future
//! resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::api::assignment::AssignmentApi;
use crate::api::durations::CallDurationApi;
use crate::api::framing::servers::assignment_service_server::AssignmentServiceServer;
use crate::api::framing::servers::call_record_service_server::CallRecordServiceServer;
use crate::api::platform::PlatformApi;
use crate::api::records::CallRecordApi;
use crate::api::{Authorizer, Limits, StreamBounds, Streams};
use crate::audit::Auditor;
use crate::config::Settings;
use crate::identity::IdentityLayer;
use crate::metrics::StreamMetrics;
use crate::pb::v1::call_duration_service_server::CallDurationServiceServer;
use crate::pb::v1::platform_service_server::PlatformServiceServer;
use crate::retention::{self, RetentionPolicy};
use crate::store::{Store, StoreOptions};

mod coalesce;
pub(crate) mod health;
mod metrics_http;
pub(crate) mod tls;

use health::ServiceHealth;
use tls::{ConnectionLimits, ServerConfigCell};

/// HTTP/2 PING interval on an idle connection, and how long the answer may take before the
/// connection is closed.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams one client may have open on one connection (tonic leaves it unlimited). Watchers
/// that need more open more connections.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Streams a connection may make the server reset for protocol errors before it is closed:
/// hyper's own default, which tonic switches off.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Why the server could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting is out of its range (a malformed trust domain, a zero limit).
    #[error("configuration: {0}")]
    Config(String),
    /// A TLS file is missing or unreadable. (The cause is the error's source, which the
    /// binary prints after the message; repeating it here would print it twice.)
    #[error("cannot read {what} {path}")]
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
    #[error("database {url}: {detail}")]
    Store {
        /// The URL without credentials.
        url: String,
        /// The cause, with any password of the URL masked.
        detail: String,
    },
    /// The listener could not be bound (the cause is the source, as for `TlsFile`).
    #[error("cannot listen on {addr}")]
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

/// How long shutdown waits for queued audit events to be written.
const AUDIT_FLUSH_GRACE: Duration = Duration::from_secs(5);

/// A bound, ready-to-serve gateway.
pub struct App {
    listener: TcpListener,
    /// The Prometheus scrape listener, when `--metrics-listen` is set.
    metrics_listener: Option<TcpListener>,
    /// The plaintext health-only listener of `--health-listen`, if configured.
    health_listener: Option<TcpListener>,
    /// The rustls configuration of new connections (swapped by a SIGHUP reload).
    tls: ServerConfigCell,
    store: Store,
    settings: Settings,
    metrics: Arc<StreamMetrics>,
}

/// Mask for passwords in messages.
const MASK: &str = "***";

/// The URL with its passwords masked, for logs and messages: the one in the user info
/// (`user:pass@host`) and any query parameter named `password` or ending in `password`
/// (`?password=...`, `&sslpassword=...`).
fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:{MASK}{}", &base[..scheme + 3], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().ends_with("password") => {
                    format!("{key}={MASK}")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// `text` with every password of `url` masked: for causes that might quote the URL.
fn scrub(text: &str, url: &str) -> String {
    let mut text = text.to_owned();
    for secret in url_passwords(url) {
        text = text.replace(secret, MASK);
    }
    text
}

/// The passwords `redact` masks in `url`.
fn url_passwords(url: &str) -> Vec<&str> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let userinfo_password = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            base[scheme + 3..at].split_once(':').map(|(_, pass)| pass)
        }
        _ => None,
    };
    let query_passwords = query.split('&').filter_map(|param| {
        param
            .split_once('=')
            .filter(|(key, _)| key.to_ascii_lowercase().ends_with("password"))
            .map(|(_, value)| value)
    });
    userinfo_password
        .into_iter()
        .chain(query_passwords)
        .filter(|secret| !secret.is_empty())
        .collect()
}

/// Checks the settings that no later step validates, so that a bad value is one line at
/// start-up instead of a server that can never authenticate anyone.
fn validate(settings: &Settings) -> Result<(), ServerError> {
    crate::pki::validate_trust_domain(&settings.trust_domain)
        .map_err(|e| ServerError::Config(format!("--trust-domain: {e}")))?;
    if settings.tls_handshake_timeout_secs == 0 {
        return Err(ServerError::Config(
            "--tls-handshake-timeout-secs must be at least 1".into(),
        ));
    }
    if settings.max_connections == 0 {
        return Err(ServerError::Config(
            "--max-connections must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Installs ring as rustls's process-wide crypto provider (two providers in the tree would
/// make rustls panic on first use); repeated calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `error` and its chain of causes on one line, as the binary prints a fatal error.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        line.push_str(": ");
        line.push_str(&e.to_string());
        cause = e.source();
    }
    line
}

/// On every SIGHUP, rebuilds the TLS configuration from the settings' files (server
/// certificate and key, client CA, CRL); new connections use the new set, open ones keep
/// theirs. A set that does not load is refused with one log line and the old one stays.
fn spawn_tls_reload(
    settings: Settings,
    tls: ServerConfigCell,
    metrics: Arc<StreamMetrics>,
) -> Option<JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS reload disabled");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match tls::server_config(&settings) {
                    Ok(config) => {
                        tls.replace(config);
                        metrics.tls_reloaded("ok");
                        if let Some(expiry) = tls::certificate_expiry(&settings) {
                            metrics.certificate_expires(expiry);
                        }
                        tracing::info!("SIGHUP: TLS certificates, client CA and CRL reloaded");
                    }
                    Err(e) => {
                        metrics.tls_reloaded("refused");
                        let error = with_causes(&e);
                        tracing::error!(%error, "SIGHUP: TLS reload refused; keeping the current set")
                    }
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = (settings, tls, metrics);
        None
    }
}

impl App {
    /// Loads TLS material, opens and migrates the store, and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, ServerError> {
        validate(&settings)?;
        install_crypto_provider();
        let tls = ServerConfigCell::new(tls::server_config(&settings)?);
        // Nothing could read the Prometheus families without a scrape listener.
        let metrics = Arc::new(StreamMetrics::new(settings.metrics_listen.is_some()));
        if let Some(expiry) = tls::certificate_expiry(&settings) {
            metrics.certificate_expires(expiry);
        }
        let store = Store::open_measured(
            &StoreOptions {
                url: settings.database_url.clone(),
                max_connections: settings.database_max_connections,
                acquire_timeout: Duration::from_secs(5),
            },
            settings.metrics_listen.map(|_| metrics.clone()),
        )
        .await
        .map_err(|source| ServerError::Store {
            url: redact(&settings.database_url),
            detail: scrub(&source.to_string(), &settings.database_url),
        })?;
        let listener = bind(settings.listen).await?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let health_listener = match settings.health_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            health_listener,
            tls,
            store,
            settings,
            metrics,
        })
    }

    /// The server's stream accounting (open streams, buffered bytes).
    pub fn metrics(&self) -> Arc<StreamMetrics> {
        self.metrics.clone()
    }

    /// The address of the Prometheus scrape listener, when one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address the plaintext health probe listener is bound to, when `--health-listen`
    /// is set.
    pub fn health_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.health_listener.as_ref().map(TcpListener::local_addr)
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends open streams with
    /// UNAVAILABLE and waits at most the grace period for calls to finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let App {
            listener,
            metrics_listener,
            health_listener,
            tls,
            store,
            settings,
            metrics,
        } = self;
        let streams_end = CancellationToken::new();
        let scrapes = metrics_listener.map(|listener| {
            tokio::spawn(metrics_http::serve(
                listener,
                metrics.clone(),
                store.clone(),
                streams_end.clone(),
            ))
        });
        // Before anything is announced: a SIGHUP sent once "listening on" is logged must find
        // its handler (the default action of SIGHUP ends the process).
        let reload = spawn_tls_reload(settings.clone(), tls.clone(), metrics.clone());
        let (health, health_service) = ServiceHealth::new().await;
        let health_monitor = health.spawn_monitor(store.clone(), streams_end.clone());
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
        let probes = match health_listener {
            Some(probe_listener) => {
                match probe_listener.local_addr() {
                    Ok(addr) => tracing::info!("health probes (plaintext) on {addr}"),
                    Err(e) => tracing::warn!(error = %e, "probe listener has no local address"),
                }
                Some(health::spawn_probe_listener(
                    probe_listener,
                    health_service.clone(),
                ))
            }
            None => None,
        };
        match listener.local_addr() {
            Ok(addr) => {
                tracing::info!(database = %redact(&settings.database_url), "listening on {addr}")
            }
            Err(e) => tracing::warn!(error = %e, "listener has no local address"),
        }

        let limits = Arc::new(Limits::new(
            settings.max_streams_per_carrier,
            settings.rate_limit_per_carrier,
            metrics.clone(),
        ));
        let auth = Authorizer::new(store.clone(), limits);
        let bounds = StreamBounds {
            max_records: settings.max_records_per_upload,
            idle: Duration::from_secs(settings.upload_idle_timeout_secs.max(1)),
        };
        let max_message = settings.max_message_bytes;
        let (auditor, audit_writer) = Auditor::start(store.clone(), metrics.clone());
        let streams = Streams::new(
            auth.clone(),
            store.feed().clone(),
            streams_end.clone(),
            metrics.clone(),
        )
        .with_audit(auditor.clone());
        let stopping = streams_end.clone();
        let grace = Duration::from_secs(settings.shutdown_grace_secs);
        let health_on_stop = health.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!(grace_secs = grace.as_secs(), "shutting down");
            // Every service and the overall status, on both listeners, before streams end.
            health_on_stop.drain().await;
            stopping.cancel();
        };
        let (incoming, accepting) = tls::incoming(
            listener,
            tls,
            ConnectionLimits::from_settings(&settings),
            metrics.clone(),
        );
        // No `.tls_config`: `incoming` yields connections whose handshake is already done.
        let serve = Server::builder()
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
            .layer(IdentityLayer::new(
                &settings.trust_domain,
                health.db_check(),
                metrics.clone(),
            ))
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
                PlatformServiceServer::new(
                    PlatformApi::new(store.clone(), auth, streams, metrics, bounds)
                        .with_retention(RetentionPolicy::from_settings(&settings)),
                )
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            )
            .serve_with_incoming_shutdown(incoming.map(Ok::<_, std::io::Error>), signal);
        tokio::pin!(serve);
        let result = tokio::select! {
            result = &mut serve => result.map_err(ServerError::from),
            () = async { streams_end.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("grace period over; dropping remaining connections");
                Ok(())
            }
        };
        streams_end.cancel();
        // Audit events of calls and streams that ended are written before the store closes.
        if tokio::time::timeout(AUDIT_FLUSH_GRACE, auditor.flush())
            .await
            .is_err()
        {
            tracing::warn!("audit events still unwritten at shutdown");
        }
        drop(auditor);
        audit_writer.abort();
        accepting.abort();
        health_monitor.abort();
        if let Some(task) = probes {
            task.abort();
        }
        if let Some(task) = reload {
            task.abort();
        }
        purges.abort();
        if let Some(task) = scrapes {
            task.abort();
        }
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

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal sent as soon as the server announces itself is a
/// graceful shutdown rather than the signal's default action. Must be called inside the
/// runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let wait = |installed: std::io::Result<tokio::signal::unix::Signal>| async move {
                match installed {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {}
                () = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Binds a listener; the error names the address.
async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passwords are masked in the user info and in password query parameters, and nothing
    /// else changes.
    #[test]
    fn redact_masks_every_password() {
        let cases = [
            (
                "postgres://opconnect:secret@db.internal:5432/opconnect",
                "postgres://opconnect:***@db.internal:5432/opconnect",
            ),
            (
                "postgres://db.internal/opconnect?user=opconnect&password=secret",
                "postgres://db.internal/opconnect?user=opconnect&password=***",
            ),
            (
                "postgres://db.internal/opconnect?password=secret&sslmode=require",
                "postgres://db.internal/opconnect?password=***&sslmode=require",
            ),
            (
                "postgres://u:p%40ss@db/x?sslpassword=key&PASSWORD=again",
                "postgres://u:***@db/x?sslpassword=***&PASSWORD=***",
            ),
            (
                "postgres://opconnect@db.internal/opconnect",
                "postgres://opconnect@db.internal/opconnect",
            ),
            (
                "sqlite://opconnect.db?mode=rwc",
                "sqlite://opconnect.db?mode=rwc",
            ),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact(url), redacted, "{url}");
        }
    }

    /// A cause that quotes the URL loses its passwords too.
    #[test]
    fn scrub_masks_passwords_in_causes() {
        let url = "postgres://u:hunter2@db/x?password=swordfish";
        let cause = format!("cannot connect to {url}: refused");
        let scrubbed = scrub(&cause, url);
        assert!(!scrubbed.contains("hunter2"), "{scrubbed}");
        assert!(!scrubbed.contains("swordfish"), "{scrubbed}");
        assert_eq!(scrub("no secret here", url), "no secret here");
    }

    /// A malformed trust domain and zero limits are refused at start-up.
    #[test]
    fn settings_are_validated() {
        let mut settings = Settings::default();
        assert!(validate(&settings).is_ok());
        for bad in ["Bad Domain", "", "OPCONNECT", "a/b", &"a".repeat(256)] {
            settings.trust_domain = bad.to_owned();
            let err = validate(&settings).unwrap_err().to_string();
            assert!(err.contains("--trust-domain"), "{err}");
        }
        settings.trust_domain = "example.org".into();
        settings.tls_handshake_timeout_secs = 0;
        assert!(validate(&settings).is_err());
        settings.tls_handshake_timeout_secs = 1;
        settings.max_connections = 0;
        assert!(validate(&settings).is_err());
    }
}
