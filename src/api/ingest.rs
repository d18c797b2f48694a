//! Client-streaming ingestion shared by call records, quality records and call durations:
//! validate record by record, commit valid records in batches while the stream runs, tally.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::Instrument;

use super::Authorizer;
use super::limits::StreamPermit;
use crate::feed::{CarrierSignal, Feed};

use crate::domain::Violation;
use crate::domain::durations::IngestOutcome;
use crate::domain::durations::{Rejection, RejectionKind, Tally};
use crate::domain::ids::CarrierId;
use crate::error::ApiError;
use crate::error::ApiResult;
use crate::metrics::StreamMetrics;
use crate::store::{Encoded, EncodedDuration, LogRecord, Store};

/// Valid records are committed once this many are pending (each commit costs a few ms).
const COMMIT_EVERY: usize = 2_000;

/// One record of a stream after validation.
pub(crate) struct Parsed<T> {
    /// The call id as sent, for rejections.
    pub call_id: String,
    /// The carrier and the valid record, or what is wrong with it.
    pub result: Result<(CarrierId, T), Vec<Violation>>,
}

/// Where validated records go. Each commit runs in a task of its own, with a clone.
pub(crate) trait Sink<T>: Clone + Send + Sync + 'static {
    /// The `kind` label of the records' metrics.
    const KIND: &'static str;

    /// Stores a batch; one outcome per record, in order.
    fn store(
        &self,
        batch: &[(CarrierId, T)],
    ) -> impl Future<Output = ApiResult<Vec<IngestOutcome>>> + Send;
}

impl<T: LogRecord> Sink<Encoded<T>> for Store {
    const KIND: &'static str = T::KIND.label();

    async fn store(&self, batch: &[(CarrierId, Encoded<T>)]) -> ApiResult<Vec<IngestOutcome>> {
        Ok(self.ingest(batch).await?)
    }
}

/// Durations of the one authenticated carrier that uploads them.
#[derive(Clone)]
pub(crate) struct DurationSink {
    pub store: Store,
    pub carrier: CarrierId,
}

impl Sink<EncodedDuration> for DurationSink {
    const KIND: &'static str = "call_durations";

    async fn store(&self, batch: &[(CarrierId, EncodedDuration)]) -> ApiResult<Vec<IngestOutcome>> {
        let records: Vec<&EncodedDuration> = batch.iter().map(|(_, r)| r).collect();
        Ok(self.store.report_durations(&self.carrier, &records).await?)
    }
}

/// The bounds every client stream of this server keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamBounds {
    /// Most records one stream may send.
    pub max_records: u64,
    /// Longest wait for the next message.
    pub idle: Duration,
}

/// What one client stream runs with: the server's accounting and bounds, and for a carrier's
/// upload its stream permit and the watch that ends it on suspension.
pub(crate) struct Ingestion {
    pub metrics: Arc<StreamMetrics>,
    pub bounds: StreamBounds,
    /// Held until the stream ends.
    pub permit: Option<StreamPermit>,
    /// Ends the stream when the carrier is suspended.
    pub guard: Option<CarrierGuard>,
    /// Whose stream it is, as the `carrier` label of the open-stream metric (empty for the
    /// platform's ingestion).
    pub scope: String,
}

/// Watches one carrier's status while its upload runs.
pub(crate) struct CarrierGuard {
    auth: Authorizer,
    carrier: CarrierId,
    signals: watch::Receiver<CarrierSignal>,
    status_epoch: u64,
}

impl CarrierGuard {
    /// A guard of `carrier`, woken by `feed`.
    pub(crate) fn new(auth: Authorizer, feed: &Feed, carrier: CarrierId) -> Self {
        let mut signals = feed.subscribe(carrier.as_str());
        let status_epoch = signals.borrow_and_update().status_epoch;
        Self {
            auth,
            carrier,
            signals,
            status_epoch,
        }
    }

