//! One entry of a carrier's quality-record log. `encoded` holds the record's protobuf
//! encoding (the wire message with cursor 0), which streams frame without decoding.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "quality_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub carrier_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub cursor: i64,
    /// With `stream_id`, unique across carriers.
    pub call_id: String,
    pub stream_id: String,
    pub tenant_id: String,
    pub start_time_ms: i64,
    pub ingest_time_ms: i64,
    /// 1 good, 2 poor, 3 unclassified: for queries over quality without decoding records.
    pub classification: i16,
    pub encoded: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
