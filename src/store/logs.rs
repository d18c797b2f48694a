//! The per-carrier gapless logs (number events, call records, quality records): their shape,
//! the counter that numbers their entries, and the one purge routine for all three.
//!
//! Each log's entries are numbered 1, 2, 3... per carrier by a counter on the carrier row,
//! taken inside the writing transaction (DESIGN §4). Retention deletes a carrier's entries
//! oldest first and records how far it went in a mark on the carrier row, so a reader that
//! resumes before the mark learns that entries are gone instead of silently skipping them.

use sea_orm::prelude::Expr;
use sea_orm::sea_query::ExprTrait;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::batch::{Attempt, retry_write};
use super::batched::KeyedRead;
use super::entities::{call_record, carrier, number_event, quality_record};
use super::keyed_reads::LogBoundsRows;
use super::{Store, StoreError};
use crate::domain::ids::CarrierId;
use crate::domain::records::LogBounds;

/// A carrier's gapless log table: which columns place an entry, and which carrier-row
/// columns count and purge it.
pub(crate) trait GaplessLog: EntityTrait {
    /// Whose log an entry is in.
    const CARRIER: Self::Column;
    /// The entry's position in its carrier's log (a cursor or a revision).
    const POSITION: Self::Column;
    /// When the entry was written; retention counts from here.
    const WRITTEN_AT: Self::Column;
    /// The carrier-row counter that hands out positions.
    const COUNTER: carrier::Column;
    /// The carrier-row mark: every entry up to it was purged.
    const PURGED_THROUGH: carrier::Column;
    /// The log's bounds as the carrier row records them (the values of `PURGED_THROUGH` and
    /// `COUNTER`).
    fn bounds(carrier: &carrier::Model) -> LogBounds;
}

impl GaplessLog for number_event::Entity {
    const CARRIER: Self::Column = number_event::Column::CarrierId;
    const POSITION: Self::Column = number_event::Column::Revision;
    const WRITTEN_AT: Self::Column = number_event::Column::CommitTimeMs;
    const COUNTER: carrier::Column = carrier::Column::NumberRevision;
    const PURGED_THROUGH: carrier::Column = carrier::Column::EventsPurgedThrough;
    fn bounds(c: &carrier::Model) -> LogBounds {
        LogBounds {
            purged_through: c.events_purged_through,
            latest: c.number_revision,
        }
    }
}

impl GaplessLog for call_record::Entity {
    const CARRIER: Self::Column = call_record::Column::CarrierId;
    const POSITION: Self::Column = call_record::Column::Cursor;
    const WRITTEN_AT: Self::Column = call_record::Column::IngestTimeMs;
    const COUNTER: carrier::Column = carrier::Column::CallRecordCursor;
    const PURGED_THROUGH: carrier::Column = carrier::Column::CallRecordsPurgedThrough;
    fn bounds(c: &carrier::Model) -> LogBounds {
        LogBounds {
            purged_through: c.call_records_purged_through,
            latest: c.call_record_cursor,
        }
    }
}

impl GaplessLog for quality_record::Entity {
    const CARRIER: Self::Column = quality_record::Column::CarrierId;
    const POSITION: Self::Column = quality_record::Column::Cursor;
    const WRITTEN_AT: Self::Column = quality_record::Column::IngestTimeMs;
    const COUNTER: carrier::Column = carrier::Column::QualityRecordCursor;
    const PURGED_THROUGH: carrier::Column = carrier::Column::QualityRecordsPurgedThrough;
    fn bounds(c: &carrier::Model) -> LogBounds {
        LogBounds {
            purged_through: c.quality_records_purged_through,
            latest: c.quality_record_cursor,
        }
    }
}

/// Takes `n` positions of log `L` from the carrier's counter inside `tx` and returns the
/// carrier row after it (`None`: no such carrier). The positions `latest - n + 1 ..= latest`
/// belong to the caller. As the transaction's first write it locks the carrier row until
/// commit, which orders the carrier's writers; `n = 0` only takes that lock.
pub(super) async fn take_positions<L: GaplessLog, C: ConnectionTrait>(
    tx: &C,
    carrier_id: &str,
    n: i64,
) -> Result<Option<carrier::Model>, StoreError> {
    let updated = carrier::Entity::update_many()
        .col_expr(L::COUNTER, Expr::col(L::COUNTER).add(n))
        .filter(carrier::Column::CarrierId.eq(carrier_id))
        .exec_with_returning(tx)
        .await?;
    Ok(updated.into_iter().next())
}

