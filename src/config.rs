//! Settings of `opconnect serve`: defaults, then a TOML file (`--config`), then `OPCONNECT_*`
//! environment variables, then command-line flags; each layer wins over the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `serve` needs, fully resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address of the mutual-TLS gRPC listener.
    pub listen: SocketAddr,
    /// Address of the plaintext listener that serves only `grpc.health.v1.Health`, for load
    /// balancers that cannot present a client certificate. None: no such listener.
    pub health_listen: Option<SocketAddr>,
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// Maximum database connections in the pool (on SQLite, write transactions have one more
    /// connection of their own).
    pub database_max_connections: u32,
    /// Server certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// Server private key (PEM).
    pub tls_key: PathBuf,
    /// CA that signs client certificates (PEM).
    pub client_ca: PathBuf,
    /// Certificate revocation lists of the client CA (PEM, `certs revoke` writes one); a
    /// revoked client certificate fails the handshake. None: no revocation checking.
    pub client_crl: Option<PathBuf>,
    /// SPIFFE trust domain of client identities.
    pub trust_domain: String,
    /// Log format.
    pub log_format: LogFormat,
    /// How long open streams and calls get to finish after SIGTERM/SIGINT, in seconds.
    pub shutdown_grace_secs: u64,
    /// Number events older than this many days are purged.
    pub number_event_retention_days: u32,
    /// Call records ingested more than this many days ago are purged.
    pub call_record_retention_days: u32,
    /// Quality records ingested more than this many days ago are purged.
    pub quality_record_retention_days: u32,
    /// Call durations received more than this many days ago are purged (18 months).
    pub duration_retention_days: u32,
    /// Audit events older than this many days are purged.
    pub audit_retention_days: u32,
    /// How often retention purges run, in seconds.
    pub purge_interval_secs: u64,
    /// Prometheus scrape listener (`GET /metrics`, plain HTTP); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Open streams (server and client streams) per carrier on this instance.
    pub max_streams_per_carrier: u32,
    /// Unary calls and stream opens per second per carrier (burst: twice as many); 0 is off.
    pub rate_limit_per_carrier: u32,
    /// Largest message decoded or encoded, in bytes.
    pub max_message_bytes: usize,
    /// Most records one client stream (upload or ingestion) may send.
    pub max_records_per_upload: u64,
    /// How long a client stream may go without a message, in seconds.
    pub upload_idle_timeout_secs: u64,
    /// Seconds from accept to a finished TLS handshake; a slower connection is closed, so
    /// idle or slow peers cannot hold sockets and handshake state.
    pub tls_handshake_timeout_secs: u64,
    /// Open connections (handshaking or established) per instance; past it a new connection
    /// is closed at accept.
    pub max_connections: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            health_listen: None,
            database_url: "sqlite://opconnect.db?mode=rwc".into(),
            database_max_connections: 8,
            tls_cert: "certs/server.pem".into(),
            tls_key: "certs/server.key".into(),
            client_ca: "certs/ca.pem".into(),
            client_crl: None,
            trust_domain: crate::pki::DEFAULT_TRUST_DOMAIN.into(),
            log_format: LogFormat::Text,
            shutdown_grace_secs: 10,
            number_event_retention_days: 7,
            call_record_retention_days: 30,
            quality_record_retention_days: 30,
            duration_retention_days: 548,
            audit_retention_days: 400,
            purge_interval_secs: 3600,
            metrics_listen: None,
            max_streams_per_carrier: 64,
            rate_limit_per_carrier: 200,
            max_message_bytes: 4 * 1024 * 1024,
            max_records_per_upload: 5_000_000,
            upload_idle_timeout_secs: 60,
            tls_handshake_timeout_secs: 10,
            max_connections: 10_000,
        }
    }
}

