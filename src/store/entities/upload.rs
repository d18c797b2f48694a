//! The stored summary of a completed upload, under the carrier's client-chosen id.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "uploads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub carrier_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub upload_id: String,
    pub complete_time_ms: i64,
    /// The tally as JSON.
    pub summary: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
