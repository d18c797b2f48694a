//! The import pipeline: a blocking task reads the file and hands batches through a bounded
//! channel to the request stream of the call.
//!
//! Memory stays flat however long the file is; all that grows is one line number per record
//! sent, which turns the stream indexes in the server's rejections back into lines. A file the
//! reader cannot finish (read error, `--strict`) never ends the stream cleanly: the call is
//! cancelled, so the server cannot take a truncated file for a whole one. Batches it committed
//! before stay committed; ingestion is idempotent, so importing the corrected file again is
//! safe.

use std::io::BufReader;
use std::path::Path;
use std::pin::Pin;
use std::task::{self, Poll};

use anyhow::Context;
use indicatif::ProgressBar;
use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::columns::RecordKind;
use super::input::{display_name, format_of, open};
use super::progress::{Progress, show_sent, show_size};
use super::readers::{ParsedLine, csv_records, jsonl_records};
use super::report::rejection_lines;
use super::{FileFormat, ImportArgs, ImportReport, MAX_BATCH};
use crate::cli::status::explain;
use crate::pb::v1 as pb;

/// Batches the reader may run ahead of the network: enough to keep the stream busy, few enough
/// to keep memory flat.
const BATCHES_AHEAD: usize = 4;

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
pub(crate) async fn import<K, F, Fut>(args: &ImportArgs, ingest: F) -> anyhow::Result<ImportReport>
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
        First::Call(Err(status)) => return Err(explain(status)),
        First::Call(answer) => (joined(reader.await)?, answer),
    };
    let summary = answer.map_err(explain)?;
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
pub(crate) struct Requests<K: RecordKind> {
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
        show_sent(&self.progress, self.sent);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::import::columns::CallRecords;
    use futures::FutureExt;
    use tokio_stream::StreamExt;

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
}
