//! `opconnect carrier upload FILE`: call durations from a CSV or JSON Lines file, through
//! [`crate::client::DurationUploader`] (batched, under an upload id, retried safely), with a
//! progress bar on a terminal and the summary as a table.
//!
//! The file is read and checked before anything is sent, and kept in memory for a resend
//! (about 200 bytes a record: 5 million records, the server's bound per upload, take about
//! 1 GB). Bad lines are reported and not sent; `--strict` stops at the first.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tonic::transport::Channel;

use super::RecordsRejected;
use super::durations;
use crate::cli::import::FileFormat;
use crate::cli::import::progress::Progress;
use crate::client::{DurationUploader, UploadOptions};
use crate::pb::v1 as pb;

/// How many bad lines and rejections the report lists.
const MAX_LISTED: usize = 50;

#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// CSV (header row) or JSON Lines file with the columns call_id, tenant_id, direction,
    /// caller_number, callee_number, start_time (RFC 3339), duration_seconds.
    pub file: PathBuf,
    /// File format; by default from the extension (.csv, .jsonl/.ndjson/.json).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// The upload's id (AIP-155 request id), to resume or look it up; default: a new one.
    #[arg(long)]
    pub upload_id: Option<String>,
    /// Records per request message.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
    /// Stop at the first bad line instead of reporting it and going on.
    #[arg(long)]
    pub strict: bool,
}

pub(super) async fn run(channel: Channel, args: UploadArgs) -> anyhow::Result<()> {
    let file = durations::read(&args.file, args.format, args.strict)?;
    let mut uploader = DurationUploader::new(
        channel,
        UploadOptions {
            upload_id: args.upload_id.clone(),
            records_per_message: args.batch_size as usize,
            ..UploadOptions::default()
        },
    );
    let total = file.records.len() as u64;
    let progress = Progress::new();
    progress.0.set_length(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} records sent",
    ) {
        progress.0.set_style(style);
    }
    let sent = uploader.progress();
    let bar = progress.0.clone();
    let ticker = tokio::spawn(async move {
        loop {
            bar.set_position(sent.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let result = uploader.upload(file.records).await;
    ticker.abort();
    drop(progress);
    let summary = result?;

    let mut out = std::io::stdout().lock();
    print_summary(&mut out, &summary, uploader.attempts(), &file.lines)?;
    if !file.bad_lines.is_empty() {
        writeln!(out, "bad lines (not sent):")?;
        for (line, why) in file.bad_lines.iter().take(MAX_LISTED) {
            writeln!(out, "  line {line}: {why}")?;
        }
    }
    if summary.rejected > 0 || !file.bad_lines.is_empty() {
        return Err(RecordsRejected(format!(
            "{} records rejected, {} bad lines",
            summary.rejected,
            file.bad_lines.len()
        ))
        .into());
    }
    Ok(())
}

/// The summary as a table, then each rejection with its line in the file.
fn print_summary(
    out: &mut impl Write,
    s: &pb::UploadSummary,
    attempts: u32,
    lines: &[u64],
) -> std::io::Result<()> {
    writeln!(out, "{:<12} {}", "UPLOAD", s.upload_id)?;
    for (name, value) in [
        ("RECEIVED", s.received),
        ("ACCEPTED", s.accepted),
        ("DUPLICATES", s.duplicates),
        ("REJECTED", s.rejected),
    ] {
        writeln!(out, "{name:<12} {value:>12}")?;
    }
    if attempts > 1 {
        writeln!(out, "{:<12} {attempts:>12}", "ATTEMPTS")?;
    }
    if !s.rejections.is_empty() {
        writeln!(
            out,
            "{:>6} {:<40} {:<16} {:<14} DESCRIPTION",
            "LINE", "CALL", "FIELD", "REASON"
        )?;
        for r in s.rejections.iter().take(MAX_LISTED) {
            let line = usize::try_from(r.index)
                .ok()
                .and_then(|i| lines.get(i))
                .map_or_else(|| "-".to_owned(), u64::to_string);
            let reason = pb::RejectionReason::try_from(r.reason)
                .map(|x| x.as_str_name().trim_start_matches("REJECTION_REASON_"))
                .unwrap_or("?");
            writeln!(
                out,
                "{line:>6} {:<40} {:<16} {reason:<14} {}",
                r.call_id, r.field, r.description
            )?;
        }
        if s.rejections.len() > MAX_LISTED {
            writeln!(out, "  ... {} more", s.rejections.len() - MAX_LISTED)?;
        }
    }
    Ok(())
}
