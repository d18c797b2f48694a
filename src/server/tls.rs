//! The mutual-TLS front door: our own accept loop instead of tonic's TLS acceptor.
//!
//! tonic's acceptor keeps pending handshakes in an unbounded set without a deadline: 3,000 TCP
//! connections that never started TLS were all still held 30 s later. Here every accepted
//! socket first takes a permit of the connection cap (none left → closed at once), then runs
//! its handshake in its own task under a deadline; only finished handshakes reach tonic, through
//! a bounded channel. The permit lives in the connection ([`TlsConnection`]), so the count drops
//! when hyper drops the connection.
//!
//! [`server_config`] builds the rustls configuration from the settings; it sits in a
//! [`ServerConfigCell`] that the accept loop reads for every new connection, so a reload can
//! swap it without touching open connections.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::X509Name;

use super::ServerError;
use super::coalesce::Coalesced;
use crate::config::Settings;
use crate::identity::{Caller, caller_from_certificate};
use crate::metrics::StreamMetrics;

/// ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// Idle time before the kernel probes a silent peer, and the time between probes: a peer that
/// vanished without a FIN (power loss, a dropped NAT entry) is noticed even on a connection
/// whose HTTP/2 keepalive is not running yet.
const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Finished handshakes waiting for tonic's accept loop. tonic takes each one at once (it only
/// spawns the connection's task), so this is backpressure, never a queue that grows.
const ESTABLISHED_BACKLOG: usize = 64;

/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Bounds of the accept loop, from `--tls-handshake-timeout-secs` and `--max-connections`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// From accept to a finished handshake; a slower connection is closed.
    pub(crate) handshake_timeout: Duration,
    /// Open connections, handshaking or established.
    pub(crate) max_connections: usize,
}

impl ConnectionLimits {
    /// The limits the settings name.
    pub(crate) fn from_settings(settings: &Settings) -> Self {
        Self {
            handshake_timeout: Duration::from_secs(settings.tls_handshake_timeout_secs),
            max_connections: settings.max_connections,
        }
    }
}

// === server configuration ===

/// The rustls configuration new connections get. Read once per accepted connection; replacing
/// it (a reload) changes what later connections use and leaves open ones alone.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfigCell(Arc<RwLock<Arc<ServerConfig>>>);

