//! `AssignmentService`: a carrier lists, reads and watches its own numbers.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{Authorizer, decode_page_token, encode_page_token, page_size};
use crate::domain::Violations;
use crate::domain::carrier::Carrier;
use crate::domain::ids::{E164, TenantId};
use crate::domain::number::{NumberState, NumberStatus};
use crate::error::{ApiError, ApiResult};
use crate::pb::v1 as pb;
use crate::pb::v1::assignment_service_server::AssignmentService;
use crate::store::{EventRecord, NumberFilter, Store};

/// Events read from the log per query, and at most sent per message.
const EVENT_BATCH: u64 = 500;
/// Snapshot events per message.
const SNAPSHOT_BATCH: usize = 500;
/// Messages buffered per watch stream; the rest waits in the database, not in memory.
const STREAM_BUFFER: usize = 4;
const DEFAULT_PROGRESS: Duration = Duration::from_secs(30);

/// Implementation of `opconnect.v1.AssignmentService`.
#[derive(Debug, Clone)]
pub struct AssignmentApi {
    store: Store,
    auth: Authorizer,
    /// Cancelled when the server shuts down: every watch then ends with UNAVAILABLE.
    shutdown: CancellationToken,
}

impl AssignmentApi {
    /// The service over `store`; watches end when `shutdown` is cancelled.
    pub fn new(store: Store, shutdown: CancellationToken) -> Self {
        Self {
            auth: Authorizer::new(store.clone()),
            store,
            shutdown,
        }
    }
}

fn parse_tenant_filter(v: &mut Violations, raw: &str) -> Option<TenantId> {
    if raw.is_empty() {
        None
    } else {
        v.check("tenant_id", TenantId::parse(raw))
    }
}

fn parse_status_filter(v: &mut Violations, raw: i32) -> Option<NumberStatus> {
    let status = match pb::NumberStatus::try_from(raw) {
        Ok(pb::NumberStatus::Unspecified) => Ok(None),
        Ok(pb::NumberStatus::Provisioned) => Ok(Some(NumberStatus::Provisioned)),
        Ok(pb::NumberStatus::Assigned) => Ok(Some(NumberStatus::Assigned)),
        Ok(pb::NumberStatus::Released) => Ok(Some(NumberStatus::Released)),
        Err(_) => Err(format!("unknown status {raw}")),
    };
    v.check("status", status).flatten()
}

/// Where a watch starts.
enum Start {
    /// Snapshot of current numbers, then changes.
    Snapshot,
    /// Every event after this revision.
    After(i64),
    /// Changes from now on.
    Now,
}

/// A watch's validated request.
struct WatchPlan {
    start: Start,
    filter: NumberFilter,
    progress: Duration,
}

fn plan_watch(req: &pb::WatchNumbersRequest) -> ApiResult<WatchPlan> {
    let mut v = Violations::default();
    let tenant_id = parse_tenant_filter(&mut v, &req.tenant_id);
    let start = match (req.start_revision, req.include_snapshot) {
        (Some(_), true) => {
            v.push("include_snapshot", "cannot be combined with start_revision");
            Start::Now
        }
        (Some(r), false) if r < 0 => {
            v.push("start_revision", "must not be negative");
            Start::Now
        }
        (Some(r), false) => Start::After(r),
        (None, true) => Start::Snapshot,
        (None, false) => Start::Now,
    };
    let progress = match &req.progress_interval {
        None => DEFAULT_PROGRESS,
        Some(d) if d.nanos == 0 && (1..=3600).contains(&d.seconds) => {
            Duration::from_secs(d.seconds.unsigned_abs())
        }
        Some(d) if d.seconds >= 1 && d.seconds < 3600 && (0..1_000_000_000).contains(&d.nanos) => {
            Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs())
        }
        Some(_) => {
            v.push("progress_interval", "must be between 1 s and 1 h");
            DEFAULT_PROGRESS
        }
    };
    v.finish()?;
    Ok(WatchPlan {
        start,
        filter: NumberFilter {
            tenant_id,
            status: None,
        },
        progress,
    })
}

/// Why a watch producer stopped sending.
enum Stop {
    /// The client went away; nothing more to send.
    ClientGone,
    /// End the stream with this error.
    Fail(ApiError),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Self::Fail(e)
    }
}

impl From<crate::store::StoreError> for Stop {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Fail(e.into())
    }
}

