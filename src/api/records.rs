//! `CallRecordService`: a carrier reads its call and quality records as cursor-based streams,
//! optionally following new ones, and stores its consumer position.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use super::Authorizer;
use super::audited::record_read;
use super::framing::servers::call_record_service_server::CallRecordService;
use super::framing::{
    Framed, int64_field, int64_field_len, item_len, put_int64_field, put_item_head,
};
use super::stream::{ServerStream, Source, Step, Streams};
use super::tail::{Entry, Fill, Read, Tail};
use crate::domain::Violations;
use crate::domain::ids::{CarrierId, TenantId};
use crate::domain::records::{
    CallRecord, EncodedRecord, LogKind, QualityRecord, RecordFilter, RecordPage,
};
use crate::error::{ApiError, ApiResult};
use crate::feed::CarrierSignal;
use crate::pb::v1 as pb;
use crate::store::{LogRecord, Store, StoreError};
use crate::wire::time::optional_time_ms;

/// Records read from the database per query.
const PAGE: u64 = 1_000;
/// A response message stops growing past this many encoded bytes.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// A following stream re-reads and re-checks the carrier this often even without a wake-up.
const FOLLOW_RECHECK: Duration = Duration::from_secs(5);

/// Implementation of `opconnect.v1.CallRecordService`.
#[derive(Debug, Clone)]
pub(crate) struct CallRecordApi {
    store: Store,
    auth: Authorizer,
    streams: Streams,
}

impl CallRecordApi {
    /// The service over `store`; record streams run on `streams`.
    pub(crate) fn new(store: Store, auth: Authorizer, streams: Streams) -> Self {
        Self {
            store,
            auth,
            streams,
        }
    }
}

fn kind_from_pb(raw: i32) -> ApiResult<LogKind> {
    match pb::RecordKind::try_from(raw) {
        Ok(pb::RecordKind::CallRecords) => Ok(LogKind::CallRecords),
        Ok(pb::RecordKind::QualityRecords) => Ok(LogKind::QualityRecords),
        _ => Err(ApiError::invalid(
            "kind",
            "must be RECORD_KIND_CALL_RECORDS or RECORD_KIND_QUALITY_RECORDS",
        )),
    }
}

/// A stream request after validation.
struct StreamPlan {
    after_cursor: Option<i64>,
    filter: RecordFilter,
    follow: bool,
    max_records: Option<u64>,
}

fn plan_stream(options: Option<&pb::RecordStreamOptions>) -> ApiResult<StreamPlan> {
    let default = pb::RecordStreamOptions::default();
    let o = options.unwrap_or(&default);
    let mut v = Violations::default();
    if o.after_cursor.is_some_and(|c| c < 0) {
        v.push("options.after_cursor", "must not be negative");
    }
    let from = v
        .check(
            "options.start_time",
            optional_time_ms(o.start_time.as_ref()),
        )
        .flatten();
    let before = v
        .check("options.end_time", optional_time_ms(o.end_time.as_ref()))
        .flatten();
    if let (Some(f), Some(b)) = (from, before)
        && b <= f
    {
        v.push("options.end_time", "must be after start_time");
    }
    let tenant_id = if o.tenant_id.is_empty() {
        None
    } else {
        v.check("options.tenant_id", TenantId::parse(&o.tenant_id))
    };
    let max_records = match u64::try_from(o.max_records) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(_) => {
            v.push("options.max_records", "must not be negative");
            None
        }
    };
    v.finish()?;
    Ok(StreamPlan {
        after_cursor: o.after_cursor,
        filter: RecordFilter {
            tenant_id,
            start_from_ms: from,
            start_before_ms: before,
        },
        follow: o.follow,
        max_records,
    })
}

/// A record log as streams read it.
pub(crate) trait RecordLog: LogRecord + Send + 'static {
    /// The newest cursor of this log announced for the carrier.
    fn signal(signal: &CarrierSignal) -> i64;
    /// The `kind` label of this stream's metrics.
    const METRIC_KIND: &'static str;
}

impl RecordLog for CallRecord {
    fn signal(signal: &CarrierSignal) -> i64 {
        signal.call_record_cursor
    }
    const METRIC_KIND: &'static str = LogKind::CallRecords.label();
}

