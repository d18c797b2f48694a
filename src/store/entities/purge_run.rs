//! The last purge of one retention class.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "purge_runs")]
pub struct Model {
    /// The class's stable name (`call_records`, ...).
    #[sea_orm(primary_key, auto_increment = false)]
    pub data_class: String,
    pub end_time_ms: i64,
    /// `ok`, or `failed: <why>`.
    pub outcome: String,
    pub deleted: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
