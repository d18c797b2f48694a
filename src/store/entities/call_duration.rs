//! A carrier's reported duration of one call; the key (carrier, call id) makes uploads
//! exactly-once.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "call_durations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub carrier_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub call_id: String,
    pub tenant_id: String,
    pub start_time_ms: i64,
    /// The carrier's duration, for joins without decoding `record`.
    pub duration_ms: i64,
    /// Retention counts from here.
    pub received_time_ms: i64,
    /// The whole report as JSON: a resend is a duplicate only if identical.
    pub record: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
