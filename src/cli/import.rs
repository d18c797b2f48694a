//! `opconnect admin import-call-records FILE` and `import-quality-records FILE`: stream call
//! detail records or call quality records from a CSV or JSON Lines file into
//! `PlatformService.IngestCallRecords` / `IngestQualityRecords`.
//!
//! # File format
//!
//! One record per CSV row (RFC 4180, with a header row naming the columns) or per JSON Lines
//! line (one JSON object per line). Columns (CSV) and keys (JSON) are the proto field names plus
//! `carrier_id`, in any order, every one optional: an empty CSV cell, or a missing or `null`
//! JSON value, leaves the field unset. A column or key that is not listed below is an error
//! (typo protection); a CSV header with one stops the import before anything is sent.
//!
//! - Timestamps (`*_time`) are RFC 3339, e.g. `2026-11-27T10:00:00Z` or
//!   `2026-11-27T11:00:00.250+01:00` (at most nine fractional digits).
//! - Durations are numbers with an optional fraction, in the unit their column names:
//!   `duration_seconds` in seconds, `*_jitter_ms` and `*_round_trip_ms` in milliseconds;
//!   rounded to the nanosecond.
//! - Booleans are `true`, `false`, `1` or `0`; directions are `inbound`/`outbound` and
//!   `caller_to_callee`/`callee_to_caller` (or their full proto names), in any case.
//! - In JSON, text fields must be JSON strings; numbers and booleans may be JSON values or
//!   strings.
//!
//! Call records: `carrier_id`, `call_id`, `correlation_id`, `tenant_id`, `call_type`,
//! `direction`, `caller_number`, `callee_number`, `start_time`, `invite_time`, `end_time`,
//! `failure_time`, `duration_seconds`, `successful`, `final_sip_code`, `final_sip_phrase`,
//! `microsoft_subcode`, `media_bypass`, `trunk_fqdn`.
//!
//! Quality records: `carrier_id`, `call_id`, `stream_id`, `stream_direction`, `tenant_id`,
//! `start_time`, `end_time`, `audio_codec`, `avg_jitter_ms`, `max_jitter_ms`,
//! `avg_round_trip_ms`, `max_round_trip_ms`, `avg_packet_loss_rate`, `max_packet_loss_rate`,
//! `avg_audio_degradation`, `avg_concealed_ratio`.
//!
//! A line this module cannot read (bad timestamp syntax, not a number, malformed JSON, wrong
//! number of CSV fields) is reported with its line number and skipped, or stops the import with
//! `--strict`. Whether the values make sense (E.164 numbers, time order...) is the server's
//! call; its rejections are reported with the line numbers of the records they name.
//!
//! # Streaming
//!
//! A blocking task reads the file incrementally and hands batches through a bounded channel to
//! the request stream, so memory stays flat however long the file is; all that grows is one
//! line number per record sent, which turns the stream indexes in the server's rejections back
//! into lines. A file the reader cannot finish (read error, `--strict`) never ends the stream
//! cleanly: the call is cancelled, so the server cannot take a truncated file for a whole one.
//! Batches it committed before stay committed; ingestion is idempotent, so importing the
//! corrected file again is safe.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{self, Poll};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::transport::Channel;

use crate::pb::v1 as pb;
use crate::pb::v1::platform_service_client::PlatformServiceClient;

/// The server's limit on records per request message.
const MAX_BATCH: usize = 10_000;

/// Batches the reader may run ahead of the network: enough to keep the stream busy, few enough
/// to keep memory flat.
const BATCHES_AHEAD: usize = 4;

/// How many bad lines and rejections [`ImportReport::print`] lists of each.
const MAX_LISTED: usize = 50;

/// The file format, as `--help` shows it after the options.
pub const FORMAT_HELP: &str = "\
File format:
  One record per CSV row (RFC 4180, with a header row naming the columns) or per JSON Lines
  line (one JSON object per line). Columns (CSV) and keys (JSON) are the names below, in any
  order, every one optional: an empty CSV cell, or a missing or null JSON value, leaves the
  field unset. Any other column or key is an error.

  Timestamps (*_time) are RFC 3339: 2026-11-27T10:00:00Z, 2026-11-27T11:00:00.250+01:00.
  Durations are numbers with an optional fraction: duration_seconds in seconds, *_jitter_ms
  and *_round_trip_ms in milliseconds. Booleans are true, false, 1 or 0. Directions are
  inbound/outbound and caller_to_callee/callee_to_caller, in any case. In JSON, text fields
  must be strings; numbers and booleans may be JSON values or strings.

  import-call-records:
    carrier_id, call_id, correlation_id, tenant_id, call_type, direction, caller_number,
    callee_number, start_time, invite_time, end_time, failure_time, duration_seconds,
    successful, final_sip_code, final_sip_phrase, microsoft_subcode, media_bypass, trunk_fqdn

  import-quality-records:
    carrier_id, call_id, stream_id, stream_direction, tenant_id, start_time, end_time,
    audio_codec, avg_jitter_ms, max_jitter_ms, avg_round_trip_ms, max_round_trip_ms,
    avg_packet_loss_rate, max_packet_loss_rate, avg_audio_degradation, avg_concealed_ratio

  A line that cannot be read (bad syntax, wrong number of CSV fields, malformed JSON) is
  reported with its line number and skipped; --strict stops the import there instead. Records
  the server rejects are reported with their line numbers.

Example (CSV):
  carrier_id,call_id,tenant_id,direction,caller_number,callee_number,start_time,end_time,duration_seconds,successful,final_sip_code
  contoso,c-1,0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c,inbound,+14255550100,+14255550123,2026-11-27T10:00:00Z,2026-11-27T10:05:30.5Z,330.5,true,200";

/// Arguments shared by both imports.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = FORMAT_HELP)]
pub struct ImportArgs {
    /// CSV (RFC 4180, header row) or JSON Lines file; "-" for standard input.
    pub file: PathBuf,
    /// File format; by default from the extension (.csv, .jsonl/.ndjson/.json), CSV for stdin.
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Records per request message (1 to 10000).
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BATCH as u64)
    )]
    pub batch_size: usize,
    /// Stop at the first bad line instead of reporting it and going on.
    #[arg(long)]
    pub strict: bool,
}

/// The formats an import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// JSON Lines: one JSON object per line.
    Jsonl,
}

/// What an import did: lines read, lines that could not be parsed (with line numbers), and the
/// server's summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Records read from the file, parsed or not; a CSV header and blank lines do not count.
    pub lines: u64,
    /// Lines that could not be parsed and were skipped: (line number, why), in file order.
    pub bad_lines: Vec<(u64, String)>,
    /// The server's summary; all zero when the file held no record to send.
    pub summary: pb::IngestionSummary,
    /// The file line of each entry of `summary.rejections`, in the same order; `None` where
    /// the server named a stream index that was never sent.
    pub rejection_lines: Vec<Option<u64>>,
}

/// Streams the call records of `args.file` into `IngestCallRecords`.
///
/// Errors: the file cannot be opened or read, its CSV header names an unknown column, a bad
/// line with `--strict`, or the call fails.
pub async fn import_call_records(
    client: &mut PlatformServiceClient<Channel>,
    args: &ImportArgs,
) -> anyhow::Result<ImportReport> {
    import::<CallRecords, _, _>(args, |requests| async move {
        let response = client.ingest_call_records(requests).await?;
        Ok(response.into_inner().summary)
    })
    .await
}

/// Streams the quality records of `args.file` into `IngestQualityRecords`.
///
/// Errors as [`import_call_records`].
pub async fn import_quality_records(
    client: &mut PlatformServiceClient<Channel>,
    args: &ImportArgs,
) -> anyhow::Result<ImportReport> {
    import::<QualityRecords, _, _>(args, |requests| async move {
        let response = client.ingest_quality_records(requests).await?;
        Ok(response.into_inner().summary)
    })
    .await
}

// === impl ImportReport ===

impl ImportReport {
    /// Whether every record was read and accepted (or was a duplicate).
    pub fn is_clean(&self) -> bool {
        self.bad_lines.is_empty() && self.summary.rejected == 0
    }