impl RecordLog for QualityRecord {
    fn signal(signal: &CarrierSignal) -> i64 {
        signal.quality_record_cursor
    }
    const METRIC_KIND: &'static str = LogKind::QualityRecords.label();
}

/// What record streams filter on, kept beside each record of the shared tail.
#[derive(Debug)]
pub(crate) struct RecordMeta {
    tenant_id: String,
    start_time_ms: i64,
}

/// A record framed once for every stream: `records { cursor, <stored encoding> }`.
type RecordEntry = Arc<Entry<RecordMeta>>;

/// The tag of `records` and of `next_cursor` in both record stream responses.
const RECORDS_TAG: u32 = 1;
const NEXT_CURSOR_TAG: u32 = 2;
/// The tag of `cursor` in `CallRecord` and `QualityRecord`.
const CURSOR_TAG: u32 = 1;

/// `records` framed for every stream, into one buffer that each entry's item is a slice of:
/// one allocation per page instead of two per record.
fn entries(records: Vec<EncodedRecord>) -> Vec<RecordEntry> {
    let inner = |r: &EncodedRecord| int64_field_len(CURSOR_TAG, r.cursor) + r.encoded.len();
    let framed_len = |r: &EncodedRecord| item_len(RECORDS_TAG, inner(r));
    let mut buffer = BytesMut::with_capacity(records.iter().map(framed_len).sum());
    records
        .into_iter()
        .map(|record| {
            put_item_head(&mut buffer, RECORDS_TAG, inner(&record));
            put_int64_field(&mut buffer, CURSOR_TAG, record.cursor);
            buffer.extend_from_slice(&record.encoded);
            Arc::new(Entry {
                position: record.cursor,
                meta: RecordMeta {
                    tenant_id: record.tenant_id,
                    start_time_ms: record.start_time_ms,
                },
                item: buffer.split().freeze(),
            })
        })
        .collect()
}

/// One read of a log, from the database or the shared tail.
struct Page {
    /// Read records, filters not yet applied.
    entries: Vec<RecordEntry>,
    /// Every record up to here was read (or filtered out).
    through: i64,
    /// More may follow right away.
    more: bool,
    /// The newest cursor of the log when read, where known.
    latest: Option<i64>,
}

/// Reads `carrier`'s log after `after` for its shared tail: every record, unfiltered.
async fn fill_tail<T: RecordLog>(
    store: Store,
    carrier: CarrierId,
    after: i64,
) -> ApiResult<Fill<RecordMeta>> {
    let page = store
        .read_records::<T>(&carrier, after, &RecordFilter::default(), PAGE)
        .await?;
    Ok(Fill {
        floor: page.bounds.purged_through,
        through: page.next_cursor,
        entries: entries(page.records),
    })
}

/// One record stream's reads and encoding.
struct RecordSource<T: RecordLog> {
    store: Store,
    carrier: CarrierId,
    plan: StreamPlan,
    /// The carrier's shared tail of this log, for a following stream.
    tail: Option<Arc<Tail<RecordMeta>>>,
    /// The log was read to its end once: from then on, the tail serves what is new.
    following: bool,
    /// Everything up to here was delivered or filtered out; `None` before the first read.
    cursor: Option<i64>,
    /// Records read but not yet sent, in cursor order, filters applied.
    buffered: VecDeque<RecordEntry>,
    /// Where the page being sent ends (records filtered out included), once it is sent.
    page_end: Option<i64>,
    /// The last page was short: the log is read to its end.
    at_end: bool,
    /// Records delivered so far, for `max_records`.
    delivered: u64,
    /// The last `next_cursor` sent.
    sent_cursor: i64,
    /// The newest cursor of the log when it was last read, for the lag metric.
    sent_cursor_latest: Option<i64>,
    /// The carrier's erasure epoch when `buffered` was read: when an erasure moves it, the
    /// rows read before are dropped and read again, redacted (DESIGN §8).
    erased_epoch: u64,
    /// The database page after the one being sent, already being read (a stream reading the
    /// log from the database, not following the tail).
    read_ahead: Option<ReadAhead>,
    _log: PhantomData<T>,
}

