//! Durations repository: exactly-once storage of carrier-reported durations, completed
//! uploads, and the joins with platform call records that usage and reconciliation need.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order, Query, SelectStatement};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::batch::{Attempt, Lookup, insert_new_rows, per_statement, retry_write};
use super::entities::{call_duration, call_record, upload};
use super::lookup::by_key;
use super::redaction::{Stored, same_record};
use super::{Store, StoreError, now_ms};
use crate::domain::calendar::Window;
use crate::domain::durations::{CallDurationReport, IngestOutcome, StoredUpload, Tally};
use crate::domain::ids::{CarrierId, TenantId};
use crate::domain::reconcile::{PlatformSide, ReconRow};
use crate::domain::usage::UsageCall;

#[derive(Debug, FromQueryResult)]
struct PlatformJoinRow {
    call_id: String,
    tenant_id: String,
    start_time_ms: i64,
    duration_ms: i64,
    successful: bool,
    carrier_ms: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct CarrierJoinRow {
    call_id: String,
    tenant_id: String,
    start_time_ms: i64,
    carrier_ms: i64,
    platform_tenant: Option<String>,
    platform_start: Option<i64>,
    platform_ms: Option<i64>,
    platform_successful: Option<bool>,
}

#[derive(Debug, FromQueryResult)]
struct UsageJoinRow {
    call_id: String,
    tenant_number: String,
    start_time_ms: i64,
    duration_ms: i64,
    carrier_ms: Option<i64>,
}

fn decode_tally(json: &str) -> Result<Tally, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("upload summary: {e}")))
}

/// Whether no call id occurs twice in `batch`.
/// A valid duration with its stored form (JSON), made when it is validated (while the upload
/// is still being read), so that the commit, which holds the write lock, does as little as
/// it can.
pub(crate) struct EncodedDuration {
    report: CallDurationReport,
    json: String,
}

impl EncodedDuration {
    /// `report` with its stored form.
    pub(crate) fn new(report: CallDurationReport) -> Result<Self, StoreError> {
        let json = serde_json::to_string(&report)
            .map_err(|e| StoreError::Corrupt(format!("encoding duration: {e}")))?;
        Ok(Self { report, json })
    }
}

fn distinct_call_ids(batch: &[&EncodedDuration]) -> bool {
    let mut ids: Vec<&str> = batch.iter().map(|r| r.report.call_id().as_str()).collect();
    ids.sort_unstable();
    ids.windows(2).all(|w| w[0] != w[1])
}

impl Store {
    /// Stores a batch of one carrier's durations exactly once per (carrier, call id): new
    /// records are inserted with one multi-row statement per chunk, identical resends count as
    /// duplicates, different content under a stored call id as conflicts.
    pub(crate) async fn report_durations(
        &self,
        carrier: &CarrierId,
        batch: &[&EncodedDuration],
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        // As for records (see `Store::ingest`): first assume every call id is new, and
        // classify key by key only when one was not.
        if distinct_call_ids(batch)
            && let Some(outcomes) =
                retry_write(|| self.report_durations_once(carrier, batch, Lookup::AssumeNew))
                    .await?
        {
            return Ok(outcomes);
        }
        retry_write(|| self.report_durations_once(carrier, batch, Lookup::Existing))
            .await?
            .ok_or_else(|| StoreError::Corrupt("duration upload classified no record".into()))
    }