    /// Writes the report for a person: counts, then each bad line, then each record the server
    /// rejected with its line in the file; at most 50 of each.
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let bad = self.bad_lines.len();
        let sent = self.lines.saturating_sub(bad as u64);
        writeln!(
            out,
            "read {} records: {sent} sent, {bad} bad lines skipped",
            self.lines
        )?;
        let s = &self.summary;
        writeln!(
            out,
            "server: {} received, {} accepted, {} duplicates, {} rejected",
            s.received, s.accepted, s.duplicates, s.rejected
        )?;
        if bad > 0 {
            writeln!(out, "bad lines:")?;
            for (line, why) in self.bad_lines.iter().take(MAX_LISTED) {
                writeln!(out, "  line {line}: {why}")?;
            }
            write_more(out, bad)?;
        }
        if !s.rejections.is_empty() || s.rejected > 0 {
            writeln!(out, "rejected by the server:")?;
            let lines = self
                .rejection_lines
                .iter()
                .copied()
                .chain(std::iter::repeat(None));
            for (rejection, line) in s.rejections.iter().zip(lines).take(MAX_LISTED) {
                write_rejection(out, rejection, line)?;
            }
            let total = usize::try_from(s.rejected)
                .unwrap_or(0)
                .max(s.rejections.len());
            write_more(out, total)?;
        }
        Ok(())
    }
}

/// One rejection as "line N (call_id X): field: description".
fn write_rejection(
    out: &mut impl Write,
    rejection: &pb::RecordRejection,
    line: Option<u64>,
) -> io::Result<()> {
    match line {
        Some(line) => write!(out, "  line {line}")?,
        None => write!(out, "  record #{} (not sent)", rejection.index)?,
    }
    let what = if rejection.field.is_empty() {
        pb::RejectionReason::try_from(rejection.reason).map_or_else(
            |_| "rejected".to_owned(),
            |reason| {
                reason
                    .as_str_name()
                    .trim_start_matches("REJECTION_REASON_")
                    .to_ascii_lowercase()
            },
        )
    } else {
        rejection.field.clone()
    };
    writeln!(
        out,
        " (call_id {}): {what}: {}",
        rejection.call_id, rejection.description
    )
}

/// "... and K more" when a list of `total` was cut at [`MAX_LISTED`].
fn write_more(out: &mut impl Write, total: usize) -> io::Result<()> {
    if total > MAX_LISTED {
        writeln!(out, "  ... and {} more", total - MAX_LISTED)?;
    }
    Ok(())
}

/// The file line of each rejection; `line_of` holds the line of each record by stream index.
fn rejection_lines(line_of: &[u64], rejections: &[pb::RecordRejection]) -> Vec<Option<u64>> {
    rejections
        .iter()
        .map(|r| {
            usize::try_from(r.index)
                .ok()
                .and_then(|index| line_of.get(index))
                .copied()
        })
        .collect()
}

// === the import pipeline ===

/// What the reader hands the request stream.
enum Feed<T> {
    /// One request message.
    Batch(T),
    /// The whole file was read; only this ends the stream cleanly.
    Done,
}

/// What the reading side did.
#[derive(Debug, Default)]
struct Produced {
    /// Records read, parsed or not.
    lines: u64,
    /// Lines skipped, with why.
    bad_lines: Vec<(u64, String)>,
    /// The file line of each record sent, by stream index.
    line_of: Vec<u64>,
    /// Whether the whole file went into the stream; false when the call ended first.
    complete: bool,
}

/// Which side of the import finished first.
enum First<P, R> {
    /// The reader: the file is read (or could not be).
    Reader(P),
    /// The call: the server answered (or the call failed).
    Call(R),
}

/// Reads `args.file` as records of kind `K` and streams them through `ingest`, which makes the
/// call and returns the server's summary.
async fn import<K, F, Fut>(args: &ImportArgs, ingest: F) -> anyhow::Result<ImportReport>
where
    K: RecordKind,
    F: FnOnce(Requests<K>) -> Fut,
    Fut: Future<Output = Result<Option<pb::IngestionSummary>, tonic::Status>>,
{
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&args.batch_size),
        "--batch-size must be 1 to {MAX_BATCH}"
    );
    let format = match args.format {
        Some(format) => format,
        None => format_of(&args.file)?,
    };
    let progress = Progress::new();
    let (tx, mut rx) = mpsc::channel(BATCHES_AHEAD);
    let mut reader = tokio::task::spawn_blocking({
        let path = args.file.clone();
        let (batch_size, strict) = (args.batch_size, args.strict);
        let bar = progress.0.clone();
        move || {
            produce::<K>(&path, format, batch_size, strict, &bar, &tx)
                .with_context(|| format!("cannot import {}", display_name(&path)))
        }
    });

    // Start the call only once there is something to send, so that an unreadable file, a bad
    // header or an empty file costs the server nothing.
    let first = match rx.recv().await {
        Some(Feed::Batch(batch)) => batch,
        Some(Feed::Done) | None => {
            let produced = joined(reader.await)?;
            return Ok(report(produced, pb::IngestionSummary::default()));
        }
    };
    let requests = Requests::<K> {
        first: Some(first),
        rx,
        done: false,
        sent: 0,
        progress: progress.0.clone(),
    };
    let mut call = std::pin::pin!(ingest(requests));

    let first = tokio::select! {
        produced = &mut reader => First::Reader(produced),
        answer = &mut call => First::Call(answer),
    };
    let (produced, answer) = match first {
        // A reader error returns here and drops the call, which cancels the stream.
        First::Reader(produced) => (joined(produced)?, call.await),
        // A failed call drops the stream, which stops the reader; no need to wait for it.
        First::Call(Err(status)) => return Err(super::admin::explain(status)),
        First::Call(answer) => (joined(reader.await)?, answer),
    };
    let summary = answer.map_err(super::admin::explain)?;
    anyhow::ensure!(
        produced.complete,
        "the server answered before the whole file was sent"
    );
    let summary = summary.context("the server's answer has no summary")?;
    Ok(report(produced, summary))
}

/// The report of a finished import.
fn report(produced: Produced, summary: pb::IngestionSummary) -> ImportReport {
    ImportReport {
        lines: produced.lines,
        bad_lines: produced.bad_lines,
        rejection_lines: rejection_lines(&produced.line_of, &summary.rejections),
        summary,
    }
}

/// The outcome of the reader task.
fn joined(
    outcome: Result<anyhow::Result<Produced>, tokio::task::JoinError>,
) -> anyhow::Result<Produced> {
    outcome.context("the file reader failed")?
}

/// The request stream: the first batch, then the batches of the channel up to [`Feed::Done`].
///
/// A named type rather than a boxed `dyn Stream`, with which the compiler cannot prove the
/// call's future `Send`.
struct Requests<K: RecordKind> {
    /// The batch that was read before the call started.
    first: Option<K::Request>,
    /// The reader's batches.
    rx: mpsc::Receiver<Feed<K::Request>>,
    /// Whether `Done` came: only then does the stream end.
    done: bool,
    /// Records handed to the call so far, for the progress bar.
    sent: u64,
    /// Shows `sent`.
    progress: ProgressBar,
}

impl<K: RecordKind> Requests<K> {
    /// Counts `batch` as sent.
    fn send(&mut self, batch: K::Request) -> Poll<Option<K::Request>> {
        self.sent += K::records_in(&batch) as u64;
        self.progress
            .set_message(format!("{} records sent", self.sent));
        Poll::Ready(Some(batch))
    }
}

impl<K: RecordKind> Stream for Requests<K> {
    type Item = K::Request;

    fn poll_next(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Option<K::Request>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return this.send(first);
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Feed::Batch(batch))) => this.send(batch),
            Poll::Ready(Some(Feed::Done)) => {
                this.done = true;
                Poll::Ready(None)
            }
            // Closed without `Done`: the reader failed. Ending the stream would let the server
            // take a truncated file for a whole one, so it stays pending (never to be woken)
            // until the caller drops the call, which cancels it.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// The format `path` is in, by its extension; CSV for standard input.