/// Flags of `opconnect serve`; every one is optional and overrides file and environment.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct ServeFlags {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Plaintext listener serving only grpc.health.v1.Health, for load-balancer probes
    /// without a client certificate [default: none].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<SocketAddr>,
    /// Database URL [default: sqlite://opconnect.db?mode=rwc].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Maximum database connections [default: 8]; on SQLite, write transactions have one
    /// more of their own.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_max_connections: Option<u32>,
    /// Server certificate (PEM) [default: certs/server.pem].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM) [default: certs/server.key].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA of client certificates (PEM) [default: certs/ca.pem].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Client certificate revocation lists (PEM), e.g. the crl.pem written by `certs revoke`
    /// [default: none].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_crl: Option<PathBuf>,
    /// SPIFFE trust domain [default: opconnect].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Shutdown grace period in seconds [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// Days number events are kept, counted from their commit [default: 7].
    #[arg(long, value_name = "DAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_event_retention_days: Option<u32>,
    /// Days call records are kept, counted from their ingestion [default: 30].
    #[arg(long, value_name = "DAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_record_retention_days: Option<u32>,
    /// Days quality records are kept, counted from their ingestion [default: 30].
    #[arg(long, value_name = "DAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality_record_retention_days: Option<u32>,
    /// Days carrier-reported durations are kept, counted from receipt [default: 548].
    #[arg(long, value_name = "DAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_retention_days: Option<u32>,
    /// Days audit events are kept [default: 400].
    #[arg(long, value_name = "DAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_retention_days: Option<u32>,
    /// Seconds between retention purges [default: 3600].
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_interval_secs: Option<u64>,
    /// Prometheus scrape listener address, plain HTTP `GET /metrics` [default: off].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Open streams per carrier on this instance [default: 64].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_streams_per_carrier: Option<u32>,
    /// Calls and stream opens per second per carrier, burst twice that; 0 is off [default: 200].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_carrier: Option<u32>,
    /// Largest message decoded or encoded, in bytes [default: 4194304].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// Most records per upload or ingestion stream [default: 5000000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_records_per_upload: Option<u64>,
    /// Seconds a client stream may go without a message [default: 60].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_idle_timeout_secs: Option<u64>,
    /// Seconds a new connection gets to finish its TLS handshake before it is closed
    /// [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_handshake_timeout_secs: Option<u64>,
    /// Open connections per instance; past it new connections are closed at accept
    /// [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

/// Every key of [`Settings`], as written in the TOML file and (upper-cased, `OPCONNECT_`
/// prefixed) in the environment.
pub const SETTING_KEYS: &[&str] = &[
    "listen",
    "health_listen",
    "database_url",
    "database_max_connections",
    "tls_cert",
    "tls_key",
    "client_ca",
    "client_crl",
    "trust_domain",
    "log_format",
    "shutdown_grace_secs",
    "number_event_retention_days",
    "call_record_retention_days",
    "quality_record_retention_days",
    "duration_retention_days",
    "audit_retention_days",
    "purge_interval_secs",
    "metrics_listen",
    "max_streams_per_carrier",
    "rate_limit_per_carrier",
    "max_message_bytes",
    "max_records_per_upload",
    "upload_idle_timeout_secs",
    "tls_handshake_timeout_secs",
    "max_connections",
];

/// A configuration problem, stated in one line.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Resolves the settings from defaults, the file, the environment and the flags.
    pub fn load(flags: &ServeFlags) -> Result<Self, ConfigError> {
        Self::load_from(flags, Env::prefixed("OPCONNECT_"))
    }

    fn load_from(flags: &ServeFlags, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let file = flags
            .config
            .clone()
            .or_else(|| std::env::var_os("OPCONNECT_CONFIG").map(PathBuf::from));
        if let Some(path) = &file {
            if !Path::new(path).is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only this command's keys: other OPCONNECT_* variables (the admin tool's, the test
        // suite's) must not trip the unknown-field check.
        figment
            .merge(env.only(SETTING_KEYS))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| ConfigError(one_line(&e)))
    }
}

