//! What retention can show about each class: when its oldest kept item was written, and how
//! its last purge ended (one row per class, replaced by every purge).

use sea_orm::sea_query::{Alias, Expr, Func, OnConflict, Query};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

use super::batch::{Attempt, retry_write};
use super::entities::purge_run;
use super::lookup::by_key;
use super::{Store, StoreError, now_ms};

/// The last purge of one class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRun {
    /// When it ended, Unix ms.
    pub end_time_ms: i64,
    /// `ok`, or `failed: <why>`.
    pub outcome: String,
    /// Items it deleted.
    pub deleted: i64,
}

/// The table of a class and the column its retention counts from.
fn written_at(class: &str) -> Option<(&'static str, &'static str)> {
    Some(match class {
        "number_events" => ("number_events", "commit_time_ms"),
        "call_records" => ("call_records", "ingest_time_ms"),
        "quality_records" => ("quality_records", "ingest_time_ms"),
        "call_durations" => ("call_durations", "received_time_ms"),
        "audit_events" => ("audit_events", "time_ms"),
        _ => return None,
    })
}

impl Store {
    /// When the oldest item of `class` still kept was written (Unix ms); `None` when the class
    /// holds nothing or is unknown.
    pub(crate) async fn oldest_written(&self, class: &str) -> Result<Option<i64>, StoreError> {
        let Some((table, column)) = written_at(class) else {
            return Ok(None);
        };
        let query = Query::select()
            .expr_as(
                Func::min(Expr::col(Alias::new(column))),
                Alias::new("oldest"),
            )
            .from(Alias::new(table))
            .to_owned();
        let backend = self.shared.db.get_database_backend();
        let row = self.shared.db.query_one_raw(backend.build(&query)).await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<i64>>("", "oldest")?,
            None => None,
        })
    }

    /// Stores how the purge of `class` just ended.
    pub(crate) async fn record_purge(
        &self,
        class: &str,
        outcome: &str,
        deleted: u64,
    ) -> Result<(), StoreError> {
        let row = purge_run::ActiveModel {
            data_class: Set(class.to_owned()),
            end_time_ms: Set(now_ms()),
            outcome: Set(outcome.chars().take(500).collect()),
            deleted: Set(i64::try_from(deleted).unwrap_or(i64::MAX)),
        };
        retry_write(|| async {
            purge_run::Entity::insert(row.clone())
                .on_conflict(
                    OnConflict::column(purge_run::Column::DataClass)
                        .update_columns([
                            purge_run::Column::EndTimeMs,
                            purge_run::Column::Outcome,
                            purge_run::Column::Deleted,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&self.shared.db)
                .await?;
            Ok(Attempt::Committed(()))
        })
        .await
    }

    /// The last purge of `class`, if one ran.
    pub(crate) async fn last_purge(&self, class: &str) -> Result<Option<PurgeRun>, StoreError> {
        Ok(by_key(
            purge_run::Entity::find_by_id(class.to_owned()),
            &self.shared.db,
        )
        .await?
        .map(|m| PurgeRun {
            end_time_ms: m.end_time_ms,
            outcome: m.outcome,
            deleted: m.deleted,
        }))
    }
}
