//! `spawn_app()` and typed helpers, so each test reads as a few lines of intent.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opconnect::client::ClientTls;
use opconnect::config::{LogFormat, Settings};
use opconnect::pb::v1 as pb;
use opconnect::pb::v1::assignment_service_client::AssignmentServiceClient;
use opconnect::pb::v1::call_duration_service_client::CallDurationServiceClient;
use opconnect::pb::v1::call_record_service_client::CallRecordServiceClient;
use opconnect::pb::v1::platform_service_client::PlatformServiceClient;
use opconnect::pki::{CertificateAuthority, Issued, Subject};
use opconnect::retention::{DataClass, RetentionPolicy};
use opconnect::server::App;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub const TRUST_DOMAIN: &str = "opconnect";
pub const TENANT_A: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const TENANT_B: &str = "0b6d3c5e-1f7a-4c33-9e3a-5d4b2a1c0f99";

/// A running gateway and the PKI its clients use.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub ca: CertificateAuthority,
    /// Holds the certificates and the database until the test ends.
    _dir: tempfile::TempDir,
    pub database_url: String,
    /// The server's stream accounting.
    pub metrics: std::sync::Arc<opconnect::metrics::StreamMetrics>,
    /// The Prometheus scrape address, when the settings asked for one.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The plaintext probe listener's address, when the settings asked for one.
    pub health_addr: Option<std::net::SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), opconnect::server::ServerError>>>,
    /// What the server was started with, so that [`TestApp::restart`] can start it again.
    settings: Settings,
}

/// Files of a fresh PKI in `dir`: CA and server certificate for localhost / 127.0.0.1.
pub fn write_server_pki(dir: &std::path::Path) -> CertificateAuthority {
    let ca = CertificateAuthority::generate("test CA").expect("CA");
    let server = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()])
        .expect("server cert");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write");
    std::fs::write(dir.join("server.pem"), &server.cert_pem).expect("write");
    std::fs::write(dir.join("server.key"), &server.key_pem).expect("write");
    ca
}

/// Settings for a test server in `dir` on an ephemeral port.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: format!("sqlite://{}?mode=rwc", dir.join("opconnect.db").display()),
        database_max_connections: 8,
        tls_cert: dir.join("server.pem"),
        tls_key: dir.join("server.key"),
        client_ca: dir.join("ca.pem"),
        client_crl: None,
        trust_domain: TRUST_DOMAIN.into(),
        log_format: LogFormat::Text,
        shutdown_grace_secs: 5,
        number_event_retention_days: 7,
        call_record_retention_days: 30,
        quality_record_retention_days: 30,
        duration_retention_days: 548,
        purge_interval_secs: 3600,
        tls_handshake_timeout_secs: 10,
        max_connections: 10_000,
        ..Settings::default()
    }
}

/// The variable that switches the suite to PostgreSQL: an admin URL such as
/// `postgres://postgres@127.0.0.1:5432/test`; each test gets its own fresh database on it.
pub const TEST_DATABASE_VAR: &str = "OPCONNECT_TEST_DATABASE_URL";

/// A fresh, empty database for one test: a new PostgreSQL database when
/// `OPCONNECT_TEST_DATABASE_URL` is set, else a SQLite file in `dir`.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    match std::env::var(TEST_DATABASE_VAR) {
        Ok(admin_url) => create_postgres_database(&admin_url).await,
        Err(_) => format!("sqlite://{}?mode=rwc", dir.join("opconnect.db").display()),
    }
}

/// Creates a uniquely named database next to the one `admin_url` names; returns its URL.
pub async fn create_postgres_database(admin_url: &str) -> String {
    create_postgres_database_with(admin_url, "").await
}

/// Starts a gateway with a fresh PKI and database.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(None).await
}

