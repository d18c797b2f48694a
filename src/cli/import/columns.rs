//! The record kinds an import reads, each with its one column table: the CSV header check, the
//! JSON key dispatch and the column lists of `--help` all come from these tables.

use prost_types::{Duration, Timestamp};

use super::cells::{Cell, Enumeration, Unit};
use crate::pb::v1 as pb;

/// A column (CSV) or key (JSON) of records `R`.
pub(crate) struct Column<R> {
    /// As the header or key spells it.
    pub(crate) name: &'static str,
    /// What its cells hold and which field of the record they go into.
    pub(crate) field: Field<R>,
}

/// The field a column sets, by the kind of value its cells hold. Fields are reached through
/// plain functions so that the tables can be constants.
pub(crate) enum Field<R> {
    Text(fn(&mut R) -> &mut String),
    Integer(fn(&mut R) -> &mut i32),
    Real(fn(&mut R) -> &mut Option<f64>),
    Boolean(fn(&mut R) -> &mut bool),
    Enumeration(&'static Enumeration, fn(&mut R) -> &mut i32),
    Timestamp(fn(&mut R) -> &mut Option<Timestamp>),
    Duration(Unit, fn(&mut R) -> &mut Option<Duration>),
}

impl<R> Column<R> {
    /// Sets this column's field of `record` from `cell`; errors say why without the column
    /// name, which the caller adds.
    pub(crate) fn set(&self, record: &mut R, cell: Cell<'_>) -> Result<(), String> {
        match self.field {
            Field::Text(field) => *field(record) = cell.text()?,
            Field::Integer(field) => *field(record) = cell.integer()?,
            Field::Real(field) => *field(record) = Some(cell.real()?),
            Field::Boolean(field) => *field(record) = cell.boolean()?,
            Field::Enumeration(enumeration, field) => {
                *field(record) = cell.enumeration(enumeration)?;
            }
            Field::Timestamp(field) => *field(record) = Some(cell.timestamp()?),
            Field::Duration(unit, field) => *field(record) = Some(cell.duration(unit)?),
        }
        Ok(())
    }
}

/// A kind of record an import reads: its columns, and how records make a request.
pub(crate) trait RecordKind {
    /// One record as the RPC takes it.
    type Record: Send + 'static;
    /// One request message.
    type Request: Send + Unpin + 'static;
    /// The columns (CSV) or keys (JSON) a record may have, in the order `--help` lists them.
    const COLUMNS: &'static [Column<Self::Record>];
    /// A record with every field unset.
    fn new_record() -> Self::Record;
    /// The request carrying `records`.
    fn request(records: Vec<Self::Record>) -> Self::Request;
    /// How many records `request` carries.
    fn records_in(request: &Self::Request) -> usize;

    /// The column called `name`.
    fn column(name: &str) -> Option<&'static Column<Self::Record>> {
        Self::COLUMNS.iter().find(|column| column.name == name)
    }
}

/// Call detail records, for `IngestCallRecords`.
pub(crate) struct CallRecords;

/// Call directions: `inbound`, `outbound`.
pub(crate) static CALL_DIRECTION: Enumeration = Enumeration {
    prefix: "CALL_DIRECTION_",
    valid: "inbound or outbound",
    from_name: |name| pb::CallDirection::from_str_name(name).map(i32::from),
};

/// Stream directions: `caller_to_callee`, `callee_to_caller`.
static STREAM_DIRECTION: Enumeration = Enumeration {
    prefix: "STREAM_DIRECTION_",
    valid: "caller_to_callee or callee_to_caller",
    from_name: |name| pb::StreamDirection::from_str_name(name).map(i32::from),
};

/// The call record inside a carrier's record.
fn call(record: &mut pb::CarrierCallRecord) -> &mut pb::CallRecord {
    record.record.get_or_insert_default()
}

impl RecordKind for CallRecords {
    type Record = pb::CarrierCallRecord;
    type Request = pb::IngestCallRecordsRequest;

