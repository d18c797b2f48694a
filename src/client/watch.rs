//! [`NumberWatcher`]: `WatchNumbers` as one continuous stream across reconnects, restarts and
//! log compaction.
//!
//! The watcher keeps one position: the revision after which everything was delivered, or
//! "inside a snapshot". After a break it re-opens from that position: `start_revision` = the
//! last revision, so every later event comes exactly once. When the server answers
//! `FAILED_PRECONDITION` / `REVISION_COMPACTED` (the events after that revision are purged)
//! or a snapshot broke off half-way, it re-opens with `include_snapshot = true` and yields
//! [`WatchItem::SnapshotStart`] first: the `SNAPSHOT` events that follow, up to
//! [`WatchItem::SnapshotComplete`], replace the caller's state. Nothing is skipped silently.

use std::collections::VecDeque;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use super::ClientError;
use super::retry::{Backoff, BackoffPolicy, reason};
use crate::pb::v1 as pb;
use crate::pb::v1::assignment_service_client::AssignmentServiceClient;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Changes from now on (the revision current when the watcher first connects).
    Now,
    /// Every current number as a snapshot, then changes.
    Snapshot,
    /// Every change after this revision (a position saved earlier; `0` = the whole log).
    After(i64),
}

/// Options of a [`NumberWatcher`].
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Where to start.
    pub start: WatchStart,
    /// Only numbers of this tenant; empty: all of the carrier's numbers.
    pub tenant_id: String,
    /// How often an idle stream reports its revision; `None`: the server's default.
    pub progress_interval: Option<Duration>,
    /// Waits between attempts after a break; by default it never gives up.
    pub backoff: BackoffPolicy,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            start: WatchStart::Now,
            tenant_id: String::new(),
            progress_interval: None,
            backoff: BackoffPolicy::default(),
        }
    }
}

/// Why a snapshot starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotCause {
    /// The caller asked for one ([`WatchStart::Snapshot`]).
    Requested,
    /// The events after `after_revision` were purged from the server's log (the oldest kept
    /// is `oldest_revision`): a re-snapshot replaces them.
    Compacted {
        /// The revision the watcher had reached.
        after_revision: i64,
        /// The oldest revision the server still keeps.
        oldest_revision: i64,
    },
    /// The stream broke during a snapshot: it starts over.
    Interrupted,
}

/// What the watcher yields.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// A change (or, between `SnapshotStart` and `SnapshotComplete`, a `SNAPSHOT` event).
    /// Boxed: an event is large, the other items are a few words.
    Event(Box<pb::NumberEvent>),
    /// A snapshot begins: forget the numbers you hold; the `SNAPSHOT` events that follow are
    /// the current state. This is the re-snapshot marker after compaction.
    SnapshotStart { cause: SnapshotCause },
    /// The snapshot is complete as of `revision`; changes after it follow.
    SnapshotComplete { revision: i64 },
    /// Nothing changed up to `revision` (an idle stream's checkpoint): a position to save.
    Progress { revision: i64 },
}

/// The watcher's position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    /// [`WatchStart::Now`] before the first connection: the current revision is not known yet.
    Now,
    /// Everything up to this revision was delivered.
    After(i64),
    /// A snapshot must be opened, for this cause.
    SnapshotDue(SnapshotCause),
    /// A snapshot is being delivered.
    InSnapshot,
}

/// A resuming watch of the carrier's numbers; see the module documentation.
pub struct NumberWatcher {
    client: AssignmentServiceClient<Channel>,
    tenant_id: String,
    progress_interval: Option<prost_types::Duration>,
    position: Position,
    stream: Option<Streaming<pb::WatchNumbersResponse>>,
    /// Items received but not yet handed out, each with the resume revision once it is.
    queue: VecDeque<(WatchItem, Option<i64>)>,
    /// The revision after which everything handed out so far lies; `None` inside a snapshot.
    delivered: Option<i64>,
    backoff: Backoff,
    /// Streams re-opened after a break, for callers that report them.
    reconnects: u64,
}

