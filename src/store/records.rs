//! Record logs: each carrier's call-record and quality-record logs with gapless cursors, the
//! carriers' committed consumer cursors, and idempotent batch ingestion.
//!
//! An ingestion batch is one transaction: lock the carriers it names (in id order), look up
//! which keys exist, take `n` cursors from each carrier's counter for its new records, insert
//! them with one multi-row statement per chunk, commit. Cursors are therefore gapless and in
//! commit order, like number revisions.

use std::collections::{BTreeMap, HashMap};

use sea_orm::prelude::Expr;
use sea_orm::sea_query::{ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, SqlErr,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::entities::{call_record, carrier, consumer_cursor, quality_record};
use super::{Store, StoreError, notify, now_ms};
use crate::domain::durations::IngestOutcome;
use crate::domain::ids::{CarrierId, TenantId};
use crate::domain::records::{
    CallRecord, Classification, LogBounds, LogKind, QualityRecord, RecordFilter, RecordPage,
};
use crate::feed::Notice;

/// Keys looked up per statement.
const KEYS_PER_STATEMENT: usize = 500;
/// Rows per insert statement: 9 columns × 1,000 stays far below SQLite's 32,766 variables.
const ROWS_PER_STATEMENT: usize = 1_000;
/// How often a batch is retried when a concurrent writer stored the same key first.
const CONFLICT_RETRIES: usize = 3;

/// Storage of a log kind: its code and carrier-row columns.
trait LogColumns {
    fn code(self) -> i16;
    fn counter(self) -> carrier::Column;
    fn purged_column(self) -> carrier::Column;
}

impl LogColumns for LogKind {
    fn code(self) -> i16 {
        match self {
            Self::CallRecords => 1,
            Self::QualityRecords => 2,
        }
    }

    fn counter(self) -> carrier::Column {
        match self {
            Self::CallRecords => carrier::Column::CallRecordCursor,
            Self::QualityRecords => carrier::Column::QualityRecordCursor,
        }
    }

    fn purged_column(self) -> carrier::Column {
        match self {
            Self::CallRecords => carrier::Column::CallRecordsPurgedThrough,
            Self::QualityRecords => carrier::Column::QualityRecordsPurgedThrough,
        }
    }
}

/// A record that lives in a log.
pub trait LogRecord: Serialize + DeserializeOwned + Send + Sync {
    /// Its log.
    const KIND: LogKind;
    /// Its idempotency key: (`call_id`, `stream_id` or empty).
    fn key(&self) -> (String, String);
    /// Its tenant, for filters.
    fn tenant(&self) -> &TenantId;
    /// When its call or stream started, for time filters.
    fn start_time_ms(&self) -> i64;
    /// Classification code stored beside quality records; 0 for others.
    fn classification_code(&self) -> i16 {
        0
    }
    /// Columns stored beside call records for joins: platform duration, success, tenant's
    /// number.
    fn call_columns(&self) -> (i64, bool, String) {
        (0, false, String::new())
    }
}

impl LogRecord for CallRecord {
    const KIND: LogKind = LogKind::CallRecords;
    fn key(&self) -> (String, String) {
        (self.call_id().as_str().to_owned(), String::new())
    }
    fn tenant(&self) -> &TenantId {
        self.tenant_id()
    }
    fn start_time_ms(&self) -> i64 {
        CallRecord::start_time_ms(self)
    }
    fn call_columns(&self) -> (i64, bool, String) {
        (
            self.duration_ms(),
            self.successful(),
            self.tenant_number()
                .map(ToString::to_string)
                .unwrap_or_default(),
        )
    }
}

impl LogRecord for QualityRecord {
    const KIND: LogKind = LogKind::QualityRecords;
    fn key(&self) -> (String, String) {
        (
            self.call_id().as_str().to_owned(),
            self.stream_id().to_owned(),
        )
    }
    fn tenant(&self) -> &TenantId {
        self.tenant_id()
    }
    fn start_time_ms(&self) -> i64 {
        QualityRecord::start_time_ms(self)
    }
    fn classification_code(&self) -> i16 {
        match self.classification() {
            Classification::Good => 1,
            Classification::Poor(_) => 2,
            Classification::Unclassified => 3,
        }
    }
}

fn bounds_of(c: &carrier::Model, kind: LogKind) -> LogBounds {
    match kind {
        LogKind::CallRecords => LogBounds {
            purged_through: c.call_records_purged_through,
            latest: c.call_record_cursor,
        },
        LogKind::QualityRecords => LogBounds {
            purged_through: c.quality_records_purged_through,
            latest: c.quality_record_cursor,
        },
    }
}

fn is_unique_violation(err: &StoreError) -> bool {
    matches!(err, StoreError::Db(db) if matches!(db.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))))
}

