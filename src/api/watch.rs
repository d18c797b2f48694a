//! The source of a `WatchNumbers` stream: an optional snapshot, then the carrier's event log
//! from a revision, with progress checkpoints while idle. Runs on [`super::stream`].

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use super::framing::{Framed, frame_item, message_field};
use super::stream::{Source, Step};
use super::tail::{Entry, Fill, Read, Tail};
use crate::domain::ids::{CarrierId, E164, TenantId};
use crate::domain::number::{NumberEvent, NumberFilter, NumberState, NumberStatus};
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
    /// The carrier's shared tail of number events.
    tail: Arc<Tail<EventMeta>>,
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
    pub(crate) fn new(
        store: Store,
        carrier: CarrierId,
        plan: WatchPlan,
        tail: Arc<Tail<EventMeta>>,
    ) -> Self {
        Self {
            store,
            carrier,
            plan,
            tail,
            phase: Phase::Starting,
            cursor: 0,
            at_end: false,
            snapshot_complete: false,
        }
    }

    /// The carrier's revision bounds: (purged through, current).
    async fn bounds(&self) -> ApiResult<(i64, i64)> {
        let bounds = self
            .store
            .number_log_bounds(&self.carrier)
            .await?
            .ok_or_else(ApiError::carrier_unknown)?;
        Ok((bounds.purged_through, bounds.latest))
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
    ) -> ApiResult<Step<Framed>> {
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
                let events: Vec<_> = page.numbers.iter().map(snapshot_event).collect();
                return Ok(Step::Send(events_message(&events)));
            }
        }
    }

    /// The next message of live events after the cursor, if any: from the shared tail, or
    /// from the database while the watch is behind it.
    async fn live(&mut self, known: &CarrierSignal) -> ApiResult<Step<Framed>> {
        loop {
            if std::mem::take(&mut self.at_end) {
                return Ok(Step::CaughtUp);
            }
            let (entries, through, more) = match self.read_tail(known).await? {
                Some(read) => read,
                None => match self.read_database().await? {
                    Some(read) => read,
                    None => return Ok(Step::CaughtUp),
                },
            };
            // Not at the end while a commit past what was read was announced: a tail read may
            // stop short of it, and its notice will not come again.
            self.at_end = !more && known.revision <= through;
            self.cursor = through;
            let mut message = Framed::default();
            for event in entries
                .iter()
                .filter(|e| e.meta.wanted_by(&self.plan.filter))
            {
                message.push_item(event.item.clone(), event.position);
            }
            if message.items() > 0 {
                return Ok(Step::Send(message));
            }
        }
    }

    /// Events after the cursor from the carrier's shared tail; `None` when the watch is behind
    /// it.
    async fn read_tail(&self, known: &CarrierSignal) -> ApiResult<Option<EventRead>> {
        let target = (known.revision > self.cursor).then_some(known.revision);
        let (store, carrier) = (&self.store, &self.carrier);
        let read = self
            .tail
            .after(self.cursor, target, EVENT_BATCH as usize, |end| {
                fill_tail(store.clone(), carrier.clone(), end)
            })
            .await?;
        Ok(match read {
            Read::Entries {
                entries,
                through,
                more,
            } => Some((entries, through, more)),
            Read::Behind => None,
        })
    }

    /// Events after the cursor read by this watch alone; `None` when there are none.
    async fn read_database(&self) -> ApiResult<Option<EventRead>> {
        let events = self
            .store
            .number_events_after(&self.carrier, self.cursor, EVENT_BATCH)
            .await?;
        let Some(first) = events.first() else {
            return Ok(None);
        };
        if first.revision != self.cursor + 1 {
            // Retention purged events this watcher had not read yet.
            return Err(self.compacted(self.cursor).await);
        }
        let more = events.len() as u64 >= EVENT_BATCH;
        let through = events.last().map_or(self.cursor, |e| e.revision);
        Ok(Some((events.iter().map(entry).collect(), through, more)))
    }
}

/// Events read, through which revision, and whether more follow right away.
type EventRead = (Vec<Arc<Entry<EventMeta>>>, i64, bool);

/// What a watch filters an event on: the number's tenant and status after the event and
/// before it. An event is sent when either side passes the filter, so a number leaving the
/// filtered set is seen leaving.
#[derive(Debug)]
pub(crate) struct EventMeta {
    after: (TenantId, NumberStatus),
    before: Option<(TenantId, NumberStatus)>,
}

impl EventMeta {
    fn wanted_by(&self, filter: &NumberFilter) -> bool {
        let admits = |(tenant, status): &(TenantId, NumberStatus)| filter.admits(tenant, *status);
        admits(&self.after) || self.before.as_ref().is_some_and(admits)
    }
}

/// The tag of `events` and of `checkpoint` in `WatchNumbersResponse`.
const EVENTS_TAG: u32 = 1;
const CHECKPOINT_TAG: u32 = 2;

/// An event, encoded once for every watch of its carrier.
pub(super) fn entry(event: &NumberEvent) -> Arc<Entry<EventMeta>> {
    let side = |s: &NumberState| (s.tenant_id.clone(), s.status);
    Arc::new(Entry {
        position: event.revision,
        meta: EventMeta {
            after: side(&event.state),
            before: event.previous.as_ref().map(side),
        },
        item: frame_item(
            EVENTS_TAG,
            &[],
            &pb::NumberEvent::from(event).encode_to_vec(),
        ),
    })
}

/// Reads a carrier's events after `after` for its shared tail.
async fn fill_tail(store: Store, carrier: CarrierId, after: i64) -> ApiResult<Fill<EventMeta>> {
    let events = store
        .number_events_after(&carrier, after, EVENT_BATCH)
        .await?;
    let floor = match events.first() {
        // Purged up to the first event still there.
        Some(first) if first.revision != after + 1 => first.revision - 1,
        _ => 0,
    };
    Ok(Fill {
        through: events.last().map_or(after, |e| e.revision),
        entries: events.iter().map(entry).collect(),
        floor,
    })
}

fn events_message(events: &[pb::NumberEvent]) -> Framed {
    let mut message = Framed::default();
    for event in events {
        message.push_item(
            frame_item(EVENTS_TAG, &[], &event.encode_to_vec()),
            event.revision,
        );
    }
    message
}

fn checkpoint(kind: pb::WatchCheckpointType, revision: i64) -> Framed {
    let mut message = Framed::default();
    message.push_field(message_field(
        CHECKPOINT_TAG,
        &pb::WatchCheckpoint {
            r#type: kind as i32,
            revision,
        },
    ));
    message
}

impl Source for WatchSource {
    type Message = Framed;
    const KIND: &'static str = "number_events";

    async fn next(&mut self, known: &CarrierSignal) -> ApiResult<Step<Framed>> {
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
            Phase::Starting | Phase::Live => self.live(known).await,
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
        (message.items(), lag)
    }

    fn positions(&self, message: &Framed) -> Option<(i64, i64)> {
        message.positions()
    }
}

fn snapshot_event(state: &NumberState) -> pb::NumberEvent {
    pb::NumberEvent {
        revision: state.revision,
        r#type: pb::NumberEventType::Snapshot as i32,
        number: Some(state.into()),
        previous: None,
        commit_time: Some(crate::wire::time::timestamp(state.update_time_ms)),
    }
}
