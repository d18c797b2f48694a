//! The two record kinds and their tables: how a call record or a quality record becomes a row
//! of its log, and what each table keeps beside the record for filters and joins.

use sea_orm::sea_query::Expr;

use super::entities::{call_record, quality_record};
use super::records::{LogRecord, Place, RecordTable, StoredRow};
use crate::domain::records::{CallRecord, Classification, LogKind, QualityRecord};
use crate::feed::Notice;
use crate::pb::v1 as pb;
use crate::wire::records::{call_record_to_pb, quality_record_to_pb};

// === Call records ===

impl LogRecord for CallRecord {
    const KIND: LogKind = LogKind::CallRecords;
    type Table = call_record::Entity;
    type Wire = pb::CallRecord;

    fn key(&self) -> (String, String) {
        (self.call_id().as_str().to_owned(), String::new())
    }

    fn wire(&self) -> pb::CallRecord {
        call_record_to_pb(0, self)
    }

    fn row(&self, place: Place, encoded: Vec<u8>) -> Vec<Expr> {
        // The tenant's side of the call, for usage by number.
        let tenant_number = self.tenant_number().map(ToString::to_string);
        vec![
            place.carrier_id.into(),
            place.cursor.into(),
            self.call_id().as_str().into(),
            self.tenant_id().as_str().into(),
            self.start_time_ms().into(),
            place.ingest_time_ms.into(),
            self.duration_ms().into(),
            self.successful().into(),
            tenant_number.unwrap_or_default().into(),
            encoded.into(),
        ]
    }
}

impl RecordTable for call_record::Entity {
    const COLUMNS: &'static [Self::Column] = {
        use call_record::Column as C;
        &[
            C::CarrierId,
            C::Cursor,
            C::CallId,
            C::TenantId,
            C::StartTimeMs,
            C::IngestTimeMs,
            C::DurationMs,
            C::Successful,
            C::TenantNumber,
            C::Encoded,
        ]
    };
    const CALL_ID: Self::Column = call_record::Column::CallId;
    const KEY: &'static [Self::Column] = &[call_record::Column::CallId];
    const TENANT: Self::Column = call_record::Column::TenantId;
    const START_TIME: Self::Column = call_record::Column::StartTimeMs;
    const ENCODED: Self::Column = call_record::Column::Encoded;
    /// The tenant's side of the call (a phone number).
    const PERSONAL: &'static [Self::Column] = &[call_record::Column::TenantNumber];
    const NOTICE: fn(String, i64) -> Notice = Notice::CallRecords;

    fn stored(row: call_record::Model) -> StoredRow {
        StoredRow {
            carrier_id: row.carrier_id,
            cursor: row.cursor,
            key: (row.call_id, String::new()),
            encoded: row.encoded,
        }
    }
}

// === Quality records ===

impl LogRecord for QualityRecord {
    const KIND: LogKind = LogKind::QualityRecords;
    type Table = quality_record::Entity;
    type Wire = pb::QualityRecord;

    fn key(&self) -> (String, String) {
        (
            self.call_id().as_str().to_owned(),
            self.stream_id().to_owned(),
        )
    }

    fn wire(&self) -> pb::QualityRecord {
        quality_record_to_pb(0, self)
    }

    fn row(&self, place: Place, encoded: Vec<u8>) -> Vec<Expr> {
        let classification: i16 = match self.classification() {
            Classification::Good => 1,
            Classification::Poor(_) => 2,
            Classification::Unclassified => 3,
        };
        vec![
            place.carrier_id.into(),
            place.cursor.into(),
            self.call_id().as_str().into(),
            self.stream_id().into(),
            self.tenant_id().as_str().into(),
            self.start_time_ms().into(),
            place.ingest_time_ms.into(),
            classification.into(),
            encoded.into(),
        ]
    }
}

