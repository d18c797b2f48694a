//! Batched writes: multi-row statements sized to the bind-variable limit, and keyed write
//! transactions retried when a concurrent writer stored the same key first.

use std::future::Future;

use sea_orm::{DbErr, EntityTrait, Iterable, SqlErr};

use super::StoreError;

/// Bind variables one statement may carry. SQLite allows 32,766 (PostgreSQL 65,535) and
/// `insert_many` does not split; chunks stay below this, which leaves room under SQLite's limit
/// for the few variables of a statement's own filters (a carrier id beside a key list).
const BINDS_PER_STATEMENT: usize = 32_000;

/// How many times a keyed write transaction runs (one try, three retries) before a lost race
/// is reported as an error. A retry classifies the batch again and sees the other writer's
/// rows, so one retry settles all but pathological contention.
const ATTEMPTS: usize = 4;

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

/// What one attempt of a keyed write transaction did.
pub(super) enum Attempt<T> {
    /// It committed; the result.
    Committed(T),
    /// It found that a concurrent writer stored some of its keys first (fewer rows inserted
    /// than classified new) and rolled back.
    Raced,
}

/// Runs `attempt`, a write transaction that classifies a batch by key and inserts the new
/// ones, up to [`ATTEMPTS`] times while it loses a race to a concurrent writer of the same
/// keys: a unique violation, or [`Attempt::Raced`]. Any other error ends it at once. Races
/// happen only on PostgreSQL, where writers of different carriers run in parallel; SQLite's
/// IMMEDIATE transactions order every writer.
pub(super) async fn retry_raced<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>, StoreError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        let lost = match attempt().await {
            Ok(Attempt::Committed(result)) => return Ok(result),
            Ok(Attempt::Raced) => StoreError::Db(DbErr::Custom(format!(
                "concurrent writers stored the same keys first {tries} times in a row"
            ))),
            Err(e) if is_unique_violation(&e) => e,
            Err(e) => return Err(e),
        };
        if tries >= ATTEMPTS {
            return Err(lost);
        }
        tracing::debug!(attempt = tries, error = %lost, "keyed write lost a race; retrying");
    }
}

fn is_unique_violation(err: &StoreError) -> bool {
    matches!(err, StoreError::Db(db) if matches!(db.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))))
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

    /// A write that keeps losing races runs exactly ATTEMPTS times, then fails.
    #[tokio::test]
    async fn races_are_retried_a_bounded_number_of_times() {
        let tries = Cell::new(0);
        let result: Result<(), _> = retry_raced(|| {
            tries.set(tries.get() + 1);
            async { Ok(Attempt::Raced) }
        })
        .await;
        assert!(matches!(result, Err(StoreError::Db(DbErr::Custom(_)))));
        assert_eq!(tries.get(), ATTEMPTS);

        let tries = Cell::new(0);
        let result = retry_raced(|| {
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

    /// Unique violations are retried; other errors end the write at once.
    #[tokio::test]
    async fn only_unique_violations_are_retried() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect(url).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .await
            .unwrap();
        db.execute_unprepared("INSERT INTO t VALUES ('a')")
            .await
            .unwrap();
        for (sql, expected_tries) in [
            ("INSERT INTO t VALUES ('a')", ATTEMPTS),
            ("INSERT INTO missing VALUES ('a')", 1),
        ] {
            let tries = Cell::new(0);
            let result: Result<(), _> = retry_raced(|| {
                tries.set(tries.get() + 1);
                let db = &db;
                async move {
                    db.execute_unprepared(sql).await?;
                    Ok(Attempt::Committed(()))
                }
            })
            .await;
            assert!(result.is_err(), "{sql}");
            assert_eq!(tries.get(), expected_tries, "{sql}");
        }
    }
}
