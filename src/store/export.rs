//! Reads of everything held about one tenant, page by page and carrier by carrier, for
//! `ExportTenantData`. Records come through the record logs' own reads (`read_records` with a
//! tenant filter); this file adds numbers, number events and durations.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{call_duration, number, number_event};
use super::numbers::decode_state;
use super::{Store, StoreError};
use crate::domain::durations::CallDurationReport;
use crate::domain::ids::{CarrierId, TenantId};
use crate::domain::number::{NumberEvent, NumberState};

impl Store {
    /// Up to `limit` of `carrier`'s numbers provisioned (now or last) to `tenant`, after
    /// `after` in number order.
    pub(crate) async fn tenant_numbers(
        &self,
        carrier: &CarrierId,
        tenant: &TenantId,
        after: &str,
        limit: u64,
    ) -> Result<Vec<NumberState>, StoreError> {
        number::Entity::find()
            .filter(number::Column::CarrierId.eq(carrier.as_str()))
            .filter(number::Column::TenantId.eq(tenant.as_str()))
            .filter(number::Column::Number.gt(after))
            .order_by_asc(number::Column::Number)
            .limit(limit)
            .all(&self.shared.db)
            .await?
            .iter()
            .map(|row| decode_state(&row.state))
            .collect()
    }

    /// Up to `limit` of `carrier`'s events of `tenant`'s numbers after revision `after`.
    pub(crate) async fn tenant_events(
        &self,
        carrier: &CarrierId,
        tenant: &TenantId,
        after: i64,
        limit: u64,
    ) -> Result<Vec<NumberEvent>, StoreError> {
        number_event::Entity::find()
            .filter(number_event::Column::CarrierId.eq(carrier.as_str()))
            .filter(number_event::Column::TenantId.eq(tenant.as_str()))
            .filter(number_event::Column::Revision.gt(after))
            .order_by_asc(number_event::Column::Revision)
            .limit(limit)
            .all(&self.shared.db)
            .await?
            .into_iter()
            .map(NumberEvent::try_from)
            .collect()
    }

    /// Up to `limit` of the durations `carrier` reported for `tenant`, after call id `after`.
    pub(crate) async fn tenant_durations(
        &self,
        carrier: &CarrierId,
        tenant: &TenantId,
        after: &str,
        limit: u64,
    ) -> Result<Vec<CallDurationReport>, StoreError> {
        call_duration::Entity::find()
            .filter(call_duration::Column::CarrierId.eq(carrier.as_str()))
            .filter(call_duration::Column::TenantId.eq(tenant.as_str()))
            .filter(call_duration::Column::CallId.gt(after))
            .order_by_asc(call_duration::Column::CallId)
            .limit(limit)
            .all(&self.shared.db)
            .await?
            .into_iter()
            .map(|row| {
                serde_json::from_str(&row.record)
                    .map_err(|e| StoreError::Corrupt(format!("duration {}: {e}", row.call_id)))
            })
            .collect()
    }
}
