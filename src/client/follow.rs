//! [`RecordFollower`]: `StreamCallRecords` / `StreamQualityRecords` from a cursor, resumed
//! after breaks, with the cursor committed as the caller gets through the records.
//!
//! Two positions are kept. *Delivered*: the `next_cursor` of the last message handed out; a
//! broken stream re-opens after it, so within one process nothing repeats. *Handled*: what
//! the caller is done with. A batch counts as handled when the caller asks for the next one
//! (or calls [`RecordFollower::commit`]), Kafka-consumer style, so a caller that writes each
//! batch durably before asking again never has a cursor committed past what it wrote. The
//! handled cursor is committed (`CommitCursor`) every `commit_every_records` records and,
//! while anything is pending, every `commit_interval`, also while the stream is idle.
//!
//! A process restarted without a cursor resumes after the committed one: the records between
//! it and the last delivered come again, each with its cursor, for the caller to drop.
//! `CURSOR_EXPIRED` (the cursor is older than retention) is returned, never skipped over.

use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::ClientError;
use super::retry::{Backoff, BackoffPolicy};
use crate::pb::v1 as pb;
use crate::pb::v1::call_record_service_client::CallRecordServiceClient;

/// Which records to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Call detail records (`StreamCallRecords`).
    Call,
    /// Call quality records (`StreamQualityRecords`).
    Quality,
}

impl RecordKind {
    fn wire(self) -> pb::RecordKind {
        match self {
            Self::Call => pb::RecordKind::CallRecords,
            Self::Quality => pb::RecordKind::QualityRecords,
        }
    }
}

/// Options of a [`RecordFollower`].
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Call or quality records.
    pub kind: RecordKind,
    /// Start after this cursor; `None`: after the carrier's committed cursor (or the oldest
    /// record when none is committed).
    pub after_cursor: Option<i64>,
    /// Keep the stream open for new records; `false`: end at the end of the log.
    pub follow: bool,
    /// Only records of this tenant; empty: all.
    pub tenant_id: String,
    /// Commit after this many handled records.
    pub commit_every_records: u64,
    /// Commit handled records at least this often.
    pub commit_interval: Duration,
    /// Waits between attempts after a break; by default it never gives up.
    pub backoff: BackoffPolicy,
}

impl FollowOptions {
    /// Follows `kind` from the committed cursor, committing every 1,000 records or 5 s.
    pub fn new(kind: RecordKind) -> Self {
        Self {
            kind,
            after_cursor: None,
            follow: true,
            tenant_id: String::new(),
            commit_every_records: 1000,
            commit_interval: Duration::from_secs(5),
            backoff: BackoffPolicy::default(),
        }
    }
}

/// Records of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Records {
    /// From `StreamCallRecords`.
    Call(Vec<pb::CallRecord>),
    /// From `StreamQualityRecords`.
    Quality(Vec<pb::QualityRecord>),
}

