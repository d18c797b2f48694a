//! The database baselines: the same rows written and read straight through sea-orm, with no
//! gRPC, validation or gateway logic, on the schema the gateway's migrations create.
//!
//! Writes commit every [`COMMIT_EVERY`] rows like the server. A call-record batch first takes
//! its cursors from the carrier's counter (`UPDATE carriers SET call_record_cursor =
//! call_record_cursor + n ... RETURNING`, which also locks the carrier row until commit, as the
//! server's does), then inserts all its rows with one multi-row `INSERT ... ON CONFLICT DO
//! NOTHING`. Durations take no counter, since the server takes none for them. A call record's
//! `encoded` column holds its protobuf encoding, as the server stores it; a duration's `record`
//! column the JSON text the server stores (the domain type's serde form, mirrored below). What
//! the baselines leave out is the gateway's own work: the look-up of
//! already stored keys that makes ingestion idempotent, validation, and gRPC.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use opconnect::pb::v1 as pb;
use prost::Message;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, SqliteTransactionMode, StreamTrait, TransactionOptions,
    TransactionTrait,
};
use serde::Serialize;

use super::COMMIT_EVERY;
use super::setup::{CARRIER, connect, migrate};

/// The columns of `call_records` (src/store/entities/call_record.rs), in insert order.
const CALL_RECORD_COLUMNS: [&str; 10] = [
    "carrier_id",
    "cursor",
    "call_id",
    "tenant_id",
    "start_time_ms",
    "ingest_time_ms",
    "duration_ms",
    "successful",
    "tenant_number",
    "encoded",
];

/// The columns of `call_durations` (src/store/entities/call_duration.rs), in insert order.
const DURATION_COLUMNS: [&str; 7] = [
    "carrier_id",
    "call_id",
    "tenant_id",
    "start_time_ms",
    "duration_ms",
    "received_time_ms",
    "record",
];

/// `domain::records::CallDirection` as serde writes it.
#[derive(Serialize)]
enum Direction {
    Inbound,
    Outbound,
}

/// `domain::durations::CallDurationReport` as serde writes it.
#[derive(Serialize)]
struct StoredDuration<'a> {
    call_id: &'a str,
    tenant_id: &'a str,
    direction: Direction,
    caller_number: Option<&'a str>,
    callee_number: &'a str,
    start_time_ms: i64,
    duration_ms: i64,
}

fn time_ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000)
}

fn duration_ms(d: Option<&prost_types::Duration>) -> i64 {
    d.map_or(0, |d| d.seconds * 1_000 + i64::from(d.nanos) / 1_000_000)
}

