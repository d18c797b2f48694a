//! A registered carrier and its number-event revision counter.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "carriers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub carrier_id: String,
    pub display_name: String,
    pub sip_domain: String,
    /// 1 active, 2 suspended.
    pub status: i16,
    pub create_time_ms: i64,
    /// The revision of the carrier's latest number event. Taken with
    /// `UPDATE ... SET number_revision = number_revision + n RETURNING` as the first write of a
    /// transaction, so revisions are gapless and in commit order (DESIGN §4).
    pub number_revision: i64,
    /// Every event with a revision up to this one has been purged by retention.
    pub events_purged_through: i64,
    /// Cursor of the carrier's newest call record; taken like `number_revision`.
    pub call_record_cursor: i64,
    /// Every call record up to this cursor has been purged.
    pub call_records_purged_through: i64,
    /// Cursor of the carrier's newest quality record.
    pub quality_record_cursor: i64,
    /// Every quality record up to this cursor has been purged.
    pub quality_records_purged_through: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
