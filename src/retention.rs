//! Retention: how long each class of data is kept, one purge pass over every class, and the
//! periodic loop that runs passes while the server serves (DESIGN §4).
//!
//! On PostgreSQL only one instance purges at a time: a pass runs under an advisory lock and is
//! skipped while another instance holds it. Each class is purged in bounded transactions, so a
//! pass never holds a carrier's lock for long.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::records::{CallRecord, QualityRecord};
use crate::store::{Store, StoreError, now_ms};

/// The PostgreSQL advisory-lock key held by the instance that is purging (`pg_locks.objid`
/// shows its low 32 bits).
pub const PURGE_LOCK_KEY: i64 = crate::store::PURGE_LOCK_KEY;

/// A class of data with its own retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataClass {
    /// Each carrier's number-event log, counted from commit.
    NumberEvents,
    /// Each carrier's call-record log, counted from ingestion.
    CallRecords,
    /// Each carrier's quality-record log, counted from ingestion.
    QualityRecords,
    /// Carrier-reported call durations, counted from receipt.
    Durations,
    /// The audit log, counted from each event's time.
    AuditEvents,
}

impl DataClass {
    /// Every class, in the order a pass purges them.
    pub const ALL: [Self; 5] = [
        Self::NumberEvents,
        Self::CallRecords,
        Self::QualityRecords,
        Self::Durations,
        Self::AuditEvents,
    ];

    /// The class in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::NumberEvents => "number events",
            Self::CallRecords => "call records",
            Self::QualityRecords => "quality records",
            Self::Durations => "call durations",
            Self::AuditEvents => "audit events",
        }
    }

    /// The class's stable key, as `GetRetentionStatus` and the stored purge runs name it.
    pub fn key(self) -> &'static str {
        match self {
            Self::NumberEvents => "number_events",
            Self::CallRecords => "call_records",
            Self::QualityRecords => "quality_records",
            Self::Durations => "call_durations",
            Self::AuditEvents => "audit_events",
        }
    }
}

/// How long each class is kept, and how much one transaction deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Number events older than this are purged.
    pub number_events: Duration,
    /// Call records ingested longer ago than this are purged.
    pub call_records: Duration,
    /// Quality records ingested longer ago than this are purged.
    pub quality_records: Duration,
    /// Durations received longer ago than this are purged.
    pub durations: Duration,
    /// Audit events older than this are purged.
    pub audit_events: Duration,
    /// Entries deleted per transaction: bounds how long a purge holds a carrier's lock.
    pub batch: u64,
}

/// One day, the unit of the retention settings.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl RetentionPolicy {
    /// Entries deleted per transaction by default.
    pub const DEFAULT_BATCH: u64 = 10_000;

    /// The periods configured in days in `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            number_events: DAY * settings.number_event_retention_days,
            call_records: DAY * settings.call_record_retention_days,
            quality_records: DAY * settings.quality_record_retention_days,
            durations: DAY * settings.duration_retention_days,
            audit_events: DAY * settings.audit_retention_days,
            batch: Self::DEFAULT_BATCH,
        }
    }

    /// A policy that purges nothing; set a class's period to purge that class alone.
    pub fn keep_everything() -> Self {
        Self {
            number_events: Duration::MAX,
            call_records: Duration::MAX,
            quality_records: Duration::MAX,
            durations: Duration::MAX,
            audit_events: Duration::MAX,
            batch: Self::DEFAULT_BATCH,
        }
    }

    /// How long `class` is kept.
    pub fn period(&self, class: DataClass) -> Duration {
        match class {
            DataClass::NumberEvents => self.number_events,
            DataClass::CallRecords => self.call_records,
            DataClass::QualityRecords => self.quality_records,
            DataClass::Durations => self.durations,
            DataClass::AuditEvents => self.audit_events,
        }
    }

    /// At `now_ms`, entries of `class` written before this instant (Unix ms) are expired.
    fn cutoff_ms(&self, class: DataClass, now_ms: i64) -> i64 {
        let period = i64::try_from(self.period(class).as_millis()).unwrap_or(i64::MAX);
        now_ms.saturating_sub(period)
    }
}