/// Starts a gateway with a fresh PKI on `database_url`, or on a fresh database when `None`.
pub async fn spawn_app_on(database_url: Option<String>) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write_server_pki(dir.path());
    let mut settings = test_settings(dir.path());
    settings.database_url = match database_url {
        Some(url) => url,
        None => fresh_database_url(dir.path()).await,
    };
    start_app(dir, ca, settings).await
}

/// Serves `settings` (on the PKI in `dir`, signed by `ca`) as a [`TestApp`] that keeps `dir`
/// until the test ends. `TEST_LOG` set: the server's log goes to the test's output.
async fn start_app(
    dir: tempfile::TempDir,
    ca: CertificateAuthority,
    settings: Settings,
) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        opconnect::telemetry::init(LogFormat::Text);
    }
    let database_url = settings.database_url.clone();
    let served = serve(settings.clone()).await;
    TestApp {
        addr: served.addr,
        ca,
        _dir: dir,
        database_url,
        metrics: served.metrics,
        metrics_addr: served.metrics_addr,
        health_addr: served.health_addr,
        shutdown: served.shutdown,
        handle: served.handle,
        settings,
    }
}

/// Connects to `addr` presenting `client` (or no certificate), trusting `ca_pem`, through
/// the carrier client's own channel construction.
pub async fn channel_to(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTls::new(ca_pem).server_name("localhost");
    if let Some(c) = client {
        tls = tls.identity(c.cert_pem.clone(), c.key_pem.clone());
    }
    opconnect::client::endpoint(&format!("https://{addr}"), &tls)
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

impl TestApp {
    /// A channel presenting `client`.
    pub async fn channel(&self, client: &Issued) -> Channel {
        channel_to(self.addr, &self.ca.cert_pem(), Some(client))
            .await
            .expect("connect")
    }

    pub fn carrier_cert(&self, id: &str) -> Issued {
        self.ca
            .issue_client(&Subject::Carrier(id.into()), TRUST_DOMAIN)
            .expect("carrier cert")
    }

    pub async fn platform(&self) -> PlatformServiceClient<Channel> {
        let cert = self
            .ca
            .issue_client(&Subject::Platform("ops".into()), TRUST_DOMAIN)
            .expect("platform cert");
        PlatformServiceClient::new(self.channel(&cert).await)
    }

    pub async fn carrier(&self, id: &str) -> AssignmentServiceClient<Channel> {
        AssignmentServiceClient::new(self.channel(&self.carrier_cert(id)).await)
    }

    pub async fn durations(&self, id: &str) -> CallDurationServiceClient<Channel> {
        CallDurationServiceClient::new(self.channel(&self.carrier_cert(id)).await)
    }

    pub async fn records(&self, id: &str) -> CallRecordServiceClient<Channel> {
        CallRecordServiceClient::new(self.channel(&self.carrier_cert(id)).await)
    }

    /// Ingests call records in messages of `per_message`, returning the summary.
    pub async fn ingest_calls(
        &self,
        records: Vec<pb::CarrierCallRecord>,
        per_message: usize,
    ) -> pb::IngestionSummary {
        let messages: Vec<pb::IngestCallRecordsRequest> = records
            .chunks(per_message)
            .map(|c| pb::IngestCallRecordsRequest {
                records: c.to_vec(),
            })
            .collect();
        self.platform()
            .await
            .ingest_call_records(tokio_stream::iter(messages))
            .await
            .expect("ingest")
            .into_inner()
            .summary
            .expect("summary")
    }

    /// Ingests quality records in one message.
    pub async fn ingest_quality(
        &self,
        records: Vec<pb::CarrierQualityRecord>,
    ) -> pb::IngestionSummary {
        self.platform()
            .await
            .ingest_quality_records(tokio_stream::iter(vec![pb::IngestQualityRecordsRequest {
                records,
            }]))
            .await
            .expect("ingest")
            .into_inner()
            .summary
            .expect("summary")
    }

    /// Registers carrier `id` with SIP domain `sip.<id>.example`.
    pub async fn create_carrier(&self, id: &str) {
        self.platform()
            .await
            .create_carrier(pb::CreateCarrierRequest {
                carrier_id: id.into(),
                display_name: format!("{id} telecom"),
                sip_domain: format!("sip.{id}.example"),
            })
            .await
            .expect("create carrier");
    }

    /// Provisions `numbers` of `carrier` to `tenant`.
    pub async fn provision(&self, carrier: &str, tenant: &str, numbers: &[&str]) {
        self.platform()
            .await
            .provision_numbers(provision_request(carrier, tenant, numbers))
            .await
            .expect("provision");
    }

    /// Assigns `number` to `target` with the default SIP URI.
    pub async fn assign(&self, number: &str, target: &str) -> pb::TelephoneNumber {
        self.platform()
            .await
            .assign_number(assign_request(number, target))
            .await
            .expect("assign")
            .into_inner()
            .telephone_number
            .expect("number")
    }

    /// Every number of `carrier`, with the revision of the first page.
    pub async fn list_all(&self, carrier: &str) -> (Vec<pb::TelephoneNumber>, i64) {
        let mut client = self.carrier(carrier).await;
        let mut all = Vec::new();
        let mut token = String::new();
        let mut revision = None;
        loop {
            let page = client
                .list_numbers(pb::ListNumbersRequest {
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            revision.get_or_insert(page.revision);
            all.extend(page.numbers);
            if page.next_page_token.is_empty() {
                return (all, revision.unwrap_or_default());
            }
            token = page.next_page_token;
        }
    }

    /// Opens a second handle on the server's database (for retention tests).
    pub async fn open_store(&self) -> opconnect::Store {
        opconnect::Store::open(&opconnect::StoreOptions {
            url: self.database_url.clone(),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        })
        .await
        .expect("store")
    }

    /// Triggers shutdown and waits for the server to stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("join").expect("server result");
        }
    }
}

pub fn provision_request(
    carrier: &str,
    tenant: &str,
    numbers: &[&str],
) -> pb::ProvisionNumbersRequest {
    pb::ProvisionNumbersRequest {
        carrier_id: carrier.into(),
        tenant_id: tenant.into(),
        numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
        capabilities: vec![
            pb::NumberCapability::InboundCalling as i32,
            pb::NumberCapability::OutboundCalling as i32,
        ],
        iso_country_code: "US".into(),
    }
}

pub fn assign_request(number: &str, target: &str) -> pb::AssignNumberRequest {
    pb::AssignNumberRequest {
        number: number.into(),
        usage: pb::NumberUsage::CallingUser as i32,
        assignment_target_id: target.into(),
        ..Default::default()
    }
}

/// The `ErrorInfo.reason` of a status.
pub fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// Asserts code and reason of an error.
#[track_caller]
pub fn assert_error(status: &Status, code: Code, expected_reason: &str) {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    assert_eq!(
        reason(status),
        expected_reason,
        "unexpected reason: {status:?}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.domain, "opconnect.v1");
}

/// The fields named by the status's `BadRequest`.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// 2026-11-01T00:00:00Z in Unix seconds: the start of test calls.
pub const BASE_SECONDS: i64 = 1_793_491_200;

pub fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A valid, successful 60-second call, the `i`th of the test, for `tenant`.
pub fn call_record(i: i64, tenant: &str) -> pb::CallRecord {
    let start = BASE_SECONDS + i * 10;
    pb::CallRecord {
        call_id: format!("call-{i:08}"),
        correlation_id: format!("corr-{i}"),
        tenant_id: tenant.into(),
        call_type: "oc_out".into(),
        direction: pb::CallDirection::Outbound as i32,
        caller_number: "+14255550100".into(),
        callee_number: format!("+1206555{:04}", i % 10_000),
        start_time: ts(start),
        invite_time: ts(start),
        end_time: ts(start + 60),
        duration: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        successful: true,
        final_sip_code: 200,
        final_sip_phrase: "OK".into(),
        trunk_fqdn: "sbc1.contoso.example".into(),
        ..Default::default()
    }
}

pub fn for_carrier(carrier: &str, record: pb::CallRecord) -> pb::CarrierCallRecord {
    pb::CarrierCallRecord {
        carrier_id: carrier.into(),
        record: Some(record),
    }
}

/// Call records `range` of `carrier`, all for tenant A.
pub fn call_records(carrier: &str, range: std::ops::Range<i64>) -> Vec<pb::CarrierCallRecord> {
    range
        .map(|i| for_carrier(carrier, call_record(i, TENANT_A)))
        .collect()
}

/// A quality record of stream `stream_id` of test call `i` (as made by [`call_record`]) for
/// `carrier`, without metrics.
pub fn quality_record(carrier: &str, i: i64, stream_id: &str) -> pb::CarrierQualityRecord {
    let call = call_record(i, TENANT_A);
    pb::CarrierQualityRecord {
        carrier_id: carrier.into(),
        record: Some(pb::QualityRecord {
            call_id: call.call_id,
            stream_id: stream_id.into(),
            tenant_id: call.tenant_id,
            stream_direction: pb::StreamDirection::CallerToCallee as i32,
            start_time: call.start_time,
            ..Default::default()
        }),
    }
}

pub fn stream_options(after_cursor: Option<i64>) -> pb::RecordStreamOptions {
    pb::RecordStreamOptions {
        after_cursor,
        ..Default::default()
    }
}

/// A carrier's duration report of test call `i` (as made by [`call_record`]), lasting `ms`.
pub fn duration(i: i64, tenant: &str, ms: i64) -> pb::CallDuration {
    let call = call_record(i, tenant);
    pb::CallDuration {
        redacted: false,
        call_id: call.call_id,
        tenant_id: call.tenant_id,
        direction: call.direction,
        caller_number: call.caller_number,
        callee_number: call.callee_number,
        start_time: call.start_time,
        duration: Some(prost_types::Duration {
            seconds: ms / 1000,
            nanos: ((ms % 1000) * 1_000_000) as i32,
        }),
    }
}

/// Upload request messages of `per_message` records; the first carries `upload_id`.
pub fn upload_messages(
    upload_id: &str,
    records: &[pb::CallDuration],
    per_message: usize,
) -> Vec<pb::ReportCallDurationsRequest> {
    records
        .chunks(per_message)
        .enumerate()
        .map(|(i, chunk)| pb::ReportCallDurationsRequest {
            upload_id: if i == 0 {
                upload_id.to_owned()
            } else {
                String::new()
            },
            records: chunk.to_vec(),
        })
        .collect()
}

/// The current time in Unix milliseconds, as the server's clock reads it.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since_epoch.as_millis()).expect("milliseconds fit i64")
}

/// A retention policy that purges `class` entirely and keeps everything else.
pub fn purge_only(class: DataClass) -> RetentionPolicy {
    let mut policy = RetentionPolicy::keep_everything();
    match class {
        DataClass::NumberEvents => policy.number_events = Duration::ZERO,
        DataClass::CallRecords => policy.call_records = Duration::ZERO,
        DataClass::QualityRecords => policy.quality_records = Duration::ZERO,
        DataClass::Durations => policy.durations = Duration::ZERO,
        DataClass::AuditEvents => policy.audit_events = Duration::ZERO,
    }
    policy
}

/// A reconciliation window around the test calls with the default tolerance.
pub fn test_window() -> pb::ReconciliationWindow {
    pb::ReconciliationWindow {
        start_time: ts(BASE_SECONDS - 86_400),
        end_time: ts(BASE_SECONDS + 30 * 86_400),
        tolerance: None,
    }
}

/// Every discrepancy a carrier sees in the test window for `classes`.
pub async fn carrier_discrepancies(
    app: &TestApp,
    carrier: &str,
    classes: &[pb::ReconciliationClass],
) -> Vec<pb::Discrepancy> {
    let mut stream = app
        .durations(carrier)
        .await
        .list_discrepancies(pb::ListDiscrepanciesRequest {
            window: Some(test_window()),
            classes: classes.iter().map(|c| *c as i32).collect(),
        })
        .await
        .expect("list discrepancies")
        .into_inner();
    let mut all = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream ok") {
        all.extend(msg.discrepancies);
    }
    all
}

