//! Write transactions: multi-row statements sized to the bind-variable limit, and the one
//! retry loop every write transaction of the store runs in.
//!
//! A write is retried, as a whole and from a fresh transaction, when it lost to a concurrent
//! writer: a transient database error ([`StoreError::Conflict`]: deadlock, serialization
//! failure, lock not available, SQLite busy) after a jittered exponential backoff, or a lost
//! race for the same keys ([`Attempt::Raced`]: fewer rows written than the attempt classified)
//! at once, since the other writer has committed by then and the next attempt reads its rows.
//! When the attempts run out the write fails with [`StoreError::Conflict`]. Every other error
//! (a constraint, an unreachable database) ends the write at once.

use std::future::Future;
use std::hash::BuildHasher;
use std::time::Duration;

use sea_orm::sea_query::{Expr, IntoIden, IntoTableRef, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Iterable};

use super::StoreError;

/// Bind variables one statement may carry. SQLite allows 32,766 (PostgreSQL 65,535) and
/// `insert_many` does not split; chunks stay below this, which leaves room under SQLite's limit
/// for the few variables of a statement's own filters (a carrier id beside a key list).
const BINDS_PER_STATEMENT: usize = 32_000;

/// How many times a write transaction runs (one try, four retries) before a conflict is
/// reported. A retry of a lost race classifies the batch again and sees the other writer's
/// rows, so one retry settles all but pathological contention.
const ATTEMPTS: u32 = 5;

/// The longest first backoff after a transient error; each further one may be twice as long
/// (10, 20, 40, 80 ms: at most 150 ms in all).
const BACKOFF_BASE: Duration = Duration::from_millis(10);

/// Splits `items` into runs that fit one statement when each item binds `binds_per_item`
/// variables: a row binds one per column ([`columns`]), a key of an `IN` list one.
pub(super) fn per_statement<I: IntoIterator>(
    items: I,
    binds_per_item: usize,
) -> impl Iterator<Item = Vec<I::Item>> {
    let size = std::cmp::max(1, BINDS_PER_STATEMENT / std::cmp::max(1, binds_per_item));
    let mut items = items.into_iter();
    std::iter::from_fn(move || {
        let chunk: Vec<I::Item> = items.by_ref().take(size).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
}

/// The number of columns of `E`: the variables one of its rows binds in a multi-row insert.
pub(super) fn columns<E: EntityTrait>() -> usize {
    E::Column::iter().count()
}

/// Inserts `rows` into `table`, each the values of `columns` in order, as multi-row
/// `INSERT`s of at most one statement's binds, skipping a row whose `key` is stored already;
/// returns how many rows were inserted. Rows are plain values, as a hand-written multi-row
/// insert binds them: through `ActiveModel` and `insert_many`, their conversion and clones
/// were a quarter of the runtime's side of a 2,000-row commit (durations-only profile).
pub(super) async fn insert_new_rows<C, T, Col>(
    conn: &C,
    table: T,
    columns: &[Col],
    key: &[Col],
    rows: Vec<Vec<Expr>>,
) -> Result<u64, StoreError>
where
    C: ConnectionTrait,
    T: IntoTableRef + Clone,
    Col: IntoIden + Copy,
{
    let mut inserted = 0;
    for chunk in per_statement(rows, columns.len()) {
        let mut insert = Query::insert();
        insert
            .into_table(table.clone())
            .columns(columns.iter().copied());
        for row in chunk {
            insert
                .values(row)
                .map_err(|e| StoreError::Db(DbErr::Custom(e.to_string())))?;
        }
        insert.on_conflict(
            OnConflict::columns(key.iter().copied())
                .do_nothing()
                .to_owned(),
        );
        inserted += conn.execute(&insert).await?.rows_affected();
    }
    Ok(inserted)
}

/// How an ingestion attempt learns which keys are stored already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Assume none is: insert, and give up (roll back) if some row was not inserted.
    AssumeNew,
    /// Read the stored rows of the batch's keys first, and classify each record.
    Existing,
}

/// What one attempt of a write transaction did.
pub(super) enum Attempt<T> {
    /// It committed; the result.
    Committed(T),
    /// It found that a concurrent writer wrote some of its keys first (fewer rows written than
    /// it classified) and rolled back.
    Raced,
}

/// Runs `attempt`, one write transaction, up to [`ATTEMPTS`] times while it loses to a
/// concurrent writer: a transient error ([`StoreError::Conflict`], after a backoff) or
/// [`Attempt::Raced`] (at once). Any other error ends it at once; a conflict that outlives the
/// attempts is returned as [`StoreError::Conflict`].
pub(super) async fn retry_write<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>, StoreError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        let (lost, backoff) = match attempt().await {
            Ok(Attempt::Committed(result)) => return Ok(result),
            Ok(Attempt::Raced) => (
                StoreError::Conflict(DbErr::Custom(format!(
                    "concurrent writers wrote the same keys first {tries} times in a row"
                ))),
                None,
            ),
            Err(StoreError::Conflict(e)) => {
                (StoreError::Conflict(e), Some(backoff_before_retry(tries)))
            }
            Err(e) => return Err(e),
        };
        if tries >= ATTEMPTS {
            return Err(lost);
        }
        tracing::debug!(attempt = tries, error = %lost, "write lost to a concurrent writer; retrying");
        if let Some(pause) = backoff {
            tokio::time::sleep(pause).await;
        }
    }
}

