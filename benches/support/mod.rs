//! The pieces of the gateway benchmark: the set-up (PKI, databases, servers, test data), the
//! measurements through the gateway, the baselines straight on the database, the child process
//! that holds a server for the memory measurement, and the report.

pub mod baseline;
pub mod child;
pub mod heap;
pub mod measure;
pub mod report;
pub mod setup;

use std::time::Duration;

/// Records the server commits at once (`COMMIT_EVERY` in src/api/ingest.rs); the baselines
/// commit as often, so both pay the same number of commits.
pub const COMMIT_EVERY: usize = 2_000;

/// How big each measurement is: DESIGN §7's sizes, or a small run that only proves the harness
/// still works (`OPCONNECT_BENCH_QUICK=1`, what CI runs).
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Whether this is the small run.
    pub quick: bool,
    /// Call records ingested and streamed back, and durations reported.
    pub records: usize,
    /// Records per ingestion or upload message (what the performance issue measured).
    pub per_message: usize,
    /// Concurrent unary callers, spread over `unary_channels` connections.
    pub unary_callers: usize,
    /// Connections the unary callers share.
    pub unary_channels: usize,
    /// How long each unary measurement runs, after an unmeasured warm-up of a tenth of it.
    pub unary_time: Duration,
    /// Watchers of the carrier during the fan-out.
    pub watchers: usize,
    /// Connections the watchers are spread over (h2 dislikes thousands of streams opening on
    /// one connection at once).
    pub watcher_connections: usize,
    /// Number changes made with and without watchers.
    pub changes: usize,
    /// Changes per second.
    pub change_rate: u32,
    /// Idle watch streams held open for the memory measurement.
    pub idle_streams: usize,
    /// Connections the idle streams are spread over.
    pub idle_connections: usize,
}

impl Scale {
    /// DESIGN §7's sizes.
    pub fn full() -> Self {
        Self {
            quick: false,
            records: 200_000,
            per_message: 500,
            unary_callers: 64,
            unary_channels: 4,
            unary_time: Duration::from_secs(5),
            watchers: 1_000,
            watcher_connections: 10,
            changes: 200,
            change_rate: 20,
            idle_streams: 10_000,
            idle_connections: 50,
        }
    }

    /// The same measurements, small enough to run in seconds.
    pub fn quick() -> Self {
        Self {
            quick: true,
            records: 2_000,
            unary_time: Duration::from_millis(300),
            watchers: 50,
            watcher_connections: 5,
            changes: 20,
            idle_streams: 200,
            idle_connections: 5,
            ..Self::full()
        }
    }

    /// The scale `OPCONNECT_BENCH_QUICK` asks for (set and not `0`: quick), with the unary
    /// measurement's length from `OPCONNECT_BENCH_UNARY_SECS` when set (for profiles).
    pub fn from_env() -> Self {
        let scale = match std::env::var("OPCONNECT_BENCH_QUICK") {
            Ok(v) if !v.is_empty() && v != "0" => Self::quick(),
            _ => Self::full(),
        };
        match std::env::var("OPCONNECT_BENCH_UNARY_SECS").map(|v| v.parse::<f64>()) {
            Ok(Ok(secs)) if secs > 0.0 => Self {
                unary_time: Duration::from_secs_f64(secs),
                ..scale
            },
            _ => scale,
        }
    }
}

/// Whether this run measures `what` (`ingest`, `durations`, `stream`, `unary`, `fanout` or
/// `idle`): every one unless `OPCONNECT_BENCH_ONLY` names a comma-separated few (a short run
/// to profile one path). `stream` reads what `ingest` stored, so it brings `ingest` along.
pub fn measures(what: &str) -> bool {
    let Ok(only) = std::env::var("OPCONNECT_BENCH_ONLY") else {
        return true;
    };
    let named: Vec<&str> = only.split(',').map(str::trim).collect();
    named.contains(&what) || (what == "ingest" && named.contains(&"stream"))
}

/// Whether the gateway records its Prometheus metrics (it does unless
/// `OPCONNECT_BENCH_METRICS=off`: then it has no scrape listener, and records none).
pub fn metrics_on() -> bool {
    std::env::var("OPCONNECT_BENCH_METRICS").map_or(true, |v| v != "off")
}

/// With `OPCONNECT_BENCH_LOG=text` or `json`, installs the gateway's own log subscriber (level
/// info) writing to /dev/null, so that the measurements include the per-RPC log line as a
/// deployed gateway writes it; unset, nothing is logged (and each line costs nothing).
pub fn install_log_sink() -> anyhow::Result<()> {
    use opconnect::config::LogFormat;
    let format = match std::env::var("OPCONNECT_BENCH_LOG").as_deref() {
        Ok("text") => LogFormat::Text,
        Ok("json") => LogFormat::Json,
        _ => return Ok(()),
    };
    let sink = std::sync::Mutex::new(std::fs::File::create("/dev/null")?);
    let subscriber = opconnect::telemetry::subscriber(
        format,
        tracing_subscriber::EnvFilter::new("info"),
        sink,
        false,
    );
    tracing::subscriber::set_global_default(subscriber)?;
    Ok(())
}

/// The `p`th percentile (0-100) of ascending `sorted` samples, by nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts samples for [`percentile`].
pub fn sorted(mut samples: Vec<f64>) -> Vec<f64> {
    samples.sort_by(f64::total_cmp);
    samples
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Items per second.
pub fn per_second(items: usize, elapsed: Duration) -> f64 {
    items as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// CPU time this process has used so far, all threads, user and system (`utime` + `stime` of
/// /proc/self/stat, in clock ticks of 10 ms).
pub fn process_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/self/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/self/stat"))?
            .parse()?)
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// This process's resident memory (`VmRSS` of /proc/self/status), in bytes.
pub fn resident_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no VmRSS line in /proc/self/status"))?;
    Ok(kib * 1024)
}