impl RecordTable for quality_record::Entity {
    const COLUMNS: &'static [Self::Column] = {
        use quality_record::Column as C;
        &[
            C::CarrierId,
            C::Cursor,
            C::CallId,
            C::StreamId,
            C::TenantId,
            C::StartTimeMs,
            C::IngestTimeMs,
            C::Classification,
            C::Encoded,
        ]
    };
    const CALL_ID: Self::Column = quality_record::Column::CallId;
    const KEY: &'static [Self::Column] = &[
        quality_record::Column::CallId,
        quality_record::Column::StreamId,
    ];
    const TENANT: Self::Column = quality_record::Column::TenantId;
    const START_TIME: Self::Column = quality_record::Column::StartTimeMs;
    const ENCODED: Self::Column = quality_record::Column::Encoded;
    const PERSONAL: &'static [Self::Column] = &[];
    const NOTICE: fn(String, i64) -> Notice = Notice::QualityRecords;

    fn stored(row: quality_record::Model) -> StoredRow {
        StoredRow {
            carrier_id: row.carrier_id,
            cursor: row.cursor,
            key: (row.call_id, row.stream_id),
            encoded: row.encoded,
        }
    }
}

// === A kind known only at run time (an RPC's `kind` field) ===

/// The code of a log in `consumer_cursors.kind`.
pub(super) fn kind_code(kind: LogKind) -> i16 {
    match kind {
        LogKind::CallRecords => 1,
        LogKind::QualityRecords => 2,
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{EntityTrait, IdenStatic, Iterable};

    use super::*;
    use crate::wire::records::call_record_from_pb;

    /// The insert columns are every column of the table, in the order the entity declares
    /// them, which is the order `row` writes its values in.
    #[test]
    fn insert_columns_are_the_tables_columns_in_declared_order() {
        fn names<E: EntityTrait>(columns: impl IntoIterator<Item = E::Column>) -> Vec<String> {
            columns.into_iter().map(|c| c.as_str().to_owned()).collect()
        }
        fn listed_and_declared<E: RecordTable>() -> (Vec<String>, Vec<String>) {
            (
                names::<E>(E::COLUMNS.iter().copied()),
                names::<E>(E::Column::iter()),
            )
        }
        let (listed, declared) = listed_and_declared::<call_record::Entity>();
        assert_eq!(listed, declared);
        let (listed, declared) = listed_and_declared::<quality_record::Entity>();
        assert_eq!(listed, declared);
    }

    /// A call record's row puts each value in its column's place (the three integer times and
    /// durations, which a mix-up would not reject, included).
    #[test]
    fn a_call_records_values_are_in_their_columns_places() {
        let wire = pb::CallRecord {
            call_id: "call-1".into(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            call_type: "oc_in".into(),
            direction: pb::CallDirection::Inbound as i32,
            caller_number: "+14255550100".into(),
            callee_number: "+14255550199".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_060,
                nanos: 0,
            }),
            duration: Some(prost_types::Duration {
                seconds: 58,
                nanos: 0,
            }),
            successful: true,
            final_sip_code: 200,
            final_sip_phrase: "OK".into(),
            ..Default::default()
        };
        let record = call_record_from_pb(&wire).expect("valid");
        let place = Place {
            carrier_id: "contoso".into(),
            cursor: 7,
            ingest_time_ms: 1_800_000_000_000,
        };
        let row = record.row(place, vec![1, 2, 3]);
        assert_eq!(row.len(), call_record::Entity::COLUMNS.len());
        let at = |c: call_record::Column| {
            let i = call_record::Entity::COLUMNS
                .iter()
                .position(|x| x.as_str() == c.as_str());
            row[i.expect("listed")].clone()
        };
        use call_record::Column as C;
        assert_eq!(at(C::CarrierId), Expr::from("contoso"));
        assert_eq!(at(C::Cursor), Expr::from(7i64));
        assert_eq!(at(C::CallId), Expr::from("call-1"));
        assert_eq!(at(C::StartTimeMs), Expr::from(1_700_000_000_000i64));
        assert_eq!(at(C::IngestTimeMs), Expr::from(1_800_000_000_000i64));
        assert_eq!(at(C::DurationMs), Expr::from(58_000i64));
        assert_eq!(at(C::Successful), Expr::from(true));
        assert_eq!(at(C::TenantNumber), Expr::from("+14255550199"));
        assert_eq!(at(C::Encoded), Expr::from(vec![1u8, 2, 3]));
    }
}
