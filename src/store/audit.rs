//! The audit log's rows: appended in batches by the audit writer, read in pages of append
//! order, purged by time. Rows are never updated.

use std::collections::BTreeMap;

use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::batch::{Attempt, columns, per_statement, retry_write};
use super::entities::audit_event;
use super::{Store, StoreError};
use crate::domain::audit::{AuditEvent, AuditFilter};

fn row(e: &AuditEvent) -> Result<audit_event::ActiveModel, StoreError> {
    let details = serde_json::to_string(&e.details)
        .map_err(|err| StoreError::Corrupt(format!("audit details: {err}")))?;
    Ok(audit_event::ActiveModel {
        id: NotSet,
        time_ms: Set(e.time_ms),
        identity: Set(e.identity.clone()),
        action: Set(e.action.clone()),
        carrier_id: Set(e.carrier_id.clone()),
        tenant_id: Set(e.tenant_id.clone()),
        outcome: Set(e.outcome.clone()),
        first_position: Set(e.first_position),
        last_position: Set(e.last_position),
        record_count: Set(e.record_count),
        details: Set(details),
    })
}

fn event(m: audit_event::Model) -> Result<(i64, AuditEvent), StoreError> {
    let details: BTreeMap<String, String> = serde_json::from_str(&m.details)
        .map_err(|e| StoreError::Corrupt(format!("audit event {}: {e}", m.id)))?;
    Ok((
        m.id,
        AuditEvent {
            time_ms: m.time_ms,
            identity: m.identity,
            action: m.action,
            carrier_id: m.carrier_id,
            tenant_id: m.tenant_id,
            outcome: m.outcome,
            first_position: m.first_position,
            last_position: m.last_position,
            record_count: m.record_count,
            details,
        },
    ))
}

impl Store {
    /// Appends `events` in one transaction, in order.
    pub(crate) async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = events.iter().map(row).collect::<Result<Vec<_>, _>>()?;
        retry_write(|| async {
            let tx = self.begin_write().await?;
            for chunk in per_statement(rows.iter().cloned(), columns::<audit_event::Entity>()) {
                audit_event::Entity::insert_many(chunk)
                    .exec_without_returning(&tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(Attempt::Committed(()))
        })
        .await
    }

    /// Up to `limit` events matching `filter` with an id above `after`, in append order.
    pub(crate) async fn audit_page(
        &self,
        filter: &AuditFilter,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
        use audit_event::Column as A;
        let mut query = audit_event::Entity::find().filter(A::Id.gt(after));
        if let Some(from) = filter.from_ms {
            query = query.filter(A::TimeMs.gte(from));
        }
        if let Some(before) = filter.before_ms {
            query = query.filter(A::TimeMs.lt(before));
        }
        if let Some(identity) = &filter.identity {
            query = query.filter(A::Identity.eq(identity.as_str()));
        }
        if let Some(carrier) = &filter.carrier_id {
            query = query.filter(A::CarrierId.eq(carrier.as_str()));
        }
        if let Some(tenant) = &filter.tenant_id {
            query = query.filter(A::TenantId.eq(tenant.as_str()));
        }
        query
            .order_by_asc(A::Id)
            .limit(limit)
            .all(&self.shared.db)
            .await?
            .into_iter()
            .map(event)
            .collect()
    }

    /// Deletes audit events older than `cutoff_ms`, at most `batch` per transaction. Returns
    /// how many were deleted.
    pub(crate) async fn purge_audit(&self, cutoff_ms: i64, batch: u64) -> Result<u64, StoreError> {
        use audit_event::Column as A;
        let mut deleted = 0;
        loop {
            let ids: Vec<i64> = audit_event::Entity::find()
                .select_only()
                .column(A::Id)
                .filter(A::TimeMs.lt(cutoff_ms))
                .order_by_asc(A::TimeMs)
                .limit(batch)
                .into_tuple()
                .all(&self.shared.db)
                .await?;
            if ids.is_empty() {
                return Ok(deleted);
            }
            deleted += retry_write(|| async {
                let tx = self.begin_write().await?;
                let mut n = 0;
                for chunk in per_statement(ids.iter().copied(), 1) {
                    n += audit_event::Entity::delete_many()
                        .filter(A::Id.is_in(chunk))
                        .exec(&tx)
                        .await?
                        .rows_affected;
                }
                tx.commit().await?;
                Ok(Attempt::Committed(n))
            })
            .await?;
        }
    }
}