    /// Resolves with the refusal once the carrier is no longer active. Cancel-safe: an epoch
    /// is taken as checked only once its check completed, so a check cut short by the caller's
    /// `select!` runs again on the next call.
    async fn revoked(&mut self) -> ApiError {
        loop {
            let epoch = self.signals.borrow_and_update().status_epoch;
            if epoch != self.status_epoch {
                if let Err(refused) = self.auth.active_carrier(&self.carrier).await {
                    return refused;
                }
                self.status_epoch = epoch;
            }
            if self.signals.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// Runs [`ingest_stream`] in a task of its own. hyper drops an RPC's handler when its
/// connection dies; the task lives on, sees the broken stream, and commits the valid records it
/// had received before ending, so a client's retry has less to send again.
pub(crate) async fn ingest_detached<M, T, S, K, P>(
    sink: K,
    ingestion: Ingestion,
    stream: S,
    parse: P,
) -> Result<Tally, Status>
where
    M: Send + 'static,
    T: Send + Sync + 'static,
    S: Stream<Item = Result<M, Status>> + Unpin + Send + 'static,
    K: Sink<T> + Send + 'static,
    P: Fn(M) -> Vec<Parsed<T>> + Send + 'static,
{
    use tracing::Instrument;
    let task = tokio::spawn(
        async move { ingest_stream(&sink, ingestion, stream, parse).await }
            .instrument(tracing::Span::current()),
    );
    task.await
        .map_err(|e| Status::from(ApiError::Internal(format!("ingestion task: {e}"))))?
}

/// Valid records waiting for their commit, with their stream index and call id.
struct Pending<T> {
    records: Vec<(CarrierId, T)>,
    origins: Vec<(i64, String)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            origins: Vec::new(),
        }
    }
}

/// What a commit hands back: its batch, and the outcome of each record.
type Committed<T> = (Pending<T>, ApiResult<Vec<IngestOutcome>>);

/// The commits of one stream: at most one runs at a time, in a task of its own, while the
/// stream goes on being read and validated (two cores share the work); each starts only
/// after the one before it completed, so a key sent twice in one stream is stored by the
/// earlier commit and met by the later one.
struct Commits<'a, T, K> {
    sink: &'a K,
    metrics: &'a StreamMetrics,
    running: Option<JoinHandle<Committed<T>>>,
}

impl<'a, T: Send + Sync + 'static, K: Sink<T>> Commits<'a, T, K> {
    /// Starts committing `batch` once the commit running (if any) has completed. That one is
    /// tallied, and its records dropped, after this one has started: not between the two, where
    /// dropping 2,000 records (some 30,000 allocations) delayed every commit of an upload that
    /// arrives faster than it commits.
    async fn start(&mut self, batch: Pending<T>, tally: &mut Tally) -> ApiResult<()> {
        let previous = self.join().await?;
        if !batch.records.is_empty() {
            self.spawn(batch);
        }
        if let Some((previous, outcomes)) = previous {
            self.settle(previous, outcomes, tally);
        }
        Ok(())
    }

    /// Runs the commit of `batch` in a task of its own.
    fn spawn(&mut self, batch: Pending<T>) {
        let sink = self.sink.clone();
        let commit = async move {
            let started = std::time::Instant::now();
            let outcomes = sink.store(&batch.records).await;
            tracing::debug!(
                records = batch.records.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "batch committed"
            );
            (batch, outcomes)
        };
        self.running = Some(tokio::spawn(commit.in_current_span()));
    }

    /// Waits for the commit running, if any, and tallies its outcomes.
    async fn finish(&mut self, tally: &mut Tally) -> ApiResult<()> {
        if let Some((batch, outcomes)) = self.join().await? {
            self.settle(batch, outcomes, tally);
        }
        Ok(())
    }

    /// Commits `batch` after the one running, and waits for both.
    async fn flush(&mut self, batch: Pending<T>, tally: &mut Tally) -> ApiResult<()> {
        self.start(batch, tally).await?;
        self.finish(tally).await
    }

    /// Resolves when the running commit completes (never while none runs), having tallied
    /// it. Cancel-safe: the commit runs on in its task and its handle stays here until it has
    /// completed; nothing is awaited after that.
    async fn completed(&mut self, tally: &mut Tally) -> ApiResult<()> {
        let Some((batch, outcomes)) = self.join().await? else {
            return std::future::pending().await;
        };
        self.settle(batch, outcomes, tally);
        Ok(())
    }

    /// Waits for the running commit, if any, and returns its batch and outcomes. Cancel-safe:
    /// the handle stays here until the commit has completed.
    async fn join(&mut self) -> ApiResult<Option<(Pending<T>, Vec<IngestOutcome>)>> {
        let Some(running) = self.running.as_mut() else {
            return Ok(None);
        };
        let ended = running.await;
        self.running = None;
        let (batch, outcomes) = joined(ended)?;
        Ok(Some((batch, outcomes?)))
    }

    /// Tallies the outcomes of a committed batch.
    fn settle(&self, batch: Pending<T>, outcomes: Vec<IngestOutcome>, tally: &mut Tally) {
        let accepted_before = tally.accepted;
        let rejected_before = tally.rejected;
        for ((index, call_id), outcome) in batch.origins.into_iter().zip(outcomes) {
            let (kind, field, description) = match outcome {
                IngestOutcome::Accepted => {
                    tally.accepted += 1;
                    continue;
                }
                IngestOutcome::Duplicate => {
                    tally.duplicates += 1;
                    continue;
                }
                IngestOutcome::Conflict => (
                    RejectionKind::Conflict,
                    "",
                    "a different record is stored under this key; the stored record is kept",
                ),
                IngestOutcome::CarrierUnknown => (
                    RejectionKind::CarrierUnknown,
                    "carrier_id",
                    "no carrier with this id is registered",
                ),
            };
            tally.reject(Rejection {
                index,
                call_id,
                field: field.to_owned(),
                kind,
                description: description.to_owned(),
            });
        }
        self.metrics.ingested(
            K::KIND,
            u64::try_from(tally.accepted - accepted_before).unwrap_or(0),
            u64::try_from(tally.rejected - rejected_before).unwrap_or(0),
        );
    }
}

