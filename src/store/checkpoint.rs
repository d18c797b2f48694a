//! SQLite's WAL checkpoints, run beside the writer instead of inside its commits.
//!
//! SQLite copies the write-ahead log back into the database file (a checkpoint, with its
//! `fsync`s) inside whichever commit takes the log past `wal_autocheckpoint` pages (1,000 by
//! default). Every write transaction here runs on one connection, one after another, so that
//! commit made every later write wait: with 2,000-row commits of durations, every fifth one
//! took 17-22 ms instead of 6-8 ms, a quarter of an upload's time (instrumented, 100 commits).
//!
//! Here the writer's threshold is raised to [`WRITER_AUTOCHECKPOINT_PAGES`], a bound on the
//! log's size should this task fall behind, and a passive checkpoint runs on a pooled
//! connection when a write begins, at most once per [`MIN_INTERVAL`]. A passive checkpoint
//! never blocks the writer or readers, and copies what was committed before it; the next
//! write after a complete one starts the log again from its beginning, so the file stays
//! small. Durability is unchanged: a commit is in the log when it returns, as before.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::sync::Notify;

/// The writer's own threshold: past this many log pages, its commit checkpoints itself (64 MiB
/// of 4 KiB pages), as every connection does at 1,000 by default.
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// Checkpoints start at most this often; writes in between are copied by the next.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Asks for a checkpoint; held by the store. Dropping it ends the checkpointing task.
#[derive(Debug)]
pub(super) struct Checkpoints {
    wake: Arc<Notify>,
}

impl Checkpoints {
    /// Starts checkpointing through `db` (a pool of the same SQLite file) whenever asked.
    pub(super) fn start(db: &DatabaseConnection) -> Self {
        let wake = Arc::new(Notify::new());
        tokio::spawn(run(db.clone(), Arc::downgrade(&wake)));
        Self { wake }
    }

    /// A write begins: checkpoint what was committed before it (soon, beside it).
    pub(super) fn write_begins(&self) {
        self.wake.notify_one();
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        // Wake the task so that it sees the store is gone.
        self.wake.notify_one();
    }
}

async fn run(db: DatabaseConnection, wake: Weak<Notify>) {
    loop {
        let Some(notify) = wake.upgrade() else {
            return;
        };
        notify.notified().await;
        drop(notify);
        if wake.strong_count() == 0 {
            return;
        }
        if let Err(err) = db
            .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
            .await
        {
            // The writer's own threshold still bounds the log.
            tracing::warn!(error = %err, "SQLite checkpoint failed");
        }
        tokio::time::sleep(MIN_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use sea_orm::ConnectionTrait;

    use crate::store::{Store, StoreOptions};

    /// What write transactions commit reaches the database file soon, though the writer's own
    /// threshold (64 MiB of log) is far away: the checkpoints run beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_pages_reach_the_database_file_without_the_writers_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("checkpoint.db");
        let store = Store::open(&StoreOptions {
            url: format!("sqlite://{}?mode=rwc", file.display()),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(10),
        })
        .await
        .unwrap();
        let tx = store.begin_write().await.unwrap();
        tx.execute_unprepared("CREATE TABLE scratch (b BLOB NOT NULL)")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let size = || std::fs::metadata(&file).map_or(0, |m| m.len());
        let before = size();
        // 10 transactions of 300 rows of 1 KB: about 3 MB of log, 5 % of the threshold.
        for _ in 0..10 {
            let tx = store.begin_write().await.unwrap();
            tx.execute_unprepared(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) \
                 INSERT INTO scratch SELECT randomblob(1000) FROM n",
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        // The last commit is checkpointed when the next write begins.
        store.begin_write().await.unwrap().commit().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while size() < before + 2_900_000 {
            assert!(
                Instant::now() < deadline,
                "the database file stayed at {} bytes (from {before})",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