/// The pause before retry number `retry` (1, 2, ...): "full jitter", uniform in
/// `[0, BACKOFF_BASE × 2^(retry - 1)]`, so writers that collided do not collide again in step.
fn backoff_before_retry(retry: u32) -> Duration {
    let cap = BACKOFF_BASE.saturating_mul(1 << retry.saturating_sub(1).min(16));
    let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    // Each `RandomState` is keyed afresh (per-thread random keys, bumped on every `new`): a
    // cheap uniform draw without a random-number crate.
    let draw = std::collections::hash_map::RandomState::new().hash_one(retry);
    Duration::from_nanos(draw % cap_ns.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use sea_orm::{ConnectionTrait, Database};

    use super::*;
    use crate::store::entities::call_record;

    /// Chunks hold as many items as the variable budget allows, in order, none empty.
    #[test]
    fn chunks_follow_the_variable_budget() {
        let sizes: Vec<usize> = per_statement(0..70_000, 10).map(|c| c.len()).collect();
        assert_eq!(
            sizes,
            [3_200; 21]
                .iter()
                .chain(&[2_800])
                .copied()
                .collect::<Vec<_>>()
        );
        let keys: Vec<Vec<u32>> = per_statement(0..5, 1).collect();
        assert_eq!(keys, [vec![0, 1, 2, 3, 4]]);
        assert_eq!(per_statement(Vec::<u8>::new(), 3).count(), 0);
        // Rows wider than the budget still go one per statement.
        assert_eq!(per_statement(0..2, 40_000).count(), 2);
        assert_eq!(columns::<call_record::Entity>(), 10);
    }

    /// A write that keeps losing races runs exactly ATTEMPTS times, then fails with a
    /// conflict; one that wins on a retry returns its result.
    #[tokio::test]
    async fn races_are_retried_a_bounded_number_of_times() {
        let tries = Cell::new(0);
        let result: Result<(), _> = retry_write(|| {
            tries.set(tries.get() + 1);
            async { Ok(Attempt::Raced) }
        })
        .await;
        assert!(matches!(result, Err(StoreError::Conflict(_))));
        assert_eq!(tries.get(), ATTEMPTS);

        let tries = Cell::new(0);
        let result = retry_write(|| {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move {
                Ok(if n < 2 {
                    Attempt::Raced
                } else {
                    Attempt::Committed(n)
                })
            }
        })
        .await;
        assert_eq!(result.ok(), Some(2));
    }

    /// Backoffs are drawn at random below a cap that doubles from 10 ms.
    #[test]
    fn backoff_is_jittered_below_a_doubling_cap() {
        for retry in 1..ATTEMPTS {
            let cap = BACKOFF_BASE * (1 << (retry - 1));
            let draws: Vec<Duration> = (0..200).map(|_| backoff_before_retry(retry)).collect();
            assert!(draws.iter().all(|d| *d <= cap), "retry {retry}: {draws:?}");
            let distinct: std::collections::BTreeSet<&Duration> = draws.iter().collect();
            assert!(distinct.len() > 100, "retry {retry}: not jittered");
            assert!(draws.iter().any(|d| *d > cap / 2) && draws.iter().any(|d| *d < cap / 2));
        }
    }

    /// A write that keeps failing with a transient error (here SQLite's "database is locked",
    /// another connection holding the write lock) is retried ATTEMPTS times and then fails as
    /// a conflict; a constraint violation or another error ends the write at once.
    #[tokio::test]
    async fn only_transient_errors_and_races_are_retried() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect(&url).await.unwrap();
        db.execute_unprepared("PRAGMA busy_timeout = 0")
            .await
            .unwrap();
        db.execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .await
            .unwrap();
        db.execute_unprepared("INSERT INTO t VALUES ('a')")
            .await
            .unwrap();
        let holder = Database::connect(&url).await.unwrap();
        let attempts = |sql: &'static str| {
            let db = &db;
            async move {
                let tries = Cell::new(0);
                let result: Result<(), _> = retry_write(|| {
                    tries.set(tries.get() + 1);
                    async move {
                        db.execute_unprepared(sql).await?;
                        Ok(Attempt::Committed(()))
                    }
                })
                .await;
                (result, tries.get())
            }
        };

        holder.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
        let (result, tries) = attempts("INSERT INTO t VALUES ('b')").await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
        assert_eq!(tries, ATTEMPTS);
        holder.execute_unprepared("ROLLBACK").await.unwrap();

        let (result, tries) = attempts("INSERT INTO t VALUES ('a')").await;
        assert!(
            matches!(
                result,
                Err(StoreError::Constraint {
                    constraint: crate::store::Constraint::Unique,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(tries, 1);

        let (result, tries) = attempts("INSERT INTO missing VALUES ('a')").await;
        assert!(matches!(result, Err(StoreError::Db(_))), "{result:?}");
        assert_eq!(tries, 1);

        let (result, tries) = attempts("INSERT INTO t VALUES ('c')").await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(tries, 1);
    }
}