/// A commit's task as it ended; a panic in it is an internal error.
fn joined<T>(ended: Result<Committed<T>, tokio::task::JoinError>) -> ApiResult<Committed<T>> {
    ended.map_err(|e| ApiError::Internal(format!("commit task: {e}")))
}

/// Reads a client stream of batches, validating each record with `parse`, committing valid
/// ones every [`COMMIT_EVERY`] records and at the end. A batch commits while the stream goes
/// on being read and validated; the tally counts a record only once its commit completed,
/// and the stream is answered only after every commit. A stream that breaks (an error from the
/// client or the connection), goes quiet past its idle bound or past its record bound commits
/// the valid records it received, then ends with that error; the client's retry of the whole
/// stream converges, committed records counting as duplicates. A suspension ends it once the
/// commit running (if any) completes, keeping only what was committed.
pub(crate) async fn ingest_stream<M, T, S, K>(
    sink: &K,
    mut ingestion: Ingestion,
    mut stream: S,
    parse: impl Fn(M) -> Vec<Parsed<T>>,
) -> Result<Tally, Status>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    T: Send + Sync + 'static,
    K: Sink<T>,
{
    let metrics = ingestion.metrics.clone();
    let _open = metrics.open_stream(K::KIND, ingestion.scope.as_str());
    let _permit = ingestion.permit.take();
    let bounds = ingestion.bounds;
    let mut tally = Tally::default();
    let mut pending = Pending::default();
    let mut commits = Commits {
        sink,
        metrics: &metrics,
        running: None,
    };
    let mut index: i64 = 0;
    loop {
        let quiet_until = tokio::time::Instant::now() + bounds.idle;
        let next = loop {
            tokio::select! {
                next = tokio::time::timeout_at(quiet_until, stream.next()) => break next,
                settled = commits.completed(&mut tally) => settled?,
                refused = suspended(ingestion.guard.as_mut()) => {
                    // What is being committed completes: the stream ends with its state known.
                    let _ = commits.finish(&mut tally).await;
                    tracing::info!(received = tally.received, "upload ended by the carrier's status");
                    return Err(refused.into());
                }
            }
        };
        let message = match next {
            Err(_) => {
                commits
                    .flush(std::mem::take(&mut pending), &mut tally)
                    .await?;
                metrics.limited("upload_idle");
                return Err(ApiError::upload_idle(bounds.idle, &tally).into());
            }
            Ok(None) => break,
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(status))) => {
                commits
                    .flush(std::mem::take(&mut pending), &mut tally)
                    .await?;
                tracing::info!(received = tally.received, error = %status, "ingestion stream broke");
                return Err(status);
            }
        };
        for parsed in parse(message) {
            if u64::try_from(tally.received).unwrap_or(u64::MAX) >= bounds.max_records {
                commits
                    .flush(std::mem::take(&mut pending), &mut tally)
                    .await?;
                metrics.limited("upload_too_large");
                return Err(ApiError::upload_too_large(bounds.max_records, &tally).into());
            }
            tally.received += 1;
            match parsed.result {
                Ok(record) => {
                    pending.records.push(record);
                    pending.origins.push((index, parsed.call_id));
                }
                Err(violations) => {
                    let more = violations.len().saturating_sub(1);
                    if let Some(v) = violations.into_iter().next() {
                        let description = if more > 0 {
                            format!("{} (and {more} more problems)", v.description)
                        } else {
                            v.description
                        };
                        tally.reject(Rejection {
                            index,
                            call_id: parsed.call_id,
                            field: v.field,
                            kind: RejectionKind::InvalidField,
                            description,
                        });
                        metrics.rejected(K::KIND, 1);
                    }
                }
            }
            index += 1;
        }
        if pending.records.len() >= COMMIT_EVERY {
            commits
                .start(std::mem::take(&mut pending), &mut tally)
                .await?;
        }
    }
    commits.flush(pending, &mut tally).await?;
    tally.settle();
    tracing::info!(
        received = tally.received,
        accepted = tally.accepted,
        duplicates = tally.duplicates,
        rejected = tally.rejected,
        "ingestion finished"
    );
    Ok(tally)
}

