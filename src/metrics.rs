//! What the server measures about itself: its own accounting of streams (how many are open,
//! how many bytes wait in their channels: slow readers must never make that grow without
//! bound), and the Prometheus families served on `--metrics-listen` (DESIGN §6), exposed with
//! `prometheus-client`, never hand-written. Carrier labels come from CA-issued identities and
//! the registry, never from free client input, so label sets stay bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of an RPC: its full method, its gRPC code name, and the calling carrier (empty for
/// platform identities).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcLabels {
    pub method: String,
    pub code: String,
    pub carrier: String,
}

/// Labels of an RPC's latency: method and code (no carrier, to keep the buckets few).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    pub method: String,
    pub code: String,
}

/// Labels of an open stream: what it carries and whose data it is.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StreamLabels {
    pub kind: &'static str,
    pub carrier: String,
}

/// Labels of records: which kind of record.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub kind: &'static str,
}

/// Labels of a refusal: why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub reason: &'static str,
}

/// Labels of a caught-up stream's read: what it reads, and from where (`tail`: the carrier's
/// shared tail; `behind`: the stream was behind the tail and read the database itself;
/// `fill`: the tail read the database once for every stream).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TailReadLabels {
    pub kind: &'static str,
    pub source: &'static str,
}

/// Labels of database pool connections: idle or in use.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PoolLabels {
    pub state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The Prometheus families of one server.
#[derive(Debug)]
pub(crate) struct Families {
    pub rpcs: Family<RpcLabels, Counter>,
    pub rpc_duration: Family<MethodLabels, Histogram>,
    pub open_streams: Family<StreamLabels, Gauge>,
    pub records_ingested: Family<KindLabels, Counter>,
    pub records_rejected: Family<KindLabels, Counter>,
    pub records_delivered: Family<KindLabels, Counter>,
    pub stream_lag: Family<KindLabels, Histogram>,
    pub limit_rejections: Family<ReasonLabels, Counter>,
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    pub tls_reloads: Family<ReasonLabels, Counter>,
    pub certificate_expiry: Gauge,
    pub db_query_duration: Histogram,
    pub db_pool_connections: Family<PoolLabels, Gauge>,
    pub tail_reads: Family<TailReadLabels, Counter>,
    /// Audit events by outcome: `written`, `waited` (the queue was full), `dropped`.
    pub audit_events: Family<ReasonLabels, Counter>,
}

impl Families {
    fn new(registry: &mut Registry) -> Self {
        let families = Self {
            rpcs: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram),
            open_streams: Family::default(),
            records_ingested: Family::default(),
            records_rejected: Family::default(),
            records_delivered: Family::default(),
            stream_lag: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 4.0, 12))
            }),
            limit_rejections: Family::default(),
            tls_handshake_failures: Family::default(),
            tls_reloads: Family::default(),
            certificate_expiry: Gauge::default(),
            db_query_duration: latency_histogram(),
            db_pool_connections: Family::default(),
            tail_reads: Family::default(),
            audit_events: Family::default(),
        };
        registry.register(
            "rpcs",
            "RPCs that ended, by method, gRPC code and calling carrier",
            families.rpcs.clone(),
        );
        registry.register_with_unit(
            "rpc_duration",
            "Time from an RPC's start to its end (a stream's last frame), by method and code",
            Unit::Seconds,
            families.rpc_duration.clone(),
        );
        registry.register(
            "open_streams",
            "Streams open now, by kind and carrier",
            families.open_streams.clone(),
        );
        registry.register(
            "records_ingested",
            "Records stored by ingestion and uploads, by kind",
            families.records_ingested.clone(),
        );
        registry.register(
            "records_rejected",
            "Records refused by ingestion and uploads, by kind",
            families.records_rejected.clone(),
        );
        registry.register(
            "records_delivered",
            "Records and number events sent to carriers by streams, by kind",
            families.records_delivered.clone(),
        );
        registry.register(
            "stream_lag",
            "How far behind the newest record or revision a stream's message was, by kind",
            families.stream_lag.clone(),
        );
        registry.register(
            "limit_rejections",
            "Calls, streams and connections refused by a limit, by reason",
            families.limit_rejections.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason",
            families.tls_handshake_failures.clone(),
        );
        registry.register(
            "tls_reloads",
            "Reloads of the TLS set (SIGHUP), by outcome",
            families.tls_reloads.clone(),
        );
        registry.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "When the served certificate expires, in Unix seconds",
            Unit::Seconds,
            families.certificate_expiry.clone(),
        );
        registry.register_with_unit(
            "db_query_duration",
            "Time of each database statement",
            Unit::Seconds,
            families.db_query_duration.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections, idle or in use (read at scrape time)",
            families.db_pool_connections.clone(),
        );
        registry.register(
            "tail_reads",
            "Reads of following streams by kind and source: from the shared tail, from the \
             database by a stream behind the tail, and the tail's own database reads; \
             `offered` counts commits of this instance put in the tail by their writer, \
             which no stream then reads from the database",
            families.tail_reads.clone(),
        );
        registry.register(
            "audit_events",
            "Audit events written, queued after waiting for room, or dropped, by outcome",
            families.audit_events.clone(),
        );
        families.start_at_zero();
        families
    }

    /// Creates the series whose labels are known in advance at zero, so that `rate()` and
    /// `increase()` see their first event, and dashboards find every family from the start.
    fn start_at_zero(&self) {
        for reason in [
            "stream_limit",
            "rate_limit",
            "upload_too_large",
            "upload_idle",
            "connection_limit",
        ] {
            let _ = self
                .limit_rejections
                .get_or_create(&ReasonLabels { reason });
        }
        for reason in ["certificate", "protocol", "timeout"] {
            let _ = self
                .tls_handshake_failures
                .get_or_create(&ReasonLabels { reason });
        }
        for reason in ["ok", "refused"] {
            let _ = self.tls_reloads.get_or_create(&ReasonLabels { reason });
        }
        for reason in ["written", "waited", "dropped"] {
            let _ = self.audit_events.get_or_create(&ReasonLabels { reason });
        }
        for kind in [RECORD_KINDS, STREAM_KINDS].concat() {
            let labels = KindLabels { kind };
            if RECORD_KINDS.contains(&kind) {
                let _ = self.records_ingested.get_or_create(&labels);
                let _ = self.records_rejected.get_or_create(&labels);
            }
            if STREAM_KINDS.contains(&kind) {
                let _ = self.records_delivered.get_or_create(&labels);
                let _ = self.stream_lag.get_or_create(&labels);
                for source in TAIL_READ_SOURCES {
                    let _ = self
                        .tail_reads
                        .get_or_create(&TailReadLabels { kind, source });
                }
            }
        }
    }
}

