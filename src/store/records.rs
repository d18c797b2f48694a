//! Record logs: each carrier's call-record and quality-record logs with gapless cursors, the
//! carriers' committed consumer cursors, and idempotent batch ingestion.
//!
//! An ingestion batch is one transaction: lock the carriers it names (in id order), look up
//! which keys exist, take `n` cursors from each carrier's counter for its new records, insert
//! them with one multi-row statement per chunk, commit. Cursors are therefore gapless and in
//! commit order, like number revisions. The look-up is skipped on a first attempt that
//! assumes every key is new; if one was not, that attempt rolls back (its cursors with it)
//! and the batch runs again with the look-up.
//!
//! Records are stored as their protobuf encoding, which streams frame without decoding. A
//! resent record is a duplicate when it decodes to the same record, whatever its bytes.
//!
//! Keys are unique across carriers, so on PostgreSQL batches of different carriers (which lock
//! different carrier rows and run in parallel) can insert the same new key at once. Rows are
//! inserted in key order, whatever order the batch had, so two such batches wait for each
//! other's keys in one order and never deadlock; the insert skips keys stored meanwhile
//! (`ON CONFLICT DO NOTHING`), and fewer rows inserted than classified new means a concurrent
//! writer won some keys: the attempt rolls back and runs again, and the next classification
//! sees the winner's rows (a duplicate, or a conflict for another carrier's key).
//!
//! The protocol here is the same for both kinds; what differs (the table, its columns, how a
//! record becomes a row) is in each kind's impls in `record_kinds.rs`.

use std::collections::{BTreeMap, HashMap};

use bytes::BytesMut;
use prost::Message;
use sea_orm::sqlx::Row as _;

use sea_orm::sea_query::{
    Alias, Condition, Expr, ExprTrait, JoinType, OnConflict, Order, Query, SelectStatement,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryResult,
};

use super::batch::{Attempt, Lookup, insert_new_rows, per_statement, retry_write};
use super::entities::{call_record, carrier, consumer_cursor, quality_record};
use super::logs::{GaplessLog, take_positions};
use super::lookup::by_key;
use super::record_kinds::kind_code;
use super::redaction::{RedactableRecord, same_encoded};
use super::{Store, StoreError, notify, now_ms};
use crate::domain::durations::IngestOutcome;
use crate::domain::ids::CarrierId;
use crate::domain::records::{EncodedRecord, LogBounds, LogKind, RecordFilter, RecordPage};
use crate::feed::Notice;

/// A record that lives in a carrier's log: its kind, its table, its key, and its row.
pub(crate) trait LogRecord: Send + Sync {
    /// Its log.
    const KIND: LogKind;
    /// The table of its log.
    type Table: RecordTable;
    /// The wire message it is stored as (with cursor 0).
    type Wire: RedactableRecord;
    /// Its idempotency key: (`call_id`, `stream_id` or empty).
    fn key(&self) -> (String, String);
    /// It as its wire message, cursor 0.
    fn wire(&self) -> Self::Wire;
    /// Its row at `place`, with `encoded` (its wire message, encoded) and the columns its kind
    /// keeps beside it for filters and joins: the values of [`RecordTable::COLUMNS`], in that
    /// order, as [`insert_new_rows`] takes them.
    fn row(&self, place: Place, encoded: Vec<u8>) -> Vec<Expr>;
}

/// Where a new record goes: its carrier's log, its cursor, and when it was ingested.
pub(crate) struct Place {
    pub carrier_id: String,
    pub cursor: i64,
    /// Retention counts from here.
    pub ingest_time_ms: i64,
}

/// A record log's table: what ingestion and reads need beyond the log's shape.
pub(crate) trait RecordTable: GaplessLog {
    /// Every column, in the order of [`LogRecord::row`]'s values.
    const COLUMNS: &'static [Self::Column];
    /// The call-id column: a batch's stored keys are looked up by it.
    const CALL_ID: Self::Column;
    /// The columns of the unique key that [`LogRecord::key`] gives the values of.
    const KEY: &'static [Self::Column];
    /// The tenant column, for filters.
    const TENANT: Self::Column;
    /// The start-time column, for filters.
    const START_TIME: Self::Column;
    /// The column holding the record's stored encoding.
    const ENCODED: Self::Column;
    /// Text columns beside the record that hold personal data, emptied by an erasure.
    const PERSONAL: &'static [Self::Column];
    /// The change notice saying that a carrier's log reached a cursor.
    const NOTICE: fn(String, i64) -> Notice;
    /// A stored row as ingestion and reads see it.
    fn stored(row: Self::Model) -> StoredRow;
}

