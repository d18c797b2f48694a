//! The connection layer: handshake deadline, connection cap, certificate revocation, safe
//! certificate files, start-up validation.

use std::path::Path;
use std::time::{Duration, Instant};

use opconnect::pb::v1 as pb;
use opconnect::pki::{self, Subject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

/// How a raw socket ended: the server closed it (EOF or reset), or it was still open at the
/// deadline.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Closed,
    StillOpen,
    /// The server sent bytes: it must not, before a ClientHello.
    Data,
}

/// Reads from `socket` until the server closes it or `deadline` passes.
async fn ending(mut socket: TcpStream, deadline: tokio::time::Instant) -> Ending {
    let mut buf = [0u8; 64];
    match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ending::Closed,
        Ok(Ok(_)) => Ending::Data,
        Err(_) => Ending::StillOpen,
    }
}

/// Connections that never finish a handshake (500: most silent, some stalled after the first
/// bytes of a ClientHello) are each closed by the server no sooner than the 1 s deadline and
/// within 3 s, while a real client is served throughout, on an open connection and a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshakes_are_closed_at_the_deadline() {
    let app = spawn_app_with(|s| s.tls_handshake_timeout_secs = 1).await;
    let mut before = app.platform().await;

    let started = tokio::time::Instant::now();
    let mut sockets = Vec::with_capacity(500);
    for i in 0..500 {
        let mut socket = TcpStream::connect(app.addr).await.expect("connect");
        if i % 10 == 0 {
            // A TLS record header, then nothing: a slow-loris ClientHello.
            socket.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
        }
        sockets.push((Instant::now(), socket));
    }

    // During the flood: served on the connection made before it, and on a new one.
    before
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .expect("served on an open connection during the flood");
    app.platform()
        .await
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .expect("served on a new connection during the flood");

    let deadline = started + Duration::from_secs(3);
    let endings =
        futures::future::join_all(sockets.into_iter().map(|(opened, socket)| async move {
            let ending = ending(socket, deadline).await;
            (ending, opened.elapsed())
        }))
        .await;
    let open = endings.iter().filter(|(e, _)| *e != Ending::Closed).count();
    assert_eq!(open, 0, "{open} of 500 connections not closed within 3 s");
    let earliest = endings.iter().map(|(_, after)| *after).min().unwrap();
    assert!(
        earliest >= Duration::from_millis(900),
        "a connection was closed after {earliest:?}, before its handshake deadline"
    );

    before
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .expect("served after the flood");
    app.stop().await;
}