/// The producer of one watch stream: reads the carrier's log from the database at the
/// client's pace and sends into a small bounded channel.
struct Watch {
    store: Store,
    auth: Authorizer,
    carrier: Carrier,
    plan: WatchPlan,
    tx: mpsc::Sender<Result<pb::WatchNumbersResponse, Status>>,
    shutdown: CancellationToken,
    /// When the next PROGRESS checkpoint is due if nothing is sent before.
    progress_due: Instant,
}

fn compacted(start: i64, carrier: &Carrier) -> ApiError {
    ApiError::FailedPrecondition {
        reason: "REVISION_COMPACTED",
        message: format!(
            "events after revision {start} were purged; list the numbers again and watch from the list's revision"
        ),
        metadata: vec![
            (
                "oldest_revision",
                (carrier.events_purged_through + 1).to_string(),
            ),
            ("current_revision", carrier.number_revision.to_string()),
        ],
    }
}

impl Watch {
    async fn send(&mut self, msg: pb::WatchNumbersResponse) -> Result<(), Stop> {
        tokio::select! {
            sent = self.tx.send(Ok(msg)) => sent.map_err(|_| Stop::ClientGone)?,
            () = self.shutdown.cancelled() => return Err(Stop::Fail(ApiError::ShuttingDown)),
        }
        self.progress_due = Instant::now() + self.plan.progress;
        Ok(())
    }

    async fn checkpoint(
        &mut self,
        kind: pb::WatchCheckpointType,
        revision: i64,
    ) -> Result<(), Stop> {
        self.send(pb::WatchNumbersResponse {
            events: Vec::new(),
            checkpoint: Some(pb::WatchCheckpoint {
                r#type: kind as i32,
                revision,
            }),
        })
        .await
    }

    fn wants(&self, event: &EventRecord) -> bool {
        let matches = |s: &NumberState| self.plan.filter.matches(s);
        matches(&event.state) || event.previous.as_ref().is_some_and(matches)
    }

    /// Establishes the start point and returns the revision the client has seen through.
    async fn start(&mut self) -> Result<i64, Stop> {
        match self.plan.start {
            Start::Snapshot => {
                let (numbers, revision) = self
                    .store
                    .snapshot_numbers(&self.carrier.id, &self.plan.filter)
                    .await?;
                for chunk in numbers.chunks(SNAPSHOT_BATCH) {
                    let events = chunk
                        .iter()
                        .map(|s| pb::NumberEvent {
                            revision: s.revision,
                            r#type: pb::NumberEventType::Snapshot as i32,
                            number: Some(s.into()),
                            previous: None,
                            commit_time: Some(super::convert::timestamp(s.update_time_ms)),
                        })
                        .collect();
                    self.send(pb::WatchNumbersResponse {
                        events,
                        checkpoint: None,
                    })
                    .await?;
                }
                self.checkpoint(pb::WatchCheckpointType::SnapshotComplete, revision)
                    .await?;
                Ok(revision)
            }
            Start::After(start) => {
                let carrier = self.auth.active_carrier(self.carrier.id.as_str()).await?;
                if start < carrier.events_purged_through {
                    return Err(compacted(start, &carrier).into());
                }
                if start > carrier.number_revision {
                    return Err(Stop::Fail(ApiError::OutOfRange {
                        reason: "REVISION_AHEAD",
                        message: format!(
                            "start_revision {start} is past the current revision {}",
                            carrier.number_revision
                        ),
                        metadata: vec![("current_revision", carrier.number_revision.to_string())],
                    }));
                }
                Ok(start)
            }
            Start::Now => Ok(self
                .auth
                .active_carrier(self.carrier.id.as_str())
                .await?
                .number_revision),
        }
    }

    /// Sends every committed event after `cursor`; returns the new cursor.
    async fn drain(&mut self, mut cursor: i64) -> Result<i64, Stop> {
        loop {
            let events = self
                .store
                .number_events_after(&self.carrier.id, cursor, EVENT_BATCH)
                .await?;
            let Some(first) = events.first() else {
                return Ok(cursor);
            };
            if first.revision != cursor + 1 {
                // Retention purged events this watcher had not read yet.
                let carrier = self.auth.active_carrier(self.carrier.id.as_str()).await?;
                return Err(compacted(cursor, &carrier).into());
            }
            let full = events.len() as u64 == EVENT_BATCH;
            cursor = events.last().map_or(cursor, |e| e.revision);
            let wanted: Vec<pb::NumberEvent> = events
                .iter()
                .filter(|e| self.wants(e))
                .map(Into::into)
                .collect();
            if !wanted.is_empty() {
                self.send(pb::WatchNumbersResponse {
                    events: wanted,
                    checkpoint: None,
                })
                .await?;
            }
            if !full {
                return Ok(cursor);
            }
        }
    }