/// A spawned `opconnect serve` and the address it listens on.
pub struct Process {
    pub child: Child,
    pub addr: std::net::SocketAddr,
}

/// Starts `opconnect serve` on an ephemeral port with the PKI in `dir` and `database_url`.
pub fn spawn_server(dir: &std::path::Path, database_url: &str) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opconnect"))
        .arg("serve")
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--database-url={database_url}"))
        .arg(format!("--tls-cert={}", dir.join("server.pem").display()))
        .arg(format!("--tls-key={}", dir.join("server.key").display()))
        .arg(format!("--client-ca={}", dir.join("ca.pem").display()))
        .arg("--shutdown-grace-secs=5")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn opconnect");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("server exited early").expect("read");
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            break addr.parse().expect("address");
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Process { child, addr }
}

pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP proxy in front of a server, whose connections the test can cut at will: what a
/// broken network looks like to both ends.
pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// While set, new connections are closed as soon as they are accepted.
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `target`.
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let list = connections.clone();
        let down: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
        let refusing = down.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refusing.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().expect("lock").push(task);
            }
        });
        Self {
            addr,
            connections,
            down,
            accept,
        }
    }

    /// Takes the target off the network (cutting open connections, refusing new ones), or
    /// puts it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            self.cut();
        }
    }

    /// Drops every open connection at once.
    pub fn cut(&self) {
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Waits (bounded) until `condition` holds; the wait is for a state, not a speed.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if std::env::var("DEBUG_WAIT").is_ok() {
            eprintln!("waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a gateway with a fresh PKI and database after `configure` has adjusted its
/// settings (limits, timeouts).
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write_server_pki(dir.path());
    let mut settings = test_settings(dir.path());
    settings.database_url = fresh_database_url(dir.path()).await;
    configure(&mut settings);
    start_app(dir, ca, settings).await
}

/// A gateway serving `settings`, whose files the test made itself (to restart it on them).
pub struct Served {
    pub addr: std::net::SocketAddr,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The plaintext probe listener's address, when the settings asked for one.
    pub health_addr: Option<std::net::SocketAddr>,
    metrics: std::sync::Arc<opconnect::metrics::StreamMetrics>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), opconnect::server::ServerError>>>,
}

/// Builds and starts a gateway on `settings`.
pub async fn serve(settings: Settings) -> Served {
    let app = App::build(settings).await.expect("app builds");
    let addr = app.local_addr().expect("addr");
    let metrics_addr = app.metrics_addr();
    let health_addr = app.health_addr().map(|addr| addr.expect("probe addr"));
    let metrics = app.metrics();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    Served {
        addr,
        metrics_addr,
        health_addr,
        metrics,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

/// The `RetryInfo` delay of a status, if it has one.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status.get_details_retry_info().and_then(|r| r.retry_delay)
}

/// The PostgreSQL admin URL of the suite; tests that need PostgreSQL are `#[ignore]`d and
/// fail with this message when run without it.
pub fn require_postgres_url() -> String {
    std::env::var(TEST_DATABASE_VAR)
        .unwrap_or_else(|_| panic!("set {TEST_DATABASE_VAR} to a PostgreSQL admin URL"))
}

/// Like [`create_postgres_database`], with `options` appended to `CREATE DATABASE <name>`
/// (a template, a locale provider, a collation).
pub async fn create_postgres_database_with(admin_url: &str, options: &str) -> String {
    use sea_orm::ConnectionTrait;
    let name = format!(
        "opc_test_{}_{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let admin = sea_orm::Database::connect(admin_url)
        .await
        .expect("connect to the PostgreSQL admin URL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name} {options}"))
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    format!("{prefix}/{name}{query}")
}

/// Every call record of `carrier` from the start of its log, as (cursor, call id).
pub async fn stored_call_ids(app: &TestApp, carrier: &str) -> Vec<(i64, String)> {
    let mut stream = app
        .records(carrier)
        .await
        .stream_call_records(pb::StreamCallRecordsRequest {
            options: Some(stream_options(Some(0))),
        })
        .await
        .expect("stream call records")
        .into_inner();
    let mut stored = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream ok") {
        stored.extend(msg.records.into_iter().map(|r| (r.cursor, r.call_id)));
    }
    stored
}

impl Served {
    /// Triggers shutdown and waits for the server to stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("join").expect("server result");
        }
    }
}