/// A stored record row: its place, its key and the record as stored.
pub(crate) struct StoredRow {
    pub carrier_id: String,
    pub cursor: i64,
    pub key: (String, String),
    pub encoded: Vec<u8>,
}

/// A new row's values with its key, so that rows can be inserted in key order.
type KeyedRow<'a> = (&'a (String, String), Vec<Expr>);

/// Stored key → (carrier, encoding) for the keys of a batch.
async fn existing<L: RecordTable, C: ConnectionTrait>(
    tx: &C,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), (String, Vec<u8>)>, StoreError> {
    let mut call_ids: Vec<&str> = keys.iter().map(|(c, _)| c.as_str()).collect();
    call_ids.sort_unstable();
    call_ids.dedup();
    let mut found = HashMap::new();
    for chunk in per_statement(call_ids, 1) {
        for row in L::find().filter(L::CALL_ID.is_in(chunk)).all(tx).await? {
            let row = L::stored(row);
            found.insert(row.key, (row.carrier_id, row.encoded));
        }
    }
    Ok(found)
}

/// One page of a log in one statement: the carrier's row for the log's bounds, joined to its
/// records with a cursor in `(after, window_end]` up to the bounds' latest that match
/// `filter`, in cursor order. A carrier without such records still yields its row, with no
/// record beside it. One statement is one snapshot on both backends: the bounds and the rows
/// agree, as they would in a transaction, at one round trip instead of four on PostgreSQL
/// (`BEGIN`, bounds, rows, `COMMIT`).
fn page_query<L: RecordTable>(
    carrier_id: &CarrierId,
    (after, window_end): (i64, i64),
    limit: u64,
    filter: &RecordFilter,
) -> SelectStatement {
    let (c, r) = (Alias::new("c"), Alias::new("r"));
    let record = |column: L::Column| Expr::col((r.clone(), column));
    let mut on = Condition::all()
        .add(record(L::CARRIER).eq(carrier_id.as_str()))
        .add(record(L::POSITION).gt(after))
        .add(record(L::POSITION).lte(window_end))
        .add(record(L::POSITION).lte(Expr::col((c.clone(), L::COUNTER))));
    if let Some(t) = &filter.tenant_id {
        on = on.add(record(L::TENANT).eq(t.as_str()));
    }
    if let Some(from) = filter.start_from_ms {
        on = on.add(record(L::START_TIME).gte(from));
    }
    if let Some(before) = filter.start_before_ms {
        on = on.add(record(L::START_TIME).lt(before));
    }
    // Only what a stream uses: every other column would be decoded for nothing.
    Query::select()
        .column((c.clone(), L::COUNTER))
        .column((c.clone(), L::PURGED_THROUGH))
        .column((r.clone(), L::POSITION))
        .column((r.clone(), L::TENANT))
        .column((r.clone(), L::START_TIME))
        .column((r.clone(), L::ENCODED))
        .from_as(carrier::Entity, c.clone())
        .join_as(JoinType::LeftJoin, L::default(), r.clone(), on)
        .and_where(Expr::col((c, carrier::Column::CarrierId)).eq(carrier_id.as_str()))
        .order_by((r, L::POSITION), Order::Asc)
        .limit(limit)
        .to_owned()
}

/// Column `index` of `row`, a `bytea` / `BLOB`, as the driver holds it (sea-orm's getters copy
/// it into a `Vec` of its own).
fn borrowed_bytes(row: &QueryResult, index: usize) -> Result<&[u8], DbErr> {
    let got = if let Some(row) = row.try_as_pg_row() {
        row.try_get::<&[u8], _>(index)
    } else if let Some(row) = row.try_as_sqlite_row() {
        row.try_get::<&[u8], _>(index)
    } else {
        return Err(DbErr::Type("rows of an unsupported backend".into()));
    };
    got.map_err(|e| DbErr::Type(format!("column {index}: {e}")))
}