impl ServerConfigCell {
    pub(crate) fn new(config: Arc<ServerConfig>) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    /// The configuration for a connection accepted now.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        // A panic while holding the lock cannot leave a half-written Arc behind.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `config` the one later connections use.
    pub(crate) fn replace(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

/// Builds the server's rustls configuration from the settings' files: the server certificate
/// chain and key, client certificates required and verified against the client CA (and the
/// CRLs of `client_crl`, when set), ALPN `h2`, ring as the crypto provider. Warns when the
/// development PKI of `certs/` is in use.
///
/// Revocation (with `client_crl`): every certificate of the client's chain below the trust
/// anchor is checked (rustls's default depth; a CA made by `certs init` signs end entities
/// only, so that is the client certificate), and a certificate whose issuer has no CRL in the
/// file is refused (unknown status is an error, not a pass): a CRL file that does not cover a
/// client CA is a configuration mistake, and failing closed shows it at the first connection
/// instead of silently accepting revoked certificates. The CRL's nextUpdate is not enforced,
/// so an old CRL keeps working until it is replaced.
pub(crate) fn server_config(settings: &Settings) -> Result<Arc<ServerConfig>, ServerError> {
    let chain = certificates("server certificate", &settings.tls_cert)?;
    let key_pem = read("server key", &settings.tls_key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        ServerError::Tls(format!(
            "no usable private key in {}: {e}",
            settings.tls_key.display()
        ))
    })?;
    let client_cas = certificates("client CA", &settings.client_ca)?;
    let mut roots = RootCertStore::empty();
    for ca in &client_cas {
        roots.add(ca.clone()).map_err(|e| {
            ServerError::Tls(format!("client CA {}: {e}", settings.client_ca.display()))
        })?;
    }
    let crls = match &settings.client_crl {
        Some(path) => revocation_lists(path, &client_cas)?,
        None => Vec::new(),
    };
    warn_if_development_pki(&client_cas, &chain);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| ServerError::Tls(format!("client certificate verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            ServerError::Tls(format!(
                "server certificate {} and key {}: {e}",
                settings.tls_cert.display(),
                settings.tls_key.display()
            ))
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// When the server certificate the settings name expires, in Unix seconds (for the expiry
/// metric and the dashboard's "days left"); `None` if it cannot be read.
pub(crate) fn certificate_expiry(settings: &Settings) -> Option<i64> {
    let chain = certificates("server certificate", &settings.tls_cert).ok()?;
    let leaf = chain.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::TlsFile {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in a PEM file; none is an error.
fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{what} {}: no certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// Every CRL in a PEM file, each checked to be signed by one of `client_cas`: rustls would
/// ignore a CRL of another CA, and then refuse every client as "revocation status unknown".
fn revocation_lists(
    path: &Path,
    client_cas: &[CertificateDer<'static>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, ServerError> {
    let pem = read("client CRL", path)?;
    let invalid = |why: String| ServerError::Tls(format!("client CRL {}: {why}", path.display()));
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if crls.is_empty() {
        return Err(invalid("no CRL in the file".into()));
    }
    let cas: Vec<X509Certificate<'_>> = client_cas
        .iter()
        .filter_map(|ca| X509Certificate::from_der(ca).ok())
        .map(|(_, ca)| ca)
        .collect();
    for crl in &crls {
        let (_, parsed) =
            CertificateRevocationList::from_der(crl).map_err(|e| invalid(e.to_string()))?;
        // By name and signature: two CAs made by `certs init` have the same name.
        let issued_by_client_ca = cas.iter().any(|ca| {
            ca.subject().as_raw() == parsed.issuer().as_raw()
                && parsed.verify_signature(ca.public_key()).is_ok()
        });
        if !issued_by_client_ca {
            return Err(invalid(format!(
                "issued by {}, which is not a client CA",
                parsed.issuer()
            )));
        }
    }
    Ok(crls)
}

/// Warns when the committed development PKI is in use: as the client CA, or as the issuer of
/// the served certificate (its key is public too), whatever the client CA.
fn warn_if_development_pki(client_cas: &[CertificateDer<'_>], chain: &[CertificateDer<'_>]) {
    let dev_client_ca = client_cas
        .iter()
        .any(|ca| X509Certificate::from_der(ca).is_ok_and(|(_, ca)| names_dev_ca(ca.subject())));
    if dev_client_ca {
        tracing::warn!(
            "running on the DEVELOPMENT CA from certs/: its private key is public; never use it in production"
        );
    }
    let dev_server_cert = chain.first().is_some_and(|leaf| {
        X509Certificate::from_der(leaf).is_ok_and(|(_, leaf)| names_dev_ca(leaf.issuer()))
    });
    if dev_server_cert {
        tracing::warn!(
            "serving a certificate issued by the DEVELOPMENT CA from certs/: anyone can impersonate this server; never use it in production"
        );
    }
}

/// Whether `name` has the development CA's common name.
fn names_dev_ca(name: &X509Name<'_>) -> bool {
    name.iter_common_name()
        .any(|cn| cn.as_str() == Ok(crate::pki::DEV_CA_COMMON_NAME))
}

// === accept loop ===

/// Starts accepting on `listener`: returns the stream of established connections for tonic's
/// `serve_with_incoming_shutdown` and the accept task. The task stops, and closes the
/// listening socket, as soon as tonic drops the stream (shutdown).
pub(crate) fn incoming(
    listener: TcpListener,
    config: ServerConfigCell,
    limits: ConnectionLimits,
    metrics: Arc<StreamMetrics>,
) -> (ReceiverStream<TlsConnection>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ESTABLISHED_BACKLOG);
    let task = tokio::spawn(accept_loop(listener, config, limits, metrics, tx));
    (ReceiverStream::new(rx), task)
}

async fn accept_loop(
    listener: TcpListener,
    config: ServerConfigCell,
    limits: ConnectionLimits,
    metrics: Arc<StreamMetrics>,
    established: mpsc::Sender<TlsConnection>,
) {
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut refused = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            () = established.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(tcp);
            metrics.limited("connection_limit");
            refused.record(limits.max_connections);
            continue;
        };
        configure_socket(&tcp);
        let acceptor = TlsAcceptor::from(config.current());
        tokio::spawn(handshake(
            tcp,
            remote,
            acceptor,
            limits.handshake_timeout,
            permit,
            established.clone(),
            metrics.clone(),
        ));
    }
}

/// Connections closed at the cap, reported at most once per [`REFUSAL_LOG_INTERVAL`]: one
/// line per refused connection would let a flood flood the log too.
#[derive(Debug, Default)]
struct RefusalLog {
    /// When the last line was written.
    last: Option<Instant>,
    /// Refused since then.
    unreported: u64,
}

/// How often a sustained stream of refusals is reported.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl RefusalLog {
    fn record(&mut self, max_connections: usize) {
        self.unreported += 1;
        if self
            .last
            .is_some_and(|last| last.elapsed() < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            max_connections,
            refused = self.unreported,
            "connection limit reached; new connections are closed at accept"
        );
        self.last = Some(Instant::now());
        self.unreported = 0;
    }
}

/// Errors about the one connection being accepted, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// No Nagle delay (gRPC writes whole frames), TCP keepalive on. Failures only cost the
/// optimisation, so they are logged, not fatal.
fn configure_socket(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY");
    }
    let keepalive = TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_TIME)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    if let Err(e) = SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "TCP keepalive");
    }
}