    #[rustfmt::skip]
    const COLUMNS: &'static [Column<Self::Record>] = &[
        Column { name: "carrier_id", field: Field::Text(|r| &mut r.carrier_id) },
        Column { name: "call_id", field: Field::Text(|r| &mut call(r).call_id) },
        Column { name: "correlation_id", field: Field::Text(|r| &mut call(r).correlation_id) },
        Column { name: "tenant_id", field: Field::Text(|r| &mut call(r).tenant_id) },
        Column { name: "call_type", field: Field::Text(|r| &mut call(r).call_type) },
        Column {
            name: "direction",
            field: Field::Enumeration(&CALL_DIRECTION, |r| &mut call(r).direction),
        },
        Column { name: "caller_number", field: Field::Text(|r| &mut call(r).caller_number) },
        Column { name: "callee_number", field: Field::Text(|r| &mut call(r).callee_number) },
        Column { name: "start_time", field: Field::Timestamp(|r| &mut call(r).start_time) },
        Column { name: "invite_time", field: Field::Timestamp(|r| &mut call(r).invite_time) },
        Column { name: "end_time", field: Field::Timestamp(|r| &mut call(r).end_time) },
        Column { name: "failure_time", field: Field::Timestamp(|r| &mut call(r).failure_time) },
        Column {
            name: "duration_seconds",
            field: Field::Duration(Unit::Seconds, |r| &mut call(r).duration),
        },
        Column { name: "successful", field: Field::Boolean(|r| &mut call(r).successful) },
        Column { name: "final_sip_code", field: Field::Integer(|r| &mut call(r).final_sip_code) },
        Column {
            name: "final_sip_phrase",
            field: Field::Text(|r| &mut call(r).final_sip_phrase),
        },
        Column {
            name: "microsoft_subcode",
            field: Field::Integer(|r| &mut call(r).microsoft_subcode),
        },
        Column { name: "media_bypass", field: Field::Boolean(|r| &mut call(r).media_bypass) },
        Column { name: "trunk_fqdn", field: Field::Text(|r| &mut call(r).trunk_fqdn) },
    ];

    fn new_record() -> Self::Record {
        pb::CarrierCallRecord {
            carrier_id: String::new(),
            record: Some(pb::CallRecord::default()),
        }
    }

    fn request(records: Vec<Self::Record>) -> Self::Request {
        pb::IngestCallRecordsRequest { records }
    }

    fn records_in(request: &Self::Request) -> usize {
        request.records.len()
    }
}

/// Call quality records, for `IngestQualityRecords`.
pub(crate) struct QualityRecords;

/// The quality record inside a carrier's record.
fn quality(record: &mut pb::CarrierQualityRecord) -> &mut pb::QualityRecord {
    record.record.get_or_insert_default()
}

impl RecordKind for QualityRecords {
    type Record = pb::CarrierQualityRecord;
    type Request = pb::IngestQualityRecordsRequest;