/// A page read ahead: where it starts, the erasure epoch it was started in, and the read.
struct ReadAhead {
    after: i64,
    erased_epoch: u64,
    page: JoinHandle<Result<RecordPage, StoreError>>,
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.page.abort();
    }
}

impl<T: RecordLog> RecordSource<T> {
    fn new(
        store: Store,
        carrier: CarrierId,
        plan: StreamPlan,
        tail: Option<Arc<Tail<RecordMeta>>>,
    ) -> Self {
        Self {
            store,
            carrier,
            tail: tail.filter(|_| plan.follow),
            plan,
            following: false,
            cursor: None,
            buffered: VecDeque::new(),
            page_end: None,
            at_end: false,
            delivered: 0,
            sent_cursor: 0,
            sent_cursor_latest: None,
            erased_epoch: 0,
            read_ahead: None,
            _log: PhantomData,
        }
    }

    /// The cursor to start after, checked against the log's bounds.
    async fn start(&self) -> ApiResult<i64> {
        let kind = T::KIND;
        let bounds = self.store.log_bounds(&self.carrier, kind).await?;
        let start = match self.plan.after_cursor {
            Some(c) => c,
            None => self
                .store
                .committed_cursor(&self.carrier, kind)
                .await?
                .unwrap_or(bounds.purged_through),
        };
        if start < bounds.purged_through {
            return Err(ApiError::cursor_expired(start, bounds.purged_through + 1));
        }
        if start > bounds.latest {
            return Err(ApiError::cursor_ahead(start, bounds.latest));
        }
        Ok(start)
    }

    fn max_reached(&self) -> bool {
        self.plan.max_records.is_some_and(|m| self.delivered >= m)
    }

    /// A message with `framed` records, resuming after `cursor`.
    fn message(&mut self, mut framed: Framed, cursor: i64) -> Step<Framed> {
        self.sent_cursor = cursor;
        framed.push_field(int64_field(NEXT_CURSOR_TAG, cursor));
        Step::Send(framed)
    }

    /// The database page after `cursor`: the one read ahead if it starts there and no erasure
    /// came since it was started, else read now.
    async fn read_page(&mut self, cursor: i64) -> ApiResult<RecordPage> {
        if let Some(mut ahead) = self.read_ahead.take()
            && ahead.after == cursor
            && ahead.erased_epoch == self.erased_epoch
        {
            // Aborted or panicked (`Err`): read it again below.
            if let Ok(page) = (&mut ahead.page).await {
                return Ok(page?);
            }
        }
        Ok(self.database_page(cursor).await?)
    }

    /// The read of the database page after `after` with the stream's filters, owning what it
    /// needs, so that it can also run in a task of its own (read ahead).
    fn database_page(
        &self,
        after: i64,
    ) -> impl Future<Output = Result<RecordPage, StoreError>> + Send + 'static {
        let (store, carrier, filter) = (
            self.store.clone(),
            self.carrier.clone(),
            self.plan.filter.clone(),
        );
        async move {
            store
                .read_records::<T>(&carrier, after, &filter, PAGE)
                .await
        }
    }

    /// The next page after `cursor`: from the shared tail once following, else (or when the
    /// stream is behind the tail) from the database.
    async fn read(&mut self, cursor: i64, known: &CarrierSignal) -> ApiResult<Page> {
        if let Some(tail) = self.tail.as_ref().filter(|_| self.following) {
            let announced = T::signal(known);
            let target = (announced > cursor).then_some(announced);
            let (store, carrier) = (&self.store, &self.carrier);
            let read = tail
                .after(cursor, target, PAGE as usize, |end| {
                    fill_tail::<T>(store.clone(), carrier.clone(), end)
                })
                .await?;
            if let Read::Entries {
                entries,
                through,
                more,
            } = read
            {
                return Ok(Page {
                    entries,
                    through,
                    more,
                    latest: None,
                });
            }
        }
        // A page covers the next PAGE cursors; one where nothing passed the filters is read
        // past, so that a sparse filter still gets full messages.
        let mut cursor = cursor;
        loop {
            let page = self.read_page(cursor).await?;
            if page.next_cursor < page.bounds.latest && page.bounds.purged_through <= cursor {
                // Read the next page while this one is sent: a page is a few round trips
                // (a snapshot of the bounds and the rows), during which the stream would idle.
                self.read_ahead = Some(ReadAhead {
                    after: page.next_cursor,
                    erased_epoch: self.erased_epoch,
                    page: tokio::spawn(self.database_page(page.next_cursor)),
                });
            }
            if page.bounds.purged_through > cursor {
                return Err(ApiError::cursor_expired(
                    cursor,
                    page.bounds.purged_through + 1,
                ));
            }
            let more = page.next_cursor < page.bounds.latest;
            if page.records.is_empty() && more {
                cursor = page.next_cursor;
                continue;
            }
            return Ok(Page {
                more,
                entries: entries(page.records),
                through: page.next_cursor,
                latest: Some(page.bounds.latest),
            });
        }
    }
}