/// A new row to insert.
struct NewRow {
    carrier_id: String,
    cursor: i64,
    key: (String, String),
    tenant_id: String,
    start_time_ms: i64,
    classification: i16,
    call_columns: (i64, bool, String),
    json: String,
}

/// Stored key → (carrier, JSON) for the keys of a batch.
async fn existing<C: ConnectionTrait>(
    tx: &C,
    kind: LogKind,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), (String, String)>, StoreError> {
    let mut call_ids: Vec<&str> = keys.iter().map(|(c, _)| c.as_str()).collect();
    call_ids.sort_unstable();
    call_ids.dedup();
    let mut found = HashMap::new();
    for chunk in call_ids.chunks(KEYS_PER_STATEMENT) {
        match kind {
            LogKind::CallRecords => {
                for row in call_record::Entity::find()
                    .filter(call_record::Column::CallId.is_in(chunk.iter().copied()))
                    .all(tx)
                    .await?
                {
                    found.insert((row.call_id, String::new()), (row.carrier_id, row.record));
                }
            }
            LogKind::QualityRecords => {
                for row in quality_record::Entity::find()
                    .filter(quality_record::Column::CallId.is_in(chunk.iter().copied()))
                    .all(tx)
                    .await?
                {
                    found.insert((row.call_id, row.stream_id), (row.carrier_id, row.record));
                }
            }
        }
    }
    Ok(found)
}

async fn insert_rows(
    tx: &DatabaseTransaction,
    kind: LogKind,
    rows: Vec<NewRow>,
    ingest_time_ms: i64,
) -> Result<(), StoreError> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<NewRow> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        match kind {
            LogKind::CallRecords => {
                let models = chunk.into_iter().map(|r| call_record::ActiveModel {
                    carrier_id: Set(r.carrier_id),
                    cursor: Set(r.cursor),
                    call_id: Set(r.key.0),
                    tenant_id: Set(r.tenant_id),
                    start_time_ms: Set(r.start_time_ms),
                    ingest_time_ms: Set(ingest_time_ms),
                    duration_ms: Set(r.call_columns.0),
                    successful: Set(r.call_columns.1),
                    tenant_number: Set(r.call_columns.2),
                    record: Set(r.json),
                });
                call_record::Entity::insert_many(models)
                    .exec_without_returning(tx)
                    .await?;
            }
            LogKind::QualityRecords => {
                let models = chunk.into_iter().map(|r| quality_record::ActiveModel {
                    carrier_id: Set(r.carrier_id),
                    cursor: Set(r.cursor),
                    call_id: Set(r.key.0),
                    stream_id: Set(r.key.1),
                    tenant_id: Set(r.tenant_id),
                    start_time_ms: Set(r.start_time_ms),
                    ingest_time_ms: Set(ingest_time_ms),
                    classification: Set(r.classification),
                    record: Set(r.json),
                });
                quality_record::Entity::insert_many(models)
                    .exec_without_returning(tx)
                    .await?;
            }
        }
    }
    Ok(())
}