/// With `max_connections = 5`, a sixth concurrent connection is closed at accept (well before
/// the handshake deadline), and once one of the five closes a new connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_accept() {
    let app = spawn_app_with(|s| s.max_connections = 5).await;
    let cert = app.carrier_cert("contoso");
    let mut open = Vec::new();
    for _ in 0..5 {
        let channel = app.channel(&cert).await;
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .expect("served below the cap");
        open.push(channel);
    }

    let sixth = TcpStream::connect(app.addr).await.expect("TCP connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    assert_eq!(ending(sixth, deadline).await, Ending::Closed);
    assert!(
        health_over_new_connection(app.addr, &app.ca.cert_pem(), &cert)
            .await
            .is_err(),
        "a sixth TLS client must not be served"
    );

    drop(open.pop());
    let retry_until = Instant::now() + Duration::from_secs(10);
    loop {
        match health_over_new_connection(app.addr, &app.ca.cert_pem(), &cert).await {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < retry_until,
                "no slot freed after a connection closed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for channel in &open {
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .expect("the other connections are untouched");
    }
    app.stop().await;
}

/// A PKI made by `certs init` in `dir` for the server on localhost and three identities.
fn init_pki(dir: &Path) {
    let subjects = [
        Subject::Platform("ops".into()),
        Subject::Platform("billing".into()),
        Subject::Carrier("contoso".into()),
    ];
    pki::init(
        dir,
        TRUST_DOMAIN,
        &["localhost".into(), "127.0.0.1".into()],
        &subjects,
        false,
        false,
    )
    .expect("certs init");
}

/// Runs `opconnect certs revoke --dir DIR <identity...>` and checks it wrote DIR/crl.pem.
fn revoke(dir: &Path, identity: &[&str]) {
    let dir_arg = dir.to_str().expect("UTF-8 temp dir");
    let mut args = vec!["certs", "revoke", "--dir", dir_arg];
    args.extend_from_slice(identity);
    let (code, stderr) = run_opconnect(&args);
    assert_eq!(code, Some(0), "certs revoke failed: {stderr}");
    assert!(dir.join("crl.pem").is_file());
}

/// Which of `stems` (identities in `dir`) a server at `addr` serves.
async fn served(addr: std::net::SocketAddr, dir: &Path, stems: &[&str]) -> Vec<String> {
    let ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem");
    let mut served = Vec::new();
    for stem in stems {
        if health_over_new_connection(addr, &ca, &issued_in(dir, stem))
            .await
            .is_ok()
        {
            served.push((*stem).to_owned());
        }
    }
    served
}

const IDENTITIES: [&str; 3] = ["platform-ops", "platform-billing", "carrier-contoso"];

/// `certs revoke --platform ops`, then a restart with `--client-crl`: ops fails the handshake,
/// a carrier and another platform identity are still served. Revoking a carrier extends the CRL:
/// both revoked identities are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_identities_fail_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    init_pki(dir.path());
    let mut settings = test_settings(dir.path());
    settings.database_url = fresh_database_url(dir.path()).await;

    let server = serve(settings.clone()).await;
    assert_eq!(
        served(server.addr, dir.path(), &IDENTITIES).await,
        IDENTITIES
    );
    server.stop().await;

    revoke(dir.path(), &["--platform", "ops"]);
    settings.client_crl = Some(dir.path().join("crl.pem"));
    let server = serve(settings.clone()).await;
    assert_eq!(
        served(server.addr, dir.path(), &IDENTITIES).await,
        ["platform-billing", "carrier-contoso"]
    );
    server.stop().await;

    revoke(dir.path(), &["--carrier", "contoso"]);
    let server = serve(settings).await;
    assert_eq!(
        served(server.addr, dir.path(), &IDENTITIES).await,
        ["platform-billing"]
    );
    server.stop().await;
}

