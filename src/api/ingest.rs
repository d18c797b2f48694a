//! Client-streaming ingestion shared by call records, quality records and call durations:
//! validate record by record, commit valid records in batches while the stream runs, tally.

use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::Status;

use crate::domain::Violation;
use crate::domain::durations::IngestOutcome;
use crate::domain::durations::{CallDurationReport, Rejection, RejectionKind, Tally};
use crate::domain::ids::CarrierId;
use crate::error::ApiError;
use crate::error::ApiResult;
use crate::metrics::StreamMetrics;
use crate::store::{LogRecord, Store};

/// Valid records are committed once this many are pending (each commit costs a few ms).
const COMMIT_EVERY: usize = 2_000;

/// One record of a stream after validation.
pub(crate) struct Parsed<T> {
    /// The call id as sent, for rejections.
    pub call_id: String,
    /// The carrier and the valid record, or what is wrong with it.
    pub result: Result<(CarrierId, T), Vec<Violation>>,
}

/// Where validated records go.
pub(crate) trait Sink<T>: Sync {
    /// Stores a batch; one outcome per record, in order.
    fn store(
        &self,
        batch: &[(CarrierId, T)],
    ) -> impl Future<Output = ApiResult<Vec<IngestOutcome>>> + Send;
}

impl<T: LogRecord> Sink<T> for Store {
    async fn store(&self, batch: &[(CarrierId, T)]) -> ApiResult<Vec<IngestOutcome>> {
        Ok(self.ingest(batch).await?)
    }
}

/// Durations of the one authenticated carrier that uploads them.
pub(crate) struct DurationSink {
    pub store: Store,
    pub carrier: CarrierId,
}

impl Sink<CallDurationReport> for DurationSink {
    async fn store(
        &self,
        batch: &[(CarrierId, CallDurationReport)],
    ) -> ApiResult<Vec<IngestOutcome>> {
        let records: Vec<CallDurationReport> = batch.iter().map(|(_, r)| r.clone()).collect();
        Ok(self.store.report_durations(&self.carrier, &records).await?)
    }
}

/// Runs [`ingest_stream`] in a task of its own. hyper drops an RPC's handler when its
/// connection dies; the task lives on, sees the broken stream, and commits the valid records it
/// had received before ending, so a client's retry has less to send again.
pub(crate) async fn ingest_detached<M, T, S, K, P>(
    sink: K,
    metrics: Arc<StreamMetrics>,
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
        async move { ingest_stream(&sink, &metrics, stream, parse).await }
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

/// Commits pending valid records and tallies their outcomes.
async fn commit<T, K: Sink<T>>(
    sink: &K,
    metrics: &StreamMetrics,
    pending: &mut Pending<T>,
    tally: &mut Tally,
) -> Result<(), ApiError> {
    if pending.records.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let outcomes = sink.store(&pending.records).await?;
    tracing::debug!(
        records = pending.records.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "batch committed"
    );
    let accepted_before = tally.accepted;
    for ((index, call_id), outcome) in pending.origins.drain(..).zip(outcomes) {
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
    metrics.ingested(u64::try_from(tally.accepted - accepted_before).unwrap_or(0));
    pending.records.clear();
    Ok(())
}

/// Reads a client stream of batches, validating each record with `parse`, committing valid
/// ones every [`COMMIT_EVERY`] records and at the end. A stream that breaks (an error from the
/// client or the connection) commits the valid records it received, then ends with that error;
/// the client's retry of the whole stream converges, committed records counting as duplicates.
pub(crate) async fn ingest_stream<M, T, S, K>(
    sink: &K,
    metrics: &Arc<StreamMetrics>,
    stream: S,
    parse: impl Fn(M) -> Vec<Parsed<T>>,
) -> Result<Tally, Status>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    K: Sink<T>,
{
    let _open = metrics.open_stream();
    ingest_counted(sink, metrics, stream, parse).await
}

async fn ingest_counted<M, T, S, K>(
    sink: &K,
    metrics: &StreamMetrics,
    mut stream: S,
    parse: impl Fn(M) -> Vec<Parsed<T>>,
) -> Result<Tally, Status>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    K: Sink<T>,
{
    let mut tally = Tally::default();
    let mut pending = Pending {
        records: Vec::new(),
        origins: Vec::new(),
    };
    let mut index: i64 = 0;
    while let Some(message) = stream.next().await {
        let message = match message {
            Ok(m) => m,
            Err(status) => {
                commit(sink, metrics, &mut pending, &mut tally).await?;
                tracing::info!(received = tally.received, error = %status, "ingestion stream broke");
                return Err(status);
            }
        };
        for parsed in parse(message) {
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
                    }
                }
            }
            index += 1;
        }
        if pending.records.len() >= COMMIT_EVERY {
            commit(sink, metrics, &mut pending, &mut tally).await?;
        }
    }
    commit(sink, metrics, &mut pending, &mut tally).await?;
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
                .map(|r| call_id(r).to_owned())
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