/// A log's records of `carrier` with a cursor in `(after, latest]` that match `filter`, in
/// cursor order. `columns` names the log table's (carrier, cursor, tenant, start time).
fn log_query<E: EntityTrait>(
    columns: (E::Column, E::Column, E::Column, E::Column),
    carrier: &CarrierId,
    (after, latest): (i64, i64),
    filter: &RecordFilter,
) -> sea_orm::Select<E> {
    let (carrier_col, cursor, tenant, start) = columns;
    let mut query = E::find()
        .filter(carrier_col.eq(carrier.as_str()))
        .filter(cursor.gt(after))
        .filter(cursor.lte(latest));
    if let Some(t) = &filter.tenant_id {
        query = query.filter(tenant.eq(t.as_str()));
    }
    if let Some(from) = filter.start_from_ms {
        query = query.filter(start.gte(from));
    }
    if let Some(before) = filter.start_before_ms {
        query = query.filter(start.lt(before));
    }
    query.order_by_asc(cursor)
}

/// Takes `n` cursors of `kind` from the carrier's counter; returns the carrier row after it.
async fn advance_cursor<C: ConnectionTrait>(
    tx: &C,
    carrier_id: &str,
    kind: LogKind,
    n: i64,
) -> Result<Option<carrier::Model>, StoreError> {
    let updated = carrier::Entity::update_many()
        .col_expr(kind.counter(), Expr::col(kind.counter()).add(n))
        .filter(carrier::Column::CarrierId.eq(carrier_id))
        .exec_with_returning(tx)
        .await?;
    Ok(updated.into_iter().next())
}