impl NumberWatcher {
    /// A watcher over `channel` (use [`super::connect_lazy`] so that it outlives restarts).
    pub fn new(channel: Channel, options: WatchOptions) -> Self {
        let position = match options.start {
            WatchStart::Now => Position::Now,
            WatchStart::Snapshot => Position::SnapshotDue(SnapshotCause::Requested),
            WatchStart::After(revision) => Position::After(revision),
        };
        let delivered = match position {
            Position::After(revision) => Some(revision),
            _ => None,
        };
        Self {
            client: AssignmentServiceClient::new(channel),
            delivered,
            tenant_id: options.tenant_id,
            progress_interval: options.progress_interval.and_then(|d| d.try_into().ok()),
            position,
            stream: None,
            queue: VecDeque::new(),
            backoff: Backoff::new(options.backoff),
            reconnects: 0,
        }
    }

    /// The revision after which everything has been handed out, to save and resume from with
    /// [`WatchStart::After`]; `None` before the first connection or inside a snapshot.
    pub fn revision(&self) -> Option<i64> {
        self.delivered
    }

    /// How many times the stream was re-opened after a break.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The next item. Waits (retrying with backoff) through outages; returns an error only
    /// when the server refuses the watch for good (`PERMISSION_DENIED`, `OUT_OF_RANGE` for a
    /// saved revision ahead of the server, ...) or the backoff's attempts run out.
    pub async fn next(&mut self) -> Result<WatchItem, ClientError> {
        loop {
            if let Some((item, delivered)) = self.queue.pop_front() {
                self.delivered = delivered;
                return Ok(item);
            }
            let Some(stream) = self.stream.as_mut() else {
                if let Err(status) = self.open().await {
                    self.broke(status).await?;
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(message)) => {
                    self.backoff.reset();
                    self.absorb(message);
                }
                // A watch never ends by itself: an end is a break like any other.
                Ok(None) => {
                    self.broke(Status::unavailable("the watch stream ended"))
                        .await?;
                }
                Err(status) => self.broke(status).await?,
            }
        }
    }

