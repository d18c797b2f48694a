//! The store's batched keyed reads (`batched.rs`): `GetNumber`'s number rows, and the
//! number-event log bounds every watch reads when it starts.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};

use super::batched::{KeyedRead, padded};
use super::entities::{carrier, number, number_event};
use super::logs::GaplessLog;
use crate::domain::records::LogBounds;

/// Number rows by number (keys are the stored text, as given). The caller checks whose row it is: a row is handed only to a lookup
/// by the carrier it belongs to (another carrier's number is not found, whoever else asked).
#[derive(Debug)]
pub(super) struct NumberRows;

impl KeyedRead for NumberRows {
    type Key = String;
    type Row = number::Model;

    async fn read(
        db: &DatabaseConnection,
        keys: &[&String],
    ) -> Result<HashMap<String, number::Model>, DbErr> {
        let rows = number::Entity::find()
            .filter(number::Column::Number.is_in(padded(keys)))
            .all(db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.number.clone(), row))
            .collect())
    }
}

/// The bounds of carriers' number-event logs, by carrier id; a carrier not registered is absent.
#[derive(Debug)]
pub(super) struct NumberLogBounds;

impl KeyedRead for NumberLogBounds {
    type Key = String;
    type Row = LogBounds;

    async fn read(
        db: &DatabaseConnection,
        keys: &[&String],
    ) -> Result<HashMap<String, LogBounds>, DbErr> {
        type Log = number_event::Entity;
        let rows: Vec<(String, i64, i64)> = carrier::Entity::find()
            .select_only()
            .columns([
                carrier::Column::CarrierId,
                Log::PURGED_THROUGH,
                Log::COUNTER,
            ])
            .filter(carrier::Column::CarrierId.is_in(padded(keys)))
            .into_tuple()
            .all(db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, purged_through, latest)| {
                let bounds = LogBounds {
                    purged_through,
                    latest,
                };
                (id, bounds)
            })
            .collect())
    }
}
