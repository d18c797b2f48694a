//! What every measurement starts from: a fresh PKI, fresh databases (SQLite files, or new
//! PostgreSQL databases when `OPCONNECT_BENCH_DATABASE_URL` names a server), the gateway and a
//! bare tonic server running in this process behind the same certificates, mutual-TLS channels
//! to them, and the test data.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use opconnect::config::Settings;
use opconnect::metrics::StreamMetrics;
use opconnect::pb::v1 as pb;
use opconnect::pb::v1::platform_service_client::PlatformServiceClient;
use opconnect::pki::{CertificateAuthority, Issued, Subject};
use opconnect::server::{App, ServerError};
use opconnect::{Store, StoreOptions};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig};

/// The SPIFFE trust domain of the bench's identities.
pub const TRUST_DOMAIN: &str = "opconnect";
/// The one carrier every measurement uses.
pub const CARRIER: &str = "bench";
/// The tenant of every record and number.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// A PostgreSQL admin URL (`postgres://postgres@127.0.0.1:5432/test`): each run then creates
/// (and at its end drops) its own databases on that server instead of SQLite files.
pub const DATABASE_VAR: &str = "OPCONNECT_BENCH_DATABASE_URL";

// === PKI ===

/// A fresh CA, the server certificate both servers present, and the two client identities.
pub struct Pki {
    /// Holds the PEM files the servers read.
    dir: tempfile::TempDir,
    ca_pem: String,
    /// `spiffe://opconnect/platform/ops`.
    pub platform: Issued,
    /// `spiffe://opconnect/carrier/bench`.
    pub carrier: Issued,
}

impl Pki {
    /// Issues everything afresh and writes the server's files.
    pub fn generate() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = CertificateAuthority::generate("bench CA")?;
        let server = ca.issue_server(&["localhost".into(), "127.0.0.1".into()])?;
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem())?;
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem)?;
        std::fs::write(dir.path().join("server.key"), &server.key_pem)?;
        Ok(Self {
            dir,
            ca_pem: ca.cert_pem(),
            platform: ca.issue_client(&Subject::Platform("ops".into()), TRUST_DOMAIN)?,
            carrier: ca.issue_client(&Subject::Carrier(CARRIER.into()), TRUST_DOMAIN)?,
        })
    }

    /// The directory of the servers' files: `ca.pem`, `server.pem`, `server.key`.
    pub fn server_files(&self) -> &Path {
        self.dir.path()
    }
}

/// A mutual-TLS connection to `addr` presenting `who`.
pub async fn channel(addr: SocketAddr, pki: &Pki, who: &Issued) -> Result<Channel> {
    opconnect::server::install_crypto_provider();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost")
        .identity(Identity::from_pem(&who.cert_pem, &who.key_pem));
    Channel::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// `n` separate connections to `addr` presenting `who`.
pub async fn channels(addr: SocketAddr, pki: &Pki, who: &Issued, n: usize) -> Result<Vec<Channel>> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(channel(addr, pki, who).await?);
    }
    Ok(all)
}

// === Databases ===

/// Where fresh databases come from.
pub struct Databases {
    /// The PostgreSQL admin URL, or `None` for SQLite files in `dir`.
    admin_url: Option<String>,
    dir: tempfile::TempDir,
    /// PostgreSQL databases made by this run, dropped at its end.
    created: Mutex<Vec<String>>,
}

impl Databases {
    /// SQLite files in a temporary directory, or PostgreSQL when [`DATABASE_VAR`] is set.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            admin_url: std::env::var(DATABASE_VAR).ok().filter(|u| !u.is_empty()),
            dir: tempfile::tempdir()?,
            created: Mutex::default(),
        })
    }

    /// "SQLite" or "PostgreSQL".
    pub fn backend(&self) -> &'static str {
        if self.admin_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }

    /// The URL of a new, empty database (no schema yet: the gateway or [`migrate`] makes it).
    pub async fn fresh(&self, label: &str) -> Result<String> {
        let Some(admin_url) = &self.admin_url else {
            let file = self.dir.path().join(format!("{label}.db"));
            return Ok(format!("sqlite://{}?mode=rwc", file.display()));
        };
        let name = format!(
            "opc_bench_{}_{label}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let admin = Database::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {DATABASE_VAR}"))?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        admin.close().await?;
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name.clone());
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url.as_str(), String::new()),
        };
        let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
        Ok(format!("{prefix}/{name}{query}"))
    }

    /// Drops the PostgreSQL databases this run made (SQLite files go with the directory).
    pub async fn drop_created(&self) -> Result<()> {
        let Some(admin_url) = &self.admin_url else {
            return Ok(());
        };
        let names =
            std::mem::take(&mut *self.created.lock().unwrap_or_else(PoisonError::into_inner));
        let admin = Database::connect(admin_url).await?;
        for name in names {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
        }
        admin.close().await?;
        Ok(())
    }
}

/// Creates the gateway's schema in the database at `url` by opening (and closing) a store on
/// it: the store is crate-private, but opening it runs the migrations.
pub async fn migrate(url: &str) -> Result<()> {
    let store = Store::open(&StoreOptions {
        url: url.to_owned(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(10),
    })
    .await?;
    store.close().await?;
    Ok(())
}

/// One connection to `url` with the settings the gateway's pool uses (src/store/mod.rs):
/// SQLite in WAL mode with `synchronous=NORMAL`, PostgreSQL with custom plans.
pub async fn connect(url: &str) -> Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        })
        .map_sqlx_postgres_opts(|opts| opts.options([("plan_cache_mode", "force_custom_plan")]));
    Ok(Database::connect(options).await?)
}

// === Servers ===