impl Store {
    /// The bounds of `carrier`'s log `L`, read on their own (the keyed read watches batch);
    /// `None` when the carrier is not registered.
    pub(super) async fn read_log_bounds<L: GaplessLog + 'static>(
        &self,
        carrier: &str,
    ) -> Result<Option<LogBounds>, StoreError> {
        let key = carrier.to_owned();
        Ok(LogBoundsRows::<L>::read(&self.shared.db, &[&key])
            .await?
            .remove(carrier))
    }

    /// The bounds of `carrier`'s number-event log, if the carrier is registered. Every watch
    /// reads them when it starts, so they are read together with the lookups queued beside
    /// them (`batched.rs`), each by a query that starts after it was asked.
    pub(crate) async fn number_log_bounds(
        &self,
        carrier: &CarrierId,
    ) -> Result<Option<LogBounds>, StoreError> {
        self.shared
            .number_log_bounds
            .get(&self.shared.db, carrier.to_string())
            .await
    }

    /// Purges the entries of log `L` written before `cutoff_ms`, carrier by carrier, at most
    /// `batch` positions per transaction. Returns how many were deleted.
    ///
    /// Per carrier: find the newest expired entry; then, in transactions that lock the
    /// carrier row, delete through min(newest expired, purge mark + `batch`) and move the mark
    /// there, until the newest expired entry is gone. Each transaction deletes a prefix of
    /// positions, never a time range, so what remains above the mark stays gapless.
    pub(super) async fn purge_log<L: GaplessLog>(
        &self,
        cutoff_ms: i64,
        batch: u64,
    ) -> Result<u64, StoreError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let carriers: Vec<String> = carrier::Entity::find()
            .select_only()
            .column(carrier::Column::CarrierId)
            .into_tuple()
            .all(&self.shared.db)
            .await?;
        let mut deleted = 0;
        for carrier_id in carriers {
            loop {
                let Some(newest_expired) = L::find()
                    .select_only()
                    .column(L::POSITION)
                    .filter(L::CARRIER.eq(carrier_id.as_str()))
                    .filter(L::WRITTEN_AT.lt(cutoff_ms))
                    .order_by_desc(L::POSITION)
                    .into_tuple::<i64>()
                    .one(&self.shared.db)
                    .await?
                else {
                    break;
                };
                let step = retry_write(|| self.purge_step::<L>(&carrier_id, newest_expired, batch))
                    .await?;
                let Some((rows, through)) = step else {
                    break;
                };
                deleted += rows;
                if through >= newest_expired {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// One transaction of [`Store::purge_log`]: under the carrier's lock, deletes the
    /// carrier's entries through min(`newest_expired`, purge mark + `batch`) and moves the
    /// mark there. Returns the rows deleted and that position; `None` without such carrier.
    async fn purge_step<L: GaplessLog>(
        &self,
        carrier_id: &str,
        newest_expired: i64,
        batch: i64,
    ) -> Result<Attempt<Option<(u64, i64)>>, StoreError> {
        let tx = self.begin_write().await?;
        let Some(locked) = take_positions::<L, _>(&tx, carrier_id, 0).await? else {
            return Ok(Attempt::Committed(None));
        };
        let purged = L::bounds(&locked).purged_through;
        let through = std::cmp::min(newest_expired, purged.saturating_add(batch));
        let rows = L::delete_many()
            .filter(L::CARRIER.eq(carrier_id))
            .filter(L::POSITION.lte(through))
            .exec(&tx)
            .await?
            .rows_affected;
        carrier::Entity::update_many()
            .col_expr(
                L::PURGED_THROUGH,
                Expr::value(std::cmp::max(through, purged)),
            )
            .filter(carrier::Column::CarrierId.eq(carrier_id))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(Attempt::Committed(Some((rows, through))))
    }
}
