//! `ExportTenantData`: everything held about one tenant as a server stream of batches, for
//! access requests (DESIGN §8). Numbers, then number events, call records, quality records and
//! durations; within each, carrier by carrier in key order, read page by page so a slow reader
//! holds no transaction and the server buffers at most one batch.
//!
//! It does not run on the stream engine (`stream.rs`): that engine follows one carrier's data
//! and re-checks that carrier, while an export spans every carrier and ends when read. It is a
//! plain pull stream instead (`futures::stream::try_unfold`): the next page is read only when
//! the client has taken the previous batch, and a client that leaves simply drops it. The
//! export is audited when it ends: OK with the items sent, or how it failed or was abandoned.

use std::collections::VecDeque;

use prost::Message;
use tonic::Status;

use super::audited::platform_identity;
use super::stream::{ServerStream, Streams};
use crate::domain::audit::AuditEvent;
use crate::domain::ids::{CarrierId, TenantId};
use crate::domain::records::{CallRecord, EncodedRecord, QualityRecord, RecordFilter};
use crate::error::{ApiError, ApiResult};
use crate::pb::v1 as pb;
use crate::pb::v1::export_item::Item;
use crate::store::Store;
use crate::wire::records::call_duration_to_pb;

/// Rows read per query.
const PAGE: u64 = 1_000;
/// A batch stops growing past this many encoded bytes.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What is exported, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Numbers,
    Events,
    CallRecords,
    QualityRecords,
    Durations,
}

const PARTS: [Part; 5] = [
    Part::Numbers,
    Part::Events,
    Part::CallRecords,
    Part::QualityRecords,
    Part::Durations,
];

/// Where an export is.
struct Export {
    store: Store,
    streams: Streams,
    tenant: TenantId,
    carriers: Vec<CarrierId>,
    /// Index into [`PARTS`] and into `carriers`.
    part: usize,
    carrier: usize,
    /// The last key read in the current (part, carrier): a number, call id, or position.
    after_text: String,
    after_position: i64,
    /// Items read but not sent.
    pending: VecDeque<pb::ExportItem>,
    /// The current (part, carrier) is read to its end.
    drained: bool,
    /// Items sent so far.
    sent: i64,
    /// The audit event, recorded once when the export ends (taken then).
    audit: Option<AuditEvent>,
}

impl Export {
    /// Reads the next page of the current (part, carrier) into `pending`; moves on when it was
    /// the last. Returns false when everything was read.
    async fn fill(&mut self) -> Result<bool, ApiError> {
        while self.pending.is_empty() {
            if self.drained {
                self.drained = false;
                self.after_text.clear();
                self.after_position = 0;
                self.carrier += 1;
                if self.carrier >= self.carriers.len() {
                    self.carrier = 0;
                    self.part += 1;
                }
            }
            let (Some(part), Some(carrier)) =
                (PARTS.get(self.part), self.carriers.get(self.carrier))
            else {
                return Ok(false);
            };
            let carrier = carrier.clone();
            let read = self.read(*part, &carrier).await?;
            self.drained = (read as u64) < PAGE;
        }
        Ok(true)
    }

    /// Reads one page of `part` of `carrier` into `pending`; returns the rows read.
    async fn read(&mut self, part: Part, carrier: &CarrierId) -> Result<usize, ApiError> {
        let c = carrier.to_string();
        let tenant = &self.tenant;
        let items: Vec<Item> = match part {
            Part::Numbers => {
                let page = self
                    .store
                    .tenant_numbers(carrier, tenant, &self.after_text, PAGE)
                    .await?;
                if let Some(last) = page.last() {
                    self.after_text = last.number.to_string();
                }
                page.iter().map(|n| Item::Number(n.into())).collect()
            }
            Part::Events => {
                let page = self
                    .store
                    .tenant_events(carrier, tenant, self.after_position, PAGE)
                    .await?;
                if let Some(last) = page.last() {
                    self.after_position = last.revision;
                }
                page.iter()
                    .map(|e| {
                        Item::NumberEvent(pb::ExportedNumberEvent {
                            carrier_id: c.clone(),
                            event: Some(e.into()),
                        })
                    })
                    .collect()
            }
            Part::CallRecords => {
                let page = self
                    .store
                    .read_records::<CallRecord>(carrier, self.after_position, &self.filter(), PAGE)
                    .await?;
                self.after_position = page.next_cursor;
                let n = page.records.len();
                for stored in &page.records {
                    let record = decode_stored::<pb::CallRecord>(stored)?;
                    self.pending.push_back(pb::ExportItem {
                        item: Some(Item::CallRecord(pb::ExportedCallRecord {
                            carrier_id: c.clone(),
                            record: Some(pb::CallRecord {
                                cursor: stored.cursor,
                                ..record
                            }),
                        })),
                    });
                }
                // A page of a record log may be short of matching rows yet not at the end.
                return Ok(if page.next_cursor < page.bounds.latest {
                    PAGE as usize
                } else {
                    n
                });
            }
            Part::QualityRecords => {
                let page = self
                    .store
                    .read_records::<QualityRecord>(
                        carrier,
                        self.after_position,
                        &self.filter(),
                        PAGE,
                    )
                    .await?;
                self.after_position = page.next_cursor;
                let n = page.records.len();
                for stored in &page.records {
                    let record = decode_stored::<pb::QualityRecord>(stored)?;
                    self.pending.push_back(pb::ExportItem {
                        item: Some(Item::QualityRecord(pb::ExportedQualityRecord {
                            carrier_id: c.clone(),
                            record: Some(pb::QualityRecord {
                                cursor: stored.cursor,
                                ..record
                            }),
                        })),
                    });
                }
                return Ok(if page.next_cursor < page.bounds.latest {
                    PAGE as usize
                } else {
                    n
                });
            }
            Part::Durations => {
                let page = self
                    .store
                    .tenant_durations(carrier, tenant, &self.after_text, PAGE)
                    .await?;
                if let Some(last) = page.last() {
                    self.after_text = last.call_id().as_str().to_owned();
                }
                page.iter()
                    .map(|d| {
                        Item::Duration(pb::ExportedCallDuration {
                            carrier_id: c.clone(),
                            duration: Some(call_duration_to_pb(d)),
                        })
                    })
                    .collect()
            }
        };
        let n = items.len();
        self.pending.extend(
            items
                .into_iter()
                .map(|item| pb::ExportItem { item: Some(item) }),
        );
        Ok(n)
    }

