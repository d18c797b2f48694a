//! A carrier's committed position in one of its record logs.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consumer_cursors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub carrier_id: String,
    /// 1 call records, 2 quality records.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: i16,
    pub cursor: i64,
    pub update_time_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
