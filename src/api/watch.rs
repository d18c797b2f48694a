//! The source of a `WatchNumbers` stream: an optional snapshot, then the carrier's event log
//! from a revision, with progress checkpoints while idle. Runs on [`super::stream`].

use std::time::Duration;

use super::stream::{Source, Step};
use crate::domain::ids::{CarrierId, E164};
use crate::domain::number::{NumberEvent, NumberFilter, NumberState};
use crate::error::{ApiError, ApiResult};
use crate::feed::CarrierSignal;
use crate::pb::v1 as pb;
use crate::store::Store;

/// Events read from the log per query, and at most sent per message.
const EVENT_BATCH: u64 = 500;
/// Numbers read per snapshot page, and at most sent per message: memory per snapshot stays
/// a few pages however many numbers the carrier has.
const SNAPSHOT_PAGE: u64 = 500;

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// Snapshot of current numbers, then changes.
    Snapshot,
    /// Every event after this revision.
    After(i64),
    /// Changes from now on.
    Now,
}

/// A watch's validated request.
#[derive(Debug, Clone)]
pub(crate) struct WatchPlan {
    pub start: Start,
    pub filter: NumberFilter,
    pub progress: Duration,
}

/// Where a watch is.
enum Phase {
    /// Nothing read yet.
    Starting,
    /// Sending the numbers as they were at `revision`, page by page after `after`.
    Snapshot { revision: i64, after: Option<E164> },
    /// Sending the log after `cursor`.
    Live,
}

/// One watch's reads and encoding.
pub(crate) struct WatchSource {
    store: Store,
    carrier: CarrierId,
    plan: WatchPlan,
    phase: Phase,
    /// The revision the client has seen through (events filtered out included).
    cursor: i64,
    /// The last read returned a short batch: the log is read to its end.
    at_end: bool,
    /// The snapshot's last page was sent; its checkpoint goes next.
    snapshot_complete: bool,
}

impl WatchSource {
    /// A watch of `carrier`'s numbers as `plan` says.
    pub(crate) fn new(store: Store, carrier: CarrierId, plan: WatchPlan) -> Self {
        Self {
            store,
            carrier,
            plan,
            phase: Phase::Starting,
            cursor: 0,
            at_end: false,
            snapshot_complete: false,
        }
    }

    /// The carrier's revision bounds: (purged through, current).
    async fn bounds(&self) -> ApiResult<(i64, i64)> {
        let carrier = self
            .store
            .carrier(self.carrier.as_str())
            .await?
            .ok_or_else(ApiError::carrier_unknown)?;
        Ok((carrier.events_purged_through, carrier.number_revision))
    }

    async fn compacted(&self, start: i64) -> ApiError {
        match self.bounds().await {
            Ok((purged, current)) => ApiError::revision_compacted(start, purged + 1, current),
            Err(e) => e,
        }
    }

    /// Establishes the start point.
    async fn start(&mut self) -> ApiResult<()> {
        match self.plan.start {
            Start::Snapshot => {
                self.phase = Phase::Snapshot {
                    revision: self.bounds().await?.1,
                    after: None,
                };
                return Ok(());
            }
            Start::After(start) => {
                let (purged, current) = self.bounds().await?;
                if start < purged {
                    return Err(ApiError::revision_compacted(start, purged + 1, current));
                }
                if start > current {
                    return Err(ApiError::revision_ahead(start, current));
                }
                self.cursor = start;
            }
            Start::Now => self.cursor = self.bounds().await?.1,
        }
        self.phase = Phase::Live;
        Ok(())
    }

    /// The next page of the snapshot at `revision` after `after`, or its end.
    async fn snapshot(
        &mut self,
        revision: i64,
        mut after: Option<E164>,
    ) -> ApiResult<Step<pb::WatchNumbersResponse>> {
        loop {
            let page = self
                .store
                .snapshot_page(
                    &self.carrier,
                    &self.plan.filter,
                    revision,
                    after.as_ref(),
                    SNAPSHOT_PAGE,
                )
                .await?;
            let Some(page) = page else {
                // Retention purged the events needed to hold the snapshot at its revision.
                return Err(self.compacted(revision).await);
            };
            if !page.more {
                self.phase = Phase::Live;
                self.cursor = revision;
                if page.numbers.is_empty() {
                    return Ok(Step::Send(checkpoint(
                        pb::WatchCheckpointType::SnapshotComplete,
                        revision,
                    )));
                }
                // The checkpoint follows with the next read.
                self.snapshot_complete = true;
            } else {
                after.clone_from(&page.last);
                self.phase = Phase::Snapshot {
                    revision,
                    after: page.last,
                };
            }
            if !page.numbers.is_empty() {
                let events = page.numbers.iter().map(snapshot_event).collect();
                return Ok(Step::Send(events_message(events)));
            }
        }
    }

