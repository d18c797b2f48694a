//! `opconnect carrier records`: call or quality records as JSON Lines, on standard output or
//! appended to a file, from the committed cursor on.
//!
//! With `--out`, each batch is written and synced to disk before the next is asked for, and
//! the follower commits only batches it was asked past (see [`crate::client::RecordFollower`]):
//! the committed cursor never runs ahead of the file. A killed run can leave a torn last line
//! and records written but not committed; the next run cuts the torn line and writes those
//! records again, each with its cursor, so readers de-duplicate by `cursor`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;

use super::json;
use crate::client::{FollowOptions, RecordBatch, RecordFollower, RecordKind, Records};

#[derive(Debug, clap::Args)]
pub struct RecordsArgs {
    /// Keep going: wait for new records instead of ending at the end of the log.
    #[arg(long)]
    pub follow: bool,
    /// Append to this JSON Lines file (synced before each commit) instead of standard output.
    #[arg(long, value_name = "FILE.jsonl")]
    pub out: Option<PathBuf>,
    /// Which records.
    #[arg(long, value_enum, default_value = "call")]
    pub kind: Kind,
    /// Start after this cursor instead of the committed one.
    #[arg(long)]
    pub after: Option<i64>,
    /// Only records of this tenant.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Commit the cursor after this many records...
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_every: u64,
    /// ...or this many seconds, whichever comes first.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub commit_interval_secs: u64,
}

/// Record kinds on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Call detail records.
    Call,
    /// Call quality records.
    Quality,
}

pub(super) async fn run(channel: Channel, args: RecordsArgs) -> anyhow::Result<()> {
    let mut out = match &args.out {
        Some(path) => Output::File(open_output(path)?, path.clone()),
        None => Output::Stdout,
    };
    let mut follower = RecordFollower::new(
        channel,
        FollowOptions {
            kind: match args.kind {
                Kind::Call => RecordKind::Call,
                Kind::Quality => RecordKind::Quality,
            },
            after_cursor: args.after,
            follow: args.follow,
            tenant_id: args.tenant.clone(),
            commit_every_records: args.commit_every,
            commit_interval: Duration::from_secs(args.commit_interval_secs),
            ..FollowOptions::new(RecordKind::Call)
        },
    );
    let stop = super::stop_signal();
    tokio::pin!(stop);
    loop {
        let batch = tokio::select! {
            batch = follower.next_batch() => batch?,
            () = &mut stop => break,
        };
        let Some(batch) = batch else {
            return Ok(());
        };
        out.write_batch(&batch)?;
    }
    // Everything delivered has been written: commit it before leaving.
    follower.commit().await?;
    Ok(())
}

enum Output {
    Stdout,
    File(File, PathBuf),
}

impl Output {
    /// Writes one line per record and makes it durable.
    fn write_batch(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let mut text = Vec::new();
        match &batch.records {
            Records::Call(records) => records
                .iter()
                .try_for_each(|r| writeln!(text, "{}", json::call_record(r))),
            Records::Quality(records) => records
                .iter()
                .try_for_each(|r| writeln!(text, "{}", json::quality_record(r))),
        }?;
        match self {
            Self::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(&text)
                    .and_then(|()| stdout.flush())
                    .context("cannot write to standard output")
            }
            Self::File(file, path) => file
                .write_all(&text)
                .and_then(|()| file.sync_data())
                .with_context(|| format!("cannot write to {}", path.display())),
        }
    }
}

/// Opens `path` for appending, first cutting a torn last line a killed run left behind.
fn open_output(path: &Path) -> anyhow::Result<File> {
    let open = || -> std::io::Result<File> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let complete = complete_length(&mut file)?;
        if complete < file.metadata()?.len() {
            file.set_len(complete)?;
            file.sync_data()?;
        }
        Ok(file)
    };
    open().with_context(|| format!("cannot open {}", path.display()))
}

/// The length of `file` up to and including its last newline (0 when it has none).
fn complete_length(file: &mut File) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = file.metadata()?.len();
    let mut buf = vec![0; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let part = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A torn last line is cut; complete lines stay; an empty or clean file is untouched.
    #[test]
    fn torn_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        for (before, after) in [
            ("", ""),
            ("{\"cursor\":1}\n", "{\"cursor\":1}\n"),
            ("{\"cursor\":1}\n{\"cur", "{\"cursor\":1}\n"),
            ("{\"cur", ""),
        ] {
            std::fs::write(&path, before).unwrap();
            let mut file = open_output(&path).unwrap();
            file.write_all(b"x\n").unwrap();
            drop(file);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                format!("{after}x\n")
            );
        }
    }
}
