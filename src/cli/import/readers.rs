//! The CSV and JSON Lines readers: records one at a time, each with the line it starts on, so
//! that bad lines and the server's rejections can name lines of the file.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

use anyhow::Context;
use serde_json::Value;

use super::cells::{Cell, json_kind, shown};
use super::columns::{Column, RecordKind};

/// One record of the file, or why its line could not be read.
#[derive(Debug)]
pub(crate) struct ParsedLine<R> {
    /// 1-based line in the file where the record starts.
    pub(crate) number: u64,
    /// The record, or why it could not be parsed.
    pub(crate) record: Result<R, String>,
}

/// The records of a CSV file; fails at once on a header with an unknown column.
pub(crate) fn csv_records<K: RecordKind>(
    input: impl Read,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<ParsedLine<K::Record>>>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(LineStarts::new(input));
    let header = reader
        .headers()
        .context("cannot read the CSV header")?
        .clone();
    let columns = header_columns::<K>(&header).map_err(|why| {
        let line = reader.get_mut().line_at(cursor(header.position()));
        anyhow::anyhow!("line {line}: {why}")
    })?;
    let mut row = csv::StringRecord::new();
    let mut failed = false;
    Ok(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let (position, record) = match reader.read_record(&mut row) {
            Ok(false) => return None,
            Ok(true) => (
                row.position().cloned(),
                record_from_csv::<K>(&columns, &row),
            ),
            Err(error) => match *error.kind() {
                csv::ErrorKind::UnequalLengths {
                    ref pos,
                    expected_len,
                    len,
                } => (
                    pos.clone(),
                    Err(format!("{len} fields where the header has {expected_len}")),
                ),
                csv::ErrorKind::Utf8 { ref pos, .. } => {
                    (pos.clone(), Err("not valid UTF-8".to_owned()))
                }
                _ => {
                    failed = true;
                    return Some(Err(
                        anyhow::Error::new(error).context("cannot read the file")
                    ));
                }
            },
        };
        let number = reader.get_mut().line_at(cursor(position.as_ref()));
        Some(Ok(ParsedLine { number, record }))
    }))
}

/// The byte offset csv gives a record (or 0).
fn cursor(position: Option<&csv::Position>) -> u64 {
    position.map_or(0, csv::Position::byte)
}

/// The column of each header field; an unknown or repeated column is an error.
fn header_columns<K: RecordKind>(
    header: &csv::StringRecord,
) -> Result<Vec<&'static Column<K::Record>>, String> {
    let mut columns: Vec<&Column<K::Record>> = Vec::with_capacity(header.len());
    let mut unknown = Vec::new();
    for name in header {
        match K::column(name) {
            Some(_) if columns.iter().any(|column| column.name == name) => {
                return Err(format!("column {name:?} appears twice"));
            }
            Some(column) => columns.push(column),
            None => unknown.push(shown(name)),
        }
    }
    if unknown.is_empty() {
        Ok(columns)
    } else {
        let known: Vec<_> = K::COLUMNS.iter().map(|column| column.name).collect();
        Err(format!(
            "unknown column {} (the columns are {})",
            unknown.join(", "),
            known.join(", ")
        ))
    }
}

/// The record of one CSV row; empty cells leave their fields unset.
fn record_from_csv<K: RecordKind>(
    columns: &[&Column<K::Record>],
    row: &csv::StringRecord,
) -> Result<K::Record, String> {
    let mut record = K::new_record();
    for (column, cell) in columns.iter().zip(row) {
        if !cell.is_empty() {
            column
                .set(&mut record, Cell::Csv(cell))
                .map_err(|why| format!("{}: {why}", column.name))?;
        }
    }
    Ok(record)
}

/// A reader that remembers where the non-blank lines of its input start.
///
/// csv gives a record the reader's position before it, which is still on the previous line
/// after a CRLF and ahead of any blank lines csv skips; the record really starts on the first
/// non-blank line at or after that byte.
struct LineStarts<R> {
    /// The input.
    inner: R,
    /// Bytes read so far.
    offset: u64,
    /// The line of the next byte.
    line: u64,
    /// Whether the next byte starts a line.
    at_line_start: bool,
    /// (byte offset, line) of each non-blank line read and not yet passed by a record; holds
    /// only the lines csv has buffered ahead.
    starts: VecDeque<(u64, u64)>,
}

impl<R> LineStarts<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            line: 1,
            at_line_start: true,
            starts: VecDeque::new(),
        }
    }

    /// The line of a record csv places at byte `cursor`.
    fn line_at(&mut self, cursor: u64) -> u64 {
        while self
            .starts
            .front()
            .is_some_and(|&(offset, _)| offset < cursor)
        {
            self.starts.pop_front();
        }
        self.starts.front().map_or(self.line, |&(_, line)| line)
    }
}