impl Records {
    /// How many records.
    pub fn len(&self) -> usize {
        match self {
            Self::Call(r) => r.len(),
            Self::Quality(r) => r.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One batch handed to the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordBatch {
    /// The records, each with its cursor.
    pub records: Records,
    /// Where the stream resumes after this batch.
    pub next_cursor: i64,
}

enum Stream {
    Call(Streaming<pb::StreamCallRecordsResponse>),
    Quality(Streaming<pb::StreamQualityRecordsResponse>),
}

impl Stream {
    async fn message(&mut self) -> Result<Option<RecordBatch>, Status> {
        Ok(match self {
            Self::Call(s) => s.message().await?.map(|m| RecordBatch {
                records: Records::Call(m.records),
                next_cursor: m.next_cursor,
            }),
            Self::Quality(s) => s.message().await?.map(|m| RecordBatch {
                records: Records::Quality(m.records),
                next_cursor: m.next_cursor,
            }),
        })
    }
}

/// A resuming, committing record stream; see the module documentation.
pub struct RecordFollower {
    client: CallRecordServiceClient<Channel>,
    options: FollowOptions,
    stream: Option<Stream>,
    /// The `next_cursor` of the last batch handed out.
    delivered: Option<i64>,
    /// Records in the last batch handed out (handled once the caller asks again).
    outstanding: u64,
    /// What the caller is done with and the server does not know yet.
    handled: Option<i64>,
    /// Handled records not yet committed.
    pending: u64,
    committed: Option<i64>,
    /// When the pending position must be committed at the latest.
    commit_due: Option<Instant>,
    /// The stream ended (not following).
    finished: bool,
    backoff: Backoff,
}

impl RecordFollower {
    /// A follower over `channel` (use [`super::connect_lazy`] to outlive restarts).
    pub fn new(channel: Channel, options: FollowOptions) -> Self {
        Self {
            client: CallRecordServiceClient::new(channel),
            backoff: Backoff::new(options.backoff),
            delivered: options.after_cursor,
            options,
            stream: None,
            outstanding: 0,
            handled: None,
            pending: 0,
            committed: None,
            commit_due: None,
            finished: false,
        }
    }

    /// The `next_cursor` of the last batch handed out.
    pub fn delivered(&self) -> Option<i64> {
        self.delivered
    }

    /// The last cursor this follower committed.
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// The next batch, after marking the previous one handled (committing it when a threshold
    /// is reached). `None` when the stream ended (not following); everything delivered is
    /// committed by then. Errors: the server refuses for good (`CURSOR_EXPIRED`,
    /// `CURSOR_AHEAD`, `PERMISSION_DENIED`...), or the backoff's attempts run out.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>, ClientError> {
        self.mark_handled();
        if self.pending >= self.options.commit_every_records {
            self.commit_handled().await?;
        }
        loop {
            if self.finished {
                self.commit_handled().await?;
                return Ok(None);
            }
            if self.stream.is_none() {
                match self.open().await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(status) => {
                        self.retry_after(status).await?;
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let due = self.commit_due;
            let received = tokio::select! {
                received = stream.message() => received,
                () = sleep_until(due) => {
                    self.commit_handled().await?;
                    continue;
                }
            };
            match received {
                Ok(Some(batch)) => {
                    self.backoff.reset();
                    self.delivered = Some(batch.next_cursor);
                    if batch.records.is_empty() {
                        // Only the resume point moved (records filtered out): nothing to handle.
                        self.mark_handled();
                        continue;
                    }
                    self.outstanding = batch.records.len() as u64;
                    return Ok(Some(batch));
                }
                Ok(None) if !self.options.follow => {
                    self.stream = None;
                    self.finished = true;
                }
                // A followed stream never ends by itself: an end is a break like any other.
                Ok(None) => {
                    self.stream = None;
                    self.retry_after(Status::unavailable("the record stream ended"))
                        .await?;
                }
                Err(status) => {
                    self.stream = None;
                    self.retry_after(status).await?;
                }
            }
        }
    }

    /// Declares everything delivered handled and commits it now (before a clean exit).
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        self.mark_handled();
        self.commit_handled().await
    }

    /// The last batch handed out is done with.
    fn mark_handled(&mut self) {
        if self.delivered > self.handled.max(self.committed) {
            self.handled = self.delivered;
            self.pending += std::mem::take(&mut self.outstanding);
            self.commit_due
                .get_or_insert_with(|| Instant::now() + self.options.commit_interval);
        }
        self.outstanding = 0;
    }

    /// Commits the handled position if it moved. Transient failures are logged and left
    /// pending (the next threshold tries again); others are returned.
    async fn commit_handled(&mut self) -> Result<(), ClientError> {
        let Some(cursor) = self.handled.filter(|&h| Some(h) > self.committed) else {
            self.commit_due = None;
            return Ok(());
        };
        let request = pb::CommitCursorRequest {
            kind: self.options.kind.wire() as i32,
            cursor,
        };
        match self.client.commit_cursor(request).await {
            Ok(_) => {
                self.committed = Some(cursor);
                self.pending = 0;
                self.commit_due = None;
                Ok(())
            }
            Err(status) if super::retry::is_retryable(&status) => {
                tracing::warn!(code = ?status.code(), cursor, "commit failed; will retry");
                self.commit_due = Some(Instant::now() + self.options.commit_interval);
                Ok(())
            }
            Err(status) => Err(status.into()),
        }
    }

    /// Opens the stream after the delivered position.
    async fn open(&mut self) -> Result<Stream, Status> {
        let options = pb::RecordStreamOptions {
            after_cursor: self.delivered,
            tenant_id: self.options.tenant_id.clone(),
            follow: self.options.follow,
            ..Default::default()
        };
        Ok(match self.options.kind {
            RecordKind::Call => Stream::Call(
                self.client
                    .stream_call_records(pb::StreamCallRecordsRequest {
                        options: Some(options),
                    })
                    .await?
                    .into_inner(),
            ),
            RecordKind::Quality => Stream::Quality(
                self.client
                    .stream_quality_records(pb::StreamQualityRecordsRequest {
                        options: Some(options),
                    })
                    .await?
                    .into_inner(),
            ),
        })
    }

    /// Waits before the next attempt, or gives up with `status`.
    async fn retry_after(&mut self, status: Status) -> Result<(), ClientError> {
        let Some(delay) = self.backoff.next_delay(&status) else {
            return Err(status.into());
        };
        tracing::warn!(
            code = ?status.code(),
            message = status.message(),
            retry_in_ms = delay.as_millis() as u64,
            "record stream broke; reconnecting"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
