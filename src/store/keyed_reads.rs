//! The store's keyed reads, batched by `batched.rs`: `GetNumber`'s number rows, and the log
//! bounds every stream reads when it starts (batched for watches).

use std::collections::HashMap;
use std::marker::PhantomData;

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};

use super::batched::{KeyedRead, padded};
use super::entities::{carrier, number};
use super::logs::GaplessLog;
use crate::domain::records::LogBounds;

/// Number rows by number (keys are the stored text, as given). The caller checks whose row
/// it is: a row is handed only to a lookup by the carrier it belongs to (another carrier's
/// number is not found, whoever else asked).
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

/// The bounds of carriers' logs `L`, by carrier id, read from the two carrier-row columns
/// that hold them (not the whole row); a carrier not registered is absent.
#[derive(Debug)]
pub(super) struct LogBoundsRows<L>(PhantomData<fn() -> L>);

impl<L: GaplessLog + 'static> KeyedRead for LogBoundsRows<L> {
    type Key = String;
    type Row = LogBounds;

    async fn read(
        db: &DatabaseConnection,
        keys: &[&String],
    ) -> Result<HashMap<String, LogBounds>, DbErr> {
        let rows: Vec<(String, i64, i64)> = carrier::Entity::find()
            .select_only()
            .columns([carrier::Column::CarrierId, L::PURGED_THROUGH, L::COUNTER])
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