fn format_of(path: &Path) -> anyhow::Result<FileFormat> {
    if is_stdin(path) {
        return Ok(FileFormat::Csv);
    }
    let extension = path
        .extension()
        .and_then(OsStr::to_str)
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => Ok(FileFormat::Csv),
        Some("jsonl" | "ndjson" | "json") => Ok(FileFormat::Jsonl),
        _ => anyhow::bail!(
            "cannot tell the format of {} from its extension: use --format csv or --format jsonl",
            path.display()
        ),
    }
}

/// Whether `path` means standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The reader task: reads `path` and sends its records in batches, blocking while the stream
/// is [`BATCHES_AHEAD`] batches behind.
fn produce<K: RecordKind>(
    path: &Path,
    format: FileFormat,
    batch_size: usize,
    strict: bool,
    progress: &ProgressBar,
    tx: &mpsc::Sender<Feed<K::Request>>,
) -> anyhow::Result<Produced> {
    let (input, size) = open(path)?;
    show_size(progress, size);
    let input = progress.wrap_read(input);
    match format {
        FileFormat::Csv => pump::<K>(csv_records::<K>(input)?, batch_size, strict, tx),
        FileFormat::Jsonl => {
            let records = jsonl_records::<K>(BufReader::new(input));
            pump::<K>(records, batch_size, strict, tx)
        }
    }
}

/// How messages name `path`.
fn display_name(path: &Path) -> String {
    if is_stdin(path) {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Opens `path` (standard input for "-") and tells its size when it has one.
fn open(path: &Path) -> anyhow::Result<(Box<dyn Read + Send>, Option<u64>)> {
    if is_stdin(path) {
        return Ok((Box::new(io::stdin()), None));
    }
    let file = std::fs::File::open(path).context("cannot open it")?;
    let size = file.metadata().ok().map(|m| m.len()).filter(|&len| len > 0);
    Ok((Box::new(file), size))
}

/// Sends the records of `records` in batches of `batch_size`, then [`Feed::Done`]; skips bad
/// lines, or fails at the first with `strict`.
fn pump<K: RecordKind>(
    records: impl Iterator<Item = anyhow::Result<ParsedLine<K::Record>>>,
    batch_size: usize,
    strict: bool,
    tx: &mpsc::Sender<Feed<K::Request>>,
) -> anyhow::Result<Produced> {
    let mut produced = Produced::default();
    let mut batch = Vec::with_capacity(batch_size);
    for line in records {
        let line = line?;
        produced.lines += 1;
        match line.record {
            Ok(record) => {
                produced.line_of.push(line.number);
                batch.push(record);
                if batch.len() >= batch_size {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                    if tx.blocking_send(Feed::Batch(K::request(full))).is_err() {
                        return Ok(produced);
                    }
                }
            }
            Err(why) if strict => {
                let queued = produced.line_of.len() - batch.len();
                let sent = if queued == 0 {
                    "nothing was sent"
                } else {
                    "records before it may already be stored, and importing the corrected \
                     file again is safe"
                };
                anyhow::bail!("line {}: {why} (stopped by --strict; {sent})", line.number);
            }
            Err(why) => produced.bad_lines.push((line.number, why)),
        }
    }
    if !batch.is_empty() && tx.blocking_send(Feed::Batch(K::request(batch))).is_err() {
        return Ok(produced);
    }
    produced.complete = tx.blocking_send(Feed::Done).is_ok();
    Ok(produced)
}

// === progress ===

/// The progress bar on standard error (hidden unless it is a terminal), cleared when the
/// import ends, however it ends.
struct Progress(ProgressBar);

impl Progress {
    fn new() -> Self {
        if !io::stderr().is_terminal() {
            return Self(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(bar)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Shows bytes read out of `size`, or just bytes read when the size is unknown.
fn show_size(bar: &ProgressBar, size: Option<u64>) {
    let template = match size {
        Some(size) => {
            bar.set_length(size);
            "{spinner} {elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {msg}"
        }
        None => "{spinner} {elapsed_precise} {binary_bytes} read {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
}

// === reading files ===

/// One record of the file, or why its line could not be read.
#[derive(Debug)]
struct ParsedLine<R> {
    /// 1-based line in the file where the record starts.
    number: u64,
    /// The record, or why it could not be parsed.
    record: Result<R, String>,
}

/// The records of a CSV file; fails at once on a header with an unknown column.
fn csv_records<K: RecordKind>(
    input: impl Read,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<ParsedLine<K::Record>>>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(LineStarts::new(input));
    let header = reader
        .headers()
        .context("cannot read the CSV header")?
        .clone();
    let columns = header_columns::<K>(&header).map_err(|why| {
        let line = reader.get_mut().line_at(cursor(header.position()));
        anyhow::anyhow!("line {line}: {why}")
    })?;
    let mut row = csv::StringRecord::new();
    let mut failed = false;
    Ok(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let (position, record) = match reader.read_record(&mut row) {
            Ok(false) => return None,
            Ok(true) => (
                row.position().cloned(),
                record_from_csv::<K>(&columns, &row),
            ),
            Err(error) => match *error.kind() {
                csv::ErrorKind::UnequalLengths {
                    ref pos,
                    expected_len,
                    len,
                } => (
                    pos.clone(),
                    Err(format!("{len} fields where the header has {expected_len}")),
                ),
                csv::ErrorKind::Utf8 { ref pos, .. } => {
                    (pos.clone(), Err("not valid UTF-8".to_owned()))
                }
                _ => {
                    failed = true;
                    return Some(Err(
                        anyhow::Error::new(error).context("cannot read the file")
                    ));
                }
            },
        };
        let number = reader.get_mut().line_at(cursor(position.as_ref()));
        Some(Ok(ParsedLine { number, record }))
    }))
}

/// The byte offset csv gives a record (or 0).
fn cursor(position: Option<&csv::Position>) -> u64 {
    position.map_or(0, csv::Position::byte)
}

/// The column of each header field; an unknown or repeated column is an error.
fn header_columns<K: RecordKind>(header: &csv::StringRecord) -> Result<Vec<&'static str>, String> {
    let mut columns = Vec::with_capacity(header.len());
    let mut unknown = Vec::new();
    for name in header {
        match K::COLUMNS.iter().find(|column| **column == name) {
            Some(column) if columns.contains(column) => {
                return Err(format!("column {name:?} appears twice"));
            }
            Some(column) => columns.push(*column),
            None => unknown.push(shown(name)),
        }
    }
    if unknown.is_empty() {
        Ok(columns)
    } else {
        Err(format!(
            "unknown column {} (the columns are {})",
            unknown.join(", "),
            K::COLUMNS.join(", ")
        ))
    }
}

/// The record of one CSV row; empty cells leave their fields unset.
fn record_from_csv<K: RecordKind>(
    columns: &[&'static str],
    row: &csv::StringRecord,
) -> Result<K::Record, String> {
    let mut record = K::new_record();
    for (column, cell) in columns.iter().zip(row) {
        if !cell.is_empty() {
            K::set(&mut record, column, Cell::Csv(cell))
                .map_err(|why| format!("{column}: {why}"))?;
        }
    }
    Ok(record)
}

/// A reader that remembers where the non-blank lines of its input start.
///
/// csv gives a record the reader's position before it, which is still on the previous line
/// after a CRLF and ahead of any blank lines csv skips; the record really starts on the first
/// non-blank line at or after that byte.
struct LineStarts<R> {
    /// The input.
    inner: R,
    /// Bytes read so far.
    offset: u64,
    /// The line of the next byte.
    line: u64,
    /// Whether the next byte starts a line.
    at_line_start: bool,
    /// (byte offset, line) of each non-blank line read and not yet passed by a record; holds
    /// only the lines csv has buffered ahead.
    starts: VecDeque<(u64, u64)>,
}

impl<R> LineStarts<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            line: 1,
            at_line_start: true,
            starts: VecDeque::new(),
        }
    }

    /// The line of a record csv places at byte `cursor`.
    fn line_at(&mut self, cursor: u64) -> u64 {
        while self
            .starts
            .front()
            .is_some_and(|&(offset, _)| offset < cursor)
        {
            self.starts.pop_front();
        }
        self.starts.front().map_or(self.line, |&(_, line)| line)
    }
}

impl<R: Read> Read for LineStarts<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &byte in &buf[..n] {
            if self.at_line_start && byte != b'\r' && byte != b'\n' {
                self.starts.push_back((self.offset, self.line));
            }
            self.at_line_start = byte == b'\n';
            if byte == b'\n' {
                self.line += 1;
            }
            self.offset += 1;
        }
        Ok(n)
    }
}