/// The certificate and key `certs init` / `certs issue` wrote for `stem` in `dir`.
pub fn issued_in(dir: &std::path::Path, stem: &str) -> Issued {
    Issued {
        cert_pem: std::fs::read_to_string(dir.join(format!("{stem}.pem"))).expect("read cert"),
        key_pem: std::fs::read_to_string(dir.join(format!("{stem}.key"))).expect("read key"),
    }
}

/// A health check over a new connection presenting `client`: `Ok` when served (any gRPC
/// status from the application counts), `Err` when the connection or handshake failed.
pub async fn health_over_new_connection(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: &Issued,
) -> Result<(), String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = channel_to(addr, ca_pem, Some(client))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    match HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
    {
        Ok(_) => Ok(()),
        // A status with an ErrorInfo came from the application: the connection was served.
        Err(status) if !reason(&status).is_empty() => Ok(()),
        Err(status) => Err(format!("call: {status:?}")),
    }
}

/// Runs the `opconnect` binary with `args`; returns its exit code and stderr.
pub fn run_opconnect(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_opconnect"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run opconnect");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A spawned `opconnect serve` whose log the test can read; killed when dropped, so a failed
/// test leaves no server behind.
pub struct LoggedProcess {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Starts `opconnect serve` like [`spawn_server`], with `extra` flags, keeping its log lines.
pub fn spawn_server_with(
    dir: &std::path::Path,
    database_url: &str,
    extra: &[&str],
) -> LoggedProcess {
    spawn_logged(dir, database_url, extra, |line| {
        line.split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|addr| addr.parse().expect("address"))
    })
}

