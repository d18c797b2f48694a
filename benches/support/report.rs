//! The figures of one run: DESIGN §7's JSON object, and the table printed for people, each
//! figure beside its baseline, ratio and target. Missing a target is a result, not an error.

use serde_json::json;

use super::Scale;

/// Ingestion through the gateway at least this fraction of the database baseline.
const INGEST_TARGET: f64 = 0.8;
/// Uploads of durations at least this fraction of the database baseline.
const DURATIONS_TARGET: f64 = 0.8;
/// Record streaming at least this fraction of one plain query.
const STREAM_TARGET: f64 = 0.5;
/// `GetNumber` calls per second at least this fraction of a bare tonic unary call.
const UNARY_TARGET: f64 = 0.5;
/// Fan-out delivery p99 at most this many milliseconds.
const FANOUT_P99_TARGET_MS: f64 = 25.0;
/// `AssignNumber` p50 with the watchers at most this multiple of the p50 without.
const WRITE_SLOWDOWN_TARGET: f64 = 1.5;
/// Resident bytes per idle stream at most this.
const IDLE_BYTES_TARGET: f64 = 12_288.0;

/// Every figure of a run; the JSON has DESIGN §7's keys, the rest is for the table.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub ingest_records_per_s: f64,
    pub ingest_baseline_records_per_s: f64,
    pub durations_records_per_s: f64,
    /// Table only: DESIGN §7 has no key for it.
    pub durations_baseline_records_per_s: f64,
    pub stream_records_per_s: f64,
    pub stream_baseline_records_per_s: f64,
    /// Table only: the same stream with the client decoding every record's fields.
    pub stream_decoded_records_per_s: f64,
    pub unary_qps: f64,
    pub unary_baseline_qps: f64,
    pub unary_p99_ms: f64,
    /// Table only.
    pub unary_baseline_p99_ms: f64,
    /// Table only: CPU time of the process per `GetNumber` call, in microseconds.
    pub unary_cpu_us: f64,
    /// Table only: the same per echo call.
    pub unary_baseline_cpu_us: f64,
    pub fanout_watchers: usize,
    pub fanout_p50_ms: f64,
    pub fanout_p99_ms: f64,
    pub fanout_write_p50_ms: f64,
    pub write_p50_ms_no_watchers: f64,
    /// Table only: the `AssignNumber` p99 with and without watchers (a delivery is timed from
    /// the start of its write, so a slow write is a slow delivery).
    pub fanout_write_p99_ms: f64,
    pub write_p99_ms_no_watchers: f64,
    pub idle_streams: usize,
    pub idle_stream_bytes: f64,
    /// Table only: the same number of idle streams on the bare tonic server.
    pub idle_bare_stream_bytes: f64,
    /// Growth of the server's live heap per idle stream (the allocator's own overhead and
    /// fragmentation excluded): where `idle_stream_bytes` goes.
    pub idle_stream_heap_bytes: f64,
    /// The same on the bare tonic server.
    pub idle_bare_stream_heap_bytes: f64,
    /// Table only: mean length of the `encoded` column the gateway wrote.
    pub gateway_record_bytes: f64,
    /// Table only: mean length of the `encoded` column the ingest baseline wrote.
    pub baseline_record_bytes: f64,
}

fn ratio(value: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        value / baseline
    } else {
        0.0
    }
}

/// Rounds to three decimals, so the JSON reads as measured, not as float noise.
fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

impl Figures {
    fn ingest_ratio(&self) -> f64 {
        ratio(
            self.ingest_records_per_s,
            self.ingest_baseline_records_per_s,
        )
    }
    fn durations_ratio(&self) -> f64 {
        ratio(
            self.durations_records_per_s,
            self.durations_baseline_records_per_s,
        )
    }
    fn stream_ratio(&self) -> f64 {
        ratio(
            self.stream_records_per_s,
            self.stream_baseline_records_per_s,
        )
    }
    fn unary_ratio(&self) -> f64 {
        ratio(self.unary_qps, self.unary_baseline_qps)
    }
    fn write_slowdown(&self) -> f64 {
        ratio(self.fanout_write_p50_ms, self.write_p50_ms_no_watchers)
    }