/// The records of a JSON Lines file; blank lines are skipped.
fn jsonl_records<K: RecordKind>(
    mut input: impl BufRead,
) -> impl Iterator<Item = anyhow::Result<ParsedLine<K::Record>>> {
    let mut buf = Vec::new();
    let mut number = 0_u64;
    let mut failed = false;
    std::iter::from_fn(move || {
        while !failed {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) => {
                    number += 1;
                    let mut text = buf.trim_ascii();
                    if number == 1 {
                        text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
                    }
                    if !text.is_empty() {
                        let record = record_from_json::<K>(text);
                        return Some(Ok(ParsedLine { number, record }));
                    }
                }
                Err(error) => {
                    failed = true;
                    return Some(Err(
                        anyhow::Error::new(error).context("cannot read the file")
                    ));
                }
            }
        }
        None
    })
}

/// The record of one JSON Lines line; missing and null keys leave their fields unset.
fn record_from_json<K: RecordKind>(line: &[u8]) -> Result<K::Record, String> {
    let object = match serde_json::from_slice(line) {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            return Err(format!(
                "expected a JSON object, found {}",
                json_kind(&other)
            ));
        }
        Err(error) => {
            let message = error.to_string();
            let position = format!(" at line {} column {}", error.line(), error.column());
            let message = message.strip_suffix(&position).unwrap_or(&message);
            return Err(format!(
                "malformed JSON at column {}: {message}",
                error.column()
            ));
        }
    };
    let unknown: Vec<_> = object
        .keys()
        .filter(|key| !K::COLUMNS.contains(&key.as_str()))
        .map(|key| shown(key))
        .collect();
    if !unknown.is_empty() {
        return Err(format!("unknown key {}", unknown.join(", ")));
    }
    let mut record = K::new_record();
    for (key, value) in &object {
        if !value.is_null() {
            K::set(&mut record, key, Cell::Json(value)).map_err(|why| format!("{key}: {why}"))?;
        }
    }
    Ok(record)
}

/// What kind of JSON value `value` is, for messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` quoted for a message, cut short if long.
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    if text.chars().count() <= MAX_CHARS {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(MAX_CHARS).collect();
        format!("{cut:?}...")
    }
}

// === record kinds ===

/// A kind of record an import reads: its columns, how a value goes into its message, and how
/// records make a request.
trait RecordKind {
    /// One record as the RPC takes it.
    type Record: Send + 'static;
    /// One request message.
    type Request: Send + Unpin + 'static;
    /// The columns (CSV) or keys (JSON) a record may have.
    const COLUMNS: &'static [&'static str];
    /// A record with every field unset.
    fn new_record() -> Self::Record;
    /// Sets the field of `column` (one of [`Self::COLUMNS`]) from `cell`.
    fn set(record: &mut Self::Record, column: &str, cell: Cell<'_>) -> Result<(), String>;
    /// The request carrying `records`.
    fn request(records: Vec<Self::Record>) -> Self::Request;
    /// How many records `request` carries.
    fn records_in(request: &Self::Request) -> usize;
}

/// Call detail records, for `IngestCallRecords`.
struct CallRecords;

impl RecordKind for CallRecords {
    type Record = pb::CarrierCallRecord;
    type Request = pb::IngestCallRecordsRequest;
    const COLUMNS: &'static [&'static str] = &[
        "carrier_id",
        "call_id",
        "correlation_id",
        "tenant_id",
        "call_type",
        "direction",
        "caller_number",
        "callee_number",
        "start_time",
        "invite_time",
        "end_time",
        "failure_time",
        "duration_seconds",
        "successful",
        "final_sip_code",
        "final_sip_phrase",
        "microsoft_subcode",
        "media_bypass",
        "trunk_fqdn",
    ];

    fn new_record() -> Self::Record {
        pb::CarrierCallRecord {
            carrier_id: String::new(),
            record: Some(pb::CallRecord::default()),
        }
    }

    fn set(record: &mut Self::Record, column: &str, cell: Cell<'_>) -> Result<(), String> {
        let call = record.record.get_or_insert_default();
        match column {
            "carrier_id" => record.carrier_id = cell.text()?,
            "call_id" => call.call_id = cell.text()?,
            "correlation_id" => call.correlation_id = cell.text()?,
            "tenant_id" => call.tenant_id = cell.text()?,
            "call_type" => call.call_type = cell.text()?,
            "direction" => {
                call.direction =
                    cell.enumeration("CALL_DIRECTION_", "inbound or outbound", |name| {
                        pb::CallDirection::from_str_name(name).map(i32::from)
                    })?;
            }
            "caller_number" => call.caller_number = cell.text()?,
            "callee_number" => call.callee_number = cell.text()?,
            "start_time" => call.start_time = Some(cell.timestamp()?),
            "invite_time" => call.invite_time = Some(cell.timestamp()?),
            "end_time" => call.end_time = Some(cell.timestamp()?),
            "failure_time" => call.failure_time = Some(cell.timestamp()?),
            "duration_seconds" => call.duration = Some(cell.duration(Unit::Seconds)?),
            "successful" => call.successful = cell.boolean()?,
            "final_sip_code" => call.final_sip_code = cell.integer()?,
            "final_sip_phrase" => call.final_sip_phrase = cell.text()?,
            "microsoft_subcode" => call.microsoft_subcode = cell.integer()?,
            "media_bypass" => call.media_bypass = cell.boolean()?,
            "trunk_fqdn" => call.trunk_fqdn = cell.text()?,
            _ => return Err("unknown column".to_owned()),
        }
        Ok(())
    }

    fn request(records: Vec<Self::Record>) -> Self::Request {
        pb::IngestCallRecordsRequest { records }
    }

    fn records_in(request: &Self::Request) -> usize {
        request.records.len()
    }
}

/// Call quality records, for `IngestQualityRecords`.
struct QualityRecords;

impl RecordKind for QualityRecords {
    type Record = pb::CarrierQualityRecord;
    type Request = pb::IngestQualityRecordsRequest;
    const COLUMNS: &'static [&'static str] = &[
        "carrier_id",
        "call_id",
        "stream_id",
        "stream_direction",
        "tenant_id",
        "start_time",
        "end_time",
        "audio_codec",
        "avg_jitter_ms",
        "max_jitter_ms",
        "avg_round_trip_ms",
        "max_round_trip_ms",
        "avg_packet_loss_rate",
        "max_packet_loss_rate",
        "avg_audio_degradation",
        "avg_concealed_ratio",
    ];

    fn new_record() -> Self::Record {
        pb::CarrierQualityRecord {
            carrier_id: String::new(),
            record: Some(pb::QualityRecord::default()),
        }
    }

    fn set(record: &mut Self::Record, column: &str, cell: Cell<'_>) -> Result<(), String> {
        let quality = record.record.get_or_insert_default();
        match column {
            "carrier_id" => record.carrier_id = cell.text()?,
            "call_id" => quality.call_id = cell.text()?,
            "stream_id" => quality.stream_id = cell.text()?,
            "stream_direction" => {
                quality.stream_direction = cell.enumeration(
                    "STREAM_DIRECTION_",
                    "caller_to_callee or callee_to_caller",
                    |name| pb::StreamDirection::from_str_name(name).map(i32::from),
                )?;
            }
            "tenant_id" => quality.tenant_id = cell.text()?,
            "start_time" => quality.start_time = Some(cell.timestamp()?),
            "end_time" => quality.end_time = Some(cell.timestamp()?),
            "audio_codec" => quality.audio_codec = cell.text()?,
            "avg_jitter_ms" => quality.avg_jitter = Some(cell.duration(Unit::Milliseconds)?),
            "max_jitter_ms" => quality.max_jitter = Some(cell.duration(Unit::Milliseconds)?),
            "avg_round_trip_ms" => {
                quality.avg_round_trip = Some(cell.duration(Unit::Milliseconds)?);
            }
            "max_round_trip_ms" => {
                quality.max_round_trip = Some(cell.duration(Unit::Milliseconds)?);
            }
            "avg_packet_loss_rate" => quality.avg_packet_loss_rate = Some(cell.real()?),
            "max_packet_loss_rate" => quality.max_packet_loss_rate = Some(cell.real()?),
            "avg_audio_degradation" => quality.avg_audio_degradation = Some(cell.real()?),
            "avg_concealed_ratio" => quality.avg_concealed_ratio = Some(cell.real()?),
            _ => return Err("unknown column".to_owned()),
        }
        Ok(())
    }

    fn request(records: Vec<Self::Record>) -> Self::Request {
        pb::IngestQualityRecordsRequest { records }
    }

    fn records_in(request: &Self::Request) -> usize {
        request.records.len()
    }
}