/// Rows deleted, per class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Number events deleted.
    pub number_events: u64,
    /// Call records deleted.
    pub call_records: u64,
    /// Quality records deleted.
    pub quality_records: u64,
    /// Durations deleted.
    pub durations: u64,
    /// Audit events deleted.
    pub audit_events: u64,
}

impl Deleted {
    fn slot(&mut self, class: DataClass) -> &mut u64 {
        match class {
            DataClass::NumberEvents => &mut self.number_events,
            DataClass::CallRecords => &mut self.call_records,
            DataClass::QualityRecords => &mut self.quality_records,
            DataClass::Durations => &mut self.durations,
            DataClass::AuditEvents => &mut self.audit_events,
        }
    }

    fn add(&mut self, other: Self) {
        self.number_events += other.number_events;
        self.call_records += other.call_records;
        self.quality_records += other.quality_records;
        self.durations += other.durations;
        self.audit_events += other.audit_events;
    }
}

/// What one purge pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeReport {
    /// The pass ran: rows deleted per class, and the classes whose purge failed (logged; the
    /// next pass resumes them, as every purge transaction that committed stays done).
    Ran {
        /// Rows deleted per class.
        deleted: Deleted,
        /// Classes whose purge stopped on an error.
        failed: Vec<DataClass>,
    },
    /// Another instance holds the purge lock; this pass purged nothing.
    Skipped,
    /// The purge lock could not be taken (the database is unreachable); nothing was purged.
    LockUnavailable(String),
}

impl PurgeReport {
    /// Rows deleted per class; none when the pass did not run.
    pub fn deleted(&self) -> Deleted {
        match self {
            Self::Ran { deleted, .. } => *deleted,
            Self::Skipped | Self::LockUnavailable(_) => Deleted::default(),
        }
    }
}

/// Purges every class past `policy` as of `now_ms` (Unix ms), unless another instance is
/// purging. Failures are logged and reported, never fatal: the next pass retries.
pub async fn purge_pass(store: &Store, policy: &RetentionPolicy, now_ms: i64) -> PurgeReport {
    match store.exclusively(purge_all(store, policy, now_ms)).await {
        Ok(Some(report)) => report,
        Ok(None) => {
            tracing::debug!("another instance is purging; skipped");
            PurgeReport::Skipped
        }
        Err(e) => {
            tracing::warn!(error = %e, "purge lock unavailable; retrying later");
            PurgeReport::LockUnavailable(e.to_string())
        }
    }
}

/// The pass itself, once the lock is held.
async fn purge_all(store: &Store, policy: &RetentionPolicy, now_ms: i64) -> PurgeReport {
    let mut deleted = Deleted::default();
    let mut failed = Vec::new();
    for class in DataClass::ALL {
        let cutoff_ms = policy.cutoff_ms(class, now_ms);
        let outcome = match purge_class(store, class, cutoff_ms, policy.batch).await {
            Ok(n) => {
                *deleted.slot(class) = n;
                if n > 0 {
                    tracing::info!(deleted = n, "purged {} past retention", class.name());
                }
                "ok".to_owned()
            }
            Err(e) => {
                failed.push(class);
                tracing::warn!(error = %e, "purge of {} failed; retrying later", class.name());
                format!("failed: {e}")
            }
        };
        // Shown by `opconnect admin retention`; a failure to store it only loses that view.
        if let Err(e) = store
            .record_purge(class.key(), &outcome, *deleted.slot(class))
            .await
        {
            tracing::warn!(error = %e, "cannot store how the purge of {} ended", class.name());
        }
    }
    PurgeReport::Ran { deleted, failed }
}

