//! One entry of a carrier's append-only number-event log.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "number_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub carrier_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub revision: i64,
    pub number: String,
    pub tenant_id: String,
    pub kind: i16,
    /// The number's state after the event, as JSON.
    pub state: String,
    /// The state before, as JSON; absent for a first provisioning.
    pub previous: Option<String>,
    pub commit_time_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
