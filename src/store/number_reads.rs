//! `GetNumber` reads, coalesced: the lookups that arrive while earlier ones are being read
//! are answered together by one keyed query.
//!
//! One lookup costs little in the database and much around it: on SQLite, sqlx runs each
//! connection on its own thread, so every query is two thread hand-offs (43.5 % of the
//! process's CPU under `GetNumber` at 64 concurrent calls, perf); on PostgreSQL it is a round
//! trip and 60-75 µs of the server's CPU. Here at most [`IN_FLIGHT`] queries run at once; the
//! lookups that queue meanwhile go into the next one, up to [`MAX_BATCH`] keys. A lone lookup
//! is read at once, so nothing waits for company.
//!
//! Every lookup is read by a query that starts after it was asked, so it sees every change
//! committed before it arrived, as a query of its own would. A row is handed only to a lookup
//! by the carrier it belongs to: another carrier's number is not found, whoever else asked.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::StoreError;
use super::entities::number;
use super::numbers::decode_state;
use crate::domain::ids::{CarrierId, E164};
use crate::domain::number::NumberState;

/// Queries reading lookups at once; the rest queue for the next.
const IN_FLIGHT: usize = 1;

/// Most keys one query reads.
const MAX_BATCH: usize = 256;

/// Lookups waiting for a query, beyond which askers wait to queue.
const QUEUE: usize = 4 * MAX_BATCH;

/// What one lookup gets back.
type Reply = Result<Option<NumberState>, StoreError>;

/// A lookup waiting for its query.
struct Lookup {
    carrier: CarrierId,
    number: E164,
    reply: oneshot::Sender<Reply>,
}

/// The coalescing reader of one store; cheap to clone. Its task starts with the first lookup,
/// on the runtime that asks, and ends when the last clone is dropped.
#[derive(Clone, Debug, Default)]
pub(super) struct NumberReads {
    queue: Arc<OnceLock<mpsc::Sender<Lookup>>>,
}

impl NumberReads {
    /// `carrier`'s number `number`, read with the lookups queued beside it; `None` when it does
    /// not exist or is another carrier's.
    pub(super) async fn get(
        &self,
        db: &DatabaseConnection,
        carrier: &CarrierId,
        number: &E164,
    ) -> Reply {
        let queue = self.queue.get_or_init(|| start(db.clone()));
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            carrier: carrier.clone(),
            number: number.clone(),
            reply,
        };
        if queue.send(lookup).await.is_ok()
            && let Ok(reply) = answer.await
        {
            return reply;
        }
        // The reader's task is gone (the runtime that started it has ended): read alone.
        let mut rows = read(db, &[number.as_str()]).await?;
        owned_by(rows.remove(number.as_str()), carrier)
            .map(|row| decode_state(&row.state))
            .transpose()
    }
}

/// Starts the reader's task and returns its queue.
fn start(db: DatabaseConnection) -> mpsc::Sender<Lookup> {
    let (queue, lookups) = mpsc::channel(QUEUE);
    tokio::spawn(run(db, lookups));
    queue
}

/// Takes every queued lookup (up to [`MAX_BATCH`]) whenever a query may start, and answers
/// them from one query.
async fn run(db: DatabaseConnection, mut lookups: mpsc::Receiver<Lookup>) {
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
            answer(&db, batch).await;
            drop(permit);
        });
    }
}

/// Reads the rows of `batch`'s numbers and hands each lookup its own.
async fn answer(db: &DatabaseConnection, batch: Vec<Lookup>) {
    let mut keys: Vec<&str> = batch.iter().map(|l| l.number.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    match read(db, &keys).await {
        Ok(rows) => {
            for lookup in batch {
                let row = owned_by(rows.get(lookup.number.as_str()).cloned(), &lookup.carrier);
                let state = row.map(|row| decode_state(&row.state)).transpose();
                // An asker that gave up has dropped its end; nothing to do.
                let _ = lookup.reply.send(state);
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

/// `row` when it is `carrier`'s.
fn owned_by(row: Option<number::Model>, carrier: &CarrierId) -> Option<number::Model> {
    row.filter(|row| row.carrier_id == carrier.as_str())
}

/// The rows of `keys` (distinct numbers), by number. The key list is padded to a power of two
/// by repeating its last key, so that a handful of statement shapes cover every batch size and
/// each connection's prepared-statement cache keeps them all.
async fn read(
    db: &DatabaseConnection,
    keys: &[&str],
) -> Result<HashMap<String, number::Model>, DbErr> {
    let Some(last) = keys.last() else {
        return Ok(HashMap::new());
    };
    let padded = keys.len().next_power_of_two();
    let values = keys
        .iter()
        .chain(std::iter::repeat_n(last, padded - keys.len()))
        .map(|k| (*k).to_owned());
    let rows = number::Entity::find()
        .filter(number::Column::Number.is_in(values))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.number.clone(), row))
        .collect())
}
