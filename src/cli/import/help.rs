//! The file format as `--help` shows it after the options; the column lists come from the
//! column tables, so they cannot drift from what the readers accept.

use super::columns::{CallRecords, Column, QualityRecords, RecordKind};

/// What comes before the column lists.
const INTRODUCTION: &str = "\
File format:
  One record per CSV row (RFC 4180, with a header row naming the columns) or per JSON Lines
  line (one JSON object per line). Columns (CSV) and keys (JSON) are the names below, in any
  order, every one optional: an empty CSV cell, or a missing or null JSON value, leaves the
  field unset. Any other column or key is an error.

  Timestamps (*_time) are RFC 3339: 2026-11-27T10:00:00Z, 2026-11-27T11:00:00.250+01:00.
  Durations are numbers with an optional fraction, in the unit their name ends in: _seconds
  or _ms (milliseconds). Booleans are true, false, 1 or 0. Directions are inbound/outbound
  and caller_to_callee/callee_to_caller, in any case. In JSON, text fields must be strings;
  numbers and booleans may be JSON values or strings.
";

/// What comes after the column lists.
const CONCLUSION: &str = "
  A line that cannot be read (bad syntax, wrong number of CSV fields, malformed JSON) is
  reported with its line number and skipped; --strict stops the import there instead. Records
  the server rejects are reported with their line numbers.

Example (CSV):
  carrier_id,call_id,tenant_id,direction,caller_number,callee_number,start_time,end_time,duration_seconds,successful,final_sip_code
  contoso,c-1,0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c,inbound,+14255550100,+14255550123,2026-11-27T10:00:00Z,2026-11-27T10:05:30.5Z,330.5,true,200";

/// Where column lists wrap, indentation included.
const WIDTH: usize = 94;

/// The text after the options of both import commands.
pub(crate) fn format_help() -> String {
    let mut help = INTRODUCTION.to_owned();
    for (command, names) in [
        ("import-call-records", names(CallRecords::COLUMNS)),
        ("import-quality-records", names(QualityRecords::COLUMNS)),
    ] {
        help.push_str(&format!("\n  {command}:\n"));
        help.push_str(&wrapped(&names));
    }
    help.push_str(CONCLUSION);
    help
}

/// The names of `columns`, in table order.
fn names<R>(columns: &[Column<R>]) -> Vec<&'static str> {
    columns.iter().map(|column| column.name).collect()
}

/// `names` separated by commas, in lines of at most [`WIDTH`] indented by four spaces.
fn wrapped(names: &[&str]) -> String {
    const INDENT: &str = "    ";
    let mut text = String::new();
    let mut line = String::from(INDENT);
    for (i, name) in names.iter().enumerate() {
        let comma = if i + 1 < names.len() { "," } else { "" };
        if line.len() > INDENT.len() && line.len() + 1 + name.len() + comma.len() > WIDTH {
            text.push_str(&line);
            text.push('\n');
            line = String::from(INDENT);
        } else if line.len() > INDENT.len() {
            line.push(' ');
        }
        line.push_str(name);
        line.push_str(comma);
    }
    text.push_str(&line);
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::import::readers::csv_records;

    /// Lists wrap between names, within the width, and keep every name once.
    #[test]
    fn lists_wrap_within_the_width() {
        let names = names(CallRecords::COLUMNS);
        let text = wrapped(&names);
        assert!(text.lines().all(|line| line.len() <= WIDTH), "{text}");
        assert!(text.lines().all(|line| line.starts_with("    ")), "{text}");
        let listed: Vec<&str> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|name| !name.is_empty())
            .collect();
        assert_eq!(listed, names);
    }

    /// The example in `--help` is a file the reader takes without a bad line.
    #[test]
    fn example_parses() {
        let example = CONCLUSION
            .split_once("Example (CSV):\n")
            .map(|(_, example)| example.replace("\n  ", "\n"))
            .unwrap_or_default();
        let records: Vec<_> = csv_records::<CallRecords>(example.trim().as_bytes())
            .unwrap()
            .collect::<anyhow::Result<_>>()
            .unwrap();
        assert_eq!(records.len(), 1);
        assert!(
            records.iter().all(|line| line.record.is_ok()),
            "{records:?}"
        );
    }
}