impl<T: RecordLog> Source for RecordSource<T> {
    type Message = Framed;
    const KIND: &'static str = T::METRIC_KIND;

    async fn next(&mut self, known: &CarrierSignal) -> ApiResult<Step<Framed>> {
        let mut cursor = match self.cursor {
            Some(c) => c,
            None => {
                let c = self.start().await?;
                self.sent_cursor = c;
                c
            }
        };
        loop {
            if self.max_reached() {
                return Ok(Step::End);
            }
            let erased_epoch = self.store.feed().erased_epoch(self.carrier.as_str());
            if erased_epoch != self.erased_epoch {
                // Rows read before an erasure may hold what it redacted: read them again.
                self.erased_epoch = erased_epoch;
                self.buffered.clear();
                self.page_end = None;
                self.at_end = false;
            }
            if self.buffered.is_empty() {
                if let Some(end) = self.page_end.take() {
                    // Records filtered out of the page still move the resume point.
                    cursor = cursor.max(end);
                    self.cursor = Some(cursor);
                    if cursor > self.sent_cursor {
                        return Ok(self.message(Framed::default(), cursor));
                    }
                }
                if std::mem::take(&mut self.at_end) {
                    self.following = true;
                    return Ok(if self.plan.follow {
                        Step::CaughtUp
                    } else {
                        Step::End
                    });
                }
                let page = self.read(cursor, known).await?;
                // Not at the end while a commit past the page was announced: a tail page may
                // stop short of it, and its notice will not come again.
                self.at_end = !page.more && T::signal(known) <= page.through;
                if page.latest.is_some() {
                    self.sent_cursor_latest = page.latest;
                }
                self.page_end = Some(page.through);
                let filter = &self.plan.filter;
                self.buffered = page
                    .entries
                    .into_iter()
                    .filter(|e| filter.admits(&e.meta.tenant_id, e.meta.start_time_ms))
                    .collect();
                self.cursor = Some(cursor);
                continue;
            }
            let mut framed = Framed::default();
            while !self.max_reached() && framed.len() < MAX_MESSAGE_BYTES {
                let Some(record) = self.buffered.pop_front() else {
                    break;
                };
                framed.push_item(record.item.clone(), record.position);
                self.delivered += 1;
                cursor = record.position;
            }
            if self.max_reached() {
                self.buffered.clear();
                self.page_end = None;
            } else if self.buffered.is_empty()
                && let Some(end) = self.page_end.take()
            {
                // The page's last message also covers the records filtered out after it.
                cursor = cursor.max(end);
            }
            self.cursor = Some(cursor);
            return Ok(self.message(framed, cursor));
        }
    }

    fn woken_by(&self, signal: &CarrierSignal) -> bool {
        self.cursor.is_some_and(|c| T::signal(signal) > c)
    }

    fn idle_after(&self) -> Duration {
        FOLLOW_RECHECK
    }

    fn delivered(&self, message: &Framed, signal: &CarrierSignal) -> (u64, Option<i64>) {
        // The newest cursor known: the page's bounds, or a later commit's notice.
        let latest = self
            .sent_cursor_latest
            .into_iter()
            .chain([T::signal(signal)])
            .max();
        (message.items(), latest.map(|l| l - self.sent_cursor))
    }

    fn positions(&self, message: &Framed) -> Option<(i64, i64)> {
        message.positions()
    }
}