/// Runs one handshake under the deadline and hands the connection to tonic; on failure or
/// timeout the socket (and its permit) is dropped, which closes it.
async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    deadline: Duration,
    permit: OwnedSemaphorePermit,
    established: mpsc::Sender<TlsConnection>,
    metrics: Arc<StreamMetrics>,
) {
    let outcome = tokio::time::timeout(deadline, acceptor.accept(tcp)).await;
    match &outcome {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if is_certificate_error(e) => metrics.handshake_failed("certificate"),
        Ok(Err(_)) => metrics.handshake_failed("protocol"),
        Err(_) => metrics.handshake_failed("timeout"),
    }
    match outcome {
        Ok(Ok(stream)) => {
            let connection = TlsConnection::new(stream, remote, permit);
            // Fails only when the server is shutting down: the connection is then dropped.
            let _ = established.send(connection).await;
        }
        Ok(Err(e)) if is_certificate_error(&e) => {
            tracing::info!(%remote, error = %e, "TLS handshake refused the client certificate");
        }
        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%remote, "TLS handshake timed out; connection closed"),
    }
}

/// Whether a handshake failed on the client's certificate (missing, untrusted, revoked) rather
/// than on noise: those are worth an info line.
fn is_certificate_error(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}

// === impl TlsConnection ===

/// An established mutual-TLS connection, as tonic serves it. Holds its slot of the connection
/// cap until hyper drops it.
#[derive(Debug)]
pub(crate) struct TlsConnection {
    /// Its writes gathered until a flush (see [`Coalesced`]).
    stream: Coalesced<TlsStream<TcpStream>>,
    /// Read once at the handshake; every request on the connection gets a clone.
    peer: PeerInfo,
    /// The connection's slot of `--max-connections`, released on drop.
    _permit: OwnedSemaphorePermit,
}

