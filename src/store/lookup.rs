//! Reading the one row a key selects, without sea-orm's `LIMIT ?`.
//!
//! `Select::one()` adds `LIMIT ?` with the limit as a bound parameter. SQLite (3.51, bundled)
//! uses an integer LIMIT while planning and therefore marks such a statement to be prepared
//! again whenever its parameters are rebound, which sqlx does on every execution: the statement
//! cache never helps, and each call parses and plans its SQL afresh. Under `GetNumber` at 64
//! concurrent calls, that re-preparation was 42 % of the SQLite worker thread's samples (perf).
//! A primary or unique key selects at most one row, so the limit is not needed.

use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Select};

/// The row `select` finds, where its filter is on a primary or unique key (so it matches at
/// most one row); `None` when none matches.
pub(super) async fn by_key<E, C>(select: Select<E>, db: &C) -> Result<Option<E::Model>, DbErr>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    Ok(select.all(db).await?.into_iter().next())
}