async fn purge_class(
    store: &Store,
    class: DataClass,
    cutoff_ms: i64,
    batch: u64,
) -> Result<u64, StoreError> {
    match class {
        DataClass::NumberEvents => store.purge_number_events(cutoff_ms, batch).await,
        DataClass::CallRecords => store.purge_records::<CallRecord>(cutoff_ms, batch).await,
        DataClass::QualityRecords => store.purge_records::<QualityRecord>(cutoff_ms, batch).await,
        DataClass::Durations => store.purge_durations(cutoff_ms, batch).await,
        DataClass::AuditEvents => store.purge_audit(cutoff_ms, batch).await,
    }
}

/// What a running loop has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Passes finished, whether they ran, were skipped or failed.
    pub passes: u64,
    /// Rows deleted by all of them, per class.
    pub deleted: Deleted,
    /// The latest pass's report.
    pub last: Option<PurgeReport>,
}

/// A retention loop running on its own task.
#[derive(Debug)]
pub struct RetentionTask {
    task: JoinHandle<()>,
    progress: watch::Receiver<Progress>,
}

impl RetentionTask {
    /// Follows the loop's progress: the receiver changes after every pass.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Stops the loop now, even in the middle of a pass (whatever committed stays done; the
    /// purge lock's session ends with it).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Waits for the loop to end, which it does once its `stop` token is cancelled and any
    /// pass in progress has finished.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Starts the retention loop on a task of its own: a purge pass every `interval` (the first
/// one `interval` after the start) until `stop`.
pub fn spawn(
    store: Store,
    policy: RetentionPolicy,
    interval: Duration,
    stop: CancellationToken,
) -> RetentionTask {
    let (progress_tx, progress) = watch::channel(Progress::default());
    let task = tokio::spawn(run(store, policy, interval, stop, progress_tx));
    RetentionTask { task, progress }
}

/// Runs a purge pass every `interval` (the first one `interval` after the start) until `stop`,
/// publishing what the passes did on `progress`.
async fn run(
    store: Store,
    policy: RetentionPolicy,
    interval: Duration,
    stop: CancellationToken,
    progress: watch::Sender<Progress>,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let report = purge_pass(&store, &policy, now_ms()).await;
        progress.send_modify(|p| {
            p.passes += 1;
            p.deleted.add(report.deleted());
            p.last = Some(report);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days in the settings become the same cut-offs as `now - days × 86,400,000 ms`.
    #[test]
    fn cutoffs_follow_the_settings() {
        let settings = Settings::default();
        let policy = RetentionPolicy::from_settings(&settings);
        let now = 1_800_000_000_000;
        let day_ms = 86_400_000;
        assert_eq!(
            policy.cutoff_ms(DataClass::NumberEvents, now),
            now - 7 * day_ms
        );
        assert_eq!(
            policy.cutoff_ms(DataClass::CallRecords, now),
            now - 30 * day_ms
        );
        assert_eq!(
            policy.cutoff_ms(DataClass::QualityRecords, now),
            now - 30 * day_ms
        );
        assert_eq!(
            policy.cutoff_ms(DataClass::Durations, now),
            now - 548 * day_ms
        );
        assert_eq!(policy.batch, RetentionPolicy::DEFAULT_BATCH);
    }

    /// Keeping everything expires nothing, whatever the clock says; a zero period expires all.
    #[test]
    fn extreme_periods_saturate() {
        let keep = RetentionPolicy::keep_everything();
        for class in DataClass::ALL {
            assert!(keep.cutoff_ms(class, i64::MAX) <= 0, "{class:?}");
        }
        let purge_calls = RetentionPolicy {
            call_records: Duration::ZERO,
            ..keep
        };
        assert_eq!(purge_calls.cutoff_ms(DataClass::CallRecords, 42), 42);
        assert!(purge_calls.cutoff_ms(DataClass::QualityRecords, 42) < 0);
    }

    /// Totals add per class.
    #[test]
    fn deleted_adds_per_class() {
        let mut total = Deleted {
            call_records: 2,
            ..Deleted::default()
        };
        total.add(Deleted {
            call_records: 3,
            durations: 1,
            ..Deleted::default()
        });
        assert_eq!(
            total,
            Deleted {
                call_records: 5,
                durations: 1,
                ..Deleted::default()
            }
        );
    }
}