// === values ===

/// One value of a record as the file spells it.
#[derive(Debug, Clone, Copy)]
enum Cell<'a> {
    /// A non-empty CSV cell.
    Csv(&'a str),
    /// A non-null JSON value.
    Json(&'a Value),
}

/// The unit a duration column is in.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Seconds,
    Milliseconds,
}

impl<'a> Cell<'a> {
    /// A text field: any CSV cell, or a JSON string.
    fn text(self) -> Result<String, String> {
        match self {
            Cell::Csv(text) => Ok(text.to_owned()),
            Cell::Json(Value::String(text)) => Ok(text.clone()),
            Cell::Json(other) => Err(format!("expected a string, found {}", json_kind(other))),
        }
    }

    /// The value as text to parse: a CSV cell, or a JSON string, number or boolean.
    fn scalar(self) -> Result<Cow<'a, str>, String> {
        match self {
            Cell::Csv(text) => Ok(Cow::Borrowed(text)),
            Cell::Json(Value::String(text)) => Ok(Cow::Borrowed(text)),
            Cell::Json(Value::Number(number)) => Ok(Cow::Owned(number.to_string())),
            Cell::Json(Value::Bool(value)) => Ok(Cow::Owned(value.to_string())),
            Cell::Json(other) => Err(format!("expected a value, found {}", json_kind(other))),
        }
    }

    fn integer(self) -> Result<i32, String> {
        let text = self.scalar()?;
        text.parse()
            .map_err(|_| format!("not a whole number: {}", shown(&text)))
    }

    fn real(self) -> Result<f64, String> {
        let text = self.scalar()?;
        text.parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .ok_or_else(|| format!("not a number: {}", shown(&text)))
    }

    fn boolean(self) -> Result<bool, String> {
        if let Cell::Json(Value::Bool(value)) = self {
            return Ok(*value);
        }
        let text = self.scalar()?;
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("expected true, false, 1 or 0: {}", shown(&text))),
        }
    }

    fn timestamp(self) -> Result<prost_types::Timestamp, String> {
        let text = self.scalar()?;
        parse_rfc3339(&text).map_err(|why| format!("{why}: {}", shown(&text)))
    }

    fn duration(self, unit: Unit) -> Result<prost_types::Duration, String> {
        let text = self.scalar()?;
        text.parse::<f64>()
            .ok()
            .and_then(|value| duration_from(value, unit))
            .ok_or_else(|| format!("not a duration: {}", shown(&text)))
    }

    /// An enum value by its short name (`inbound`) or full proto name, in any case; `valid`
    /// lists the short names for the message.
    fn enumeration(
        self,
        prefix: &str,
        valid: &str,
        from_name: impl Fn(&str) -> Option<i32>,
    ) -> Result<i32, String> {
        let text = self.scalar()?;
        let upper = text.to_ascii_uppercase();
        let name = if upper.starts_with(prefix) {
            upper
        } else {
            format!("{prefix}{upper}")
        };
        from_name(&name)
            .filter(|&value| value != 0)
            .ok_or_else(|| format!("expected {valid}: {}", shown(&text)))
    }
}

/// `value` units as a protobuf duration, rounded to the nanosecond; `None` when out of range.
fn duration_from(value: f64, unit: Unit) -> Option<prost_types::Duration> {
    const NANOS_PER_SECOND: i128 = 1_000_000_000;
    let nanos_per_unit = match unit {
        Unit::Seconds => 1e9,
        Unit::Milliseconds => 1e6,
    };
    let total = (value * nanos_per_unit).round();
    if !total.is_finite() {
        return None;
    }
    // Saturates far outside the i64 range of seconds, which the conversions below reject.
    let total = total as i128;
    Some(prost_types::Duration {
        seconds: i64::try_from(total / NANOS_PER_SECOND).ok()?,
        nanos: i32::try_from(total % NANOS_PER_SECOND).ok()?,
    })
}

