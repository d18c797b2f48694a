//! Client-streaming ingestion shared by call and quality records: validate record by record,
//! commit valid records in batches while the stream runs, summarise.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::Status;

use crate::domain::Violation;
use crate::domain::ids::CarrierId;
use crate::error::ApiError;
use crate::metrics::StreamMetrics;
use crate::pb::v1 as pb;
use crate::store::{IngestOutcome, LogRecord, Store};

/// Valid records are committed once this many are pending (each commit costs a few ms).
const COMMIT_EVERY: usize = 2_000;
/// Rejections listed in a summary; all are counted.
pub(crate) const MAX_LISTED_REJECTIONS: usize = 1_000;

/// One record of a stream after validation.
pub(crate) struct Parsed<T> {
    /// The call id as sent, for rejections.
    pub call_id: String,
    /// The carrier and the valid record, or what is wrong with it.
    pub result: Result<(CarrierId, T), Vec<Violation>>,
}

/// Running totals of one ingestion stream.
#[derive(Default)]
pub(crate) struct Summary(pb::IngestionSummary);

impl Summary {
    pub(crate) fn reject(
        &mut self,
        index: i64,
        call_id: &str,
        field: &str,
        reason: pb::RejectionReason,
        description: &str,
    ) {
        self.0.rejected += 1;
        if self.0.rejections.len() < MAX_LISTED_REJECTIONS {
            self.0.rejections.push(pb::RecordRejection {
                index,
                call_id: call_id.to_owned(),
                field: field.to_owned(),
                reason: reason as i32,
                description: description.to_owned(),
            });
        }
    }

    pub(crate) fn into_inner(self) -> pb::IngestionSummary {
        self.0
    }
}

/// Valid records waiting for their commit, with their stream index and call id.
struct Pending<T> {
    records: Vec<(CarrierId, T)>,
    origins: Vec<(i64, String)>,
}

impl<T> Pending<T> {
    fn len(&self) -> usize {
        self.records.len()
    }
}

/// Commits pending valid records and records their outcomes in the summary.
async fn commit<T: LogRecord>(
    store: &Store,
    metrics: &StreamMetrics,
    pending: &mut Pending<T>,
    summary: &mut Summary,
) -> Result<(), ApiError> {
    if pending.records.is_empty() {
        return Ok(());
    }
    let outcomes = store.ingest(&pending.records).await?;
    let accepted_before = summary.0.accepted;
    for ((index, call_id), outcome) in pending.origins.iter().zip(outcomes) {
        match outcome {
            IngestOutcome::Accepted => summary.0.accepted += 1,
            IngestOutcome::Duplicate => summary.0.duplicates += 1,
            IngestOutcome::Conflict => summary.reject(
                *index,
                call_id,
                "",
                pb::RejectionReason::Conflict,
                "a different record is stored under this key; the stored record is kept",
            ),
            IngestOutcome::CarrierUnknown => summary.reject(
                *index,
                call_id,
                "carrier_id",
                pb::RejectionReason::CarrierUnknown,
                "no carrier with this id is registered",
            ),
        }
    }
    metrics.ingested(u64::try_from(summary.0.accepted - accepted_before).unwrap_or(0));
    pending.records.clear();
    pending.origins.clear();
    Ok(())
}

/// Reads a client stream of batches, validating each record with `parse`, committing valid
/// ones every [`COMMIT_EVERY`] records and at the end. A broken stream still commits what it
/// received; the client's retry of the whole stream then finds those records as duplicates.
pub(crate) async fn ingest_stream<M, T, S>(
    store: &Store,
    metrics: &Arc<StreamMetrics>,
    mut stream: S,
    parse: impl Fn(M) -> Vec<Parsed<T>>,
) -> Result<pb::IngestionSummary, Status>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    T: LogRecord,
{
    let mut summary = Summary::default();
    let mut pending = Pending {
        records: Vec::new(),
        origins: Vec::new(),
    };
    let mut index: i64 = 0;
    while let Some(message) = stream.next().await {
        let message = match message {
            Ok(m) => m,
            Err(status) => {
                // The client went away mid-stream: keep what arrived intact, then stop.
                commit(store, metrics, &mut pending, &mut summary).await?;
                tracing::info!(received = summary.0.received, error = %status, "ingestion stream broke");
                return Err(status);
            }
        };
        for parsed in parse(message) {
            summary.0.received += 1;
            match parsed.result {
                Ok(record) => {
                    pending.records.push(record);
                    pending.origins.push((index, parsed.call_id));
                }
                Err(violations) => {
                    for v in violations.iter().take(1) {
                        summary.reject(
                            index,
                            &parsed.call_id,
                            &v.field,
                            pb::RejectionReason::InvalidField,
                            &v.description,
                        );
                    }
                }
            }
            index += 1;
        }
        if pending.len() >= COMMIT_EVERY {
            commit(store, metrics, &mut pending, &mut summary).await?;
        }
    }
    commit(store, metrics, &mut pending, &mut summary).await?;
    let summary = summary.into_inner();
    tracing::info!(
        received = summary.received,
        accepted = summary.accepted,
        duplicates = summary.duplicates,
        rejected = summary.rejected,
        "ingestion finished"
    );
    Ok(summary)
}

/// Validates the carrier id of an ingested record, prefixing record field names.
pub(crate) fn parse_carrier_record<W, T>(
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
