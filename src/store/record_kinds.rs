//! The two record kinds and their tables: how a call record or a quality record becomes a row
//! of its log, and what each table keeps beside the record for filters and joins.

use sea_orm::ActiveValue::Set;

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

    fn row(&self, place: Place, encoded: Vec<u8>) -> call_record::ActiveModel {
        // The tenant's side of the call, for usage by number.
        let tenant_number = self.tenant_number().map(ToString::to_string);
        call_record::ActiveModel {
            carrier_id: Set(place.carrier_id),
            cursor: Set(place.cursor),
            call_id: Set(self.call_id().as_str().to_owned()),
            tenant_id: Set(self.tenant_id().as_str().to_owned()),
            start_time_ms: Set(self.start_time_ms()),
            ingest_time_ms: Set(place.ingest_time_ms),
            duration_ms: Set(self.duration_ms()),
            successful: Set(self.successful()),
            tenant_number: Set(tenant_number.unwrap_or_default()),
            encoded: Set(encoded),
        }
    }
}

impl RecordTable for call_record::Entity {
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

    fn row(&self, place: Place, encoded: Vec<u8>) -> quality_record::ActiveModel {
        let classification = match self.classification() {
            Classification::Good => 1,
            Classification::Poor(_) => 2,
            Classification::Unclassified => 3,
        };
        quality_record::ActiveModel {
            carrier_id: Set(place.carrier_id),
            cursor: Set(place.cursor),
            call_id: Set(self.call_id().as_str().to_owned()),
            stream_id: Set(self.stream_id().to_owned()),
            tenant_id: Set(self.tenant_id().as_str().to_owned()),
            start_time_ms: Set(self.start_time_ms()),
            ingest_time_ms: Set(place.ingest_time_ms),
            classification: Set(classification),
            encoded: Set(encoded),
        }
    }
}

impl RecordTable for quality_record::Entity {
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
