//! `CallRecordService`: a carrier reads its call and quality records as cursor-based streams,
//! optionally following new ones, and stores its consumer position.

use std::collections::VecDeque;
use std::time::Duration;

use prost::Message;
use tonic::{Request, Response, Status};

use super::Authorizer;
use super::audited::record_read;
use super::stream::{ServerStream, Source, Step, Streams};
use super::wire::records::{call_record_to_pb, quality_record_to_pb};
use super::wire::time::optional_time_ms;
use crate::domain::Violations;
use crate::domain::ids::{CarrierId, TenantId};
use crate::domain::records::{CallRecord, LogKind, QualityRecord, RecordFilter};
use crate::error::{ApiError, ApiResult};
use crate::feed::CarrierSignal;
use crate::pb::v1 as pb;
use crate::pb::v1::call_record_service_server::CallRecordService;
use crate::store::{LogRecord, Store};

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

/// How a record type becomes a response message.
trait Wire: LogRecord + Send + 'static {
    type Item: Message + Send + 'static;
    type Response: Message + Send + 'static;
    fn to_pb(cursor: i64, record: &Self) -> Self::Item;
    fn response(records: Vec<Self::Item>, next_cursor: i64) -> Self::Response;
    fn signal(signal: &crate::feed::CarrierSignal) -> i64;
    /// The `kind` label of this stream's metrics.
    const METRIC_KIND: &'static str;
    /// Records in a response.
    fn records_in(response: &Self::Response) -> u64;
    /// The first and last cursor in a response, for the audit log.
    fn cursors(response: &Self::Response) -> Option<(i64, i64)>;
}

impl Wire for CallRecord {
    type Item = pb::CallRecord;
    type Response = pb::StreamCallRecordsResponse;
    fn to_pb(cursor: i64, record: &Self) -> pb::CallRecord {
        call_record_to_pb(cursor, record)
    }
    fn response(records: Vec<pb::CallRecord>, next_cursor: i64) -> Self::Response {
        pb::StreamCallRecordsResponse {
            records,
            next_cursor,
        }
    }
    fn signal(signal: &crate::feed::CarrierSignal) -> i64 {
        signal.call_record_cursor
    }
    const METRIC_KIND: &'static str = LogKind::CallRecords.label();
    fn records_in(response: &Self::Response) -> u64 {
        response.records.len() as u64
    }
    fn cursors(response: &Self::Response) -> Option<(i64, i64)> {
        Some((
            response.records.first()?.cursor,
            response.records.last()?.cursor,
        ))
    }
}

impl Wire for QualityRecord {
    type Item = pb::QualityRecord;
    type Response = pb::StreamQualityRecordsResponse;
    fn to_pb(cursor: i64, record: &Self) -> pb::QualityRecord {
        quality_record_to_pb(cursor, record)
    }
    fn response(records: Vec<pb::QualityRecord>, next_cursor: i64) -> Self::Response {
        pb::StreamQualityRecordsResponse {
            records,
            next_cursor,
        }
    }
    fn signal(signal: &crate::feed::CarrierSignal) -> i64 {
        signal.quality_record_cursor
    }
    const METRIC_KIND: &'static str = LogKind::QualityRecords.label();
    fn records_in(response: &Self::Response) -> u64 {
        response.records.len() as u64
    }
    fn cursors(response: &Self::Response) -> Option<(i64, i64)> {
        Some((
            response.records.first()?.cursor,
            response.records.last()?.cursor,
        ))
    }
}

/// One record stream's reads and encoding.
struct RecordSource<T: Wire> {
    store: Store,
    carrier: CarrierId,
    plan: StreamPlan,
    /// Everything up to here was delivered or filtered out; `None` before the first read.
    cursor: Option<i64>,
    /// Records read but not yet sent, in cursor order.
    buffered: VecDeque<(i64, T)>,
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
}

impl<T: Wire> RecordSource<T> {
    fn new(store: Store, carrier: CarrierId, plan: StreamPlan) -> Self {
        Self {
            store,
            carrier,
            plan,
            cursor: None,
            buffered: VecDeque::new(),
            page_end: None,
            at_end: false,
            delivered: 0,
            sent_cursor: 0,
            sent_cursor_latest: None,
            erased_epoch: 0,
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

    /// A message with `records`, resuming after `cursor`.
    fn message(&mut self, records: Vec<T::Item>, cursor: i64) -> Step<T::Response> {
        self.sent_cursor = cursor;
        Step::Send(T::response(records, cursor))
    }
}

impl<T: Wire> Source for RecordSource<T> {
    type Message = T::Response;
    const KIND: &'static str = T::METRIC_KIND;

    async fn next(&mut self) -> ApiResult<Step<T::Response>> {
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
                        return Ok(self.message(Vec::new(), cursor));
                    }
                }
                if std::mem::take(&mut self.at_end) {
                    return Ok(if self.plan.follow {
                        Step::CaughtUp
                    } else {
                        Step::End
                    });
                }
                let page = self
                    .store
                    .read_records::<T>(&self.carrier, cursor, &self.plan.filter, PAGE)
                    .await?;
                if page.bounds.purged_through > cursor {
                    return Err(ApiError::cursor_expired(
                        cursor,
                        page.bounds.purged_through + 1,
                    ));
                }
                self.at_end = (page.records.len() as u64) < PAGE;
                self.sent_cursor_latest = Some(page.bounds.latest);
                self.page_end = Some(page.next_cursor);
                self.buffered = page.records.into();
                self.cursor = Some(cursor);
                continue;
            }
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            while !self.max_reached() && batch_bytes < MAX_MESSAGE_BYTES {
                let Some((record_cursor, record)) = self.buffered.pop_front() else {
                    break;
                };
                let item = T::to_pb(record_cursor, &record);
                batch_bytes += item.encoded_len();
                batch.push(item);
                self.delivered += 1;
                cursor = record_cursor;
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
            return Ok(self.message(batch, cursor));
        }
    }

    fn woken_by(&self, signal: &CarrierSignal) -> bool {
        self.cursor.is_some_and(|c| T::signal(signal) > c)
    }

    fn idle_after(&self) -> Duration {
        FOLLOW_RECHECK
    }

    fn delivered(&self, message: &Self::Message, signal: &CarrierSignal) -> (u64, Option<i64>) {
        // The newest cursor known: the page's bounds, or a later commit's notice.
        let latest = self
            .sent_cursor_latest
            .into_iter()
            .chain([T::signal(signal)])
            .max();
        (T::records_in(message), latest.map(|l| l - self.sent_cursor))
    }

    fn positions(&self, message: &Self::Message) -> Option<(i64, i64)> {
        T::cursors(message)
    }
}

#[tonic::async_trait]
impl CallRecordService for CallRecordApi {
    type StreamCallRecordsStream = ServerStream<pb::StreamCallRecordsResponse>;

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
            RecordSource::<CallRecord>::new(self.store.clone(), carrier.id, plan),
            read,
        )))
    }

    type StreamQualityRecordsStream = ServerStream<pb::StreamQualityRecordsResponse>;

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
            RecordSource::<QualityRecord>::new(self.store.clone(), carrier.id, plan),
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