/// Starts `opconnect serve` on the PKI in `dir` with `extra` flags, keeping every log line;
/// `listening` finds the address in the line that announces it.
fn spawn_logged(
    dir: &std::path::Path,
    database_url: &str,
    extra: &[&str],
    listening: fn(&str) -> Option<std::net::SocketAddr>,
) -> LoggedProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opconnect"))
        .arg("serve")
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--database-url={database_url}"))
        .arg(format!("--tls-cert={}", dir.join("server.pem").display()))
        .arg(format!("--tls-key={}", dir.join("server.key").display()))
        .arg(format!("--client-ca={}", dir.join("ca.pem").display()))
        .arg("--shutdown-grace-secs=5")
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn opconnect");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let addr = loop {
        let line = lines.next().expect("server exited early").expect("read");
        let addr = listening(&line);
        log.lock().expect("lock").push(line);
        if let Some(addr) = addr {
            break addr;
        }
    };
    let keep = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            keep.lock().expect("lock").push(line);
        }
    });
    LoggedProcess { child, addr, log }
}

impl LoggedProcess {
    /// Waits (bounded) until a log line contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self
                .log
                .lock()
                .expect("lock")
                .iter()
                .any(|line| line.contains(needle))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {:?}",
                self.log.lock().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LoggedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === operations: probe listener, health, logs, SIGHUP ===

/// Starts a gateway like [`spawn_app_with`], with its plaintext probe listener on an
/// ephemeral port; returns the app and the probe listener's address.
pub async fn spawn_app_with_probe(
    configure: impl FnOnce(&mut Settings),
) -> (TestApp, std::net::SocketAddr) {
    let app = spawn_app_with(|settings| {
        settings.health_listen = Some("127.0.0.1:0".parse().expect("addr"));
        configure(settings);
    })
    .await;
    let probe = app.health_addr.expect("probe listener configured");
    (app, probe)
}

impl TestApp {
    /// Starts the shutdown without waiting for it (see [`TestApp::stop`]).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Whether the server has stopped serving.
    pub fn has_stopped(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The directory holding the test's certificates and SQLite database.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

/// A plaintext channel to a probe listener: no TLS, no client certificate.
pub async fn plaintext_channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("plaintext connect")
}

/// What `grpc.health.v1.Health/Check` reports for `service` over `channel`.
pub async fn health_status(
    channel: &Channel,
    service: &str,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, Status> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Every service whose health is reported: the overall server and the four services.
pub const HEALTH_SERVICES: [&str; 5] = [
    "",
    "opconnect.v1.AssignmentService",
    "opconnect.v1.CallRecordService",
    "opconnect.v1.CallDurationService",
    "opconnect.v1.PlatformService",
];

/// Sends SIGHUP to `child`.
pub fn send_sighup(child: &Child) {
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

impl LoggedProcess {
    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }
}

/// Starts `opconnect serve` like [`spawn_server_with`] with `--log-format json` and `extra`
/// flags, keeping its log lines (one JSON object each).
pub fn spawn_server_json(
    dir: &std::path::Path,
    database_url: &str,
    extra: &[&str],
) -> LoggedProcess {
    let mut flags = vec!["--log-format=json"];
    flags.extend_from_slice(extra);
    spawn_logged(dir, database_url, &flags, |line| {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        parsed["message"]
            .as_str()
            .and_then(|message| message.strip_prefix("listening on "))
            .map(|addr| addr.parse().expect("address"))
    })
}

// === data protection: a served binary as a TestApp, its log, async waits ===

impl TestApp {
    /// A [`TestApp`] for a gateway serving elsewhere (a spawned binary) at `addr`, trusting
    /// `ca`; `dir` is kept until the test ends. Stopping it stops nothing.
    pub fn attach(
        dir: tempfile::TempDir,
        ca: CertificateAuthority,
        addr: std::net::SocketAddr,
        database_url: &str,
    ) -> Self {
        let mut settings = test_settings(dir.path());
        settings.listen = addr;
        settings.database_url = database_url.to_owned();
        TestApp {
            addr,
            ca,
            settings,
            _dir: dir,
            database_url: database_url.to_owned(),
            metrics: Default::default(),
            metrics_addr: None,
            health_addr: None,
            shutdown: None,
            handle: None,
        }
    }
}

/// Like [`eventually`], for a condition that must be awaited.
pub async fn eventually_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === restarts ===

impl TestApp {
    /// Stops the server (gracefully) and starts it again on the same address, database and
    /// certificates: a restart as clients see it.
    pub async fn restart(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("join").expect("server result");
        }
        self.settings.listen = self.addr;
        let served = serve(self.settings.clone()).await;
        assert_eq!(served.addr, self.addr, "restarted on another address");
        self.metrics = served.metrics;
        self.shutdown = served.shutdown;
        self.handle = served.handle;
    }

    /// The client TLS material of `client` for this server.
    pub fn client_tls(&self, client: &Issued) -> ClientTls {
        ClientTls::new(self.ca.cert_pem())
            .server_name("localhost")
            .identity(client.cert_pem.clone(), client.key_pem.clone())
    }
}
