//! The current state of a number. `state` holds the full domain state as JSON; the other
//! columns exist for lookups, filters and ordering.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "numbers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub number: String,
    pub carrier_id: String,
    pub tenant_id: String,
    /// 1 provisioned, 2 assigned, 3 released.
    pub status: i16,
    pub revision: i64,
    pub state: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