fn one_line(err: &figment::Error) -> String {
    err.to_string().replace('\n', " ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its large Error type
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_environment_which_wins_over_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "opconnect.toml",
                "listen = \"127.0.0.1:1\"\ndatabase_url = \"sqlite://file.db\"\ntrust_domain = \"file\"\n",
            )?;
            jail.set_env("OPCONNECT_DATABASE_URL", "sqlite://env.db");
            jail.set_env("OPCONNECT_TRUST_DOMAIN", "env");
            let flags = ServeFlags {
                config: Some("opconnect.toml".into()),
                trust_domain: Some("flag".into()),
                ..Default::default()
            };
            let s = Settings::load(&flags).map_err(|e| e.to_string())?;
            assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 1)));
            assert_eq!(s.database_url, "sqlite://env.db");
            assert_eq!(s.trust_domain, "flag");
            Ok(())
        });
    }

    /// The probe listener is off by default, and set by the TOML key `health_listen`, by
    /// `OPCONNECT_HEALTH_LISTEN` and by `--health-listen`.
    #[test]
    fn health_listen_is_off_unless_set() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(&ServeFlags::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.health_listen, None);
            jail.create_file("opconnect.toml", "health_listen = \"127.0.0.1:8081\"\n")?;
            let file = ServeFlags {
                config: Some("opconnect.toml".into()),
                ..Default::default()
            };
            let s = Settings::load(&file).map_err(|e| e.to_string())?;
            assert_eq!(
                s.health_listen,
                Some(SocketAddr::from(([127, 0, 0, 1], 8081)))
            );
            jail.set_env("OPCONNECT_HEALTH_LISTEN", "127.0.0.1:8082");
            let s = Settings::load(&file).map_err(|e| e.to_string())?;
            assert_eq!(
                s.health_listen,
                Some(SocketAddr::from(([127, 0, 0, 1], 8082)))
            );
            let flag = ServeFlags {
                health_listen: Some(SocketAddr::from(([0, 0, 0, 0], 8083))),
                ..file
            };
            let s = Settings::load(&flag).map_err(|e| e.to_string())?;
            assert_eq!(
                s.health_listen,
                Some(SocketAddr::from(([0, 0, 0, 0], 8083)))
            );
            Ok(())
        });
    }

    /// Retention periods come from the TOML file, the environment and flags, like every
    /// setting; the audit log is kept 400 days unless set.
    #[test]
    fn retention_periods_are_settings_and_flags() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(&ServeFlags::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.audit_retention_days, 400);
            jail.create_file(
                "opconnect.toml",
                "call_record_retention_days = 10\naudit_retention_days = 30\n",
            )?;
            jail.set_env("OPCONNECT_AUDIT_RETENTION_DAYS", "60");
            let flags = ServeFlags {
                config: Some("opconnect.toml".into()),
                duration_retention_days: Some(90),
                ..Default::default()
            };
            let s = Settings::load(&flags).map_err(|e| e.to_string())?;
            assert_eq!(s.call_record_retention_days, 10);
            assert_eq!(s.audit_retention_days, 60);
            assert_eq!(s.duration_retention_days, 90);
            Ok(())
        });
    }

    /// SETTING_KEYS lists exactly the fields of Settings.
    #[test]
    fn setting_keys_match_the_settings() {
        let value = figment::value::Value::serialize(Settings::default()).unwrap();
        let dict = value.into_dict().unwrap();
        let mut fields: Vec<&str> = dict.keys().map(String::as_str).collect();
        let mut keys = SETTING_KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }

    /// Other OPCONNECT_* variables (admin tool, test suite) are not settings and are ignored.
    #[test]
    fn unrelated_environment_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OPCONNECT_TEST_DATABASE_URL", "postgres://x/y");
            jail.set_env("OPCONNECT_ENDPOINT", "https://localhost:1");
            let s = Settings::load(&ServeFlags::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.database_url, Settings::default().database_url);
            Ok(())
        });
    }

    #[test]
    fn missing_file_and_bad_values_are_one_line_errors() {
        let flags = ServeFlags {
            config: Some("/nonexistent/opconnect.toml".into()),
            ..Default::default()
        };
        let err = Settings::load(&flags).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        figment::Jail::expect_with(|jail| {
            jail.set_env("OPCONNECT_LISTEN", "not-an-address");
            let err = Settings::load(&ServeFlags::default())
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains('\n') && err.to_lowercase().contains("listen"),
                "{err}"
            );
            Ok(())
        });
    }
}