/// Parses an RFC 3339 date-time such as `2026-11-27T10:00:00Z` or
/// `2026-11-27T11:00:00.250+01:00` (`T` and `Z` in either case, at most nine fractional
/// digits, no leap seconds).
fn parse_rfc3339(text: &str) -> Result<prost_types::Timestamp, &'static str> {
    const SYNTAX: &str = "not an RFC 3339 timestamp like 2026-11-27T10:00:00Z";
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(SYNTAX);
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let digits = &b[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(SYNTAX);
        }
        Ok(digits
            .iter()
            .fold(0, |n, digit| n * 10 + i64::from(digit - b'0')))
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);

    let mut rest = &b[19..];
    let mut nanos = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return Err(SYNTAX);
        }
        if len > 9 {
            return Err("more than nine fractional digits");
        }
        let digits = number(20..20 + len)?;
        nanos = digits * 10_i64.pow(9 - len as u32);
        rest = &fraction[len..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let at = b.len() - 6;
            let (hours, minutes) = (number(at + 1..at + 3)?, number(at + 4..at + 6)?);
            if hours > 23 || minutes > 59 {
                return Err("offset out of range");
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return Err(SYNTAX),
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("no such time of day");
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Ok(prost_types::Timestamp {
        seconds,
        nanos: i32::try_from(nanos).map_err(|_| SYNTAX)?,
    })
}

/// Days in `month` (1 to 12) of `year`, in the proleptic Gregorian calendar.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use futures::FutureExt;
    use prost_types::{Duration as PbDuration, Timestamp};
    use tokio_stream::StreamExt;

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn dur(seconds: i64, nanos: i32) -> Option<PbDuration> {
        Some(PbDuration { seconds, nanos })
    }

    /// Parses `text` as CSV records of kind `K`.
    fn csv<K: RecordKind>(text: &str) -> Vec<ParsedLine<K::Record>> {
        let records = csv_records::<K>(text.as_bytes()).unwrap();
        records.collect::<anyhow::Result<_>>().unwrap()
    }

    /// Parses `text` as JSON Lines records of kind `K`.
    fn jsonl<K: RecordKind>(text: &str) -> Vec<ParsedLine<K::Record>> {
        let records = jsonl_records::<K>(text.as_bytes());
        records.collect::<anyhow::Result<_>>().unwrap()
    }

    /// The line numbers and the records or errors of `lines`, for comparing.
    fn outcome<R>(lines: Vec<ParsedLine<R>>) -> Vec<(u64, Result<R, String>)> {
        lines.into_iter().map(|l| (l.number, l.record)).collect()
    }

    fn expected_call() -> pb::CarrierCallRecord {
        pb::CarrierCallRecord {
            carrier_id: "contoso".into(),
            record: Some(pb::CallRecord {
                cursor: 0,
                call_id: "c-1".into(),
                correlation_id: "corr-1".into(),
                tenant_id: "0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c".into(),
                call_type: "oc_in".into(),
                direction: pb::CallDirection::Inbound as i32,
                caller_number: "+14255550100".into(),
                callee_number: "+14255550123".into(),
                start_time: ts(1_795_773_600, 0),
                invite_time: ts(1_795_773_599, 250_000_000),
                end_time: ts(1_795_773_930, 500_000_000),
                failure_time: None,
                duration: dur(330, 500_000_000),
                successful: true,
                final_sip_code: 200,
                final_sip_phrase: "OK, fine".into(),
                microsoft_subcode: 0,
                media_bypass: false,
                trunk_fqdn: "sbc1.contoso.example".into(),
            }),
        }
    }

    const CALL_CSV: &str = "\
carrier_id,call_id,correlation_id,tenant_id,call_type,direction,caller_number,callee_number,start_time,invite_time,end_time,failure_time,duration_seconds,successful,final_sip_code,final_sip_phrase,microsoft_subcode,media_bypass,trunk_fqdn
contoso,c-1,corr-1,0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c,oc_in,Inbound,+14255550100,+14255550123,2026-11-27T10:00:00Z,2026-11-27T10:59:59.25+01:00,2026-11-27T10:05:30.5Z,,330.5,true,200,\"OK, fine\",0,0,sbc1.contoso.example
";

    /// A CSV row becomes exactly the call record it spells, empty cells left unset.
    #[test]
    fn csv_call_record_parses_to_the_exact_message() {
        let lines = csv::<CallRecords>(CALL_CSV);
        assert_eq!(outcome(lines), vec![(2, Ok(expected_call()))]);
    }

    /// A JSON line becomes exactly the call record it spells; null and missing keys are unset.
    #[test]
    fn jsonl_call_record_parses_to_the_exact_message() {
        let line = r#"{"carrier_id":"contoso","call_id":"c-1","correlation_id":"corr-1","tenant_id":"0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c","call_type":"oc_in","direction":"CALL_DIRECTION_INBOUND","caller_number":"+14255550100","callee_number":"+14255550123","start_time":"2026-11-27T10:00:00Z","invite_time":"2026-11-27T09:59:59.250Z","end_time":"2026-11-27T10:05:30.5Z","failure_time":null,"duration_seconds":330.5,"successful":true,"final_sip_code":200,"final_sip_phrase":"OK, fine","media_bypass":0,"trunk_fqdn":"sbc1.contoso.example"}"#;
        let lines = jsonl::<CallRecords>(&format!("{line}\n"));
        assert_eq!(outcome(lines), vec![(1, Ok(expected_call()))]);
    }

    /// A quality record parses from CSV and JSON alike, durations in milliseconds.
    #[test]
    fn quality_record_parses_from_csv_and_jsonl() {
        let expected = pb::CarrierQualityRecord {
            carrier_id: "contoso".into(),
            record: Some(pb::QualityRecord {
                call_id: "c-1".into(),
                stream_id: "s-1".into(),
                stream_direction: pb::StreamDirection::CalleeToCaller as i32,
                tenant_id: "t".into(),
                start_time: ts(1_795_773_600, 0),
                end_time: ts(1_795_773_930, 0),
                audio_codec: "SILK".into(),
                avg_jitter: dur(0, 12_500_000),
                max_jitter: dur(0, 40_000_000),
                avg_round_trip: dur(0, 120_000_000),
                max_round_trip: dur(1, 500_000_000),
                avg_packet_loss_rate: Some(0.01),
                max_packet_loss_rate: None,
                avg_audio_degradation: Some(0.5),
                avg_concealed_ratio: Some(0.02),
                ..Default::default()
            }),
        };
        let from_csv = csv::<QualityRecords>(
            "carrier_id,call_id,stream_id,stream_direction,tenant_id,start_time,end_time,audio_codec,avg_jitter_ms,max_jitter_ms,avg_round_trip_ms,max_round_trip_ms,avg_packet_loss_rate,max_packet_loss_rate,avg_audio_degradation,avg_concealed_ratio\r\n\
             contoso,c-1,s-1,callee_to_caller,t,2026-11-27T10:00:00Z,2026-11-27T10:05:30Z,SILK,12.5,40,120,1500,0.01,,0.5,0.02\r\n",
        );
        assert_eq!(outcome(from_csv), vec![(2, Ok(expected.clone()))]);
        let from_json = jsonl::<QualityRecords>(
            r#"{"carrier_id":"contoso","call_id":"c-1","stream_id":"s-1","stream_direction":"CALLEE_TO_CALLER","tenant_id":"t","start_time":"2026-11-27T10:00:00Z","end_time":"2026-11-27T10:05:30Z","audio_codec":"SILK","avg_jitter_ms":12.5,"max_jitter_ms":"40","avg_round_trip_ms":120,"max_round_trip_ms":1.5e3,"avg_packet_loss_rate":0.01,"avg_audio_degradation":0.5,"avg_concealed_ratio":0.02}"#,
        );
        assert_eq!(outcome(from_json), vec![(1, Ok(expected))]);
    }

    /// A bad CSV line is reported at its own line and the next good line is still read, with
    /// CRLF endings, blank lines and a cell spanning two lines all counted.
    #[test]
    fn csv_bad_line_is_reported_with_its_line_and_reading_goes_on() {
        let text = "call_id,start_time,final_sip_phrase\r\n\
                    a,2026-11-27T10:00:00Z,\r\n\
                    \r\n\
                    b,yesterday,\r\n\
                    c,,\"two\r\nlines\"\r\n\
                    d,x,y,z\r\n\
                    e,,\r\n";
        let lines = outcome(csv::<CallRecords>(text));
        let summary: Vec<_> = lines
            .iter()
            .map(|(line, record)| (*line, record.as_ref().err().cloned()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (2, None),
                (
                    4,
                    Some(
                        "start_time: not an RFC 3339 timestamp like 2026-11-27T10:00:00Z: \"yesterday\""
                            .to_owned()
                    )
                ),
                (5, None),
                (7, Some("4 fields where the header has 3".to_owned())),
                (8, None),
            ]
        );
        let phrase = lines[2]
            .1
            .as_ref()
            .ok()
            .and_then(|r| r.record.as_ref())
            .map(|r| r.final_sip_phrase.clone());
        assert_eq!(phrase.as_deref(), Some("two\r\nlines"));
    }

    /// A bad JSON line is reported at its line and the next good line is still read.
    #[test]
    fn jsonl_bad_line_is_reported_with_its_line_and_reading_goes_on() {
        let text = "{\"call_id\":\"a\"}\n\n{\"call_id\":\"b\",\n{\"call_id\":\"c\",\"final_sip_code\":\"2xx\"}\n[1]\n{\"call_id\":\"d\"}";
        let lines = outcome(jsonl::<CallRecords>(text));
        let numbers: Vec<_> = lines.iter().map(|(n, r)| (*n, r.is_ok())).collect();
        assert_eq!(
            numbers,
            vec![(1, true), (3, false), (4, false), (5, false), (6, true)]
        );
        assert!(matches!(&lines[1].1, Err(why) if why.starts_with("malformed JSON at column")));
        assert_eq!(
            lines[2].1.as_ref().err().map(String::as_str),
            Some("final_sip_code: not a whole number: \"2xx\"")
        );
        assert_eq!(
            lines[3].1.as_ref().err().map(String::as_str),
            Some("expected a JSON object, found an array")
        );
    }

    /// An unknown CSV column stops the import at the header, naming it and the known columns.
    #[test]
    fn unknown_csv_column_is_rejected_at_the_header() {
        let error = csv_records::<CallRecords>("call_id,calee_number\nc-1,+1\n".as_bytes())
            .err()
            .map(|e| format!("{e:#}"));
        let error = error.unwrap_or_default();
        assert!(
            error.starts_with(
                "line 1: unknown column \"calee_number\" (the columns are carrier_id, call_id,"
            ),
            "{error}"
        );
        let repeated = csv_records::<CallRecords>("call_id,call_id\n".as_bytes())
            .err()
            .map(|e| format!("{e:#}"));
        assert_eq!(
            repeated.as_deref(),
            Some("line 1: column \"call_id\" appears twice")
        );
    }

    /// An unknown JSON key makes its line bad, and only its line.
    #[test]
    fn unknown_json_key_rejects_the_line() {
        let lines = outcome(jsonl::<QualityRecords>(
            "{\"call_id\":\"a\",\"jitter\":3}\n{\"call_id\":\"b\"}\n",
        ));
        assert_eq!(
            lines[0].1.as_ref().err().map(String::as_str),
            Some("unknown key \"jitter\"")
        );
        assert!(lines[1].1.is_ok());
    }

    /// Values are checked for syntax: enums by short name, booleans, numbers, JSON types.
    #[test]
    fn value_syntax_is_checked() {
        let bad = |column: &str, value: &str| {
            let mut record = CallRecords::new_record();
            CallRecords::set(&mut record, column, Cell::Csv(value)).err()
        };
        assert_eq!(
            bad("direction", "sideways"),
            Some("expected inbound or outbound: \"sideways\"".to_owned())
        );
        assert!(bad("direction", "unspecified").is_some());
        assert!(bad("direction", "OUTBOUND").is_none());
        assert_eq!(
            bad("successful", "yes"),
            Some("expected true, false, 1 or 0: \"yes\"".to_owned())
        );
        assert!(bad("successful", "FALSE").is_none());
        assert!(bad("duration_seconds", "NaN").is_some());
        assert!(bad("duration_seconds", "1 s").is_some());
        assert!(bad("final_sip_code", "200.0").is_some());
        let mut record = CallRecords::new_record();
        let number = Value::from(7);
        assert_eq!(
            CallRecords::set(&mut record, "call_id", Cell::Json(&number)).err(),
            Some("expected a string, found a number".to_owned())
        );
    }

    /// Durations round to the nanosecond and keep the sign in both parts.
    #[test]
    fn durations_convert_exactly() {
        let cases = [
            (0.0, Unit::Seconds, 0, 0),
            (330.5, Unit::Seconds, 330, 500_000_000),
            (86_400.000_000_001, Unit::Seconds, 86_400, 1),
            (-1.5, Unit::Seconds, -1, -500_000_000),
            (0.1, Unit::Milliseconds, 0, 100_000),
            (1500.0, Unit::Milliseconds, 1, 500_000_000),
        ];
        for (value, unit, seconds, nanos) in cases {
            assert_eq!(
                duration_from(value, unit),
                Some(PbDuration { seconds, nanos })
            );
        }
        assert_eq!(duration_from(1e30, Unit::Seconds), None);
    }

    /// Valid RFC 3339 timestamps convert to the right instant, offsets and fractions included.
    #[test]
    fn rfc3339_valid() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0, 0),
            ("2026-11-27T10:00:00Z", 1_795_773_600, 0),
            ("2026-11-27t10:00:00z", 1_795_773_600, 0),
            ("2026-11-27T11:30:00+01:30", 1_795_773_600, 0),
            ("2026-11-27T05:00:00-05:00", 1_795_773_600, 0),
            ("2026-11-27T10:00:00-00:00", 1_795_773_600, 0),
            ("2026-11-27T10:00:00.5Z", 1_795_773_600, 500_000_000),
            (
                "2026-11-27T10:00:00.123456789+00:00",
                1_795_773_600,
                123_456_789,
            ),
            ("2024-02-29T23:59:59Z", 1_709_251_199, 0),
            ("1969-12-31T23:59:59.25Z", -1, 250_000_000),
            ("0001-01-01T00:00:00Z", -62_135_596_800, 0),
            ("9999-12-31T23:59:59Z", 253_402_300_799, 0),
        ];
        for (text, seconds, nanos) in cases {
            assert_eq!(
                parse_rfc3339(text),
                Ok(Timestamp { seconds, nanos }),
                "{text}"
            );
        }
    }

    /// Anything that is not a strict RFC 3339 date-time is refused.
    #[test]
    fn rfc3339_invalid() {
        let cases = [
            "",
            "2026-11-27",
            "2026-11-27T10:00:00",
            "2026-11-27 10:00:00Z",
            "2026-11-27T10:00Z",
            "2026-11-27T10:00:00+0100",
            "2026-11-27T10:00:00+01",
            "2026-11-27T10:00:00.Z",
            "2026-11-27T10:00:00.1234567891Z",
            "2026-11-27T10:00:00Zjunk",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T10:60:00Z",
            "2026-12-31T23:59:60Z",
            "2026-11-27T10:00:00+24:00",
            "+2026-11-27T10:00:00Z",
            "2026-11-2éT10:00:00Z",
            "２026-11-27T10:00:00Z",
        ];
        for text in cases {
            assert!(parse_rfc3339(text).is_err(), "{text} was accepted");
        }
    }

    /// Records are batched, bad lines are kept with their numbers, and each record sent keeps
    /// its file line, so the server's stream indexes map back to lines.
    #[test]
    fn pump_maps_stream_indexes_to_file_lines() {
        let text = "call_id,final_sip_code\nr0,200\nbad,x\nr1,200\n\nr2,486\nr3,200\nr4,200\n";
        let (tx, mut rx) = mpsc::channel(16);
        let records = csv_records::<CallRecords>(text.as_bytes());
        let produced = records.and_then(|records| pump::<CallRecords>(records, 2, false, &tx));
        let produced = produced.unwrap();
        assert_eq!(produced.lines, 6);
        assert_eq!(produced.bad_lines.len(), 1);
        assert_eq!(produced.bad_lines[0].0, 3);
        assert_eq!(produced.line_of, vec![2, 4, 6, 7, 8]);
        assert!(produced.complete);
        let mut sizes = Vec::new();
        while let Ok(feed) = rx.try_recv() {
            sizes.push(match feed {
                Feed::Batch(batch) => batch.records.len(),
                Feed::Done => 0,
            });
        }
        assert_eq!(sizes, vec![2, 2, 1, 0]);

        let rejection = |index| pb::RecordRejection {
            index,
            ..Default::default()
        };
        let lines = rejection_lines(
            &produced.line_of,
            &[
                rejection(0),
                rejection(2),
                rejection(4),
                rejection(5),
                rejection(-1),
            ],
        );
        assert_eq!(lines, vec![Some(2), Some(6), Some(8), None, None]);
    }

    /// With --strict the first bad line stops the reader with its line number.
    #[test]
    fn strict_stops_at_the_first_bad_line() {
        let text = "call_id,final_sip_code\nr0,200\nbad,x\nr1,200\n";
        let (tx, _rx) = mpsc::channel(16);
        let records = csv_records::<CallRecords>(text.as_bytes());
        let error = records
            .and_then(|records| pump::<CallRecords>(records, 1, true, &tx))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            error.starts_with("line 3: final_sip_code: not a whole number: \"x\" (stopped by --strict; records before it"),
            "{error}"
        );
    }

    /// The report lists bad lines and rejections by file line, 50 at most with a count of the rest.
    #[test]
    fn report_prints_lines_and_cuts_long_lists() {
        let rejections: Vec<_> = (0..60)
            .map(|i| pb::RecordRejection {
                index: i,
                call_id: format!("c-{i}"),
                field: if i == 0 {
                    String::new()
                } else {
                    "start_time".into()
                },
                reason: if i == 0 {
                    pb::RejectionReason::Conflict as i32
                } else {
                    pb::RejectionReason::InvalidField as i32
                },
                description: "is wrong".into(),
            })
            .collect();
        let line_of: Vec<u64> = (0..60).map(|i| i + 10).collect();
        let summary = pb::IngestionSummary {
            received: 60,
            accepted: 0,
            duplicates: 0,
            rejected: 1500,
            rejections,
        };
        let report = report(
            Produced {
                lines: 61,
                bad_lines: vec![(5, "start_time: bad".into())],
                line_of,
                complete: true,
            },
            summary,
        );
        let mut out = Vec::new();
        report.print(&mut out).unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with(
            "read 61 records: 60 sent, 1 bad lines skipped\n\
             server: 60 received, 0 accepted, 0 duplicates, 1500 rejected\n\
             bad lines:\n  line 5: start_time: bad\n\
             rejected by the server:\n  line 10 (call_id c-0): conflict: is wrong\n  line 11 (call_id c-1): start_time: is wrong\n"
        ), "{out}");
        assert!(
            out.contains("  line 59 (call_id c-49): start_time: is wrong\n  ... and 1450 more\n"),
            "{out}"
        );
        assert!(!out.contains("c-50"));
        assert!(!report.is_clean());
    }

    /// The whole pipeline: batches reach the call in order, the summary comes back, and its
    /// rejections name file lines.
    #[tokio::test]
    async fn import_streams_batches_and_maps_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.jsonl");
        let text = "{\"call_id\":\"a\"}\n{\"call_id\":\"b\"}\nnot json\n{\"call_id\":\"c\"}\n";
        std::fs::write(&path, text).unwrap();
        let args = ImportArgs {
            file: path,
            format: None,
            batch_size: 2,
            strict: false,
        };
        let report = import::<CallRecords, _, _>(&args, |requests| async move {
            let batches: Vec<_> = requests.collect().await;
            let ids: Vec<Vec<String>> = batches
                .iter()
                .map(|b| {
                    b.records
                        .iter()
                        .filter_map(|r| r.record.as_ref())
                        .map(|r| r.call_id.clone())
                        .collect()
                })
                .collect();
            assert_eq!(ids, vec![vec!["a", "b"], vec!["c"]]);
            Ok(Some(pb::IngestionSummary {
                received: 3,
                accepted: 2,
                rejected: 1,
                rejections: vec![pb::RecordRejection {
                    index: 2,
                    call_id: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }))
        })
        .await
        .unwrap();
        assert_eq!(report.lines, 4);
        assert_eq!(report.bad_lines.len(), 1);
        assert_eq!(report.bad_lines[0].0, 3);
        assert_eq!(report.rejection_lines, vec![Some(4)]);
    }

    /// A file that fails mid-way cancels the call instead of ending the stream cleanly.
    #[tokio::test]
    async fn strict_failure_never_ends_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.csv");
        std::fs::write(&path, "call_id,final_sip_code\na,200\nb,x\n").unwrap();
        let args = ImportArgs {
            file: path,
            format: None,
            batch_size: 1,
            strict: true,
        };
        let error = import::<CallRecords, _, _>(&args, |mut requests| async move {
            // Drains the stream as a server would: it must never see the end.
            while requests.next().await.is_some() {}
            Ok(Some(pb::IngestionSummary::default()))
        })
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(error.contains("line 3: final_sip_code"), "{error}");
    }

    /// The request stream ends at `Done`, and never ends when the reader just went away.
    #[test]
    fn request_stream_ends_only_at_done() {
        let batch = |id: &str| pb::IngestCallRecordsRequest {
            records: vec![pb::CarrierCallRecord {
                carrier_id: id.into(),
                record: None,
            }],
        };
        let requests = |rx| Requests::<CallRecords> {
            first: Some(batch("first")),
            rx,
            done: false,
            sent: 0,
            progress: ProgressBar::hidden(),
        };

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Feed::Batch(batch("second"))).unwrap();
        tx.try_send(Feed::Done).unwrap();
        let mut finished = requests(rx);
        assert_eq!(finished.next().now_or_never(), Some(Some(batch("first"))));
        assert_eq!(finished.next().now_or_never(), Some(Some(batch("second"))));
        assert_eq!(finished.next().now_or_never(), Some(None));
        assert_eq!(finished.sent, 2);

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Feed::Batch(batch("second"))).unwrap();
        drop(tx);
        let mut broken = requests(rx);
        assert!(broken.next().now_or_never().is_some());
        assert!(broken.next().now_or_never().is_some());
        assert_eq!(broken.next().now_or_never(), None, "the stream ended");
    }

    /// An empty file makes no call at all.
    #[tokio::test]
    async fn empty_file_makes_no_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.csv");
        std::fs::write(&path, "call_id\n").unwrap();
        let args = ImportArgs {
            file: path,
            format: None,
            batch_size: 10,
            strict: false,
        };
        let report = import::<CallRecords, _, _>(&args, |_| async {
            Err(tonic::Status::internal("called"))
        })
        .await
        .unwrap();
        assert_eq!(report, ImportReport::default());
    }

    /// The format comes from the extension, CSV for standard input, else an error.
    #[test]
    fn format_from_extension() {
        assert_eq!(format_of(Path::new("-")).ok(), Some(FileFormat::Csv));
        assert_eq!(format_of(Path::new("a.CSV")).ok(), Some(FileFormat::Csv));
        assert_eq!(
            format_of(Path::new("a.ndjson")).ok(),
            Some(FileFormat::Jsonl)
        );
        assert_eq!(format_of(Path::new("a.json")).ok(), Some(FileFormat::Jsonl));
        assert!(format_of(Path::new("a.txt")).is_err());
    }

    /// The arguments parse as a subcommand would, `--help` documents every column, and the
    /// batch size is bounded by the server's limit.
    #[test]
    fn arguments_and_help() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Cmd,
        }
        #[derive(Debug, clap::Subcommand)]
        enum Cmd {
            /// Import call records.
            ImportCallRecords(ImportArgs),
        }
        let cli = Cli::try_parse_from([
            "x",
            "import-call-records",
            "-",
            "--format",
            "jsonl",
            "--batch-size",
            "500",
            "--strict",
        ]);
        let Ok(Cli {
            command: Cmd::ImportCallRecords(args),
        }) = cli
        else {
            panic!("{cli:?}");
        };
        assert_eq!(args.file, Path::new("-"));
        assert_eq!(args.format, Some(FileFormat::Jsonl));
        assert_eq!(args.batch_size, 500);
        assert!(args.strict);
        for size in ["0", "10001"] {
            assert!(
                Cli::try_parse_from(["x", "import-call-records", "f", "--batch-size", size])
                    .is_err()
            );
        }

        let mut command = <Cli as clap::CommandFactory>::command();
        let help = command
            .find_subcommand_mut("import-call-records")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.starts_with("Import call records\n"), "{help}");
        for column in CallRecords::COLUMNS.iter().chain(QualityRecords::COLUMNS) {
            assert!(help.contains(column), "--help lacks {column}");
        }
    }

    /// The fixture files under tests/fixtures parse without a bad line.
    #[test]
    fn fixtures_parse_cleanly() {
        let calls = csv::<CallRecords>(include_str!("../../tests/fixtures/call_records.csv"));
        let lines: Vec<_> = calls.iter().map(|l| (l.number, l.record.is_ok())).collect();
        assert_eq!(lines, vec![(2, true), (3, true), (4, true)], "{calls:?}");
        let quality =
            jsonl::<QualityRecords>(include_str!("../../tests/fixtures/quality_records.jsonl"));
        let lines: Vec<_> = quality
            .iter()
            .map(|l| (l.number, l.record.is_ok()))
            .collect();
        assert_eq!(lines, vec![(1, true), (2, true), (3, true)], "{quality:?}");
    }

    /// Every documented column is one the record kind accepts.
    #[test]
    fn every_column_is_settable() {
        let empty = Value::Null;
        for column in CallRecords::COLUMNS {
            let mut record = CallRecords::new_record();
            let why = CallRecords::set(&mut record, column, Cell::Json(&empty)).err();
            assert_ne!(why.as_deref(), Some("unknown column"), "{column}");
        }
        for column in QualityRecords::COLUMNS {
            let mut record = QualityRecords::new_record();
            let why = QualityRecords::set(&mut record, column, Cell::Json(&empty)).err();
            assert_ne!(why.as_deref(), Some("unknown column"), "{column}");
        }
    }

    /// The import futures can run on a multi-threaded runtime.
    #[test]
    fn import_futures_are_send() {
        fn assert_send<T: Send>(_: T) {}
        fn check(client: &mut PlatformServiceClient<Channel>, args: &ImportArgs) {
            assert_send(import_call_records(client, args));
        }
        fn check_quality(client: &mut PlatformServiceClient<Channel>, args: &ImportArgs) {
            assert_send(import_quality_records(client, args));
        }
        let _ = check_quality;
        let _ = check;
    }
}
