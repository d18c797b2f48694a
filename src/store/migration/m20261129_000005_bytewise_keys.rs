//! On PostgreSQL, the text keys that are paged by keyset or compared in Rust compare byte by
//! byte (`COLLATE "C"`), as Rust's `String` and SQLite's default BINARY collation do.
//!
//! Under a linguistic default collation (`en_US.UTF-8`, ICU `en-US`) `call_id > $after ORDER
//! BY call_id` follows another order than the server's merge of two such lists: `_x` sorts
//! before `A-1`, `a-1` before `A-1`, so pages skipped or repeated calls. Paged or merged:
//! `call_id` of call records and durations (reconciliation, usage; joined with each other, so
//! both sides must share one collation), of quality records (joined to call records by id),
//! and `number` (ListNumbers; `+` and digits, so this changes no order, only makes it
//! explicit). Changing only the collation rewrites no table, but rebuilds the indexes on these
//! columns, which then serve the byte-order comparisons and sorts. Nothing to do on SQLite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (table, column) of every key that must compare bytewise.
const KEYS: [(&str, &str); 4] = [
    ("call_records", "call_id"),
    ("call_durations", "call_id"),
    ("quality_records", "call_id"),
    ("numbers", "number"),
];

/// Sets the collation of every column of [`KEYS`] on PostgreSQL, keeping its type as it is.
async fn collate_keys(manager: &SchemaManager<'_>, collation: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for (table, column) in KEYS {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT format_type(atttypid, atttypmod) AS type FROM pg_attribute \
                 WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped",
                [table.into(), column.into()],
            ))
            .await?
            .ok_or_else(|| DbErr::Migration(format!("no column {table}.{column}")))?;
        let column_type: String = row.try_get("", "type")?;
        db.execute_unprepared(&format!(
            r#"ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {column_type} COLLATE "{collation}""#
        ))
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        collate_keys(manager, "C").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        collate_keys(manager, "default").await
    }
}