/// SIGHUP reloads the CRL: a newly revoked identity is refused on new connections while its
/// open connection keeps working; a missing or broken CRL is refused with a log line naming
/// the cause, and the old set stays in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_crl() {
    let dir = tempfile::tempdir().unwrap();
    init_pki(dir.path());
    revoke(dir.path(), &["--platform", "ops"]);
    let database_url = fresh_database_url(dir.path()).await;
    let server = spawn_server_with(
        dir.path(),
        &database_url,
        &[&format!(
            "--client-crl={}",
            dir.path().join("crl.pem").display()
        )],
    );
    assert_eq!(
        served(server.addr, dir.path(), &IDENTITIES).await,
        ["platform-billing", "carrier-contoso"]
    );
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let contoso = channel_to(
        server.addr,
        &ca,
        Some(&issued_in(dir.path(), "carrier-contoso")),
    )
    .await
    .unwrap();

    revoke(dir.path(), &["--carrier", "contoso"]);
    hang_up(&server.child);
    let retry_until = Instant::now() + Duration::from_secs(10);
    while !served(server.addr, dir.path(), &["carrier-contoso"])
        .await
        .is_empty()
    {
        assert!(
            Instant::now() < retry_until,
            "SIGHUP did not reload the CRL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served(server.addr, dir.path(), &IDENTITIES).await,
        ["platform-billing"]
    );
    HealthClient::new(contoso.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("an open connection outlives the reload");

    std::fs::remove_file(dir.path().join("crl.pem")).unwrap();
    hang_up(&server.child);
    server.wait_for_log("No such file or directory").await;
    std::fs::write(dir.path().join("crl.pem"), "not a CRL").unwrap();
    hang_up(&server.child);
    server.wait_for_log("no CRL in the file").await;
    assert_eq!(
        served(server.addr, dir.path(), &IDENTITIES).await,
        ["platform-billing"]
    );
}

fn hang_up(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `certs issue` into a directory where the key's path is a symlink refuses (exit 2, one line
/// naming the link), writes nothing through it and leaves no certificate behind.
#[test]
fn certs_issue_refuses_a_symlinked_key_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let dir_arg = dir.to_str().unwrap();
    let (code, stderr) = run_opconnect(&["certs", "init", "--dir", dir_arg]);
    assert_eq!(code, Some(0), "{stderr}");
    let target = tmp.path().join("attacker-readable");
    std::fs::write(&target, "untouched").unwrap();
    std::os::unix::fs::symlink(&target, dir.join("carrier-contoso.key")).unwrap();
    let dangling = tmp.path().join("does-not-exist");
    std::os::unix::fs::symlink(&dangling, dir.join("platform-ops.key")).unwrap();

    for identity in [["--carrier", "contoso"], ["--platform", "ops"]] {
        let mut args = vec!["certs", "issue", "--dir", dir_arg];
        args.extend_from_slice(&identity);
        let (code, stderr) = run_opconnect(&args);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("symbolic link"), "{stderr}");
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    assert!(!dangling.exists());
    assert!(!dir.join("carrier-contoso.pem").exists());
    assert!(!dir.join("platform-ops.pem").exists());
}

/// `serve --trust-domain 'Bad Domain'` exits 2 with one line naming the setting.
#[test]
fn a_malformed_trust_domain_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_server_pki(dir.path());
    let database = format!(
        "--database-url=sqlite://{}?mode=rwc",
        dir.path().join("db").display()
    );
    let cert = format!("--tls-cert={}", dir.path().join("server.pem").display());
    let key = format!("--tls-key={}", dir.path().join("server.key").display());
    let ca = format!("--client-ca={}", dir.path().join("ca.pem").display());
    let (code, stderr) = run_opconnect(&[
        "serve",
        "--listen=127.0.0.1:0",
        &database,
        &cert,
        &key,
        &ca,
        "--trust-domain",
        "Bad Domain",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--trust-domain"), "{stderr}");
    assert!(stderr.contains("Bad Domain"), "{stderr}");
    assert!(!dir.path().join("db").exists(), "nothing is opened first");
}

/// A bad CRL file is bad configuration: exit 2, one line naming the file.
#[test]
fn an_unusable_crl_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_server_pki(dir.path());
    let crl = dir.path().join("crl.pem");
    std::fs::write(&crl, "not a CRL").unwrap();
    let args = |crl: &Path| {
        vec![
            "serve".to_owned(),
            "--listen=127.0.0.1:0".to_owned(),
            format!(
                "--database-url=sqlite://{}?mode=rwc",
                dir.path().join("db").display()
            ),
            format!("--tls-cert={}", dir.path().join("server.pem").display()),
            format!("--tls-key={}", dir.path().join("server.key").display()),
            format!("--client-ca={}", dir.path().join("ca.pem").display()),
            format!("--client-crl={}", crl.display()),
        ]
    };
    for path in [crl.clone(), dir.path().join("missing.pem")] {
        let args = args(&path);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = run_opconnect(&args);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
    }
}

/// One connection carries at most 256 concurrent streams: the 257th waits (the client queues
/// it) until one of the others ends, then opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_at_most_256_streams() {
    // Above the per-carrier stream cap's default (64), so only HTTP/2 limits the streams here.
    let app = spawn_app_with(|s| s.max_streams_per_carrier = 1_000).await;
    app.create_carrier("contoso").await;
    let client = app.carrier("contoso").await;
    let watch = || {
        let mut client = client.clone();
        async move {
            client
                .watch_numbers(pb::WatchNumbersRequest::default())
                .await
                .expect("watch opens")
                .into_inner()
        }
    };
    let mut open = Vec::with_capacity(256);
    for _ in 0..256 {
        open.push(watch().await);
    }
    let mut next = tokio::spawn(watch());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut next)
            .await
            .is_err(),
        "a 257th stream opened on the same connection"
    );
    drop(open.pop());
    tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the queued stream opens once another ends")
        .expect("join");
}
