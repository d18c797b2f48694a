//! Operating the gateway: the plaintext probe listener, health that follows the database and
//! the shutdown drain, request ids, and the per-RPC log line.

use std::time::{Duration, Instant};

use opconnect::pb::v1 as pb;
use opconnect::pb::v1::assignment_service_client::AssignmentServiceClient;
use opconnect::pb::v1::platform_service_client::PlatformServiceClient;
use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

/// How soon health must follow the database.
const HEALTH_DEADLINE: Duration = Duration::from_secs(2);

/// Waits until every service reports `expected` on `channel`; returns how long that took.
/// Panics after `within`.
async fn all_become(
    channel: &tonic::transport::Channel,
    expected: ServingStatus,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for service in HEALTH_SERVICES {
            let status = health_status(channel, service).await;
            if status.as_ref().ok() != Some(&expected) {
                all = false;
                break;
            }
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "health did not become {expected:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that every service reports `expected` on `channel` right now.
async fn assert_all(channel: &tonic::transport::Channel, expected: ServingStatus) {
    for service in HEALTH_SERVICES {
        assert_eq!(
            health_status(channel, service).await.expect("health check"),
            expected,
            "service {service:?}"
        );
    }
}

/// The probe listener answers grpcurl-style plaintext health checks without any client
/// certificate: SERVING for the overall status and every service, as the mTLS listener does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_listener_serves_health_without_a_client_certificate() {
    let (app, probe) = spawn_app_with_probe(|_| {}).await;
    let plain = plaintext_channel(probe).await;
    assert_all(&plain, ServingStatus::Serving).await;
    let tls = app.channel(&app.carrier_cert("contoso")).await;
    assert_all(&tls, ServingStatus::Serving).await;
    app.stop().await;
}

/// The probe listener serves nothing but health: the gateway's services and reflection are
/// UNIMPLEMENTED there, and the mTLS listener is not reachable in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_service_on_the_probe_listener_is_unimplemented() {
    let (app, probe) = spawn_app_with_probe(|_| {}).await;
    let plain = plaintext_channel(probe).await;
    let status = PlatformServiceClient::new(plain.clone())
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let status = AssignmentServiceClient::new(plain.clone())
        .get_number(pb::GetNumberRequest {
            number: "+14255550100".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = match ServerReflectionClient::new(plain)
        .server_reflection_info(tokio_stream::iter(vec![list]))
        .await
    {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    app.stop().await;
}

/// A `--health-listen` address that cannot be bound is a start-up error: exit 2, and the
/// error line names the address.
#[test]
fn an_unusable_health_listen_address_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_server_pki(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().map(|addr| (taken, addr)).unwrap();
    let args = [
        "serve".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        format!("--health-listen={}", taken.1),
        format!(
            "--database-url=sqlite://{}?mode=rwc",
            dir.path().join("db").display()
        ),
        format!("--tls-cert={}", dir.path().join("server.pem").display()),
        format!("--tls-key={}", dir.path().join("server.key").display()),
        format!("--client-ca={}", dir.path().join("ca.pem").display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stderr) = run_opconnect(&args);
    assert_eq!(code, Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("opconnect: cannot listen on"), "{stderr}");
    assert!(last.contains(&taken.1.to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// SQLite: when the database file goes away (moved, as a lost volume or a deletion would do),
/// every service turns NOT_SERVING within 2 s on both listeners, and SERVING again once it is
/// back. (The pool's open connections keep answering `SELECT 1` through their file
/// descriptors, and root ignores file modes: moving the file is what really cuts it off.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_a_sqlite_database() {
    let (app, probe) = spawn_app_with_probe(|settings| {
        let dir = settings.tls_cert.parent().expect("dir").to_owned();
        settings.database_url = format!("sqlite://{}?mode=rwc", dir.join("health.db").display());
    })
    .await;
    let plain = plaintext_channel(probe).await;
    let tls = app.channel(&app.carrier_cert("contoso")).await;
    assert_all(&plain, ServingStatus::Serving).await;

    let file = app.dir().join("health.db");
    let moved = app.dir().join("health.db.moved");
    std::fs::rename(&file, &moved).unwrap();
    let took = all_become(&plain, ServingStatus::NotServing, HEALTH_DEADLINE).await;
    eprintln!("NOT_SERVING {took:?} after the database file was moved");
    assert_all(&tls, ServingStatus::NotServing).await;

    std::fs::rename(&moved, &file).unwrap();
    let took = all_become(&plain, ServingStatus::Serving, HEALTH_DEADLINE).await;
    eprintln!("SERVING {took:?} after the database file came back");
    assert_all(&tls, ServingStatus::Serving).await;
    app.create_carrier("contoso").await;
    app.stop().await;
}

/// PostgreSQL behind a proxy that the test takes off the network: every service turns
/// NOT_SERVING within 2 s, on both listeners, and SERVING again once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn health_follows_a_postgresql_database() {
    let admin_url = require_postgres_url();
    let real_url = create_postgres_database(&admin_url).await;
    // postgres://user@host:port/db → the same through the proxy.
    let (scheme_user, rest) = real_url.split_once('@').unwrap();
    let (host_port, path) = rest.split_once('/').unwrap();
    let target = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .find(std::net::SocketAddr::is_ipv4)
        .unwrap();
    let proxy = CutProxy::start(target).await;
    let proxied = format!("{scheme_user}@{}/{path}", proxy.addr);
    let (app, probe) = spawn_app_with_probe(|settings| settings.database_url = proxied).await;
    let plain = plaintext_channel(probe).await;
    let tls = app.channel(&app.carrier_cert("contoso")).await;
    assert_all(&plain, ServingStatus::Serving).await;

    proxy.set_down(true);
    let took = all_become(&plain, ServingStatus::NotServing, HEALTH_DEADLINE).await;
    eprintln!("NOT_SERVING {took:?} after PostgreSQL went off the network");
    assert_all(&tls, ServingStatus::NotServing).await;

    proxy.set_down(false);
    let took = all_become(&plain, ServingStatus::Serving, Duration::from_secs(10)).await;
    eprintln!("SERVING {took:?} after PostgreSQL came back");
    assert_all(&tls, ServingStatus::Serving).await;
    app.create_carrier("contoso").await;
    app.stop().await;
}

/// From the start of the shutdown drain until the server stops, every service and the
/// overall status are NOT_SERVING on the probe listener, and a probe watching the overall
/// status is told so. (A health watch on the mTLS listener keeps the drain open until the
/// grace period ends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_during_the_shutdown_drain() {
    let (mut app, probe) = spawn_app_with_probe(|s| s.shutdown_grace_secs = 3).await;
    let plain = plaintext_channel(probe).await;
    let mut probe_watch = HealthClient::new(plain.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = probe_watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let tls = app.channel(&app.carrier_cert("contoso")).await;
    let mut holding = HealthClient::new(tls)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        holding.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    app.begin_shutdown();
    let next = tokio::time::timeout(Duration::from_secs(2), probe_watch.message())
        .await
        .expect("the probe's watch is told")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    assert_all(&plain, ServingStatus::NotServing).await;
    assert!(!app.has_stopped(), "the check must run during the drain");
    app.stop().await;
}

/// The request id in a response's metadata.
fn request_id(metadata: &MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .expect("x-request-id in the response")
        .to_str()
        .expect("ASCII")
        .to_owned()
}

/// Whether `id` is one the server made: 16 hex digits.
fn is_generated(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `message` with `x-request-id: id`.
fn with_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("metadata value"));
    request
}

/// The client's `x-request-id` comes back on unary calls (answered or failed), on a stream and
/// on a refused identity; without one, or with one past 128 characters, the server makes a
/// fresh 16-hex-digit id for each call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let mut platform = app.platform().await;
    let mut carrier = app.carrier("contoso").await;

    let answered = platform
        .list_carriers(with_id(pb::ListCarriersRequest::default(), "lb-7f3a 1"))
        .await
        .unwrap();
    assert_eq!(request_id(answered.metadata()), "lb-7f3a 1");
    let failed = carrier
        .get_number(with_id(
            pb::GetNumberRequest {
                number: "+14255550100".into(),
            },
            "unary-error",
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::NotFound);
    assert_eq!(request_id(failed.metadata()), "unary-error");
    let stream = carrier
        .watch_numbers(with_id(pb::WatchNumbersRequest::default(), "watch-1"))
        .await
        .unwrap();
    assert_eq!(request_id(stream.metadata()), "watch-1");

    let first = platform
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .unwrap();
    let second = platform
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .unwrap();
    let (first, second) = (request_id(first.metadata()), request_id(second.metadata()));
    assert!(
        is_generated(&first) && is_generated(&second),
        "{first} {second}"
    );
    assert_ne!(first, second);
    let too_long = "x".repeat(129);
    let replaced = platform
        .list_carriers(with_id(pb::ListCarriersRequest::default(), &too_long))
        .await
        .unwrap();
    assert!(is_generated(&request_id(replaced.metadata())));
    let stream = carrier
        .watch_numbers(pb::WatchNumbersRequest::default())
        .await
        .unwrap();
    assert!(is_generated(&request_id(stream.metadata())));

    let anonymous = app
        .ca
        .issue_client_with_uris("no identity", &[])
        .expect("certificate without SPIFFE URI");
    let refused = PlatformServiceClient::new(app.channel(&anonymous).await)
        .list_carriers(with_id(pb::ListCarriersRequest::default(), "who-am-i"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(request_id(refused.metadata()), "who-am-i");
    app.stop().await;
}

/// The JSON log of a real server: a watch that a suspension ends after it sent messages is
/// logged once, with PERMISSION_DENIED and the stable fields (method, caller, request id,
/// elapsed_ms, bytes); a unary call is logged OK; and no line holds the phone number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ending_in_an_error_is_logged_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_server_pki(dir.path());
    let database_url = fresh_database_url(dir.path()).await;
    let server = spawn_server_json(dir.path(), &database_url, &[]);
    let ca_pem = ca.cert_pem();
    let ops = ca
        .issue_client(
            &opconnect::pki::Subject::Platform("ops".into()),
            TRUST_DOMAIN,
        )
        .unwrap();
    let contoso = ca
        .issue_client(
            &opconnect::pki::Subject::Carrier("contoso".into()),
            TRUST_DOMAIN,
        )
        .unwrap();
    let mut platform =
        PlatformServiceClient::new(channel_to(server.addr, &ca_pem, Some(&ops)).await.unwrap());
    platform
        .create_carrier(with_id(
            pb::CreateCarrierRequest {
                carrier_id: "contoso".into(),
                display_name: "Contoso".into(),
                sip_domain: "sip.contoso.example".into(),
            },
            "create-1",
        ))
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
    .watch_numbers(with_id(
        pb::WatchNumbersRequest {
            include_snapshot: true,
            ..Default::default()
        },
        "watch-1",
    ))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().events.len(), 1);
    assert!(watch.message().await.unwrap().unwrap().checkpoint.is_some());
    platform
        .set_carrier_status(pb::SetCarrierStatusRequest {
            carrier_id: "contoso".into(),
            status: pb::CarrierStatus::Suspended as i32,
        })
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the watch ends")
        .unwrap_err();
    assert_eq!(ended.code(), Code::PermissionDenied);

    server.wait_for_log(r#""request_id":"watch-1""#).await;
    let lines: Vec<serde_json::Value> = server
        .log_lines()
        .iter()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let rpc_line = |id: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|line| line["request_id"] == id && line["method"].is_string())
            .collect()
    };
    let watch_lines = rpc_line("watch-1");
    assert_eq!(watch_lines.len(), 1, "{watch_lines:?}");
    let line = watch_lines[0];
    assert_eq!(line["message"], "rpc failed", "{line}");
    assert_eq!(line["code"], "PERMISSION_DENIED", "{line}");
    assert_eq!(
        line["method"], "/opconnect.v1.AssignmentService/WatchNumbers",
        "{line}"
    );
    assert_eq!(line["caller"], "carrier/contoso", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["elapsed_ms"].is_u64(), "{line}");
    assert!(line["bytes"].as_u64().is_some_and(|b| b > 0), "{line}");

    let create_lines = rpc_line("create-1");
    assert_eq!(create_lines.len(), 1, "{create_lines:?}");
    assert_eq!(create_lines[0]["code"], "OK");
    assert_eq!(create_lines[0]["caller"], "platform/ops");
    assert_eq!(create_lines[0]["message"], "rpc finished");

    for line in server.log_lines() {
        assert!(
            !line.contains("4255550100"),
            "a phone number in the log: {line}"
        );
    }
}
