//! The audit writer: events go into a bounded queue and one task appends them to the
//! `audit_events` table in batches, so an RPC never waits for an audit row to commit.
//!
//! A batch is written when it holds [`BATCH`] events or [`FLUSH_AFTER`] after its first event,
//! whichever comes first. When the queue is full (the database is slower than the events), the
//! recording call waits for room up to [`ENQUEUE_WAIT`] (backpressure, counted as `waited`)
//! rather than drop the event; only past that wait, or when a batch still fails after
//! [`WRITE_ATTEMPTS`] tries, are events dropped, each one counted (`audit_events{reason=
//! "dropped"}`) and logged at error level. An audit log that loses events silently would be
//! worse than none.
//!
//! [`Auditor::flush`] waits until everything queued before it is written: a listing of the
//! log sees every event this instance recorded before the listing began.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use crate::domain::audit::AuditEvent;
use crate::metrics::StreamMetrics;
use crate::store::Store;

/// Events waiting to be written, at most.
const QUEUE: usize = 8_192;
/// Events written per transaction, at most.
const BATCH: usize = 500;
/// Longest an event waits in a partial batch.
const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// Longest a recording call waits for room in a full queue.
const ENQUEUE_WAIT: Duration = Duration::from_secs(2);
/// Tries of one batch before its events are dropped.
const WRITE_ATTEMPTS: u32 = 3;

/// What the writer task is asked to do.
enum Command {
    /// Write this event.
    Record(AuditEvent),
    /// Write everything queued so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// Records audit events; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Auditor {
    tx: mpsc::Sender<Command>,
    metrics: Arc<StreamMetrics>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Record(e) => write!(f, "Record({})", e.action),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Auditor {
    /// Starts the writer task over `store`. It ends when every [`Auditor`] is dropped, after
    /// writing what was queued.
    pub(crate) fn start(store: Store, metrics: Arc<StreamMetrics>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(store, rx, metrics.clone()));
        (Self { tx, metrics }, task)
    }

    /// Queues `event`; waits for room at most [`ENQUEUE_WAIT`] when the queue is full.
    pub(crate) async fn record(&self, event: AuditEvent) {
        let command = match self.tx.try_send(Command::Record(event)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(command)) => command,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.dropped(1, "the audit writer has stopped");
                return;
            }
        };
        self.metrics.audit("waited", 1);
        if self.tx.send_timeout(command, ENQUEUE_WAIT).await.is_err() {
            self.dropped(1, "the audit queue stayed full");
        }
    }

    /// Waits until every event queued before this call is written (or dropped).
    pub(crate) async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    fn dropped(&self, n: u64, why: &str) {
        self.metrics.audit("dropped", n);
        tracing::error!(events = n, "audit events dropped: {why}");
    }
}

/// The writer task: collects events into batches and appends them.
async fn write_loop(store: Store, mut rx: mpsc::Receiver<Command>, metrics: Arc<StreamMetrics>) {
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
    let mut due = Instant::now();
    loop {
        let command = tokio::select! {
            command = rx.recv() => command,
            () = sleep_until(due), if !batch.is_empty() => {
                write(&store, &mut batch, &metrics).await;
                continue;
            }
        };
        match command {
            Some(Command::Record(event)) => {
                if batch.is_empty() {
                    due = Instant::now() + FLUSH_AFTER;
                }
                batch.push(event);
                if batch.len() >= BATCH {
                    write(&store, &mut batch, &metrics).await;
                }
            }
            Some(Command::Flush(ack)) => {
                write(&store, &mut batch, &metrics).await;
                let _ = ack.send(());
            }
            None => {
                write(&store, &mut batch, &metrics).await;
                return;
            }
        }
    }
}

/// Appends `batch` and empties it; retries a failed write, then drops it loudly.
async fn write(store: &Store, batch: &mut Vec<AuditEvent>, metrics: &StreamMetrics) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    for attempt in 1..=WRITE_ATTEMPTS {
        match store.append_audit(batch).await {
            Ok(()) => {
                metrics.audit("written", n);
                batch.clear();
                return;
            }
            Err(e) if attempt < WRITE_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "writing audit events failed; retrying");
                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
            }
            Err(e) => {
                metrics.audit("dropped", n);
                tracing::error!(error = %e, events = n, "audit events dropped: the database refused them");
            }
        }
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::AuditFilter;
    use crate::store::StoreOptions;

    /// Events recorded from many tasks are all written, in batches, and counted; a flush
    /// returns once they are readable.
    #[tokio::test]
    async fn every_recorded_event_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions {
            url: format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display()),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
        let metrics = Arc::<StreamMetrics>::default();
        let (auditor, writer) = Auditor::start(store.clone(), metrics.clone());
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let auditor = auditor.clone();
                tokio::spawn(async move {
                    for i in 0..600 {
                        auditor
                            .record(AuditEvent::new(format!("carrier/c{t}"), "Test", "OK").count(i))
                            .await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        auditor.flush().await;
        let events = store
            .audit_page(&AuditFilter::default(), 0, 10_000)
            .await
            .unwrap();
        assert_eq!(events.len(), 2_400);
        let text = metrics.encode();
        assert!(
            text.contains("opconnect_audit_events_total{reason=\"written\"} 2400"),
            "{text}"
        );
        assert!(
            text.contains("opconnect_audit_events_total{reason=\"dropped\"} 0"),
            "{text}"
        );
        drop(auditor);
        writer.await.unwrap();
    }
}