    /// Opens the stream for the current position.
    async fn open(&mut self) -> Result<(), Status> {
        if self.position == Position::Now {
            let page = self
                .client
                .list_numbers(pb::ListNumbersRequest {
                    page_size: 1,
                    tenant_id: self.tenant_id.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            self.position = Position::After(page.revision);
            self.delivered = Some(page.revision);
        }
        let mut request = pb::WatchNumbersRequest {
            start_revision: None,
            include_snapshot: false,
            tenant_id: self.tenant_id.clone(),
            progress_interval: self.progress_interval,
        };
        let snapshot = match &self.position {
            Position::After(revision) => {
                request.start_revision = Some(*revision);
                None
            }
            Position::SnapshotDue(cause) => {
                request.include_snapshot = true;
                Some(cause.clone())
            }
            Position::InSnapshot => {
                request.include_snapshot = true;
                Some(SnapshotCause::Interrupted)
            }
            Position::Now => None,
        };
        let stream = self.client.watch_numbers(request).await?.into_inner();
        if let Some(cause) = snapshot {
            self.queue
                .push_back((WatchItem::SnapshotStart { cause }, None));
            self.position = Position::InSnapshot;
        }
        self.stream = Some(stream);
        Ok(())
    }

    /// Queues the items of one message and moves the position past them.
    fn absorb(&mut self, message: pb::WatchNumbersResponse) {
        for event in message.events {
            if let Position::After(last) = self.position {
                if event.revision <= last {
                    // Already delivered (cannot happen with a correct server; never repeat).
                    continue;
                }
                self.position = Position::After(event.revision);
            }
            let delivered = match self.position {
                Position::After(revision) => Some(revision),
                _ => None,
            };
            self.queue
                .push_back((WatchItem::Event(Box::new(event)), delivered));
        }
        let Some(checkpoint) = message.checkpoint else {
            return;
        };
        let revision = checkpoint.revision;
        match pb::WatchCheckpointType::try_from(checkpoint.r#type) {
            Ok(pb::WatchCheckpointType::SnapshotComplete) => {
                self.position = Position::After(revision);
                self.queue
                    .push_back((WatchItem::SnapshotComplete { revision }, Some(revision)));
            }
            Ok(pb::WatchCheckpointType::Progress) => {
                if let Position::After(last) = self.position
                    && revision > last
                {
                    self.position = Position::After(revision);
                    self.queue
                        .push_back((WatchItem::Progress { revision }, Some(revision)));
                }
            }
            _ => {}
        }
    }

    /// Handles a failed open or a broken stream: re-snapshot after compaction, wait and retry
    /// when worth it, else give up with the status.
    async fn broke(&mut self, status: Status) -> Result<(), ClientError> {
        self.stream = None;
        // What was queued from the broken stream is still handed out; only the stream goes.
        if status.code() == Code::FailedPrecondition && reason(&status) == "REVISION_COMPACTED" {
            let after_revision = match self.position {
                Position::After(revision) => revision,
                _ => return Err(status.into()),
            };
            let oldest_revision = metadata(&status, "oldest_revision");
            tracing::warn!(
                after_revision,
                oldest_revision,
                "watch position compacted away; re-opening with a snapshot"
            );
            self.position = Position::SnapshotDue(SnapshotCause::Compacted {
                after_revision,
                oldest_revision,
            });
            return Ok(());
        }
        let Some(delay) = self.backoff.next_delay(&status) else {
            return Err(status.into());
        };
        tracing::warn!(
            code = ?status.code(),
            message = status.message(),
            retry_in_ms = delay.as_millis() as u64,
            "watch stream broke; reconnecting"
        );
        self.reconnects += 1;
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// An integer from the status's `ErrorInfo` metadata, 0 when absent.
fn metadata(status: &Status, key: &str) -> i64 {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get(key).and_then(|v| v.parse().ok()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: i64, kind: pb::NumberEventType) -> pb::NumberEvent {
        pb::NumberEvent {
            revision,
            r#type: kind as i32,
            ..Default::default()
        }
    }

    fn checkpoint(kind: pb::WatchCheckpointType, revision: i64) -> Option<pb::WatchCheckpoint> {
        Some(pb::WatchCheckpoint {
            r#type: kind as i32,
            revision,
        })
    }

    /// Hands out what is queued, as `next` does, with the revision after each item.
    fn drain(watcher: &mut NumberWatcher) -> Vec<(WatchItem, Option<i64>)> {
        std::iter::from_fn(|| {
            let (item, delivered) = watcher.queue.pop_front()?;
            watcher.delivered = delivered;
            Some((item, watcher.revision()))
        })
        .collect()
    }

    /// The position follows what was handed out: events move it, a repeated event is dropped,
    /// progress moves it only forward, and inside a snapshot there is none until it completes.
    #[tokio::test]
    async fn the_position_follows_what_was_handed_out() {
        let channel = tonic::transport::Endpoint::from_static("https://localhost:1").connect_lazy();
        let mut watcher = NumberWatcher::new(
            channel,
            WatchOptions {
                start: WatchStart::After(4),
                ..WatchOptions::default()
            },
        );
        assert_eq!(watcher.revision(), Some(4));
        watcher.absorb(pb::WatchNumbersResponse {
            events: vec![
                event(4, pb::NumberEventType::Assigned),
                event(5, pb::NumberEventType::Assigned),
                event(6, pb::NumberEventType::Unassigned),
            ],
            checkpoint: checkpoint(pb::WatchCheckpointType::Progress, 6),
        });
        watcher.absorb(pb::WatchNumbersResponse {
            events: Vec::new(),
            checkpoint: checkpoint(pb::WatchCheckpointType::Progress, 9),
        });
        let revisions: Vec<Option<i64>> = drain(&mut watcher).into_iter().map(|(_, r)| r).collect();
        assert_eq!(revisions, [Some(5), Some(6), Some(9)]);

        // A re-snapshot after compaction: no position until it completes.
        watcher.position = Position::InSnapshot;
        watcher.queue.push_back((
            WatchItem::SnapshotStart {
                cause: SnapshotCause::Interrupted,
            },
            None,
        ));
        watcher.absorb(pb::WatchNumbersResponse {
            events: vec![
                event(3, pb::NumberEventType::Snapshot),
                event(12, pb::NumberEventType::Snapshot),
            ],
            checkpoint: checkpoint(pb::WatchCheckpointType::SnapshotComplete, 14),
        });
        let handed: Vec<(WatchItem, Option<i64>)> = drain(&mut watcher);
        let revisions: Vec<Option<i64>> = handed.iter().map(|(_, r)| *r).collect();
        assert_eq!(revisions, [None, None, None, Some(14)]);
        assert_eq!(handed[3].0, WatchItem::SnapshotComplete { revision: 14 });
        assert_eq!(watcher.position, Position::After(14));
    }

    mod stand_in {
        //! A gateway stand-in whose first snapshot breaks after one number.
        use std::pin::Pin;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};

        use futures::{Stream, StreamExt};
        use tonic::{Request, Response, Status};

        use super::event;
        use crate::pb::v1 as pb;
        use crate::pb::v1::assignment_service_server::AssignmentService;

        pub(super) struct BrokenSnapshot {
            pub(super) watches: Arc<AtomicU32>,
        }

        type Watch = Pin<Box<dyn Stream<Item = Result<pb::WatchNumbersResponse, Status>> + Send>>;

        #[tonic::async_trait]
        impl AssignmentService for BrokenSnapshot {
            async fn list_numbers(
                &self,
                _: Request<pb::ListNumbersRequest>,
            ) -> Result<Response<pb::ListNumbersResponse>, Status> {
                Err(Status::unimplemented("not in this test"))
            }

            async fn get_number(
                &self,
                _: Request<pb::GetNumberRequest>,
            ) -> Result<Response<pb::GetNumberResponse>, Status> {
                Err(Status::unimplemented("not in this test"))
            }

            type WatchNumbersStream = Watch;

            async fn watch_numbers(
                &self,
                request: Request<pb::WatchNumbersRequest>,
            ) -> Result<Response<Watch>, Status> {
                assert!(request.into_inner().include_snapshot);
                let first = self.watches.fetch_add(1, Ordering::SeqCst) == 0;
                let one = pb::WatchNumbersResponse {
                    events: vec![event(3, pb::NumberEventType::Snapshot)],
                    checkpoint: None,
                };
                let stream: Watch = if first {
                    Box::pin(futures::stream::iter([
                        Ok(one),
                        Err(Status::unavailable("connection reset")),
                    ]))
                } else {
                    let rest = pb::WatchNumbersResponse {
                        events: vec![event(7, pb::NumberEventType::Snapshot)],
                        checkpoint: super::checkpoint(pb::WatchCheckpointType::SnapshotComplete, 9),
                    };
                    Box::pin(
                        futures::stream::iter([Ok(one), Ok(rest)])
                            .chain(futures::stream::pending()),
                    )
                };
                Ok(Response::new(stream))
            }
        }
    }

    /// A snapshot that breaks half-way starts over, marked `Interrupted`: the caller drops
    /// what it had and gets the whole snapshot again, then its completion.
    #[tokio::test]
    async fn a_broken_snapshot_starts_over_marked() {
        use crate::pb::v1::assignment_service_server::AssignmentServiceServer;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let watches = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let service = AssignmentServiceServer::new(stand_in::BrokenSnapshot {
            watches: watches.clone(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut watcher = NumberWatcher::new(
            channel,
            WatchOptions {
                start: WatchStart::Snapshot,
                backoff: BackoffPolicy {
                    initial: Duration::from_millis(1),
                    max: Duration::from_millis(5),
                    max_attempts: None,
                },
                ..WatchOptions::default()
            },
        );
        let mut items = Vec::new();
        while !matches!(items.last(), Some(WatchItem::SnapshotComplete { .. })) {
            items.push(watcher.next().await.unwrap());
        }
        let start = |cause| WatchItem::SnapshotStart { cause };
        let snap = |r| WatchItem::Event(Box::new(event(r, pb::NumberEventType::Snapshot)));
        assert_eq!(
            items,
            [
                start(SnapshotCause::Requested),
                snap(3),
                start(SnapshotCause::Interrupted),
                snap(3),
                snap(7),
                WatchItem::SnapshotComplete { revision: 9 },
            ]
        );
        assert_eq!(watcher.revision(), Some(9));
        assert_eq!(watcher.reconnects(), 1);
        assert_eq!(watches.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