/// What ingestion and uploads store.
const RECORD_KINDS: [&str; 3] = ["call_records", "quality_records", "call_durations"];
/// Where a following stream's read is served from (see [`TailReadLabels`]).
pub(crate) const TAIL_READ_SOURCES: [&str; 4] = ["tail", "behind", "fill", "offered"];
/// What streams deliver.
const STREAM_KINDS: [&str; 3] = ["call_records", "quality_records", "number_events"];

/// Counters shared by every stream of one server, and its Prometheus registry.
#[derive(Debug)]
pub struct StreamMetrics {
    open_streams: AtomicI64,
    buffered_bytes: AtomicI64,
    peak_buffered_bytes: AtomicI64,
    records_ingested: AtomicU64,
    /// `None` when nothing can scrape them (no `--metrics-listen`): the hot paths then skip
    /// the families' lookups and label allocations. The counters above are kept either way.
    families: Option<Families>,
    registry: Registry,
}

impl Default for StreamMetrics {
    /// Accounting with the Prometheus families recorded.
    fn default() -> Self {
        Self::new(true)
    }
}

impl StreamMetrics {
    /// The server's accounting; the Prometheus families are recorded only when `families`
    /// (the server has a scrape listener).
    pub fn new(families: bool) -> Self {
        let mut registry = Registry::with_prefix("opconnect");
        let families = families.then(|| Families::new(&mut registry));
        Self {
            open_streams: AtomicI64::default(),
            buffered_bytes: AtomicI64::default(),
            peak_buffered_bytes: AtomicI64::default(),
            records_ingested: AtomicU64::default(),
            families,
            registry,
        }
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> i64 {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// Encoded bytes sitting in stream channels right now.
    pub fn buffered_bytes(&self) -> i64 {
        self.buffered_bytes.load(Ordering::Relaxed)
    }

    /// The highest `buffered_bytes` seen since start.
    pub fn peak_buffered_bytes(&self) -> i64 {
        self.peak_buffered_bytes.load(Ordering::Relaxed)
    }

    /// Records stored by ingestion.
    pub fn records_ingested(&self) -> u64 {
        self.records_ingested.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a stream of `kind` about `carrier` as open until the returned guard is dropped,
    /// however the stream ends (a finished handler, an error, or hyper dropping the handler
    /// when the connection dies).
    pub(crate) fn open_stream(self: &Arc<Self>, kind: &'static str, carrier: &str) -> OpenStream {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        let labels = StreamLabels {
            kind,
            carrier: carrier.to_owned(),
        };
        if let Some(f) = &self.families {
            f.open_streams.get_or_create(&labels).inc();
        }
        OpenStream {
            metrics: self.clone(),
            labels,
        }
    }

    /// Counts one read of a following stream of `kind` served from `source` (one of
    /// [`TAIL_READ_SOURCES`]).
    pub(crate) fn tail_read(&self, kind: &'static str, source: &'static str) {
        if let Some(families) = &self.families {
            families
                .tail_reads
                .get_or_create(&TailReadLabels { kind, source })
                .inc();
        }
    }

    /// Reads of following streams of `kind` served from `source` so far (0 when metrics are
    /// not recorded).
    pub fn tail_reads(&self, kind: &'static str, source: &'static str) -> u64 {
        self.families.as_ref().map_or(0, |families| {
            families
                .tail_reads
                .get_or_create(&TailReadLabels { kind, source })
                .get()
        })
    }

    pub(crate) fn buffered(&self, bytes: i64) {
        let now = self.buffered_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak_buffered_bytes.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn unbuffered(&self, bytes: i64) {
        self.buffered_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Counts the outcome of one committed batch of `kind`.
    pub(crate) fn ingested(&self, kind: &'static str, accepted: u64, rejected: u64) {
        self.records_ingested.fetch_add(accepted, Ordering::Relaxed);
        let Some(f) = &self.families else { return };
        let labels = KindLabels { kind };
        f.records_ingested.get_or_create(&labels).inc_by(accepted);
        f.records_rejected.get_or_create(&labels).inc_by(rejected);
    }

    /// Counts records refused before any commit (invalid fields).
    pub(crate) fn rejected(&self, kind: &'static str, records: u64) {
        if let Some(f) = &self.families {
            f.records_rejected
                .get_or_create(&KindLabels { kind })
                .inc_by(records);
        }
    }

    /// Counts records (or events) of `kind` handed to a carrier's stream, sent `lag` behind
    /// the newest.
    pub(crate) fn delivered(&self, kind: &'static str, records: u64, lag: Option<i64>) {
        let Some(f) = &self.families else { return };
        let labels = KindLabels { kind };
        f.records_delivered.get_or_create(&labels).inc_by(records);
        if let Some(lag) = lag {
            f.stream_lag
                .get_or_create(&labels)
                .observe(lag.max(0) as f64);
        }
    }

    /// Counts a refusal by a limit.
    pub(crate) fn limited(&self, reason: &'static str) {
        if let Some(f) = &self.families {
            f.limit_rejections
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// Counts a failed TLS handshake.
    pub(crate) fn handshake_failed(&self, reason: &'static str) {
        if let Some(f) = &self.families {
            f.tls_handshake_failures
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// Counts a TLS reload and its outcome (`ok` or `refused`).
    pub(crate) fn tls_reloaded(&self, outcome: &'static str) {
        if let Some(f) = &self.families {
            f.tls_reloads
                .get_or_create(&ReasonLabels { reason: outcome })
                .inc();
        }
    }

    /// Records when the served certificate expires.
    pub(crate) fn certificate_expires(&self, unix_seconds: i64) {
        if let Some(f) = &self.families {
            f.certificate_expiry.set(unix_seconds);
        }
    }

    /// Records one database statement's time.
    pub(crate) fn db_query(&self, elapsed: Duration) {
        if let Some(f) = &self.families {
            f.db_query_duration.observe(elapsed.as_secs_f64());
        }
    }

    /// Records the pool's connections at scrape time.
    pub(crate) fn db_pool(&self, idle: u32, in_use: u32) {
        let Some(f) = &self.families else { return };
        let set = |state, value: u32| {
            f.db_pool_connections
                .get_or_create(&PoolLabels { state })
                .set(i64::from(value));
        };
        set("idle", idle);
        set("in_use", in_use);
    }

    /// Counts `n` audit events with `outcome` (`written`, `waited`, `dropped`).
    pub(crate) fn audit(&self, outcome: &'static str, n: u64) {
        if let Some(families) = &self.families {
            families
                .audit_events
                .get_or_create(&ReasonLabels { reason: outcome })
                .inc_by(n);
        }
    }

    /// Counts one ended RPC.
    pub(crate) fn rpc(&self, method: &str, code: &str, carrier: &str, elapsed: Duration) {
        let Some(f) = &self.families else { return };
        let method = metric_method(method);
        f.rpcs
            .get_or_create(&RpcLabels {
                method: method.to_owned(),
                code: code.to_owned(),
                carrier: carrier.to_owned(),
            })
            .inc();
        f.rpc_duration
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
                code: code.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// Every method this server serves, as `/package.Service/Method`: the descriptor set's
/// (opconnect and health) and reflection's.
static KNOWN_METHODS: std::sync::LazyLock<std::collections::HashSet<String>> =
    std::sync::LazyLock::new(|| {
        use prost::Message;
        let mut known: std::collections::HashSet<String> = [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET) {
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        known
    });

/// The `method` label of an RPC: its path when it is one this server serves, else
/// `unknown`. The path is chosen by the client, so without this any caller could create
/// metric series without bound.
fn metric_method(path: &str) -> &str {
    if KNOWN_METHODS.contains(path) {
        path
    } else {
        "unknown"
    }
}

/// Keeps one stream counted in the open-stream figures while alive.
#[derive(Debug)]
pub(crate) struct OpenStream {
    metrics: Arc<StreamMetrics>,
    labels: StreamLabels,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.open_streams.fetch_sub(1, Ordering::Relaxed);
        if let Some(f) = &self.metrics.families {
            f.open_streams.get_or_create(&self.labels).dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the server's own methods become `method` labels; any other path is `unknown`.
    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            metric_method("/opconnect.v1.AssignmentService/GetNumber"),
            "/opconnect.v1.AssignmentService/GetNumber"
        );
        assert_eq!(
            metric_method("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(
            metric_method("/opconnect.v1.AssignmentService/Nope"),
            "unknown"
        );
        assert_eq!(metric_method(&"x".repeat(4096)), "unknown");
    }
}