    fn wants(&self, event: &NumberEvent) -> bool {
        let matches = |s: &NumberState| self.plan.filter.matches(s);
        matches(&event.state) || event.previous.as_ref().is_some_and(matches)
    }

    /// The next message of live events after the cursor, if any.
    async fn live(&mut self) -> ApiResult<Step<pb::WatchNumbersResponse>> {
        loop {
            if std::mem::take(&mut self.at_end) {
                return Ok(Step::CaughtUp);
            }
            let events = self
                .store
                .number_events_after(&self.carrier, self.cursor, EVENT_BATCH)
                .await?;
            let Some(first) = events.first() else {
                return Ok(Step::CaughtUp);
            };
            if first.revision != self.cursor + 1 {
                // Retention purged events this watcher had not read yet.
                return Err(self.compacted(self.cursor).await);
            }
            self.at_end = (events.len() as u64) < EVENT_BATCH;
            self.cursor = events.last().map_or(self.cursor, |e| e.revision);
            let wanted: Vec<pb::NumberEvent> = events
                .iter()
                .filter(|e| self.wants(e))
                .map(Into::into)
                .collect();
            if !wanted.is_empty() {
                return Ok(Step::Send(events_message(wanted)));
            }
        }
    }
}

fn events_message(events: Vec<pb::NumberEvent>) -> pb::WatchNumbersResponse {
    pb::WatchNumbersResponse {
        events,
        checkpoint: None,
    }
}

fn checkpoint(kind: pb::WatchCheckpointType, revision: i64) -> pb::WatchNumbersResponse {
    pb::WatchNumbersResponse {
        events: Vec::new(),
        checkpoint: Some(pb::WatchCheckpoint {
            r#type: kind as i32,
            revision,
        }),
    }
}

impl Source for WatchSource {
    type Message = pb::WatchNumbersResponse;
    const KIND: &'static str = "number_events";

    async fn next(&mut self) -> ApiResult<Step<Self::Message>> {
        if matches!(self.phase, Phase::Starting) {
            self.start().await?;
        }
        if std::mem::take(&mut self.snapshot_complete) {
            return Ok(Step::Send(checkpoint(
                pb::WatchCheckpointType::SnapshotComplete,
                self.cursor,
            )));
        }
        match &self.phase {
            Phase::Snapshot { revision, after } => {
                let (revision, after) = (*revision, after.clone());
                self.snapshot(revision, after).await
            }
            Phase::Starting | Phase::Live => self.live().await,
        }
    }

    fn woken_by(&self, signal: &CarrierSignal) -> bool {
        signal.revision > self.cursor
    }

    fn idle_after(&self) -> Duration {
        self.plan.progress
    }

    fn idle(&mut self) -> Option<Self::Message> {
        Some(checkpoint(pb::WatchCheckpointType::Progress, self.cursor))
    }

    fn delivered(&self, message: &Self::Message, signal: &CarrierSignal) -> (u64, Option<i64>) {
        let lag = (signal.revision > 0).then(|| signal.revision - self.cursor);
        (message.events.len() as u64, lag)
    }

    fn positions(&self, message: &Self::Message) -> Option<(i64, i64)> {
        Some((
            message.events.first()?.revision,
            message.events.last()?.revision,
        ))
    }
}

fn snapshot_event(state: &NumberState) -> pb::NumberEvent {
    pb::NumberEvent {
        revision: state.revision,
        r#type: pb::NumberEventType::Snapshot as i32,
        number: Some(state.into()),
        previous: None,
        commit_time: Some(super::wire::time::timestamp(state.update_time_ms)),
    }
}