    fn filter(&self) -> RecordFilter {
        RecordFilter {
            tenant_id: Some(self.tenant.clone()),
            ..RecordFilter::default()
        }
    }

    /// The next batch, or `None` at the end.
    async fn next_batch(&mut self) -> Result<Option<pb::ExportTenantDataResponse>, ApiError> {
        if !self.fill().await? {
            return Ok(None);
        }
        let mut items = Vec::new();
        let mut bytes = 0;
        while bytes < MAX_MESSAGE_BYTES {
            let Some(item) = self.pending.pop_front() else {
                break;
            };
            bytes += item.encoded_len();
            items.push(item);
        }
        self.sent += items.len() as i64;
        Ok(Some(pb::ExportTenantDataResponse { items }))
    }

    /// Records the audit event with `outcome`, once.
    async fn audit(&mut self, outcome: &str) {
        if let Some(event) = self.audit.take() {
            self.streams
                .audit(finished(event, outcome, self.sent))
                .await;
        }
    }
}

fn finished(mut event: AuditEvent, outcome: &str, sent: i64) -> AuditEvent {
    event.time_ms = crate::store::now_ms();
    event.outcome = outcome.to_owned();
    event.record_count = sent;
    event
}

impl Drop for Export {
    /// An export dropped before its end (the client left) is audited as `CANCELLED`.
    fn drop(&mut self) {
        if let Some(event) = self.audit.take() {
            let streams = self.streams.clone();
            let event = finished(event, "CANCELLED", self.sent);
            tokio::spawn(async move { streams.audit(event).await });
        }
    }
}

/// Starts the export of `tenant` for platform caller `caller`.
pub(crate) async fn export(
    store: Store,
    streams: Streams,
    caller: &str,
    tenant_raw: &str,
) -> Result<ServerStream<pb::ExportTenantDataResponse>, Status> {
    let tenant = TenantId::parse(tenant_raw).map_err(|e| ApiError::invalid("tenant_id", e))?;
    let carriers = store
        .list_carriers(None, u64::MAX >> 1)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|c| c.id)
        .collect();
    let audit =
        AuditEvent::new(platform_identity(caller), "ExportTenantData", "").tenant(tenant.as_str());
    let state = Export {
        store,
        streams,
        tenant,
        carriers,
        part: 0,
        carrier: 0,
        after_text: String::new(),
        after_position: 0,
        pending: VecDeque::new(),
        drained: false,
        sent: 0,
        audit: Some(audit),
    };
    let stream = futures::stream::try_unfold(state, |mut state| async move {
        match state.next_batch().await {
            Ok(Some(batch)) => Ok(Some((batch, state))),
            Ok(None) => {
                state.audit("OK").await;
                Ok(None)
            }
            Err(e) => {
                let status = Status::from(e);
                state.audit(crate::rpc_log::code_name(status.code())).await;
                Err(status)
            }
        }
    });
    Ok(Box::pin(stream))
}

/// A stored record, decoded from its stored encoding (cursor 0; the caller sets it).
fn decode_stored<M: prost::Message + Default>(stored: &EncodedRecord) -> ApiResult<M> {
    M::decode(stored.encoded.as_ref()).map_err(|e| {
        ApiError::Internal(format!(
            "stored record {} does not decode: {e}",
            stored.cursor
        ))
    })
}