    /// One attempt of [`Store::report_durations`]. Inserts skip keys stored meanwhile, so a
    /// concurrent upload of the same carrier that stored some keys first (only possible on
    /// PostgreSQL) shows as fewer rows inserted than classified new: the attempt rolls back
    /// and reports the race, and the batch is classified again. Rows go in in call-id order,
    /// so concurrent uploads sharing keys wait for each other in one order, never in a cycle.
    async fn report_durations_once(
        &self,
        carrier: &CarrierId,
        batch: &[&EncodedDuration],
        lookup: Lookup,
    ) -> Result<Attempt<Option<Vec<IngestOutcome>>>, StoreError> {
        let tx = self.begin_write().await?;
        let mut stored: HashMap<String, String> = HashMap::new();
        let ids: Vec<&str> = match lookup {
            Lookup::Existing => batch.iter().map(|r| r.report.call_id().as_str()).collect(),
            Lookup::AssumeNew => Vec::new(),
        };
        for chunk in per_statement(ids, 1) {
            for row in call_duration::Entity::find()
                .filter(call_duration::Column::CarrierId.eq(carrier.as_str()))
                .filter(call_duration::Column::CallId.is_in(chunk))
                .all(&tx)
                .await?
            {
                stored.insert(row.call_id, row.record);
            }
        }
        let received_time_ms = now_ms();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut new: Vec<&EncodedDuration> = Vec::with_capacity(batch.len());
        for &encoded in batch {
            let (record, json) = (&encoded.report, &encoded.json);
            let outcome = match stored.get(record.call_id().as_str()) {
                Some(existing) if same_record(Stored::Duration, existing, json) => {
                    IngestOutcome::Duplicate
                }
                Some(_) => IngestOutcome::Conflict,
                None => {
                    // A later record of the batch under the same call id meets this one. When
                    // assuming every key new, the batch has none.
                    if lookup == Lookup::Existing {
                        stored.insert(record.call_id().as_str().to_owned(), json.clone());
                    }
                    new.push(encoded);
                    IngestOutcome::Accepted
                }
            };
            outcomes.push(outcome);
        }
        new.sort_unstable_by(|a, b| a.report.call_id().as_str().cmp(b.report.call_id().as_str()));
        use call_duration::Column as C;
        let expected = new.len() as u64;
        let rows = new
            .into_iter()
            .map(|EncodedDuration { report, json }| {
                vec![
                    carrier.as_str().into(),
                    report.call_id().as_str().into(),
                    report.tenant_id().as_str().into(),
                    report.start_time_ms().into(),
                    report.duration_ms().into(),
                    received_time_ms.into(),
                    json.as_str().into(),
                ]
            })
            .collect();
        let inserted = insert_new_rows(
            &tx,
            call_duration::Entity,
            &[
                C::CarrierId,
                C::CallId,
                C::TenantId,
                C::StartTimeMs,
                C::DurationMs,
                C::ReceivedTimeMs,
                C::Record,
            ],
            &[C::CarrierId, C::CallId],
            rows,
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
        Ok(Attempt::Committed(Some(outcomes)))
    }

    /// The stored summary of a carrier's completed upload.
    pub async fn upload(
        &self,
        carrier: &CarrierId,
        upload_id: &str,
    ) -> Result<Option<StoredUpload>, StoreError> {
        by_key(
            upload::Entity::find_by_id((carrier.to_string(), upload_id.to_owned())),
            &self.shared.db,
        )
        .await?
        .map(|row| {
            Ok(StoredUpload {
                tally: decode_tally(&row.summary)?,
                complete_time_ms: row.complete_time_ms,
            })
        })
        .transpose()
    }

    /// Stores a completed upload's summary; the first completion under an id is kept.
    pub async fn save_upload(
        &self,
        carrier: &CarrierId,
        upload_id: &str,
        tally: &Tally,
    ) -> Result<StoredUpload, StoreError> {
        let summary = serde_json::to_string(tally)
            .map_err(|e| StoreError::Corrupt(format!("upload summary: {e}")))?;
        retry_write(|| self.save_upload_once(carrier, upload_id, &summary)).await?;
        self.upload(carrier, upload_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("upload vanished after insert".into()))
    }

    async fn save_upload_once(
        &self,
        carrier: &CarrierId,
        upload_id: &str,
        summary: &str,
    ) -> Result<Attempt<()>, StoreError> {
        upload::Entity::insert(upload::ActiveModel {
            carrier_id: Set(carrier.to_string()),
            upload_id: Set(upload_id.to_owned()),
            complete_time_ms: Set(now_ms()),
            summary: Set(summary.to_owned()),
        })
        .on_conflict(
            OnConflict::columns([upload::Column::CarrierId, upload::Column::UploadId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.shared.db)
        .await?;
        Ok(Attempt::Committed(()))
    }

    /// Up to `limit` calls of `carrier` in `window`, after `after` in call-id order, each with
    /// the platform's and the carrier's side where present. A call counts when either side's
    /// start lies in the window; it appears once.
    pub async fn reconciliation_page(
        &self,
        carrier: &CarrierId,
        window: Window,
        after: &str,
        limit: u64,
    ) -> Result<Vec<ReconRow>, StoreError> {
        use call_duration::Column as D;
        use call_record::Column as C;
        let backend = self.shared.db.get_database_backend();
        let platform: SelectStatement = platform_calls_joined(window, after, limit)
            .column((call_record::Entity, C::TenantId))
            .column((call_record::Entity, C::Successful))
            .and_where(Expr::col((call_record::Entity, C::CarrierId)).eq(carrier.as_str()))
            .to_owned();
        let carrier_side: SelectStatement = Query::select()
            .column((call_duration::Entity, D::CallId))
            .column((call_duration::Entity, D::TenantId))
            .column((call_duration::Entity, D::StartTimeMs))
            .expr_as(
                Expr::col((call_duration::Entity, D::DurationMs)),
                "carrier_ms",
            )
            .expr_as(
                Expr::col((call_record::Entity, C::TenantId)),
                "platform_tenant",
            )
            .expr_as(
                Expr::col((call_record::Entity, C::StartTimeMs)),
                "platform_start",
            )
            .expr_as(
                Expr::col((call_record::Entity, C::DurationMs)),
                "platform_ms",
            )
            .expr_as(
                Expr::col((call_record::Entity, C::Successful)),
                "platform_successful",
            )
            .from(call_duration::Entity)
            .left_join(
                call_record::Entity,
                Expr::col((call_record::Entity, C::CarrierId))
                    .equals((call_duration::Entity, D::CarrierId))
                    .and(
                        Expr::col((call_record::Entity, C::CallId))
                            .equals((call_duration::Entity, D::CallId)),
                    ),
            )
            .and_where(Expr::col((call_duration::Entity, D::CarrierId)).eq(carrier.as_str()))
            .and_where(Expr::col((call_duration::Entity, D::StartTimeMs)).gte(window.from_ms))
            .and_where(Expr::col((call_duration::Entity, D::StartTimeMs)).lt(window.to_ms))
            .and_where(Expr::col((call_duration::Entity, D::CallId)).gt(after))
            .and_where(
                Expr::col((call_record::Entity, C::CallId))
                    .is_null()
                    .or(Expr::col((call_record::Entity, C::StartTimeMs)).lt(window.from_ms))
                    .or(Expr::col((call_record::Entity, C::StartTimeMs)).gte(window.to_ms)),
            )
            .order_by((call_duration::Entity, D::CallId), Order::Asc)
            .limit(limit)
            .to_owned();
        let platform_rows = PlatformJoinRow::find_by_statement(backend.build(&platform))
            .all(&self.shared.db)
            .await?;
        let carrier_rows = CarrierJoinRow::find_by_statement(backend.build(&carrier_side))
            .all(&self.shared.db)
            .await?;
        let mut rows: Vec<ReconRow> = platform_rows
            .into_iter()
            .map(|r| ReconRow {
                call_id: r.call_id,
                tenant_id: r.tenant_id,
                start_time_ms: r.start_time_ms,
                platform: Some(PlatformSide {
                    duration_ms: r.duration_ms,
                    successful: r.successful,
                }),
                carrier_ms: r.carrier_ms,
            })
            .chain(carrier_rows.into_iter().map(|r| {
                let platform = match (r.platform_ms, r.platform_successful) {
                    (Some(duration_ms), Some(successful)) => Some(PlatformSide {
                        duration_ms,
                        successful,
                    }),
                    _ => None,
                };
                ReconRow {
                    call_id: r.call_id,
                    tenant_id: r.platform_tenant.unwrap_or(r.tenant_id),
                    start_time_ms: r.platform_start.unwrap_or(r.start_time_ms),
                    platform,
                    carrier_ms: Some(r.carrier_ms),
                }
            }))
            .collect();
        // Both lists are sorted and disjoint: merged, the first `limit` are the next page. SQL
        // and this sort agree on the order because `call_id` compares bytewise on both
        // backends (SQLite's BINARY; `COLLATE "C"` on PostgreSQL, migration 5), as `String`
        // does; under a linguistic collation pages would skip or repeat calls.
        rows.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(rows)
    }

    /// Up to `limit` successful platform calls of `tenant` in `window`, after `after` in
    /// call-id order (bytewise, as in [`Store::reconciliation_page`]), each with the duration
    /// its own carrier reported, if any.
    pub async fn usage_page(
        &self,
        tenant: &TenantId,
        window: Window,
        after: &str,
        limit: u64,
    ) -> Result<Vec<(String, UsageCall)>, StoreError> {
        use call_record::Column as C;
        let query: SelectStatement = platform_calls_joined(window, after, limit)
            .column((call_record::Entity, C::TenantNumber))
            .and_where(Expr::col((call_record::Entity, C::TenantId)).eq(tenant.as_str()))
            .and_where(Expr::col((call_record::Entity, C::Successful)).eq(true))
            .to_owned();
        let backend = self.shared.db.get_database_backend();
        Ok(UsageJoinRow::find_by_statement(backend.build(&query))
            .all(&self.shared.db)
            .await?
            .into_iter()
            .map(|r| {
                (
                    r.call_id,
                    UsageCall {
                        number: r.tenant_number,
                        start_time_ms: r.start_time_ms,
                        platform_ms: r.duration_ms,
                        carrier_ms: r.carrier_ms,
                    },
                )
            })
            .collect())
    }

    /// Purges durations received before `cutoff_ms`, at most `batch` rows per statement.
    pub(crate) async fn purge_durations(
        &self,
        cutoff_ms: i64,
        batch: u64,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let keys: Vec<(String, String)> = call_duration::Entity::find()
                .filter(call_duration::Column::ReceivedTimeMs.lt(cutoff_ms))
                .order_by_asc(call_duration::Column::ReceivedTimeMs)
                .limit(batch)
                .all(&self.shared.db)
                .await?
                .into_iter()
                .map(|r| (r.carrier_id, r.call_id))
                .collect();
            if keys.is_empty() {
                return Ok(deleted);
            }
            deleted += retry_write(|| self.delete_durations(&keys)).await?;
        }
    }

    /// Deletes the durations under `keys` (carrier, call id) in one transaction.
    async fn delete_durations(
        &self,
        keys: &[(String, String)],
    ) -> Result<Attempt<u64>, StoreError> {
        let mut deleted = 0;
        let tx = self.begin_write().await?;
        for chunk in per_statement(keys, 1) {
            for (carrier_id, ids) in group_by_carrier(chunk) {
                deleted += call_duration::Entity::delete_many()
                    .filter(call_duration::Column::CarrierId.eq(carrier_id))
                    .filter(call_duration::Column::CallId.is_in(ids))
                    .exec(&tx)
                    .await?
                    .rows_affected;
            }
        }
        tx.commit().await?;
        Ok(Attempt::Committed(deleted))
    }
}

/// Platform call records starting in `window` after `after` (call-id order, at most `limit`),
/// each joined to the duration its own carrier reported: call id, start, platform duration and
/// `carrier_ms` (NULL when none). Callers add their columns and filters.
fn platform_calls_joined(window: Window, after: &str, limit: u64) -> SelectStatement {
    use call_duration::Column as D;
    use call_record::Column as C;
    Query::select()
        .column((call_record::Entity, C::CallId))
        .column((call_record::Entity, C::StartTimeMs))
        .column((call_record::Entity, C::DurationMs))
        .expr_as(
            Expr::col((call_duration::Entity, D::DurationMs)),
            "carrier_ms",
        )
        .from(call_record::Entity)
        .left_join(
            call_duration::Entity,
            Expr::col((call_duration::Entity, D::CarrierId))
                .equals((call_record::Entity, C::CarrierId))
                .and(
                    Expr::col((call_duration::Entity, D::CallId))
                        .equals((call_record::Entity, C::CallId)),
                ),
        )
        .and_where(Expr::col((call_record::Entity, C::StartTimeMs)).gte(window.from_ms))
        .and_where(Expr::col((call_record::Entity, C::StartTimeMs)).lt(window.to_ms))
        .and_where(Expr::col((call_record::Entity, C::CallId)).gt(after))
        .order_by((call_record::Entity, C::CallId), Order::Asc)
        .limit(limit)
        .to_owned()
}

fn group_by_carrier<'k>(
    keys: impl IntoIterator<Item = &'k (String, String)>,
) -> HashMap<&'k str, Vec<&'k str>> {
    let mut groups: HashMap<&str, Vec<&str>> = HashMap::new();
    for (carrier, call) in keys {
        groups
            .entry(carrier.as_str())
            .or_default()
            .push(call.as_str());
    }
    groups
}
