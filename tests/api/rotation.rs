//! Rotation without restart: SIGHUP on a real `opconnect serve` reloads the server certificate
//! and key and the client CA bundle for new connections; open connections keep working, and a
//! set that does not load is refused with one log line while the old one stays.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opconnect::pb::v1 as pb;
use opconnect::pb::v1::assignment_service_client::AssignmentServiceClient;
use opconnect::pb::v1::platform_service_client::PlatformServiceClient;
use opconnect::pki::{CertificateAuthority, Issued, Subject};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::helpers::*;

/// The log line of a reload that worked.
const RELOADED: &str = "TLS certificates, client CA and CRL reloaded";
/// The log line of a reload that was refused.
const REFUSED: &str = "TLS reload refused";

/// The serial number of the PEM certificate `pem`, as hex.
fn serial_of(pem: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    pem.parse_x509()
        .expect("certificate")
        .raw_serial_as_string()
}

/// The serial of the certificate the server at `addr` presents to a new connection, read from
/// a raw TLS handshake (trusting `ca_pem`, presenting `client`).
async fn served_serial(addr: SocketAddr, ca_pem: &str, client: &Issued) -> String {
    opconnect::server::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.expect("CA PEM")).expect("CA");
    }
    let chain = CertificateDer::pem_slice_iter(client.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("client certificate");
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).expect("client key");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("certificate");
    cert.raw_serial_as_string()
}

/// Writes a new server certificate and key for localhost, issued by `ca`, over the files in
/// `dir`; returns its serial.
fn rotate_server_certificate(dir: &Path, ca: &CertificateAuthority) -> String {
    let server = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()])
        .expect("server cert");
    std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
    serial_of(&server.cert_pem)
}

/// How many log lines contain `needle`.
fn count(server: &LoggedProcess, needle: &str) -> usize {
    server
        .log_lines()
        .iter()
        .filter(|line| line.contains(needle))
        .count()
}

/// A new server certificate (same path, same CA) is what new connections see after SIGHUP,
/// while a watch opened before the reload keeps receiving events after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_server_certificate_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_server_pki(dir.path());
    let old_serial = serial_of(&std::fs::read_to_string(dir.path().join("server.pem")).unwrap());
    let database_url = fresh_database_url(dir.path()).await;
    let server = spawn_server_with(dir.path(), &database_url, &[]);
    let ca_pem = ca.cert_pem();
    let ops = ca
        .issue_client(&Subject::Platform("ops".into()), TRUST_DOMAIN)
        .unwrap();
    let contoso = ca
        .issue_client(&Subject::Carrier("contoso".into()), TRUST_DOMAIN)
        .unwrap();
    let mut platform =
        PlatformServiceClient::new(channel_to(server.addr, &ca_pem, Some(&ops)).await.unwrap());
    platform
        .create_carrier(pb::CreateCarrierRequest {
            carrier_id: "contoso".into(),
            display_name: "Contoso".into(),
            sip_domain: "sip.contoso.example".into(),
        })
        .await
        .unwrap();
    platform
        .provision_numbers(provision_request("contoso", TENANT_A, &["+14255550100"]))
        .await
        .unwrap();
    let mut watch = AssignmentServiceClient::new(
        channel_to(server.addr, &ca_pem, Some(&contoso))
            .await
            .unwrap(),
    )
    .watch_numbers(pb::WatchNumbersRequest {
        include_snapshot: true,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().events.len(), 1);
    assert!(watch.message().await.unwrap().unwrap().checkpoint.is_some());
    assert_eq!(
        served_serial(server.addr, &ca_pem, &contoso).await,
        old_serial
    );

    let new_serial = rotate_server_certificate(dir.path(), &ca);
    assert_ne!(new_serial, old_serial);
    send_sighup(&server.child);
    server.wait_for_log(RELOADED).await;
    assert_eq!(
        served_serial(server.addr, &ca_pem, &contoso).await,
        new_serial
    );

    // A new connection (on the new certificate) changes the number; the old watch sees it.
    PlatformServiceClient::new(channel_to(server.addr, &ca_pem, Some(&ops)).await.unwrap())
        .assign_number(assign_request("+14255550100", "user-1"))
        .await
        .expect("served on the new certificate");
    let event = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the watch opened before the reload gets the event")
        .unwrap()
        .unwrap();
    assert_eq!(event.events.len(), 1, "{event:?}");
    let number = event.events[0].number.as_ref().expect("number");
    assert_eq!(number.assignment_target_id, "user-1");
    platform
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .expect("the connection made before the reload still works");
}

