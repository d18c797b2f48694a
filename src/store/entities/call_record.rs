//! One entry of a carrier's call-record log. `encoded` holds the record's protobuf
//! encoding (the wire message with cursor 0), which streams frame without decoding.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "call_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub carrier_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub cursor: i64,
    /// Unique across carriers: ingestion is idempotent on it.
    pub call_id: String,
    pub tenant_id: String,
    pub start_time_ms: i64,
    /// Retention counts from ingestion, like a message log.
    pub ingest_time_ms: i64,
    /// The platform's duration, for usage and reconciliation joins without decoding `record`.
    pub duration_ms: i64,
    pub successful: bool,
    /// The tenant's side of the call: the caller of an outbound call, the callee of an
    /// inbound one (empty when withheld).
    pub tenant_number: String,
    pub encoded: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
