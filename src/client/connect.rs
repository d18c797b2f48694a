//! A mutual-TLS channel to the gateway, from certificate files or PEM text.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::ClientError;

/// How long opening a TCP + TLS connection may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on idle connections: a watch stream that is silent for months must still
/// notice a dead peer (a NAT that dropped the flow, a host that vanished) within a minute.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS material of a client: the CA that signed the server's certificate, the client's
/// own certificate and key (its identity), and optionally the name the server's certificate
/// must carry when it differs from the endpoint's host.
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("ClientTls")
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA in `ca_pem`; no client identity yet.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_pem: ca_pem.into(),
            identity: None,
            server_name: None,
        }
    }

    /// Reads the CA, certificate and key files (PEM). Errors name the file that failed.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        Ok(Self::new(read(ca, "CA certificate")?)
            .identity(read(cert, "client certificate")?, read(key, "client key")?))
    }

    /// Presents `cert_pem` / `key_pem` as the client's identity.
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Expects the server's certificate to name `name` (instead of the endpoint's host).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into()).filter(|n| !n.is_empty());
        self
    }

    /// The tonic configuration of this material.
    fn config(&self) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        tls
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|e| ClientError::Config(format!("cannot read {what} {}: {e}", path.display())))
}

/// The endpoint `url` (`https://host:port`) with `tls`, keepalive and a connect timeout.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, ClientError> {
    crate::server::install_crypto_provider();
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ClientError::Config(format!("bad endpoint {url:?}: {e}")))?;
    if endpoint.uri().scheme_str() != Some("https") {
        return Err(ClientError::Config(format!(
            "bad endpoint {url:?}: the gateway speaks only mutual TLS, use https://"
        )));
    }
    endpoint
        .tls_config(tls.config())
        .map_err(|e| ClientError::Config(format!("TLS configuration: {e}")))
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
        })
}

/// Connects now: fails when the gateway cannot be reached or the handshake fails. For
/// one-shot commands that should say so at once.
pub async fn connect(url: &str, tls: &ClientTls) -> Result<Channel, ClientError> {
    endpoint(url, tls)?
        .connect()
        .await
        .map_err(|e| ClientError::Connect(format!("cannot connect to {url}: {}", chain(&e))))
}

/// A channel that connects on first use and reconnects by itself after a break; calls made
/// while the gateway is unreachable fail with `UNAVAILABLE`, which the watcher, follower and
/// uploader retry. For long-running clients.
pub fn connect_lazy(url: &str, tls: &ClientTls) -> Result<Channel, ClientError> {
    Ok(endpoint(url, tls)?.connect_lazy())
}

/// `error` and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        line.push_str(": ");
        line.push_str(&e.to_string());
        cause = e.source();
    }
    line
}