    #[rustfmt::skip]
    const COLUMNS: &'static [Column<Self::Record>] = &[
        Column { name: "carrier_id", field: Field::Text(|r| &mut r.carrier_id) },
        Column { name: "call_id", field: Field::Text(|r| &mut quality(r).call_id) },
        Column { name: "stream_id", field: Field::Text(|r| &mut quality(r).stream_id) },
        Column {
            name: "stream_direction",
            field: Field::Enumeration(&STREAM_DIRECTION, |r| &mut quality(r).stream_direction),
        },
        Column { name: "tenant_id", field: Field::Text(|r| &mut quality(r).tenant_id) },
        Column { name: "start_time", field: Field::Timestamp(|r| &mut quality(r).start_time) },
        Column { name: "end_time", field: Field::Timestamp(|r| &mut quality(r).end_time) },
        Column { name: "audio_codec", field: Field::Text(|r| &mut quality(r).audio_codec) },
        Column {
            name: "avg_jitter_ms",
            field: Field::Duration(Unit::Milliseconds, |r| &mut quality(r).avg_jitter),
        },
        Column {
            name: "max_jitter_ms",
            field: Field::Duration(Unit::Milliseconds, |r| &mut quality(r).max_jitter),
        },
        Column {
            name: "avg_round_trip_ms",
            field: Field::Duration(Unit::Milliseconds, |r| &mut quality(r).avg_round_trip),
        },
        Column {
            name: "max_round_trip_ms",
            field: Field::Duration(Unit::Milliseconds, |r| &mut quality(r).max_round_trip),
        },
        Column {
            name: "avg_packet_loss_rate",
            field: Field::Real(|r| &mut quality(r).avg_packet_loss_rate),
        },
        Column {
            name: "max_packet_loss_rate",
            field: Field::Real(|r| &mut quality(r).max_packet_loss_rate),
        },
        Column {
            name: "avg_audio_degradation",
            field: Field::Real(|r| &mut quality(r).avg_audio_degradation),
        },
        Column {
            name: "avg_concealed_ratio",
            field: Field::Real(|r| &mut quality(r).avg_concealed_ratio),
        },
    ];

    fn new_record() -> Self::Record {
        pb::CarrierQualityRecord {
            carrier_id: String::new(),
            record: Some(pb::QualityRecord::default()),
        }
    }

    fn request(records: Vec<Self::Record>) -> Self::Request {
        pb::IngestQualityRecordsRequest { records }
    }

    fn records_in(request: &Self::Request) -> usize {
        request.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Values are checked for syntax: enums by short name, booleans, numbers, JSON types.
    #[test]
    fn value_syntax_is_checked() {
        let set = |column: &str, cell: Cell<'_>| {
            let mut record = CallRecords::new_record();
            let column = CallRecords::column(column).ok_or("unknown column")?;
            column.set(&mut record, cell)
        };
        let bad = |column: &str, value: &str| set(column, Cell::Csv(value)).err();
        assert_eq!(
            bad("direction", "sideways"),
            Some("expected inbound or outbound: \"sideways\"".to_owned())
        );
        assert!(bad("direction", "unspecified").is_some());
        assert!(bad("direction", "OUTBOUND").is_none());
        assert_eq!(
            bad("successful", "yes"),
            Some("expected true, false, 1 or 0: \"yes\"".to_owned())
        );
        assert!(bad("successful", "FALSE").is_none());
        assert!(bad("duration_seconds", "NaN").is_some());
        assert!(bad("duration_seconds", "1 s").is_some());
        assert!(bad("final_sip_code", "200.0").is_some());
        let number = Value::from(7);
        assert_eq!(
            set("call_id", Cell::Json(&number)).err(),
            Some("expected a string, found a number".to_owned())
        );
    }

    /// Each column sets its own field: a row pointing at another column's field would otherwise
    /// go unnoticed where two columns hold the same kind of value.
    #[test]
    fn every_column_sets_its_own_field() {
        fn check<K: RecordKind>()
        where
            K::Record: std::fmt::Debug,
        {
            let empty = format!("{:?}", K::new_record());
            let mut seen = Vec::new();
            for column in K::COLUMNS {
                let value = match column.field {
                    Field::Enumeration(enumeration, _) => {
                        enumeration.valid.split(' ').next().unwrap_or_default()
                    }
                    Field::Timestamp(_) => "2026-11-27T10:00:00Z",
                    Field::Boolean(_) => "true",
                    Field::Text(_) => "x",
                    Field::Integer(_) | Field::Real(_) | Field::Duration(..) => "7",
                };
                let mut record = K::new_record();
                assert_eq!(
                    column.set(&mut record, Cell::Csv(value)),
                    Ok(()),
                    "{}",
                    column.name
                );
                let record = format!("{record:?}");
                assert_ne!(record, empty, "{} sets nothing", column.name);
                assert!(
                    !seen.contains(&record),
                    "{} sets the field of another column",
                    column.name
                );
                seen.push(record);
            }
        }
        check::<CallRecords>();
        check::<QualityRecords>();
    }

    /// Names are unique, and say what `--help` promises: timestamps end in `_time`, durations
    /// in their unit.
    #[test]
    fn column_names_follow_the_help() {
        fn check<R>(columns: &[Column<R>]) {
            for (i, column) in columns.iter().enumerate() {
                let name = column.name;
                assert!(columns[..i].iter().all(|c| c.name != name), "{name} twice");
                match column.field {
                    Field::Timestamp(_) => assert!(name.ends_with("_time"), "{name}"),
                    Field::Duration(Unit::Seconds, _) => assert!(name.ends_with("_seconds")),
                    Field::Duration(Unit::Milliseconds, _) => assert!(name.ends_with("_ms")),
                    _ => assert!(!name.ends_with("_time"), "{name} is not a timestamp"),
                }
            }
        }
        check(CallRecords::COLUMNS);
        check(QualityRecords::COLUMNS);
    }
}
