//! The call-duration file `opconnect carrier upload` reads: CSV or JSON Lines with the
//! columns of `CallDuration`, read by the import's readers.

use std::path::Path;

use anyhow::Context;

use crate::cli::import::cells::Unit;
use crate::cli::import::columns::{CALL_DIRECTION, Column, Field, RecordKind};
use crate::cli::import::{FileFormat, input, readers};
use crate::pb::v1 as pb;

/// Call durations, for `ReportCallDurations`.
pub(crate) struct Durations;

impl RecordKind for Durations {
    type Record = pb::CallDuration;
    type Request = pb::ReportCallDurationsRequest;

    #[rustfmt::skip]
    const COLUMNS: &'static [Column<Self::Record>] = &[
        Column { name: "call_id", field: Field::Text(|r| &mut r.call_id) },
        Column { name: "tenant_id", field: Field::Text(|r| &mut r.tenant_id) },
        Column { name: "direction", field: Field::Enumeration(&CALL_DIRECTION, |r| &mut r.direction) },
        Column { name: "caller_number", field: Field::Text(|r| &mut r.caller_number) },
        Column { name: "callee_number", field: Field::Text(|r| &mut r.callee_number) },
        Column { name: "start_time", field: Field::Timestamp(|r| &mut r.start_time) },
        Column { name: "duration_seconds", field: Field::Duration(Unit::Seconds, |r| &mut r.duration) },
    ];

    fn new_record() -> Self::Record {
        pb::CallDuration::default()
    }

    fn request(records: Vec<Self::Record>) -> Self::Request {
        pb::ReportCallDurationsRequest {
            upload_id: String::new(),
            records,
        }
    }

    fn records_in(request: &Self::Request) -> usize {
        request.records.len()
    }
}

/// A file's records and the lines that could not be read (line number, why).
pub(crate) struct DurationFile {
    pub(crate) records: Vec<pb::CallDuration>,
    /// The line each record starts on, to name lines in rejections.
    pub(crate) lines: Vec<u64>,
    pub(crate) bad_lines: Vec<(u64, String)>,
}

/// Reads every record of `path`; with `strict`, the first bad line is an error.
pub(crate) fn read(
    path: &Path,
    format: Option<FileFormat>,
    strict: bool,
) -> anyhow::Result<DurationFile> {
    let name = input::display_name(path);
    let format = match format {
        Some(format) => format,
        None => input::format_of(path)?,
    };
    let (file, _) = input::open(path).with_context(|| name.clone())?;
    let parsed: Box<dyn Iterator<Item = anyhow::Result<readers::ParsedLine<pb::CallDuration>>>> =
        match format {
            FileFormat::Csv => {
                Box::new(readers::csv_records::<Durations>(file).with_context(|| name.clone())?)
            }
            FileFormat::Jsonl => Box::new(readers::jsonl_records::<Durations>(
                std::io::BufReader::new(file),
            )),
        };
    let mut out = DurationFile {
        records: Vec::new(),
        lines: Vec::new(),
        bad_lines: Vec::new(),
    };
    for line in parsed {
        let line = line.with_context(|| name.clone())?;
        match line.record {
            Ok(record) => {
                out.records.push(record);
                out.lines.push(line.number);
            }
            Err(why) if strict => anyhow::bail!("{name}: line {}: {why}", line.number),
            Err(why) => out.bad_lines.push((line.number, why)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same record reads from CSV and from JSON Lines; a bad line is reported by number.
    #[test]
    fn reads_csv_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(
            &csv,
            "call_id,tenant_id,direction,caller_number,callee_number,start_time,duration_seconds\n\
             c1,t,outbound,+14255550100,+12065550100,2026-11-01T00:00:00Z,61.5\n\
             c2,t,sideways,+1,+2,2026-11-01T00:00:00Z,1\n",
        )
        .unwrap();
        let jsonl = dir.path().join("d.jsonl");
        std::fs::write(
            &jsonl,
            r#"{"call_id":"c1","tenant_id":"t","direction":"outbound","caller_number":"+14255550100","callee_number":"+12065550100","start_time":"2026-11-01T00:00:00Z","duration_seconds":61.5}"#,
        )
        .unwrap();
        let from_csv = read(&csv, None, false).unwrap();
        let from_jsonl = read(&jsonl, None, false).unwrap();
        assert_eq!(from_csv.records, from_jsonl.records);
        assert_eq!(from_csv.records[0].duration.unwrap().nanos, 500_000_000);
        assert_eq!(from_csv.lines, [2]);
        assert_eq!(from_csv.bad_lines.len(), 1);
        assert_eq!(from_csv.bad_lines[0].0, 3);
        assert!(read(&csv, None, true).is_err());
    }
}
