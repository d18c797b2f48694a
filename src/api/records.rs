//! `CallRecordService`: a carrier reads its call and quality records as cursor-based streams,
//! optionally following new ones, and stores its consumer position.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::Authorizer;
use super::records_convert::{call_record_to_pb, optional_time_ms, quality_record_to_pb};
use crate::domain::Violations;
use crate::domain::carrier::Carrier;
use crate::domain::ids::TenantId;
use crate::domain::records::{CallRecord, QualityRecord};
use crate::error::{ApiError, ApiResult};
use crate::metrics::StreamMetrics;
use crate::pb::v1 as pb;
use crate::pb::v1::call_record_service_server::CallRecordService;
use crate::store::{LogBounds, LogKind, LogRecord, RecordFilter, Store, StoreError};

/// Records read from the database per query.
const PAGE: u64 = 1_000;
/// A response message stops growing past this many encoded bytes.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Messages waiting per stream; together with HTTP/2 flow control this bounds what a client
/// that stops reading costs: at most this many messages, then the producer waits.
const STREAM_BUFFER: usize = 2;
/// A following stream re-reads and re-checks the carrier this often even without a wake-up.
const FOLLOW_RECHECK: Duration = Duration::from_secs(5);

/// Implementation of `opconnect.v1.CallRecordService`.
#[derive(Debug, Clone)]
pub struct CallRecordApi {
    store: Store,
    auth: Authorizer,
    shutdown: CancellationToken,
    metrics: Arc<StreamMetrics>,
}

