//! The report of an import: what was read, skipped, accepted and rejected, and how it is
//! printed for a person.

use std::io::{self, Write};

use crate::pb::v1 as pb;

/// How many bad lines and rejections [`ImportReport::print`] lists of each.
const MAX_LISTED: usize = 50;

/// What an import did: lines read, lines that could not be parsed (with line numbers), and the
/// server's summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Records read from the file, parsed or not; a CSV header and blank lines do not count.
    pub lines: u64,
    /// Lines that could not be parsed and were skipped: (line number, why), in file order.
    pub bad_lines: Vec<(u64, String)>,
    /// The server's summary; all zero when the file held no record to send.
    pub summary: pb::IngestionSummary,
    /// The file line of each entry of `summary.rejections`, in the same order; `None` where
    /// the server named a stream index that was never sent.
    pub rejection_lines: Vec<Option<u64>>,
}

impl ImportReport {
    /// Whether every record was read and accepted (or was a duplicate).
    pub fn is_clean(&self) -> bool {
        self.bad_lines.is_empty() && self.summary.rejected == 0
    }

    /// Writes the report for a person: counts, then each bad line, then each record the server
    /// rejected with its line in the file; at most 50 of each.
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let bad = self.bad_lines.len();
        let sent = self.lines.saturating_sub(bad as u64);
        writeln!(
            out,
            "read {} records: {sent} sent, {bad} bad lines skipped",
            self.lines
        )?;
        let s = &self.summary;
        writeln!(
            out,
            "server: {} received, {} accepted, {} duplicates, {} rejected",
            s.received, s.accepted, s.duplicates, s.rejected
        )?;
        if bad > 0 {
            writeln!(out, "bad lines:")?;
            for (line, why) in self.bad_lines.iter().take(MAX_LISTED) {
                writeln!(out, "  line {line}: {why}")?;
            }
            write_more(out, bad)?;
        }
        if !s.rejections.is_empty() || s.rejected > 0 {
            writeln!(out, "rejected by the server:")?;
            let lines = self
                .rejection_lines
                .iter()
                .copied()
                .chain(std::iter::repeat(None));
            for (rejection, line) in s.rejections.iter().zip(lines).take(MAX_LISTED) {
                write_rejection(out, rejection, line)?;
            }
            let total = usize::try_from(s.rejected)
                .unwrap_or(0)
                .max(s.rejections.len());
            write_more(out, total)?;
        }
        Ok(())
    }
}

/// One rejection as "line N (call_id X): field: description".
fn write_rejection(
    out: &mut impl Write,
    rejection: &pb::RecordRejection,
    line: Option<u64>,
) -> io::Result<()> {
    match line {
        Some(line) => write!(out, "  line {line}")?,
        None => write!(out, "  record #{} (not sent)", rejection.index)?,
    }
    let what = if rejection.field.is_empty() {
        pb::RejectionReason::try_from(rejection.reason).map_or_else(
            |_| "rejected".to_owned(),
            |reason| {
                reason
                    .as_str_name()
                    .trim_start_matches("REJECTION_REASON_")
                    .to_ascii_lowercase()
            },
        )
    } else {
        rejection.field.clone()
    };
    writeln!(
        out,
        " (call_id {}): {what}: {}",
        rejection.call_id, rejection.description
    )
}

/// "... and K more" when a list of `total` was cut at [`MAX_LISTED`].
fn write_more(out: &mut impl Write, total: usize) -> io::Result<()> {
    if total > MAX_LISTED {
        writeln!(out, "  ... and {} more", total - MAX_LISTED)?;
    }
    Ok(())
}

/// The file line of each rejection; `line_of` holds the line of each record by stream index.
pub(crate) fn rejection_lines(
    line_of: &[u64],
    rejections: &[pb::RecordRejection],
) -> Vec<Option<u64>> {
    rejections
        .iter()
        .map(|r| {
            usize::try_from(r.index)
                .ok()
                .and_then(|index| line_of.get(index))
                .copied()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report lists bad lines and rejections by file line, 50 at most with a count of the rest.
    #[test]
    fn report_prints_lines_and_cuts_long_lists() {
        let rejections: Vec<_> = (0..60)
            .map(|i| pb::RecordRejection {
                index: i,
                call_id: format!("c-{i}"),
                field: if i == 0 {
                    String::new()
                } else {
                    "start_time".into()
                },
                reason: if i == 0 {
                    pb::RejectionReason::Conflict as i32
                } else {
                    pb::RejectionReason::InvalidField as i32
                },
                description: "is wrong".into(),
            })
            .collect();
        let line_of: Vec<u64> = (0..60).map(|i| i + 10).collect();
        let summary = pb::IngestionSummary {
            received: 60,
            accepted: 0,
            duplicates: 0,
            rejected: 1500,
            rejections,
        };
        let report = ImportReport {
            lines: 61,
            bad_lines: vec![(5, "start_time: bad".into())],
            rejection_lines: rejection_lines(&line_of, &summary.rejections),
            summary,
        };
        let mut out = Vec::new();
        report.print(&mut out).unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with(
            "read 61 records: 60 sent, 1 bad lines skipped\n\
             server: 60 received, 0 accepted, 0 duplicates, 1500 rejected\n\
             bad lines:\n  line 5: start_time: bad\n\
             rejected by the server:\n  line 10 (call_id c-0): conflict: is wrong\n  line 11 (call_id c-1): start_time: is wrong\n"
        ), "{out}");
        assert!(
            out.contains("  line 59 (call_id c-49): start_time: is wrong\n  ... and 1450 more\n"),
            "{out}"
        );
        assert!(!out.contains("c-50"));
        assert!(!report.is_clean());
    }
}