    /// The one JSON object of DESIGN §7, with exactly its keys.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "ingest_records_per_s": round3(self.ingest_records_per_s),
            "ingest_baseline_records_per_s": round3(self.ingest_baseline_records_per_s),
            "ingest_ratio": round3(self.ingest_ratio()),
            "durations_records_per_s": round3(self.durations_records_per_s),
            "durations_ratio": round3(self.durations_ratio()),
            "stream_records_per_s": round3(self.stream_records_per_s),
            "stream_baseline_records_per_s": round3(self.stream_baseline_records_per_s),
            "stream_ratio": round3(self.stream_ratio()),
            "unary_qps": round3(self.unary_qps),
            "unary_baseline_qps": round3(self.unary_baseline_qps),
            "unary_ratio": round3(self.unary_ratio()),
            "unary_p99_ms": round3(self.unary_p99_ms),
            "fanout_watchers": self.fanout_watchers,
            "fanout_p50_ms": round3(self.fanout_p50_ms),
            "fanout_p99_ms": round3(self.fanout_p99_ms),
            "fanout_write_p50_ms": round3(self.fanout_write_p50_ms),
            "write_p50_ms_no_watchers": round3(self.write_p50_ms_no_watchers),
            "idle_streams": self.idle_streams,
            "idle_stream_bytes": round3(self.idle_stream_bytes),
            "idle_stream_heap_bytes": round3(self.idle_stream_heap_bytes),
            "idle_bare_stream_bytes": round3(self.idle_bare_stream_bytes),
            "idle_bare_stream_heap_bytes": round3(self.idle_bare_stream_heap_bytes),
        })
    }

    /// The table: one row per figure with its baseline, ratio, target and whether it is met.
    pub fn table(&self, backend: &str, scale: &Scale) -> String {
        let rows = [
            Row::ratio(
                "ingest, records/s",
                self.ingest_records_per_s,
                self.ingest_baseline_records_per_s,
                INGEST_TARGET,
            ),
            Row::ratio(
                "durations, records/s",
                self.durations_records_per_s,
                self.durations_baseline_records_per_s,
                DURATIONS_TARGET,
            ),
            Row::ratio(
                "stream, records/s",
                self.stream_records_per_s,
                self.stream_baseline_records_per_s,
                STREAM_TARGET,
            ),
            Row::info(
                "stream, client decoding every field, rec/s",
                whole(self.stream_decoded_records_per_s),
                "-".into(),
            ),
            Row::ratio(
                "unary GetNumber, calls/s",
                self.unary_qps,
                self.unary_baseline_qps,
                UNARY_TARGET,
            ),
            Row::info(
                "unary p99, ms",
                ms(self.unary_p99_ms),
                ms(self.unary_baseline_p99_ms),
            ),
            Row::info(
                "unary CPU per call (whole process), us",
                whole(self.unary_cpu_us),
                whole(self.unary_baseline_cpu_us),
            ),
            Row::info(
                &format!("fan-out p50 ({} watchers), ms", self.fanout_watchers),
                ms(self.fanout_p50_ms),
                "-".into(),
            ),
            Row {
                figure: format!("fan-out p99 ({} watchers), ms", self.fanout_watchers),
                value: ms(self.fanout_p99_ms),
                baseline: "-".into(),
                ratio: "-".into(),
                target: format!("<= {FANOUT_P99_TARGET_MS} ms"),
                met: met(self.fanout_p99_ms <= FANOUT_P99_TARGET_MS),
            },
            Row {
                figure: "AssignNumber p50 with / without watchers, ms".into(),
                value: ms(self.fanout_write_p50_ms),
                baseline: ms(self.write_p50_ms_no_watchers),
                ratio: format!("{:.2}", self.write_slowdown()),
                target: format!("ratio <= {WRITE_SLOWDOWN_TARGET}"),
                met: met(self.write_slowdown() <= WRITE_SLOWDOWN_TARGET),
            },
            Row::info(
                "AssignNumber p99 with / without watchers, ms",
                ms(self.fanout_write_p99_ms),
                ms(self.write_p99_ms_no_watchers),
            ),
            Row {
                figure: format!("idle stream ({} streams), bytes", self.idle_streams),
                value: whole(self.idle_stream_bytes),
                baseline: whole(self.idle_bare_stream_bytes),
                ratio: format!(
                    "{:.2}",
                    ratio(self.idle_stream_bytes, self.idle_bare_stream_bytes)
                ),
                target: format!("<= {}", whole(IDLE_BYTES_TARGET)),
                met: met(self.idle_stream_bytes <= IDLE_BYTES_TARGET),
            },
            Row {
                figure: "  of which live heap, bytes".into(),
                value: whole(self.idle_stream_heap_bytes),
                baseline: whole(self.idle_bare_stream_heap_bytes),
                ratio: format!(
                    "{:.2}",
                    ratio(
                        self.idle_stream_heap_bytes,
                        self.idle_bare_stream_heap_bytes
                    )
                ),
                target: String::new(),
                met: String::new(),
            },
        ];
        let headers = ["figure", "value", "baseline", "ratio", "target", "met?"];
        let cells: Vec<[String; 6]> = rows
            .iter()
            .map(|r| {
                [
                    r.figure.clone(),
                    r.value.clone(),
                    r.baseline.clone(),
                    r.ratio.clone(),
                    r.target.clone(),
                    r.met.clone(),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..6)
            .map(|c| {
                cells
                    .iter()
                    .map(|row| row[c].chars().count())
                    .chain([headers[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| -> String {
            row.iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| {
                    if c == 0 || c >= 4 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut out = format!(
            "opconnect gateway benchmark: {backend}, {} ({} records, {} watchers, {} idle streams)\n",
            if scale.quick { "QUICK run" } else { "full run" },
            scale.records,
            scale.watchers,
            scale.idle_streams,
        );
        out.push_str(&line(&headers.map(String::from)));
        out.push('\n');
        for row in &cells {
            out.push_str(&line(row));
            out.push('\n');
        }
        out.push_str(&format!(
            "baselines: ingest and durations = sea-orm multi-row inserts, same schema and commit \
             size, fresh database; stream = one plain query on the same database; unary = bare \
             tonic Health/Check over the same mutual TLS; idle = bare tonic Health/Watch streams.\n\
             idle bytes = growth of the server process's resident memory per stream (the server \
             alone in a child process). record column: gateway {:.0} B, baseline {:.0} B (mean).\n",
            self.gateway_record_bytes, self.baseline_record_bytes
        ));
        out
    }
}

/// One table row, formatted.
struct Row {
    figure: String,
    value: String,
    baseline: String,
    ratio: String,
    target: String,
    met: String,
}

impl Row {
    /// A throughput against its baseline, with a minimum ratio as target.
    fn ratio(figure: &str, value: f64, baseline: f64, target: f64) -> Self {
        let r = ratio(value, baseline);
        Self {
            figure: figure.into(),
            value: whole(value),
            baseline: whole(baseline),
            ratio: format!("{r:.2}"),
            target: format!("ratio >= {target}"),
            met: met(r >= target),
        }
    }

    /// A figure without a target.
    fn info(figure: &str, value: String, baseline: String) -> Self {
        Self {
            figure: figure.into(),
            value,
            baseline,
            ratio: "-".into(),
            target: "-".into(),
            met: "-".into(),
        }
    }
}

fn met(yes: bool) -> String {
    if yes { "yes" } else { "NO" }.into()
}

fn ms(x: f64) -> String {
    format!("{x:.2}")
}

/// A whole number with thousands separators.
fn whole(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