impl CallRecordApi {
    /// The service over `store`; streams end when `shutdown` is cancelled.
    pub fn new(store: Store, shutdown: CancellationToken, metrics: Arc<StreamMetrics>) -> Self {
        Self {
            auth: Authorizer::new(store.clone()),
            store,
            shutdown,
            metrics,
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

fn expired(start: i64, bounds: LogBounds) -> ApiError {
    ApiError::FailedPrecondition {
        reason: "CURSOR_EXPIRED",
        message: format!(
            "records after cursor {start} were purged by retention; resume from oldestCursor - 1"
        ),
        metadata: vec![("oldestCursor", (bounds.purged_through + 1).to_string())],
    }
}

fn ahead(cursor: i64, bounds: LogBounds) -> ApiError {
    ApiError::OutOfRange {
        reason: "CURSOR_AHEAD",
        message: format!(
            "cursor {cursor} is past the newest record ({})",
            bounds.latest
        ),
        metadata: vec![("latestCursor", bounds.latest.to_string())],
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
trait Wire: LogRecord + 'static {
    type Item: Message + Send + 'static;
    type Response: Message + Send + 'static;
    fn to_pb(cursor: i64, record: &Self) -> Self::Item;
    fn response(records: Vec<Self::Item>, next_cursor: i64) -> Self::Response;
    fn signal(signal: &crate::feed::CarrierSignal) -> i64;
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
}

/// Why a record stream stopped.
enum Stop {
    /// Nothing more to send (end of log, or `max_records` reached).
    Done,
    /// The client went away.
    ClientGone,
    /// End with this error.
    Fail(ApiError),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Self::Fail(e)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Fail(e.into())
    }
}

/// The producer of one record stream.
struct Producer<T: Wire> {
    store: Store,
    auth: Authorizer,
    carrier: Carrier,
    plan: StreamPlan,
    tx: mpsc::Sender<(usize, usize, Result<T::Response, Status>)>,
    shutdown: CancellationToken,
    metrics: Arc<StreamMetrics>,
    /// Records delivered so far, for `max_records`.
    delivered: u64,
    /// The last `next_cursor` sent.
    sent_cursor: i64,
}

impl<T: Wire> Producer<T> {
    async fn send(&mut self, records: Vec<T::Item>, next_cursor: i64) -> Result<(), Stop> {
        let count = records.len();
        let msg = T::response(records, next_cursor);
        let bytes = msg.encoded_len();
        self.metrics
            .buffered(i64::try_from(bytes).unwrap_or(i64::MAX));
        tokio::select! {
            sent = self.tx.send((bytes, count, Ok(msg))) => {
                if sent.is_err() {
                    self.metrics.unbuffered(i64::try_from(bytes).unwrap_or(i64::MAX), 0);
                    return Err(Stop::ClientGone);
                }
            }
            () = self.shutdown.cancelled() => {
                self.metrics.unbuffered(i64::try_from(bytes).unwrap_or(i64::MAX), 0);
                return Err(Stop::Fail(ApiError::ShuttingDown));
            }
        }
        self.sent_cursor = next_cursor;
        Ok(())
    }

    /// The cursor to start after, checked against the log's bounds.
    async fn start(&self) -> Result<i64, Stop> {
        let kind = T::KIND;
        let bounds = self.store.log_bounds(&self.carrier.id, kind).await?;
        let start = match self.plan.after_cursor {
            Some(c) => c,
            None => self
                .store
                .committed_cursor(&self.carrier.id, kind)
                .await?
                .unwrap_or(bounds.purged_through),
        };
        if start < bounds.purged_through {
            return Err(expired(start, bounds).into());
        }
        if start > bounds.latest {
            return Err(ahead(start, bounds).into());
        }
        Ok(start)
    }

    /// Sends every record after `cursor` up to the end of the log; returns the new cursor.
    async fn drain(&mut self, mut cursor: i64) -> Result<i64, Stop> {
        loop {
            let page = self
                .store
                .read_records::<T>(&self.carrier.id, cursor, &self.plan.filter, PAGE)
                .await?;
            if page.bounds.purged_through > cursor {
                return Err(expired(cursor, page.bounds).into());
            }
            let at_end = (page.records.len() as u64) < PAGE;
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            for (record_cursor, record) in &page.records {
                if self.plan.max_records.is_some_and(|m| self.delivered >= m) {
                    break;
                }
                let item = T::to_pb(*record_cursor, record);
                batch_bytes += item.encoded_len();
                batch.push(item);
                self.delivered += 1;
                cursor = *record_cursor;
                if batch_bytes >= MAX_MESSAGE_BYTES {
                    self.send(std::mem::take(&mut batch), cursor).await?;
                    batch_bytes = 0;
                }
            }
            if self.plan.max_records.is_some_and(|m| self.delivered >= m) {
                if !batch.is_empty() || cursor > self.sent_cursor {
                    self.send(batch, cursor).await?;
                }
                return Err(Stop::Done);
            }
            cursor = cursor.max(page.next_cursor);
            if !batch.is_empty() || cursor > self.sent_cursor {
                self.send(batch, cursor).await?;
            }
            if at_end {
                return Ok(cursor);
            }
        }
    }

    async fn run(&mut self) -> Result<(), Stop> {
        let mut signals = self.store.feed().subscribe(self.carrier.id.as_str());
        let mut status_epoch = signals.borrow_and_update().status_epoch;
        let mut cursor = self.start().await?;
        self.sent_cursor = cursor;
        loop {
            cursor = self.drain(cursor).await?;
            if !self.plan.follow {
                return Err(Stop::Done);
            }
            // Wait until this log moved past `cursor`, the carrier changed, or the recheck
            // timer fired (a notification from another instance may have been missed).
            loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => return Err(Stop::Fail(ApiError::ShuttingDown)),
                    () = self.tx.closed() => return Err(Stop::ClientGone),
                    changed = signals.changed() => {
                        if changed.is_err() {
                            return Err(Stop::Fail(ApiError::Internal("change feed closed".into())));
                        }
                        let signal = *signals.borrow_and_update();
                        if signal.status_epoch != status_epoch {
                            // A status change, or a wake-up after missed notices: re-check
                            // the carrier and re-read the log.
                            status_epoch = signal.status_epoch;
                            self.auth.active_carrier(self.carrier.id.as_str()).await?;
                            break;
                        }
                        if T::signal(&signal) > cursor {
                            break;
                        }
                    }
                    () = tokio::time::sleep(FOLLOW_RECHECK) => {
                        self.auth.active_carrier(self.carrier.id.as_str()).await?;
                        break;
                    }
                }
            }
        }
    }
}

type RecordStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

impl CallRecordApi {
    fn open<T: Wire + Clone>(
        &self,
        carrier: Carrier,
        plan: StreamPlan,
    ) -> RecordStream<T::Response> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut producer = Producer::<T> {
            store: self.store.clone(),
            auth: self.auth.clone(),
            carrier,
            plan,
            tx,
            shutdown: self.shutdown.clone(),
            metrics: self.metrics.clone(),
            delivered: 0,
            sent_cursor: 0,
        };
        let metrics = self.metrics.clone();
        let open = metrics.open_stream();
        tokio::spawn(
            async move {
                match producer.run().await {
                    Ok(()) | Err(Stop::Done) | Err(Stop::ClientGone) => {}
                    Err(Stop::Fail(err)) => {
                        tracing::info!(reason = err.reason(), "record stream ended");
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            producer.tx.send((0, 0, Err(err.into()))),
                        )
                        .await;
                    }
                }
                drop(open);
            }
            .instrument(tracing::Span::current()),
        );
        let stream = ReceiverStream::new(rx).map(move |(bytes, records, item)| {
            metrics.unbuffered(i64::try_from(bytes).unwrap_or(i64::MAX), records as u64);
            item
        });
        Box::pin(stream)
    }
}

#[tonic::async_trait]
impl CallRecordService for CallRecordApi {
    type StreamCallRecordsStream = RecordStream<pb::StreamCallRecordsResponse>;

    async fn stream_call_records(
        &self,
        request: Request<pb::StreamCallRecordsRequest>,
    ) -> Result<Response<Self::StreamCallRecordsStream>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let plan = plan_stream(request.get_ref().options.as_ref())?;
        Ok(Response::new(self.open::<CallRecord>(carrier, plan)))
    }

    type StreamQualityRecordsStream = RecordStream<pb::StreamQualityRecordsResponse>;

    async fn stream_quality_records(
        &self,
        request: Request<pb::StreamQualityRecordsRequest>,
    ) -> Result<Response<Self::StreamQualityRecordsStream>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let plan = plan_stream(request.get_ref().options.as_ref())?;
        Ok(Response::new(self.open::<QualityRecord>(carrier, plan)))
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
            return Err(ahead(req.cursor, bounds).into());
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
