//! Call and quality records move from JSON text (`record`) to their protobuf encoding
//! (`encoded`: the wire `CallRecord` / `QualityRecord` with cursor 0), so that a stream frames
//! stored bytes instead of parsing JSON and encoding protobuf for every record it sends.
//!
//! Existing rows are converted in batches of [`BATCH`], in primary-key order, each batch one
//! `UPDATE ... FROM (VALUES ...)` (both backends name a VALUES list's columns `column1`,
//! `column2`, ...). The migration can be interrupted and run again: the new column is added
//! only when missing, only rows still without an encoding are converted, and the JSON column
//! is dropped last. A row whose JSON does not parse stops the migration with its key, rather
//! than losing a record.

use prost::Message;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement, Value};
use serde::de::DeserializeOwned;

use crate::domain::records::{CallRecord, QualityRecord};
use crate::wire::records::{call_record_to_pb, quality_record_to_pb};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Rows converted per statement.
const BATCH: usize = 1_000;

/// A log table and how its JSON rows become protobuf.
struct Log {
    table: &'static str,
    encode: fn(&str) -> Result<Vec<u8>, String>,
}

const LOGS: [Log; 2] = [
    Log {
        table: "call_records",
        encode: |json| reencode::<CallRecord>(json, |r| call_record_to_pb(0, r).encode_to_vec()),
    },
    Log {
        table: "quality_records",
        encode: |json| {
            reencode::<QualityRecord>(json, |r| quality_record_to_pb(0, r).encode_to_vec())
        },
    },
];

fn reencode<T: DeserializeOwned>(json: &str, encode: fn(&T) -> Vec<u8>) -> Result<Vec<u8>, String> {
    serde_json::from_str::<T>(json)
        .map(|record| encode(&record))
        .map_err(|e| e.to_string())
}

async fn convert(manager: &SchemaManager<'_>, log: &Log) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    let table = log.table;
    if !manager.has_column(table, "encoded").await? {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(table))
                    .add_column(ColumnDef::new(Alias::new("encoded")).blob().null())
                    .to_owned(),
            )
            .await?;
    }
    if !manager.has_column(table, "record").await? {
        return Ok(());
    }
    let (mut after_carrier, mut after_cursor) = (String::new(), i64::MIN);
    loop {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql_params(
                    backend,
                    &format!(
                        "SELECT carrier_id, cursor, record FROM {table} \
                         WHERE encoded IS NULL AND (carrier_id > ? OR (carrier_id = ? AND cursor > ?)) \
                         ORDER BY carrier_id, cursor LIMIT {BATCH}"
                    ),
                ),
                [
                    after_carrier.clone().into(),
                    after_carrier.clone().into(),
                    after_cursor.into(),
                ],
            ))
            .await?;
        if rows.is_empty() {
            break;
        }
        let mut values: Vec<Value> = Vec::with_capacity(rows.len() * 3);
        for row in &rows {
            let carrier: String = row.try_get("", "carrier_id")?;
            let cursor: i64 = row.try_get("", "cursor")?;
            let json: String = row.try_get("", "record")?;
            let encoded = (log.encode)(&json)
                .map_err(|e| DbErr::Migration(format!("{table} row ({carrier}, {cursor}): {e}")))?;
            values.extend([carrier.clone().into(), cursor.into(), encoded.into()]);
            (after_carrier, after_cursor) = (carrier, cursor);
        }
        let tuples = vec!["(?, ?, ?)"; rows.len()].join(", ");
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            sql_params(
                backend,
                &format!(
                    "UPDATE {table} SET encoded = v.column3 FROM (VALUES {tuples}) AS v \
                     WHERE {table}.carrier_id = v.column1 AND {table}.cursor = v.column2"
                ),
            ),
            values,
        ))
        .await?;
    }
    manager
        .alter_table(
            Table::alter()
                .table(Alias::new(table))
                .drop_column(Alias::new("record"))
                .to_owned(),
        )
        .await
}

/// `?` placeholders as the backend numbers them.
fn sql_params(backend: sea_orm_migration::sea_orm::DbBackend, sql: &str) -> String {
    if backend != sea_orm_migration::sea_orm::DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for log in &LOGS {
            convert(manager, log).await?;
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "records stored as protobuf are not converted back to JSON".into(),
        ))
    }
}