#[tonic::async_trait]
impl CallRecordService for CallRecordApi {
    type StreamCallRecordsStream = ServerStream<Framed>;

    async fn stream_call_records(
        &self,
        request: Request<pb::StreamCallRecordsRequest>,
    ) -> Result<Response<Self::StreamCallRecordsStream>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let options = request.get_ref().options.as_ref();
        let plan = plan_stream(options)?;
        let read = record_read("StreamCallRecords", &carrier.id, options);
        let permit = self.auth.stream_permit(&carrier)?;
        Ok(Response::new(self.streams.open_audited(
            carrier.id.clone(),
            Some(permit),
            RecordSource::<CallRecord>::new(
                self.store.clone(),
                carrier.id.clone(),
                plan,
                Some(self.streams.tails().calls.of(&carrier.id)),
            ),
            read,
        )))
    }

    type StreamQualityRecordsStream = ServerStream<Framed>;

    async fn stream_quality_records(
        &self,
        request: Request<pb::StreamQualityRecordsRequest>,
    ) -> Result<Response<Self::StreamQualityRecordsStream>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let options = request.get_ref().options.as_ref();
        let plan = plan_stream(options)?;
        let read = record_read("StreamQualityRecords", &carrier.id, options);
        let permit = self.auth.stream_permit(&carrier)?;
        Ok(Response::new(self.streams.open_audited(
            carrier.id.clone(),
            Some(permit),
            RecordSource::<QualityRecord>::new(
                self.store.clone(),
                carrier.id.clone(),
                plan,
                Some(self.streams.tails().quality.of(&carrier.id)),
            ),
            read,
        )))
    }

    async fn commit_cursor(
        &self,
        request: Request<pb::CommitCursorRequest>,
    ) -> Result<Response<pb::CommitCursorResponse>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let req = request.into_inner();
        let kind = kind_from_pb(req.kind)?;
        if req.cursor < 0 {
            return Err(ApiError::invalid("cursor", "must not be negative").into());
        }
        let bounds = self
            .store
            .log_bounds(&carrier.id, kind)
            .await
            .map_err(ApiError::from)?;
        if req.cursor > bounds.latest {
            return Err(ApiError::cursor_ahead(req.cursor, bounds.latest).into());
        }
        self.store
            .commit_cursor(&carrier.id, kind, req.cursor)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::CommitCursorResponse {
            cursor: req.cursor,
        }))
    }

    async fn get_cursor(
        &self,
        request: Request<pb::GetCursorRequest>,
    ) -> Result<Response<pb::GetCursorResponse>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let kind = kind_from_pb(request.get_ref().kind)?;
        let bounds = self
            .store
            .log_bounds(&carrier.id, kind)
            .await
            .map_err(ApiError::from)?;
        let committed = self
            .store
            .committed_cursor(&carrier.id, kind)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetCursorResponse {
            committed_cursor: committed,
            oldest_cursor: bounds.purged_through + 1,
            latest_cursor: bounds.latest,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::framing::frame_item;
    use bytes::Bytes;

    /// Items framed together into one buffer are exactly the items framed one by one, for
    /// cursors and bodies whose lengths take one, two and three varint bytes.
    #[test]
    fn a_page_framed_into_one_buffer_equals_its_records_framed_alone() {
        let records: Vec<EncodedRecord> =
            [(1, 0), (127, 5), (128, 127), (300, 128), (1 << 40, 20_000)]
                .into_iter()
                .map(|(cursor, len)| EncodedRecord {
                    cursor,
                    tenant_id: format!("t{cursor}"),
                    start_time_ms: cursor * 10,
                    encoded: Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
                })
                .collect();
        let framed = entries(records.clone());
        assert_eq!(framed.len(), records.len());
        for (entry, record) in framed.iter().zip(&records) {
            let alone = frame_item(
                RECORDS_TAG,
                &int64_field(CURSOR_TAG, record.cursor),
                &record.encoded,
            );
            assert_eq!(entry.item, alone);
            assert_eq!(entry.position, record.cursor);
            assert_eq!(entry.meta.tenant_id, record.tenant_id);
            assert_eq!(entry.meta.start_time_ms, record.start_time_ms);
        }
    }
}