fn direction(raw: i32) -> Direction {
    if raw == pb::CallDirection::Inbound as i32 {
        Direction::Inbound
    } else {
        Direction::Outbound
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Begins a write transaction the way the server does: IMMEDIATE on SQLite.
async fn begin_write(db: &DatabaseConnection) -> Result<sea_orm::DatabaseTransaction> {
    Ok(db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?)
}

/// A fresh database at `url` with the gateway's schema and the bench carrier registered,
/// and one connection to it.
async fn prepared(url: &str) -> Result<DatabaseConnection> {
    migrate(url).await?;
    let db = connect(url).await?;
    let carrier = Query::insert()
        .into_table("carriers")
        .columns([
            "carrier_id",
            "display_name",
            "sip_domain",
            "status",
            "create_time_ms",
        ])
        .values([
            CARRIER.into(),
            "Bench telecom".into(),
            format!("sip.{CARRIER}.example").into(),
            1i16.into(),
            now_ms().into(),
        ])?
        .to_owned();
    db.execute(&carrier).await?;
    Ok(db)
}

/// Inserts `records` into a fresh database at `url` as described in the module docs;
/// returns the time taken (set-up excluded) and the mean length of the encodings written.
pub async fn insert_call_records(
    url: &str,
    records: &[pb::CarrierCallRecord],
) -> Result<(Duration, f64)> {
    let db = prepared(url).await?;
    let mut encoded_bytes = 0usize;
    let started = Instant::now();
    for batch in records.chunks(COMMIT_EVERY) {
        let tx = begin_write(&db).await?;
        let n = batch.len() as i64;
        let take = Query::update()
            .table("carriers")
            .value("call_record_cursor", Expr::col("call_record_cursor").add(n))
            .and_where(Expr::col("carrier_id").eq(CARRIER))
            .returning_col("call_record_cursor")
            .to_owned();
        let latest: i64 = tx
            .query_one(&take)
            .await?
            .context("the carrier row is missing")?
            .try_get("", "call_record_cursor")?;
        let ingest_time_ms = now_ms();
        let mut insert = Query::insert();
        insert
            .into_table("call_records")
            .columns(CALL_RECORD_COLUMNS);
        for (carrier_record, cursor) in batch.iter().zip(latest - n + 1..) {
            let r = carrier_record.record.as_ref().context("record missing")?;
            let start_time_ms = time_ms(r.start_time.as_ref()).unwrap_or_default();
            let duration_ms = duration_ms(r.duration.as_ref());
            let outbound = r.direction != pb::CallDirection::Inbound as i32;
            // What the server stores: the wire record with cursor 0 (the bench's records are
            // already in the canonical form the server's validation produces).
            let encoded = pb::CallRecord {
                cursor: 0,
                ..r.clone()
            }
            .encode_to_vec();
            encoded_bytes += encoded.len();
            let tenant_number = if outbound {
                &r.caller_number
            } else {
                &r.callee_number
            };
            insert.values([
                carrier_record.carrier_id.as_str().into(),
                cursor.into(),
                r.call_id.as_str().into(),
                r.tenant_id.as_str().into(),
                start_time_ms.into(),
                ingest_time_ms.into(),
                duration_ms.into(),
                r.successful.into(),
                tenant_number.as_str().into(),
                encoded.into(),
            ])?;
        }
        insert.on_conflict(OnConflict::column("call_id").do_nothing().to_owned());
        tx.execute(&insert).await?;
        tx.commit().await?;
    }
    let elapsed = started.elapsed();
    db.close().await?;
    Ok((elapsed, encoded_bytes as f64 / records.len().max(1) as f64))
}

/// Inserts `durations` of the bench carrier into a fresh database at `url` as described in
/// the module docs; returns the time taken (set-up excluded).
pub async fn insert_durations(url: &str, durations: &[pb::CallDuration]) -> Result<Duration> {
    let db = prepared(url).await?;
    let started = Instant::now();
    for batch in durations.chunks(COMMIT_EVERY) {
        let tx = begin_write(&db).await?;
        let received_time_ms = now_ms();
        let mut insert = Query::insert();
        insert
            .into_table("call_durations")
            .columns(DURATION_COLUMNS);
        for d in batch {
            let start_time_ms = time_ms(d.start_time.as_ref()).unwrap_or_default();
            let duration_ms = duration_ms(d.duration.as_ref());
            let json = serde_json::to_string(&StoredDuration {
                call_id: &d.call_id,
                tenant_id: &d.tenant_id,
                direction: direction(d.direction),
                caller_number: non_empty(&d.caller_number),
                callee_number: &d.callee_number,
                start_time_ms,
                duration_ms,
            })?;
            insert.values([
                CARRIER.into(),
                d.call_id.as_str().into(),
                d.tenant_id.as_str().into(),
                start_time_ms.into(),
                duration_ms.into(),
                received_time_ms.into(),
                json.into(),
            ])?;
        }
        insert.on_conflict(
            OnConflict::columns(["carrier_id", "call_id"])
                .do_nothing()
                .to_owned(),
        );
        tx.execute(&insert).await?;
        tx.commit().await?;
    }
    let elapsed = started.elapsed();
    db.close().await?;
    Ok(elapsed)
}

/// Reads every call record of the bench carrier from the database at `url` with one plain
/// query in cursor order, decoding the columns the server's pages read (cursor, tenant,
/// start time, encoding); returns the rows read and the time taken.
pub async fn read_call_records(url: &str) -> Result<(usize, Duration)> {
    let db = connect(url).await?;
    let query = Query::select()
        .columns(["cursor", "tenant_id", "start_time_ms", "encoded"])
        .from("call_records")
        .and_where(Expr::col("carrier_id").eq(CARRIER))
        .order_by("cursor", Order::Asc)
        .to_owned();
    let started = Instant::now();
    let mut rows = db.stream(&query).await?;
    let mut count = 0;
    let mut last_cursor = 0;
    while let Some(row) = rows.next().await {
        let row = row?;
        let cursor: i64 = row.try_get("", "cursor")?;
        let _tenant: String = row.try_get("", "tenant_id")?;
        let _start: i64 = row.try_get("", "start_time_ms")?;
        let _record: Vec<u8> = row.try_get("", "encoded")?;
        anyhow::ensure!(cursor > last_cursor, "rows out of cursor order");
        last_cursor = cursor;
        count += 1;
    }
    let elapsed = started.elapsed();
    drop(rows);
    db.close().await?;
    Ok((count, elapsed))
}

/// The mean length of the `encoded` column of the bench carrier's call records at `url`.
pub async fn mean_record_bytes(url: &str) -> Result<f64> {
    let db = connect(url).await?;
    let query = Query::select()
        .expr_as(
            Expr::cust("CAST(AVG(LENGTH(encoded)) AS DOUBLE PRECISION)"),
            "mean",
        )
        .from("call_records")
        .and_where(Expr::col("carrier_id").eq(CARRIER))
        .to_owned();
    let mean: Option<f64> = db
        .query_one(&query)
        .await?
        .context("no row")?
        .try_get("", "mean")?;
    db.close().await?;
    Ok(mean.unwrap_or_default())
}