/// The gateway, serving in this process on 127.0.0.1 with an ephemeral port.
pub struct Gateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database, for the baselines that read it.
    pub database_url: String,
    /// Its stream accounting: open streams show when streams have ended.
    pub metrics: Arc<StreamMetrics>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Gateway {
    /// Builds the gateway on `database_url` with the TLS files in `files` (see
    /// [`Pki::server_files`]) and the default settings, except the two per-carrier limits: the
    /// benchmark holds thousands of one carrier's streams and calls far above 200/s, and
    /// measures the gateway, not its limits. It has a metrics listener (nobody scrapes it)
    /// unless [`super::metrics_on`] says otherwise.
    pub async fn start(files: &Path, database_url: String) -> Result<Self> {
        let settings = Settings {
            listen: "127.0.0.1:0".parse()?,
            database_url: database_url.clone(),
            tls_cert: files.join("server.pem"),
            tls_key: files.join("server.key"),
            client_ca: files.join("ca.pem"),
            trust_domain: TRUST_DOMAIN.into(),
            max_streams_per_carrier: 100_000,
            rate_limit_per_carrier: 0,
            // As deployed: a scrape listener, so the metrics are recorded.
            metrics_listen: super::metrics_on().then(|| ([127, 0, 0, 1], 0).into()),
            ..Settings::default()
        };
        let app = App::build(settings).await?;
        let addr = app.local_addr()?;
        let metrics = app.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            database_url,
            metrics,
            stop,
            task,
        })
    }

    /// Shuts the gateway down and waits until it has closed its database.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }

    /// Waits (at most 30 s) until the server has ended every stream, so that one
    /// measurement's streams do not run on into the next.
    pub async fn streams_ended(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.metrics.open_streams() > 0 {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} streams still open 30 s after their clients left",
                self.metrics.open_streams()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// The unary and streaming baseline: a bare tonic server with only `grpc.health.v1.Health`,
/// behind the same certificates and mutual TLS as the gateway, in the same process; no
/// database, no identity layer, no limits.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Echo {
    /// Starts it on 127.0.0.1 with an ephemeral port and the TLS files in `files`, set up as
    /// the gateway sets them up (src/server.rs).
    pub async fn start(files: &Path) -> Result<Self> {
        opconnect::server::install_crypto_provider();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                std::fs::read(files.join("server.pem"))?,
                std::fs::read(files.join("server.key"))?,
            ))
            .client_ca_root(Certificate::from_pem(std::fs::read(files.join("ca.pem"))?));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = Server::builder()
            .tls_config(tls)?
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                let _ = stopped.await;
            });
        Ok(Self {
            addr,
            stop,
            task: tokio::spawn(serve),
        })
    }

    /// Shuts it down.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

// === Test data ===

/// 2026-11-01T00:00:00Z in Unix seconds: the start of the first call.
const BASE_SECONDS: i64 = 1_793_491_200;

fn timestamp(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A valid, successful 60-second outbound call, the `i`th of the run (the tests' record).
pub fn call_record(i: usize) -> pb::CallRecord {
    let start = BASE_SECONDS + i as i64 * 10;
    pb::CallRecord {
        call_id: format!("call-{i:08}"),
        correlation_id: format!("corr-{i}"),
        tenant_id: TENANT.into(),
        call_type: "oc_out".into(),
        direction: pb::CallDirection::Outbound as i32,
        caller_number: "+14255550100".into(),
        callee_number: format!("+1206555{:04}", i % 10_000),
        start_time: timestamp(start),
        invite_time: timestamp(start),
        end_time: timestamp(start + 60),
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

/// `n` call records of the bench carrier, as the platform ingests them.
pub fn carrier_call_records(n: usize) -> Vec<pb::CarrierCallRecord> {
    (0..n)
        .map(|i| pb::CarrierCallRecord {
            carrier_id: CARRIER.into(),
            record: Some(call_record(i)),
        })
        .collect()
}

/// The carrier's duration report of call `i`: 59.5 s of the platform's 60.
pub fn call_duration(i: usize) -> pb::CallDuration {
    let call = call_record(i);
    pb::CallDuration {
        redacted: false,
        call_id: call.call_id,
        tenant_id: call.tenant_id,
        direction: call.direction,
        caller_number: call.caller_number,
        callee_number: call.callee_number,
        start_time: call.start_time,
        duration: Some(prost_types::Duration {
            seconds: 59,
            nanos: 500_000_000,
        }),
    }
}

/// The `i`th number of the bench carrier.
pub fn number(i: usize) -> String {
    format!("+1425{i:07}")
}

/// Registers the bench carrier and provisions its numbers `0..numbers` to the tenant.
pub async fn prepare_carrier(
    platform: &mut PlatformServiceClient<Channel>,
    numbers: usize,
) -> Result<()> {
    platform
        .create_carrier(pb::CreateCarrierRequest {
            carrier_id: CARRIER.into(),
            display_name: "Bench telecom".into(),
            sip_domain: format!("sip.{CARRIER}.example"),
        })
        .await?;
    let all: Vec<String> = (0..numbers).map(number).collect();
    for batch in all.chunks(1_000) {
        platform
            .provision_numbers(pb::ProvisionNumbersRequest {
                carrier_id: CARRIER.into(),
                tenant_id: TENANT.into(),
                numbers: batch.to_vec(),
                capabilities: vec![pb::NumberCapability::InboundCalling as i32],
                iso_country_code: "US".into(),
            })
            .await?;
    }
    Ok(())
}

/// The request that assigns `number` to user `target`.
pub fn assign(number: &str, target: &str) -> pb::AssignNumberRequest {
    pb::AssignNumberRequest {
        number: number.into(),
        usage: pb::NumberUsage::CallingUser as i32,
        assignment_target_id: target.into(),
        ..Default::default()
    }
}