/// A broken key file: SIGHUP is refused with exactly one error line, and new connections
/// still get the old certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_key_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_server_pki(dir.path());
    let old_serial = serial_of(&std::fs::read_to_string(dir.path().join("server.pem")).unwrap());
    let database_url = fresh_database_url(dir.path()).await;
    let server = spawn_server_with(dir.path(), &database_url, &[]);
    let ca_pem = ca.cert_pem();
    let contoso = ca
        .issue_client(&Subject::Carrier("contoso".into()), TRUST_DOMAIN)
        .unwrap();
    let before = channel_to(server.addr, &ca_pem, Some(&contoso))
        .await
        .unwrap();

    // A new certificate beside a key that is not one: the set does not load.
    let server_pem = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .cert_pem;
    std::fs::write(dir.path().join("server.pem"), server_pem).unwrap();
    std::fs::write(
        dir.path().join("server.key"),
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    send_sighup(&server.child);
    server.wait_for_log(REFUSED).await;

    assert_eq!(
        served_serial(server.addr, &ca_pem, &contoso).await,
        old_serial
    );
    health_over_new_connection(server.addr, &ca_pem, &contoso)
        .await
        .expect("new connections are served on the old set");
    health_status(&before, "")
        .await
        .expect("the open connection keeps working");
    let errors: Vec<String> = server
        .log_lines()
        .into_iter()
        .filter(|line| line.contains("ERROR"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains(REFUSED), "{errors:#?}");
    assert!(errors[0].contains("server.key"), "{errors:#?}");
    assert_eq!(count(&server, RELOADED), 0);
}

/// A client CA bundle that adds a new CA (with the same name, as two `certs init` CAs have) to
/// the old one: after SIGHUP, clients of both CAs are served, where before only the old CA's
/// were; a connection made before the reload keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_two_ca_bundle_accepts_clients_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = write_server_pki(dir.path());
    let new_ca = CertificateAuthority::generate("test CA").unwrap();
    let database_url = fresh_database_url(dir.path()).await;
    let server = spawn_server_with(dir.path(), &database_url, &[]);
    // The server certificate stays the old CA's: clients verify it with that CA.
    let server_ca = old_ca.cert_pem();
    let old_client = old_ca
        .issue_client(&Subject::Carrier("contoso".into()), TRUST_DOMAIN)
        .unwrap();
    let new_client = new_ca
        .issue_client(&Subject::Carrier("fabrikam".into()), TRUST_DOMAIN)
        .unwrap();
    let before = channel_to(server.addr, &server_ca, Some(&old_client))
        .await
        .unwrap();
    assert!(
        health_over_new_connection(server.addr, &server_ca, &new_client)
            .await
            .is_err(),
        "the new CA's client must be refused before the reload"
    );

    let bundle = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    std::fs::write(dir.path().join("ca.pem"), bundle).unwrap();
    send_sighup(&server.child);
    server.wait_for_log(RELOADED).await;

    for client in [&old_client, &new_client] {
        health_over_new_connection(server.addr, &server_ca, client)
            .await
            .expect("served after the reload");
    }
    health_status(&before, "")
        .await
        .expect("the open connection keeps working");
    assert_eq!(count(&server, REFUSED), 0);
}