impl TlsConnection {
    fn new(stream: TlsStream<TcpStream>, remote: SocketAddr, permit: OwnedSemaphorePermit) -> Self {
        let (_, session) = stream.get_ref();
        let peer = PeerInfo {
            remote_addr: remote,
            certificates: session
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
            caller: Arc::default(),
        };
        Self {
            stream: Coalesced::new(stream),
            peer,
            _permit: permit,
        }
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

// === impl PeerInfo ===

/// Who is at the other end of a connection: tonic puts it in every request's extensions
/// (`request.extensions().get::<PeerInfo>()`), where `identity` reads the client certificate.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    remote_addr: SocketAddr,
    /// The client's certificate chain as presented, leaf first; verified by the handshake.
    certificates: Arc<[CertificateDer<'static>]>,
    /// The identity the leaf names, read on the connection's first request and shared by every
    /// later one (the certificate cannot change on an open connection).
    caller: Arc<OnceLock<Result<Caller, String>>>,
}

impl PeerInfo {
    /// The client's address.
    pub(crate) fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The client's own certificate (the chain's first).
    pub(crate) fn leaf_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.certificates.first()
    }

    /// The caller this connection's certificate names in `trust_domain` (one per server), or
    /// why none: parsed once per connection, not once per request.
    pub(crate) fn caller(&self, trust_domain: &str) -> Result<Caller, String> {
        self.caller
            .get_or_init(|| match self.leaf_certificate() {
                Some(leaf) => caller_from_certificate(leaf, trust_domain),
                None => Err("no client certificate".to_owned()),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, Subject};

    /// Settings pointing at a fresh PKI made by `certs init` in `dir`.
    fn settings_in(dir: &Path) -> Settings {
        pki::init(
            dir,
            pki::DEFAULT_TRUST_DOMAIN,
            &[],
            &[Subject::Platform("ops".into())],
            false,
            false,
        )
        .unwrap();
        Settings {
            tls_cert: dir.join("server.pem"),
            tls_key: dir.join("server.key"),
            client_ca: dir.join("ca.pem"),
            ..Settings::default()
        }
    }

    /// A usable set gives a config that offers h2, with or without a CRL.
    #[test]
    fn builds_with_and_without_a_crl() {
        crate::server::install_crypto_provider();
        let tmp = tempfile::tempdir().unwrap();
        let mut settings = settings_in(tmp.path());
        let config = server_config(&settings).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        let crl = pki::revoke(tmp.path(), &Subject::Platform("ops".into())).unwrap();
        settings.client_crl = Some(crl);
        server_config(&settings).unwrap();
    }

    /// Missing files, a file without a CRL, a CRL of another CA with the same name and a key
    /// that does not belong to the certificate are one-line errors naming the file.
    #[test]
    fn unusable_files_are_refused() {
        crate::server::install_crypto_provider();
        let tmp = tempfile::tempdir().unwrap();
        let settings = settings_in(tmp.path());
        let other = tempfile::tempdir().unwrap();
        let other_settings = settings_in(other.path());
        let foreign_crl = pki::revoke(other.path(), &Subject::Platform("ops".into())).unwrap();

        let cases = [
            Settings {
                client_crl: Some(tmp.path().join("missing.pem")),
                ..settings.clone()
            },
            Settings {
                client_crl: Some(tmp.path().join("ca.pem")),
                ..settings.clone()
            },
            Settings {
                client_crl: Some(foreign_crl),
                ..settings.clone()
            },
            Settings {
                tls_key: other_settings.tls_key.clone(),
                ..settings.clone()
            },
            Settings {
                client_ca: tmp.path().join("server.key"),
                ..settings.clone()
            },
        ];
        for case in cases {
            let err = server_config(&case).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{err}");
            assert!(
                err.contains(&*tmp.path().to_string_lossy())
                    || err.contains(&*other.path().to_string_lossy()),
                "{err}"
            );
        }
    }
}