/// A valid record with its key and its stored encoding, made before its batch is committed
/// (while the stream that brought it is still being read), so that the commit, which holds
/// the log's write lock, does as little as it can.
pub(crate) struct Encoded<T> {
    record: T,
    key: (String, String),
    bytes: Vec<u8>,
}

impl<T: LogRecord> Encoded<T> {
    /// `record` with its key and encoding.
    pub(crate) fn new(record: T) -> Self {
        Self {
            key: record.key(),
            bytes: record.wire().encode_to_vec(),
            record,
        }
    }
}

/// Whether no key occurs twice in `batch`.
fn distinct_keys<T>(batch: &[(CarrierId, Encoded<T>)]) -> bool {
    let mut keys: Vec<&(String, String)> = batch.iter().map(|(_, r)| &r.key).collect();
    keys.sort_unstable();
    keys.windows(2).all(|w| w[0] != w[1])
}

impl Store {
    /// Ingests a batch of records, each for the carrier it names, in one transaction.
    /// Returns one outcome per record, in order.
    ///
    /// Most batches hold only new records, so the first attempt assumes that: it inserts
    /// without looking the keys up first (the look-up cost as much as the insert). When a key
    /// turns out to be stored already (fewer rows inserted than sent, or a key twice in the
    /// batch) it rolls back, and the batch is classified key by key.
    pub(crate) async fn ingest<T: LogRecord>(
        &self,
        batch: &[(CarrierId, Encoded<T>)],
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        if distinct_keys(batch)
            && let Some(outcomes) =
                retry_write(|| self.ingest_once(batch, Lookup::AssumeNew)).await?
        {
            return Ok(outcomes);
        }
        retry_write(|| self.ingest_once(batch, Lookup::Existing))
            .await?
            .ok_or_else(|| StoreError::Corrupt("ingestion classified no record".into()))
    }

