//! Keyed reads, batched: the lookups that arrive while earlier ones are being read are
//! answered together by one keyed query.
//!
//! One lookup costs little in the database and much around it: on SQLite, sqlx runs each
//! connection on its own thread, so every query is two thread hand-offs (43.5 % of the
//! process's CPU under `GetNumber` at 64 concurrent calls, perf); on PostgreSQL it is a round
//! trip and 60-75 µs of the server's CPU. Here at most [`IN_FLIGHT`] queries of one reader run
//! at once; the lookups that queue meanwhile go into the next one, up to [`MAX_BATCH`] keys. A
//! lone lookup is read at once, so nothing waits for company.
//!
//! Every lookup is read by a query that starts after it was asked, so it sees every change
//! committed before it arrived, as a query of its own would.
//!
//! Two readers use it: `GetNumber` (`numbers.rs`) and the log bounds every watch reads when it
//! starts (`logs.rs`), which a reconnecting fleet asks for by the thousand at once: 10,000
//! watches opening together were 10,000 queries, and the allocations of those in flight at
//! once stayed in the server's resident memory after they were freed (heaptrack).

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::StoreError;

/// Queries of one reader reading lookups at once; the rest queue for the next.
const IN_FLIGHT: usize = 1;

/// Most keys one query reads.
pub(super) const MAX_BATCH: usize = 256;

/// Lookups waiting for a query, beyond which askers wait to queue.
const QUEUE: usize = 4 * MAX_BATCH;

/// A query that reads rows by key.
pub(super) trait KeyedRead: Send + Sync + 'static {
    /// What a lookup asks for.
    type Key: Clone + Eq + Hash + Ord + Debug + Send + Sync + 'static;
    /// What it gets back.
    type Row: Clone + Debug + Send + Sync + 'static;

    /// The rows of `keys` (distinct, at most [`MAX_BATCH`]), by key; a key without a row is
    /// absent.
    fn read(
        db: &DatabaseConnection,
        keys: &[&Self::Key],
    ) -> impl Future<Output = Result<HashMap<Self::Key, Self::Row>, DbErr>> + Send;
}

/// What one lookup gets back.
type Reply<R> = Result<Option<<R as KeyedRead>::Row>, StoreError>;

/// A lookup waiting for its query.
struct Lookup<R: KeyedRead> {
    key: R::Key,
    reply: oneshot::Sender<Reply<R>>,
}

/// The batching reader of one store for one query; cheap to clone. Its task starts with the
/// first lookup, on the runtime that asks, and ends when the last clone is dropped.
#[derive(Debug)]
pub(super) struct Batched<R: KeyedRead> {
    queue: Arc<OnceLock<mpsc::Sender<Lookup<R>>>>,
}

impl<R: KeyedRead> Default for Batched<R> {
    fn default() -> Self {
        Self {
            queue: Arc::default(),
        }
    }
}

impl<R: KeyedRead> Clone for Batched<R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<R: KeyedRead> Debug for Lookup<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup").field("key", &self.key).finish()
    }
}

impl<R: KeyedRead> Batched<R> {
    /// The row of `key`, read with the lookups queued beside it; `None` when there is none.
    pub(super) async fn get(&self, db: &DatabaseConnection, key: R::Key) -> Reply<R> {
        let queue = self.queue.get_or_init(|| start::<R>(db.clone()));
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            key: key.clone(),
            reply,
        };
        if queue.send(lookup).await.is_ok()
            && let Ok(reply) = answer.await
        {
            return reply;
        }
        // The reader's task is gone (the runtime that started it has ended): read alone.
        Ok(R::read(db, &[&key]).await?.remove(&key))
    }
}

/// Starts the reader's task and returns its queue.
fn start<R: KeyedRead>(db: DatabaseConnection) -> mpsc::Sender<Lookup<R>> {
    let (queue, lookups) = mpsc::channel(QUEUE);
    tokio::spawn(run::<R>(db, lookups));
    queue
}

/// Takes every queued lookup (up to [`MAX_BATCH`]) whenever a query may start, and answers
/// them from one query.
async fn run<R: KeyedRead>(db: DatabaseConnection, mut lookups: mpsc::Receiver<Lookup<R>>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if lookups.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let db = db.clone();
        tokio::spawn(async move {
            answer::<R>(&db, batch).await;
            drop(permit);
        });
    }
}

/// Reads the rows of `batch`'s keys and hands each lookup its own.
async fn answer<R: KeyedRead>(db: &DatabaseConnection, batch: Vec<Lookup<R>>) {
    let mut keys: Vec<&R::Key> = batch.iter().map(|l| &l.key).collect();
    keys.sort_unstable();
    keys.dedup();
    match R::read(db, &keys).await {
        Ok(rows) => {
            for lookup in batch {
                // An asker that gave up has dropped its end; nothing to do.
                let _ = lookup.reply.send(Ok(rows.get(&lookup.key).cloned()));
            }
        }
        Err(err) => {
            let message = err.to_string();
            for lookup in batch {
                let _ = lookup
                    .reply
                    .send(Err(StoreError::Db(DbErr::Custom(message.clone()))));
            }
        }
    }
}

/// `keys` as owned values, padded to a power of two by repeating the last, so that a handful
/// of statement shapes (`IN (...)` lists) cover every batch size and each connection's
/// prepared-statement cache keeps them all.
pub(super) fn padded<K: Clone>(keys: &[&K]) -> Vec<K> {
    let Some(last) = keys.last() else {
        return Vec::new();
    };
    keys.iter()
        .chain(std::iter::repeat_n(
            last,
            keys.len().next_power_of_two() - keys.len(),
        ))
        .map(|k| (*k).clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_to_a_power_of_two_with_the_last() {
        assert_eq!(padded::<u8>(&[]), Vec::<u8>::new());
        assert_eq!(padded(&[&1]), [1]);
        assert_eq!(padded(&[&1, &2, &3]), [1, 2, 3, 3]);
        assert_eq!(padded(&[&1; 5]).len(), 8);
    }
}