    async fn run(&mut self) -> Result<(), Stop> {
        let mut signals = self.store.feed().subscribe(self.carrier.id.as_str());
        let mut status_epoch = signals.borrow_and_update().status_epoch;
        let mut cursor = self.start().await?;
        loop {
            cursor = self.drain(cursor).await?;
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(Stop::Fail(ApiError::ShuttingDown)),
                () = self.tx.closed() => return Err(Stop::ClientGone),
                changed = signals.changed() => {
                    if changed.is_err() {
                        return Err(Stop::Fail(ApiError::Internal("change feed closed".into())));
                    }
                    let epoch = signals.borrow_and_update().status_epoch;
                    if epoch != status_epoch {
                        status_epoch = epoch;
                        self.auth.active_carrier(self.carrier.id.as_str()).await?;
                    }
                }
                () = sleep_until(self.progress_due) => {
                    // Also catches a suspension made, or a notice missed, on another
                    // instance: re-check the carrier and re-read the log before reporting.
                    self.auth.active_carrier(self.carrier.id.as_str()).await?;
                    cursor = self.drain(cursor).await?;
                    if Instant::now() >= self.progress_due {
                        self.checkpoint(pb::WatchCheckpointType::Progress, cursor).await?;
                    }
                }
            }
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchNumbersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AssignmentService for AssignmentApi {
    async fn list_numbers(
        &self,
        request: Request<pb::ListNumbersRequest>,
    ) -> Result<Response<pb::ListNumbersResponse>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let limit = v.check(
            "page_size",
            page_size(req.page_size, 100, 1000).map_err(|e| e.description),
        );
        let tenant_id = parse_tenant_filter(&mut v, &req.tenant_id);
        let status = parse_status_filter(&mut v, req.status);
        let filters = format!("numbers|{}|{}", req.tenant_id, req.status);
        let after = v
            .check(
                "page_token",
                decode_page_token(&req.page_token, &filters).map_err(|e| e.description),
            )
            .flatten();
        let after = match after.map(|a| E164::parse(&a)) {
            Some(Err(_)) => {
                v.push("page_token", "is not a token from this listing");
                None
            }
            Some(Ok(a)) => Some(a),
            None => None,
        };
        v.finish().map_err(ApiError::from)?;
        let limit = limit.unwrap_or(100);
        let filter = NumberFilter { tenant_id, status };
        let page = self
            .store
            .list_numbers(&carrier.id, &filter, after.as_ref(), limit)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = match page.numbers.last() {
            Some(last) if page.more => encode_page_token(&filters, last.number.as_str()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListNumbersResponse {
            numbers: page.numbers.iter().map(Into::into).collect(),
            next_page_token,
            revision: page.revision,
        }))
    }

    async fn get_number(
        &self,
        request: Request<pb::GetNumberRequest>,
    ) -> Result<Response<pb::GetNumberResponse>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let req = request.into_inner();
        let number = E164::parse(&req.number).map_err(|e| ApiError::invalid("number", e))?;
        // Another carrier's number is indistinguishable from one that does not exist.
        let state = self
            .store
            .get_number(&carrier.id, &number)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::from(crate::store::StoreError::NumberNotFound(req.number)))?;
        Ok(Response::new(pb::GetNumberResponse {
            telephone_number: Some((&state).into()),
        }))
    }

    type WatchNumbersStream = WatchStream;

    async fn watch_numbers(
        &self,
        request: Request<pb::WatchNumbersRequest>,
    ) -> Result<Response<Self::WatchNumbersStream>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let plan = plan_watch(request.get_ref())?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut watch = Watch {
            store: self.store.clone(),
            auth: self.auth.clone(),
            carrier,
            progress_due: Instant::now() + plan.progress,
            plan,
            tx,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(
            async move {
                tracing::debug!("watch opened");
                match watch.run().await {
                    Ok(()) | Err(Stop::ClientGone) => tracing::debug!("watch closed by client"),
                    Err(Stop::Fail(err)) => {
                        tracing::info!(reason = err.reason(), "watch ended");
                        // A client that stopped reading gets a second to take the status;
                        // shutdown must not wait on it longer.
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            watch.tx.send(Err(err.into())),
                        )
                        .await;
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