    /// One attempt of [`Store::ingest`]; [`Attempt::Raced`] when a concurrent writer stored
    /// some of the keys it classified new. With [`Lookup::AssumeNew`], `None` when some key
    /// was stored already (nothing was written).
    async fn ingest_once<T: LogRecord>(
        &self,
        batch: &[(CarrierId, Encoded<T>)],
        lookup: Lookup,
    ) -> Result<Attempt<Option<Vec<IngestOutcome>>>, StoreError> {
        let mut outcomes = vec![IngestOutcome::CarrierUnknown; batch.len()];
        if batch.is_empty() {
            return Ok(Attempt::Committed(Some(outcomes)));
        }
        let tx = self.begin_write().await?;
        // Lock every carrier of the batch, in id order (no deadlocks between batches).
        let mut carriers: BTreeMap<&str, bool> = BTreeMap::new();
        for (carrier, _) in batch {
            carriers.insert(carrier.as_str(), false);
        }
        for (id, known) in carriers.iter_mut() {
            *known = take_positions::<T::Table, _>(&tx, id, 0).await?.is_some();
        }
        let mut stored = match lookup {
            Lookup::Existing => {
                let keys: Vec<(String, String)> =
                    batch.iter().map(|(_, r)| r.key.clone()).collect();
                existing::<T::Table, _>(&tx, &keys).await?
            }
            Lookup::AssumeNew => HashMap::new(),
        };
        let mut new_by_carrier: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (carrier, record)) in batch.iter().enumerate() {
            if !carriers.get(carrier.as_str()).copied().unwrap_or(false) {
                continue;
            }
            outcomes[i] = match stored.get(&record.key) {
                Some((owner, encoded)) if owner == carrier.as_str() => {
                    if same_encoded(encoded, &record.record.wire())? {
                        IngestOutcome::Duplicate
                    } else {
                        IngestOutcome::Conflict
                    }
                }
                Some(_) => IngestOutcome::Conflict,
                None => {
                    // Later records of this batch with the same key compare against this one.
                    // When assuming every key new, the batch has no such record.
                    if lookup == Lookup::Existing {
                        stored.insert(
                            record.key.clone(),
                            (carrier.to_string(), record.bytes.clone()),
                        );
                    }
                    new_by_carrier.entry(carrier.as_str()).or_default().push(i);
                    IngestOutcome::Accepted
                }
            };
        }
        let ingest_time_ms = now_ms();
        let mut published = Vec::new();
        let mut rows: Vec<KeyedRow<'_>> = Vec::with_capacity(batch.len());
        for (carrier_id, records) in new_by_carrier {
            let n = i64::try_from(records.len()).unwrap_or(i64::MAX);
            let Some(row) = take_positions::<T::Table, _>(&tx, carrier_id, n).await? else {
                continue;
            };
            let latest = T::Table::bounds(&row).latest;
            for (i, cursor) in records.into_iter().zip(latest - n + 1..) {
                let place = Place {
                    carrier_id: carrier_id.to_owned(),
                    cursor,
                    ingest_time_ms,
                };
                let record = &batch[i].1;
                rows.push((&record.key, record.record.row(place, record.bytes.clone())));
            }
            let notice = (T::Table::NOTICE)(carrier_id.to_owned(), latest);
            notify(&tx, &notice).await?;
            published.push(notice);
        }
        // One global order of keys: concurrent batches sharing keys wait in the same order.
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let expected = rows.len() as u64;
        let inserted = insert_new_rows(
            &tx,
            T::Table::default(),
            T::Table::COLUMNS,
            T::Table::KEY,
            rows.into_iter().map(|(_, row)| row).collect(),
        )
        .await?;
        if inserted != expected {
            tx.rollback().await?;
            return Ok(match lookup {
                Lookup::Existing => Attempt::Raced,
                Lookup::AssumeNew => Attempt::Committed(None),
            });
        }
        tx.commit().await?;
        for notice in published {
            self.shared.feed.deliver(notice);
        }
        Ok(Attempt::Committed(Some(outcomes)))
    }

    /// The bounds of one of a carrier's logs.
    pub async fn log_bounds(
        &self,
        carrier: &CarrierId,
        kind: LogKind,
    ) -> Result<LogBounds, StoreError> {
        let id = carrier.as_str();
        match kind {
            LogKind::CallRecords => self.read_log_bounds::<call_record::Entity>(id).await?,
            LogKind::QualityRecords => self.read_log_bounds::<quality_record::Entity>(id).await?,
        }
        .ok_or_else(|| StoreError::CarrierNotFound(carrier.to_string()))
    }

    /// Up to `limit` records of `carrier` after `after` that match `filter`, among the next
    /// `limit` cursors, read in one snapshot together with the log's bounds ([`page_query`]).
    /// More may follow while `next_cursor` is below the bounds' latest.
    pub(crate) async fn read_records<T: LogRecord>(
        &self,
        carrier: &CarrierId,
        after: i64,
        filter: &RecordFilter,
        limit: u64,
    ) -> Result<RecordPage, StoreError> {
        // Cursors are gapless: the next `limit` records are exactly the cursors up to
        // `after + limit`, so the query names that range and reads at most `limit` rows,
        // whatever plan the database picks (PostgreSQL, planning with the statistics of a
        // table not yet analyzed, scanned every row after the cursor and sorted them: 54 ms a
        // page instead of 0.35). With filters, a page may hold fewer rows than `limit`.
        let window_end = after.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX));
        let db = &self.shared.db;
        let query = page_query::<T::Table>(carrier, (after, window_end), limit, filter);
        let rows = db
            .query_all_raw(db.get_database_backend().build(&query))
            .await?;
        let Some(first) = rows.first() else {
            return Err(StoreError::CarrierNotFound(carrier.to_string()));
        };
        let bounds = LogBounds {
            latest: first.try_get_by_index(0)?,
            purged_through: first.try_get_by_index(1)?,
        };
        // The page's encodings are copied into one buffer and each record's is a slice of it:
        // one allocation per page, not one per record (allocation was the largest part of the
        // gateway's share of the PostgreSQL stream profile). The carrier's row alone (no
        // record matched) has no cursor.
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(cursor) = row.try_get_by_index::<Option<i64>>(2)? {
                found.push((row, cursor, borrowed_bytes(row, 5)?));
            }
        }
        let mut page = BytesMut::with_capacity(found.iter().map(|(_, _, e)| e.len()).sum());
        let mut records = Vec::with_capacity(found.len());
        for (row, cursor, encoded) in found {
            page.extend_from_slice(encoded);
            records.push(EncodedRecord {
                cursor,
                tenant_id: row.try_get_by_index(3)?,
                start_time_ms: row.try_get_by_index(4)?,
                encoded: page.split().freeze(),
            });
        }
        let through = std::cmp::min(bounds.latest, window_end);
        let full = records.len() as u64 >= limit;
        let next_cursor = match records.last() {
            Some(record) if full => record.cursor,
            _ => std::cmp::max(through, after),
        };
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
        Ok(by_key(
            consumer_cursor::Entity::find_by_id((carrier.to_string(), kind_code(kind))),
            &self.shared.db,
        )
        .await?
        .map(|c| c.cursor))
    }

    /// Stores the carrier's committed cursor in a log.
    pub async fn commit_cursor(
        &self,
        carrier: &CarrierId,
        kind: LogKind,
        cursor: i64,
    ) -> Result<(), StoreError> {
        retry_write(|| self.commit_cursor_once(carrier, kind, cursor)).await
    }

    async fn commit_cursor_once(
        &self,
        carrier: &CarrierId,
        kind: LogKind,
        cursor: i64,
    ) -> Result<Attempt<()>, StoreError> {
        let model = consumer_cursor::ActiveModel {
            carrier_id: Set(carrier.to_string()),
            kind: Set(kind_code(kind)),
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
            .exec_without_returning(&self.shared.db)
            .await?;
        Ok(Attempt::Committed(()))
    }

    /// Purges records of `T`'s log ingested before `cutoff_ms`, at most `batch` cursors per
    /// transaction, and advances each carrier's purge mark. Returns how many were deleted.
    pub(crate) async fn purge_records<T: LogRecord>(
        &self,
        cutoff_ms: i64,
        batch: u64,
    ) -> Result<u64, StoreError> {
        self.purge_log::<T::Table>(cutoff_ms, batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::v1 as pb;

    fn record() -> pb::CallRecord {
        pb::CallRecord {
            call_id: "call-1".into(),
            tenant_id: "t".into(),
            caller_number: "+14255550100".into(),
            successful: true,
            final_sip_code: 200,
            ..Default::default()
        }
    }

    /// Duplicates are found on decoded values: the same record stored with its fields in
    /// another order, with a field a newer proto added (left at its default, but present),
    /// and with a default-valued field written out is still the same record; a changed value
    /// is not.
    #[test]
    fn duplicates_compare_decoded_values() {
        let wire = record();
        assert!(same_encoded(&wire.encode_to_vec(), &wire).unwrap());

        let mut other_encoder = Vec::new();
        // final_sip_code (15) first, then successful (14), call_id (2), tenant_id (4),
        // caller_number (7), then `int32 microsoft_subcode = 17` written at 0, then an unknown
        // field 99 (a newer proto's, at its default).
        other_encoder.extend_from_slice(&[0x78, 200, 1]); // 15: 200
        other_encoder.extend_from_slice(&[0x70, 1]); // 14: true
        prost::encoding::string::encode(2, &wire.call_id, &mut other_encoder);
        prost::encoding::string::encode(4, &wire.tenant_id, &mut other_encoder);
        prost::encoding::string::encode(7, &wire.caller_number, &mut other_encoder);
        other_encoder.extend_from_slice(&[0x88, 0x01, 0]); // 17: 0
        other_encoder.extend_from_slice(&[0x98, 0x06, 0]); // 99: 0
        assert_ne!(other_encoder, wire.encode_to_vec());
        assert!(same_encoded(&other_encoder, &wire).unwrap());

        let changed = pb::CallRecord {
            final_sip_code: 486,
            ..record()
        };
        assert!(!same_encoded(&other_encoder, &changed).unwrap());
        assert!(same_encoded(&[0xff], &wire).is_err());
    }
}