impl<R: Read> Read for LineStarts<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &byte in &buf[..n] {
            if self.at_line_start && byte != b'\r' && byte != b'\n' {
                self.starts.push_back((self.offset, self.line));
            }
            self.at_line_start = byte == b'\n';
            if byte == b'\n' {
                self.line += 1;
            }
            self.offset += 1;
        }
        Ok(n)
    }
}

/// The records of a JSON Lines file; blank lines are skipped.
pub(crate) fn jsonl_records<K: RecordKind>(
    mut input: impl BufRead,
) -> impl Iterator<Item = anyhow::Result<ParsedLine<K::Record>>> {
    let mut buf = Vec::new();
    let mut number = 0_u64;
    let mut failed = false;
    std::iter::from_fn(move || {
        while !failed {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) => {
                    number += 1;
                    let mut text = buf.trim_ascii();
                    if number == 1 {
                        text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
                    }
                    if !text.is_empty() {
                        let record = record_from_json::<K>(text);
                        return Some(Ok(ParsedLine { number, record }));
                    }
                }
                Err(error) => {
                    failed = true;
                    return Some(Err(
                        anyhow::Error::new(error).context("cannot read the file")
                    ));
                }
            }
        }
        None
    })
}

/// The record of one JSON Lines line; missing and null keys leave their fields unset.
fn record_from_json<K: RecordKind>(line: &[u8]) -> Result<K::Record, String> {
    let object = match serde_json::from_slice(line) {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            return Err(format!(
                "expected a JSON object, found {}",
                json_kind(&other)
            ));
        }
        Err(error) => {
            let message = error.to_string();
            let position = format!(" at line {} column {}", error.line(), error.column());
            let message = message.strip_suffix(&position).unwrap_or(&message);
            return Err(format!(
                "malformed JSON at column {}: {message}",
                error.column()
            ));
        }
    };
    let mut fields = Vec::with_capacity(object.len());
    let mut unknown = Vec::new();
    for (key, value) in &object {
        match K::column(key) {
            Some(column) => fields.push((column, value)),
            None => unknown.push(shown(key)),
        }
    }
    if !unknown.is_empty() {
        return Err(format!("unknown key {}", unknown.join(", ")));
    }
    let mut record = K::new_record();
    for (column, value) in fields {
        if !value.is_null() {
            column
                .set(&mut record, Cell::Json(value))
                .map_err(|why| format!("{}: {why}", column.name))?;
        }
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::import::columns::{CallRecords, QualityRecords};
    use crate::pb::v1 as pb;
    use prost_types::{Duration as PbDuration, Timestamp};

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn dur(seconds: i64, nanos: i32) -> Option<PbDuration> {
        Some(PbDuration { seconds, nanos })
    }

    /// Parses `text` as CSV records of kind `K`.
    fn csv<K: RecordKind>(text: &str) -> Vec<ParsedLine<K::Record>> {
        let records = csv_records::<K>(text.as_bytes()).unwrap();
        records.collect::<anyhow::Result<_>>().unwrap()
    }

    /// Parses `text` as JSON Lines records of kind `K`.
    fn jsonl<K: RecordKind>(text: &str) -> Vec<ParsedLine<K::Record>> {
        let records = jsonl_records::<K>(text.as_bytes());
        records.collect::<anyhow::Result<_>>().unwrap()
    }

    /// The line numbers and the records or errors of `lines`, for comparing.
    fn outcome<R>(lines: Vec<ParsedLine<R>>) -> Vec<(u64, Result<R, String>)> {
        lines.into_iter().map(|l| (l.number, l.record)).collect()
    }

    fn expected_call() -> pb::CarrierCallRecord {
        pb::CarrierCallRecord {
            carrier_id: "contoso".into(),
            record: Some(pb::CallRecord {
                redacted: false,
                cursor: 0,
                call_id: "c-1".into(),
                correlation_id: "corr-1".into(),
                tenant_id: "0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c".into(),
                call_type: "oc_in".into(),
                direction: pb::CallDirection::Inbound as i32,
                caller_number: "+14255550100".into(),
                callee_number: "+14255550123".into(),
                start_time: ts(1_795_773_600, 0),
                invite_time: ts(1_795_773_599, 250_000_000),
                end_time: ts(1_795_773_930, 500_000_000),
                failure_time: None,
                duration: dur(330, 500_000_000),
                successful: true,
                final_sip_code: 200,
                final_sip_phrase: "OK, fine".into(),
                microsoft_subcode: 0,
                media_bypass: false,
                trunk_fqdn: "sbc1.contoso.example".into(),
            }),
        }
    }

    const CALL_CSV: &str = "\
carrier_id,call_id,correlation_id,tenant_id,call_type,direction,caller_number,callee_number,start_time,invite_time,end_time,failure_time,duration_seconds,successful,final_sip_code,final_sip_phrase,microsoft_subcode,media_bypass,trunk_fqdn
contoso,c-1,corr-1,0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c,oc_in,Inbound,+14255550100,+14255550123,2026-11-27T10:00:00Z,2026-11-27T10:59:59.25+01:00,2026-11-27T10:05:30.5Z,,330.5,true,200,\"OK, fine\",0,0,sbc1.contoso.example
";

    /// A CSV row becomes exactly the call record it spells, empty cells left unset.
    #[test]
    fn csv_call_record_parses_to_the_exact_message() {
        let lines = csv::<CallRecords>(CALL_CSV);
        assert_eq!(outcome(lines), vec![(2, Ok(expected_call()))]);
    }

    /// A JSON line becomes exactly the call record it spells; null and missing keys are unset.
    #[test]
    fn jsonl_call_record_parses_to_the_exact_message() {
        let line = r#"{"carrier_id":"contoso","call_id":"c-1","correlation_id":"corr-1","tenant_id":"0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c","call_type":"oc_in","direction":"CALL_DIRECTION_INBOUND","caller_number":"+14255550100","callee_number":"+14255550123","start_time":"2026-11-27T10:00:00Z","invite_time":"2026-11-27T09:59:59.250Z","end_time":"2026-11-27T10:05:30.5Z","failure_time":null,"duration_seconds":330.5,"successful":true,"final_sip_code":200,"final_sip_phrase":"OK, fine","media_bypass":0,"trunk_fqdn":"sbc1.contoso.example"}"#;
        let lines = jsonl::<CallRecords>(&format!("{line}\n"));
        assert_eq!(outcome(lines), vec![(1, Ok(expected_call()))]);
    }

    /// A quality record parses from CSV and JSON alike, durations in milliseconds.
    #[test]
    fn quality_record_parses_from_csv_and_jsonl() {
        let expected = pb::CarrierQualityRecord {
            carrier_id: "contoso".into(),
            record: Some(pb::QualityRecord {
                call_id: "c-1".into(),
                stream_id: "s-1".into(),
                stream_direction: pb::StreamDirection::CalleeToCaller as i32,
                tenant_id: "t".into(),
                start_time: ts(1_795_773_600, 0),
                end_time: ts(1_795_773_930, 0),
                audio_codec: "SILK".into(),
                avg_jitter: dur(0, 12_500_000),
                max_jitter: dur(0, 40_000_000),
                avg_round_trip: dur(0, 120_000_000),
                max_round_trip: dur(1, 500_000_000),
                avg_packet_loss_rate: Some(0.01),
                max_packet_loss_rate: None,
                avg_audio_degradation: Some(0.5),
                avg_concealed_ratio: Some(0.02),
                ..Default::default()
            }),
        };
        let from_csv = csv::<QualityRecords>(
            "carrier_id,call_id,stream_id,stream_direction,tenant_id,start_time,end_time,audio_codec,avg_jitter_ms,max_jitter_ms,avg_round_trip_ms,max_round_trip_ms,avg_packet_loss_rate,max_packet_loss_rate,avg_audio_degradation,avg_concealed_ratio\r\n\
             contoso,c-1,s-1,callee_to_caller,t,2026-11-27T10:00:00Z,2026-11-27T10:05:30Z,SILK,12.5,40,120,1500,0.01,,0.5,0.02\r\n",
        );
        assert_eq!(outcome(from_csv), vec![(2, Ok(expected.clone()))]);
        let from_json = jsonl::<QualityRecords>(
            r#"{"carrier_id":"contoso","call_id":"c-1","stream_id":"s-1","stream_direction":"CALLEE_TO_CALLER","tenant_id":"t","start_time":"2026-11-27T10:00:00Z","end_time":"2026-11-27T10:05:30Z","audio_codec":"SILK","avg_jitter_ms":12.5,"max_jitter_ms":"40","avg_round_trip_ms":120,"max_round_trip_ms":1.5e3,"avg_packet_loss_rate":0.01,"avg_audio_degradation":0.5,"avg_concealed_ratio":0.02}"#,
        );
        assert_eq!(outcome(from_json), vec![(1, Ok(expected))]);
    }

    /// A bad CSV line is reported at its own line and the next good line is still read, with
    /// CRLF endings, blank lines and a cell spanning two lines all counted.
    #[test]
    fn csv_bad_line_is_reported_with_its_line_and_reading_goes_on() {
        let text = "call_id,start_time,final_sip_phrase\r\n\
                    a,2026-11-27T10:00:00Z,\r\n\
                    \r\n\
                    b,yesterday,\r\n\
                    c,,\"two\r\nlines\"\r\n\
                    d,x,y,z\r\n\
                    e,,\r\n";
        let lines = outcome(csv::<CallRecords>(text));
        let summary: Vec<_> = lines
            .iter()
            .map(|(line, record)| (*line, record.as_ref().err().cloned()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (2, None),
                (
                    4,
                    Some(
                        "start_time: not an RFC 3339 timestamp like 2026-11-27T10:00:00Z: \"yesterday\""
                            .to_owned()
                    )
                ),
                (5, None),
                (7, Some("4 fields where the header has 3".to_owned())),
                (8, None),
            ]
        );
        let phrase = lines[2]
            .1
            .as_ref()
            .ok()
            .and_then(|r| r.record.as_ref())
            .map(|r| r.final_sip_phrase.clone());
        assert_eq!(phrase.as_deref(), Some("two\r\nlines"));
    }

    /// A bad JSON line is reported at its line and the next good line is still read.
    #[test]
    fn jsonl_bad_line_is_reported_with_its_line_and_reading_goes_on() {
        let text = "{\"call_id\":\"a\"}\n\n{\"call_id\":\"b\",\n{\"call_id\":\"c\",\"final_sip_code\":\"2xx\"}\n[1]\n{\"call_id\":\"d\"}";
        let lines = outcome(jsonl::<CallRecords>(text));
        let numbers: Vec<_> = lines.iter().map(|(n, r)| (*n, r.is_ok())).collect();
        assert_eq!(
            numbers,
            vec![(1, true), (3, false), (4, false), (5, false), (6, true)]
        );
        assert!(matches!(&lines[1].1, Err(why) if why.starts_with("malformed JSON at column")));
        assert_eq!(
            lines[2].1.as_ref().err().map(String::as_str),
            Some("final_sip_code: not a whole number: \"2xx\"")
        );
        assert_eq!(
            lines[3].1.as_ref().err().map(String::as_str),
            Some("expected a JSON object, found an array")
        );
    }

    /// An unknown CSV column stops the import at the header, naming it and the known columns.
    #[test]
    fn unknown_csv_column_is_rejected_at_the_header() {
        let error = csv_records::<CallRecords>("call_id,calee_number\nc-1,+1\n".as_bytes())
            .err()
            .map(|e| format!("{e:#}"));
        let error = error.unwrap_or_default();
        assert!(
            error.starts_with(
                "line 1: unknown column \"calee_number\" (the columns are carrier_id, call_id,"
            ),
            "{error}"
        );
        let repeated = csv_records::<CallRecords>("call_id,call_id\n".as_bytes())
            .err()
            .map(|e| format!("{e:#}"));
        assert_eq!(
            repeated.as_deref(),
            Some("line 1: column \"call_id\" appears twice")
        );
    }

    /// An unknown JSON key makes its line bad, and only its line.
    #[test]
    fn unknown_json_key_rejects_the_line() {
        let lines = outcome(jsonl::<QualityRecords>(
            "{\"call_id\":\"a\",\"jitter\":3}\n{\"call_id\":\"b\"}\n",
        ));
        assert_eq!(
            lines[0].1.as_ref().err().map(String::as_str),
            Some("unknown key \"jitter\"")
        );
        assert!(lines[1].1.is_ok());
    }

    /// The fixture files under tests/fixtures parse without a bad line.
    #[test]
    fn fixtures_parse_cleanly() {
        let calls = csv::<CallRecords>(include_str!("../../../tests/fixtures/call_records.csv"));
        let lines: Vec<_> = calls.iter().map(|l| (l.number, l.record.is_ok())).collect();
        assert_eq!(lines, vec![(2, true), (3, true), (4, true)], "{calls:?}");
        let quality = jsonl::<QualityRecords>(include_str!(
            "../../../tests/fixtures/quality_records.jsonl"
        ));
        let lines: Vec<_> = quality
            .iter()
            .map(|l| (l.number, l.record.is_ok()))
            .collect();
        assert_eq!(lines, vec![(1, true), (2, true), (3, true)], "{quality:?}");
    }
}