impl Store {
    /// Ingests a batch of records, each for the carrier it names, in one transaction.
    /// Returns one outcome per record, in order.
    pub async fn ingest<T: LogRecord>(
        &self,
        batch: &[(CarrierId, T)],
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut attempt = 0;
        loop {
            match self.ingest_once(batch).await {
                Err(e) if is_unique_violation(&e) && attempt < CONFLICT_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    async fn ingest_once<T: LogRecord>(
        &self,
        batch: &[(CarrierId, T)],
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let kind = T::KIND;
        let mut outcomes = vec![IngestOutcome::CarrierUnknown; batch.len()];
        if batch.is_empty() {
            return Ok(outcomes);
        }
        let tx = self.begin_write().await?;
        // Lock every carrier of the batch, in id order (no deadlocks between batches).
        let mut carriers: BTreeMap<&str, bool> = BTreeMap::new();
        for (carrier, _) in batch {
            carriers.insert(carrier.as_str(), false);
        }
        for (id, known) in carriers.iter_mut() {
            *known = advance_cursor(&tx, id, kind, 0).await?.is_some();
        }
        let keys: Vec<(String, String)> = batch.iter().map(|(_, r)| r.key()).collect();
        let mut stored = existing(&tx, kind, &keys).await?;
        let mut new_by_carrier: BTreeMap<&str, Vec<(usize, String)>> = BTreeMap::new();
        for (i, ((carrier, record), key)) in batch.iter().zip(keys).enumerate() {
            if !carriers.get(carrier.as_str()).copied().unwrap_or(false) {
                continue;
            }
            let json = serde_json::to_string(record)
                .map_err(|e| StoreError::Corrupt(format!("encoding record: {e}")))?;
            outcomes[i] = match stored.get(&key) {
                Some((owner, stored_json)) if owner == carrier.as_str() && *stored_json == json => {
                    IngestOutcome::Duplicate
                }
                Some(_) => IngestOutcome::Conflict,
                None => {
                    // Later records of this batch with the same key compare against this one.
                    stored.insert(key, (carrier.to_string(), json.clone()));
                    new_by_carrier
                        .entry(carrier.as_str())
                        .or_default()
                        .push((i, json));
                    IngestOutcome::Accepted
                }
            };
        }
        let ingest_time_ms = now_ms();
        let mut published = Vec::new();
        let mut rows = Vec::new();
        for (carrier_id, records) in new_by_carrier {
            let n = i64::try_from(records.len()).unwrap_or(i64::MAX);
            let Some(row) = advance_cursor(&tx, carrier_id, kind, n).await? else {
                continue;
            };
            let latest = bounds_of(&row, kind).latest;
            for ((i, json), cursor) in records.into_iter().zip(latest - n + 1..) {
                let record = &batch[i].1;
                rows.push(NewRow {
                    carrier_id: carrier_id.to_owned(),
                    cursor,
                    key: record.key(),
                    tenant_id: record.tenant().as_str().to_owned(),
                    start_time_ms: record.start_time_ms(),
                    classification: record.classification_code(),
                    call_columns: record.call_columns(),
                    json,
                });
            }
            let notice = match kind {
                LogKind::CallRecords => Notice::CallRecords(carrier_id.to_owned(), latest),
                LogKind::QualityRecords => Notice::QualityRecords(carrier_id.to_owned(), latest),
            };
            notify(&tx, &notice).await?;
            published.push((carrier_id.to_owned(), latest));
        }
        insert_rows(&tx, kind, rows, ingest_time_ms).await?;
        tx.commit().await?;
        for (carrier_id, latest) in published {
            self.feed
                .publish_records(&carrier_id, kind == LogKind::QualityRecords, latest);
        }
        Ok(outcomes)
    }

    /// The bounds of one of a carrier's logs.
    pub async fn log_bounds(
        &self,
        carrier: &CarrierId,
        kind: LogKind,
    ) -> Result<LogBounds, StoreError> {
        let row = carrier::Entity::find_by_id(carrier.as_str())
            .one(&self.db)
            .await?
            .ok_or_else(|| StoreError::CarrierNotFound(carrier.to_string()))?;
        Ok(bounds_of(&row, kind))
    }

    /// Up to `limit` records of `carrier` after `after` that match `filter`, read in one
    /// snapshot together with the log's bounds.
    pub async fn read_records<T: LogRecord>(
        &self,
        carrier: &CarrierId,
        after: i64,
        filter: &RecordFilter,
        limit: u64,
    ) -> Result<RecordPage<T>, StoreError> {
        let kind = T::KIND;
        let tx = self.begin_snapshot().await?;
        let row = carrier::Entity::find_by_id(carrier.as_str())
            .one(&tx)
            .await?
            .ok_or_else(|| StoreError::CarrierNotFound(carrier.to_string()))?;
        let bounds = bounds_of(&row, kind);
        let window = (after, bounds.latest);
        let rows: Vec<(i64, String)> = match kind {
            LogKind::CallRecords => {
                use call_record::Column as C;
                let columns = (C::CarrierId, C::Cursor, C::TenantId, C::StartTimeMs);
                log_query::<call_record::Entity>(columns, carrier, window, filter)
                    .limit(limit)
                    .all(&tx)
                    .await?
                    .into_iter()
                    .map(|r| (r.cursor, r.record))
                    .collect()
            }
            LogKind::QualityRecords => {
                use quality_record::Column as C;
                let columns = (C::CarrierId, C::Cursor, C::TenantId, C::StartTimeMs);
                log_query::<quality_record::Entity>(columns, carrier, window, filter)
                    .limit(limit)
                    .all(&tx)
                    .await?
                    .into_iter()
                    .map(|r| (r.cursor, r.record))
                    .collect()
            }
        };
        tx.commit().await?;
        let full = rows.len() as u64 >= limit;
        let next_cursor = match rows.last() {
            Some((cursor, _)) if full => *cursor,
            _ => std::cmp::max(bounds.latest, after),
        };
        let records = rows
            .into_iter()
            .map(|(cursor, json)| {
                serde_json::from_str(&json)
                    .map(|r| (cursor, r))
                    .map_err(|e| StoreError::Corrupt(format!("record {cursor}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(RecordPage {
            records,
            next_cursor,
            bounds,
        })
    }

    /// The carrier's committed cursor in a log, if any.
    pub async fn committed_cursor(
        &self,
        carrier: &CarrierId,
        kind: LogKind,
    ) -> Result<Option<i64>, StoreError> {
        Ok(
            consumer_cursor::Entity::find_by_id((carrier.to_string(), kind.code()))
                .one(&self.db)
                .await?
                .map(|c| c.cursor),
        )
    }

    /// Stores the carrier's committed cursor in a log.
    pub async fn commit_cursor(
        &self,
        carrier: &CarrierId,
        kind: LogKind,
        cursor: i64,
    ) -> Result<(), StoreError> {
        let model = consumer_cursor::ActiveModel {
            carrier_id: Set(carrier.to_string()),
            kind: Set(kind.code()),
            cursor: Set(cursor),
            update_time_ms: Set(now_ms()),
        };
        consumer_cursor::Entity::insert(model)
            .on_conflict(
                OnConflict::columns([
                    consumer_cursor::Column::CarrierId,
                    consumer_cursor::Column::Kind,
                ])
                .update_columns([
                    consumer_cursor::Column::Cursor,
                    consumer_cursor::Column::UpdateTimeMs,
                ])
                .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Purges records of `kind` ingested before `cutoff_ms`, at most `batch` cursors per
    /// transaction, and advances each carrier's purge mark. Returns how many were deleted.
    pub async fn purge_records(
        &self,
        kind: LogKind,
        cutoff_ms: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let carriers = carrier::Entity::find().all(&self.db).await?;
        let mut deleted = 0;
        for c in carriers {
            loop {
                let newest_expired = match kind {
                    LogKind::CallRecords => call_record::Entity::find()
                        .filter(call_record::Column::CarrierId.eq(c.carrier_id.as_str()))
                        .filter(call_record::Column::IngestTimeMs.lt(cutoff_ms))
                        .order_by_desc(call_record::Column::Cursor)
                        .one(&self.db)
                        .await?
                        .map(|r| r.cursor),
                    LogKind::QualityRecords => quality_record::Entity::find()
                        .filter(quality_record::Column::CarrierId.eq(c.carrier_id.as_str()))
                        .filter(quality_record::Column::IngestTimeMs.lt(cutoff_ms))
                        .order_by_desc(quality_record::Column::Cursor)
                        .one(&self.db)
                        .await?
                        .map(|r| r.cursor),
                };
                let Some(newest_expired) = newest_expired else {
                    break;
                };
                let tx = self.begin_write().await?;
                let Some(locked) = advance_cursor(&tx, &c.carrier_id, kind, 0).await? else {
                    break;
                };
                let purged = bounds_of(&locked, kind).purged_through;
                let through = std::cmp::min(newest_expired, purged + batch);
                let rows = match kind {
                    LogKind::CallRecords => {
                        call_record::Entity::delete_many()
                            .filter(call_record::Column::CarrierId.eq(c.carrier_id.as_str()))
                            .filter(call_record::Column::Cursor.lte(through))
                            .exec(&tx)
                            .await?
                            .rows_affected
                    }
                    LogKind::QualityRecords => {
                        quality_record::Entity::delete_many()
                            .filter(quality_record::Column::CarrierId.eq(c.carrier_id.as_str()))
                            .filter(quality_record::Column::Cursor.lte(through))
                            .exec(&tx)
                            .await?
                            .rows_affected
                    }
                };
                carrier::Entity::update_many()
                    .col_expr(
                        kind.purged_column(),
                        Expr::value(std::cmp::max(through, purged)),
                    )
                    .filter(carrier::Column::CarrierId.eq(c.carrier_id.as_str()))
                    .exec(&tx)
                    .await?;
                tx.commit().await?;
                deleted += rows;
                if through >= newest_expired {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}
