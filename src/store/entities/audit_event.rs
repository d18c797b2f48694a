//! One entry of the append-only audit log. It never holds record content.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// Append order.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// When the action ended, Unix milliseconds; retention counts from here.
    pub time_ms: i64,
    pub identity: String,
    pub action: String,
    /// Empty when no carrier is concerned.
    pub carrier_id: String,
    /// Empty when no tenant is concerned.
    pub tenant_id: String,
    pub outcome: String,
    pub first_position: Option<i64>,
    pub last_position: Option<i64>,
    pub record_count: i64,
    /// The key fields, a JSON object of strings.
    pub details: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
