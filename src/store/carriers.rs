//! Carrier repository: registration, listing, status.

use sea_orm::prelude::Expr;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::batch::{Attempt, retry_write};
use super::entities::{carrier, number_event};
use super::logs::take_positions;
use super::lookup::by_key;
use super::{Store, StoreError, notify, now_ms};
use crate::domain::carrier::{Carrier, CarrierStatus};
use crate::domain::ids::{CarrierId, SipDomain};
use crate::feed::Notice;

impl TryFrom<carrier::Model> for Carrier {
    type Error = StoreError;

    fn try_from(m: carrier::Model) -> Result<Self, StoreError> {
        Ok(Self {
            id: CarrierId::parse(&m.carrier_id).map_err(StoreError::Corrupt)?,
            sip_domain: SipDomain::parse(&m.sip_domain).map_err(StoreError::Corrupt)?,
            display_name: m.display_name,
            status: CarrierStatus::from_code(m.status),
            create_time_ms: m.create_time_ms,
            number_revision: m.number_revision,
            events_purged_through: m.events_purged_through,
        })
    }
}

impl Store {
    /// Registers a carrier; an identical existing carrier is returned as it is.
    pub async fn create_carrier(
        &self,
        id: &CarrierId,
        display_name: &str,
        sip_domain: &SipDomain,
    ) -> Result<Carrier, StoreError> {
        retry_write(|| self.create_carrier_once(id, display_name, sip_domain)).await
    }

    /// One attempt of [`Store::create_carrier`]; [`Attempt::Raced`] when a concurrent request
    /// registered the same id between the read and the insert (PostgreSQL only): the next
    /// attempt reads that carrier and compares.
    async fn create_carrier_once(
        &self,
        id: &CarrierId,
        display_name: &str,
        sip_domain: &SipDomain,
    ) -> Result<Attempt<Carrier>, StoreError> {
        let tx = self.begin_write().await?;
        if let Some(existing) = by_key(carrier::Entity::find_by_id(id.as_str()), &tx).await? {
            tx.commit().await?;
            let existing = Carrier::try_from(existing)?;
            return if existing.display_name == display_name && &existing.sip_domain == sip_domain {
                Ok(Attempt::Committed(existing))
            } else {
                Err(StoreError::CarrierExists(id.to_string()))
            };
        }
        let model = carrier::ActiveModel {
            carrier_id: Set(id.to_string()),
            display_name: Set(display_name.to_owned()),
            sip_domain: Set(sip_domain.as_str().to_owned()),
            status: Set(CarrierStatus::Active.code()),
            create_time_ms: Set(now_ms()),
            number_revision: Set(0),
            events_purged_through: Set(0),
            call_record_cursor: Set(0),
            call_records_purged_through: Set(0),
            quality_record_cursor: Set(0),
            quality_records_purged_through: Set(0),
        };
        let inserted = carrier::Entity::insert(model)
            .on_conflict(
                OnConflict::column(carrier::Column::CarrierId)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&tx)
            .await?;
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Attempt::Raced);
        }
        let stored = by_key(carrier::Entity::find_by_id(id.as_str()), &tx)
            .await?
            .ok_or_else(|| StoreError::Corrupt("carrier vanished after insert".into()))?;
        tx.commit().await?;
        Carrier::try_from(stored).map(Attempt::Committed)
    }

    /// One carrier, if registered.
    pub async fn carrier(&self, id: &str) -> Result<Option<Carrier>, StoreError> {
        by_key(carrier::Entity::find_by_id(id), &self.shared.db)
            .await?
            .map(Carrier::try_from)
            .transpose()
    }

    /// Up to `limit` carriers with an id greater than `after`, in id order.
    pub async fn list_carriers(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Carrier>, StoreError> {
        let mut query = carrier::Entity::find().order_by_asc(carrier::Column::CarrierId);
        if let Some(after) = after {
            query = query.filter(carrier::Column::CarrierId.gt(after));
        }
        query
            .limit(limit)
            .all(&self.shared.db)
            .await?
            .into_iter()
            .map(Carrier::try_from)
            .collect()
    }

    /// Sets a carrier's status.
    pub async fn set_carrier_status(
        &self,
        id: &CarrierId,
        status: CarrierStatus,
    ) -> Result<Carrier, StoreError> {
        retry_write(|| self.set_carrier_status_once(id, status)).await
    }

    async fn set_carrier_status_once(
        &self,
        id: &CarrierId,
        status: CarrierStatus,
    ) -> Result<Attempt<Carrier>, StoreError> {
        let tx = self.begin_write().await?;
        let updated = carrier::Entity::update_many()
            .col_expr(carrier::Column::Status, Expr::value(status.code()))
            .filter(carrier::Column::CarrierId.eq(id.as_str()))
            .exec_with_returning(&tx)
            .await?;
        notify(&tx, &Notice::Status(id.to_string())).await?;
        tx.commit().await?;
        self.shared.feed.carrier_changed(id.as_str());
        let model = updated
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::CarrierNotFound(id.to_string()))?;
        Carrier::try_from(model).map(Attempt::Committed)
    }
}

/// Locks a carrier's row for the rest of the transaction `tx` and returns it. Writers of one
/// carrier are ordered by this lock until they commit; on SQLite the IMMEDIATE transaction
/// already orders every writer.
pub(super) async fn lock_carrier<C: ConnectionTrait>(
    tx: &C,
    id: &str,
) -> Result<Carrier, StoreError> {
    advance_revision(tx, id, 0).await
}

/// Adds `n` to a carrier's number revision inside `tx` and returns the carrier after it. The
/// revisions `number_revision - n + 1 ..= number_revision` belong to the caller's events.
pub(super) async fn advance_revision<C: ConnectionTrait>(
    tx: &C,
    id: &str,
    n: i64,
) -> Result<Carrier, StoreError> {
    let model = take_positions::<number_event::Entity, _>(tx, id, n)
        .await?
        .ok_or_else(|| StoreError::CarrierNotFound(id.to_owned()))?;
    Carrier::try_from(model)
}