/// The first message of a client stream, waiting at most the idle bound for it.
pub(crate) async fn first_message<M>(
    stream: &mut tonic::Streaming<M>,
    bounds: StreamBounds,
) -> Result<Option<M>, Status> {
    match tokio::time::timeout(bounds.idle, stream.message()).await {
        Ok(message) => message,
        Err(_) => Err(ApiError::upload_idle(bounds.idle, &Tally::default()).into()),
    }
}

/// Reads the rest of a client stream whose answer is known (a completed upload sent again)
/// and stores nothing, within the same bounds as any stream; `records` counts a message's.
pub(crate) async fn discard_rest<M>(
    stream: &mut tonic::Streaming<M>,
    bounds: StreamBounds,
    records: impl Fn(&M) -> usize,
) -> Result<(), Status> {
    let mut seen = Tally::default();
    while let Some(message) = first_message(stream, bounds).await? {
        seen.received = seen
            .received
            .saturating_add(i64::try_from(records(&message)).unwrap_or(i64::MAX));
        if u64::try_from(seen.received).unwrap_or(u64::MAX) > bounds.max_records {
            return Err(ApiError::upload_too_large(bounds.max_records, &seen).into());
        }
    }
    Ok(())
}

/// Resolves when `guard`'s carrier is suspended; never without a guard.
async fn suspended(guard: Option<&mut CarrierGuard>) -> ApiError {
    match guard {
        Some(guard) => guard.revoked().await,
        None => std::future::pending().await,
    }
}

/// Validates a batch of (carrier id, record) pairs as the platform ingests them.
pub(crate) fn parse_carrier_batch<W, T>(
    records: impl Iterator<Item = (String, Option<W>)>,
    call_id: impl Fn(&W) -> &str,
    parse: impl Fn(&W) -> Result<T, Vec<Violation>>,
) -> Vec<Parsed<T>> {
    records
        .map(|(carrier_id, record)| Parsed {
            call_id: record
                .as_ref()
                .map(|r| Rejection::echo(call_id(r)))
                .unwrap_or_default(),
            result: parse_carrier_record(&carrier_id, record.as_ref(), &parse),
        })
        .collect()
}

/// Validates the carrier id of an ingested record, prefixing record field names.
fn parse_carrier_record<W, T>(
    carrier_id: &str,
    record: Option<&W>,
    parse: impl Fn(&W) -> Result<T, Vec<Violation>>,
) -> Result<(CarrierId, T), Vec<Violation>> {
    let mut violations = Vec::new();
    let carrier = CarrierId::parse(carrier_id)
        .map_err(|e| violations.push(Violation::new("carrier_id", e)))
        .ok();
    let record = match record {
        None => {
            violations.push(Violation::new("record", "is required"));
            None
        }
        Some(r) => match parse(r) {
            Ok(r) => Some(r),
            Err(vs) => {
                violations.extend(
                    vs.into_iter()
                        .map(|v| Violation::new(format!("record.{}", v.field), v.description)),
                );
                None
            }
        },
    };
    match (carrier, record) {
        (Some(c), Some(r)) if violations.is_empty() => Ok((c, r)),
        _ => Err(violations),
    }
}
