//! `opconnect carrier watch`: the carrier's number changes, as text or JSON Lines, resumed
//! from a state file that holds the last revision printed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use tonic::transport::Channel;

use super::json;
use crate::client::{NumberWatcher, SnapshotCause, WatchItem, WatchOptions, WatchStart};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Resume after the revision saved in FILE, and save each revision printed there.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Without a saved state: print every current number first (a snapshot).
    #[arg(long)]
    pub snapshot: bool,
    /// Without a saved state: every change after this revision (0 = all that are kept).
    #[arg(long, conflicts_with = "snapshot")]
    pub after: Option<i64>,
    /// Only numbers of this tenant.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Exit after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

pub(super) async fn run(channel: Channel, args: WatchArgs) -> anyhow::Result<()> {
    let saved = match &args.state {
        Some(path) => load_state(path)?,
        None => None,
    };
    let start = match (saved, args.after, args.snapshot) {
        (Some(revision), _, _) | (None, Some(revision), _) => WatchStart::After(revision),
        (None, None, true) => WatchStart::Snapshot,
        (None, None, false) => WatchStart::Now,
    };
    let mut watcher = NumberWatcher::new(
        channel,
        WatchOptions {
            start,
            tenant_id: args.tenant.clone(),
            ..WatchOptions::default()
        },
    );
    let stop = super::stop_signal();
    tokio::pin!(stop);
    let mut events = 0_u64;
    let mut out = std::io::stdout().lock();
    while args.limit.is_none_or(|limit| events < limit) {
        let item = tokio::select! {
            item = watcher.next() => item?,
            () = &mut stop => break,
        };
        if matches!(item, WatchItem::Event(_)) {
            events += 1;
        }
        print(&mut out, &item, args.json)?;
        out.flush().context("cannot write to standard output")?;
        if let (Some(path), Some(revision)) = (&args.state, watcher.revision()) {
            save_state(path, revision)?;
        }
    }
    Ok(())
}

fn print(out: &mut impl Write, item: &WatchItem, as_json: bool) -> anyhow::Result<()> {
    let line = match (item, as_json) {
        (WatchItem::Event(e), true) => {
            json!({"kind": "event", "event": json::event(e)}).to_string()
        }
        (WatchItem::Event(e), false) => {
            let event = json::event(e);
            let n = &event["number"];
            format!(
                "{:>8} {:<11} {:<17} {:<11} tenant={} {}",
                e.revision,
                event["type"].as_str().unwrap_or_default(),
                n["number"].as_str().unwrap_or_default(),
                n["status"].as_str().unwrap_or_default(),
                n["tenant_id"].as_str().unwrap_or_default(),
                n["sip_uri"].as_str().unwrap_or_default(),
            )
        }
        (WatchItem::SnapshotStart { cause }, true) => {
            let mut line = json!({"kind": "snapshot_start", "cause": cause_name(cause)});
            if let SnapshotCause::Compacted {
                after_revision,
                oldest_revision,
            } = cause
            {
                line["after_revision"] = json!(after_revision);
                line["oldest_revision"] = json!(oldest_revision);
            }
            line.to_string()
        }
        (WatchItem::SnapshotStart { cause }, false) => {
            format!(
                "-- snapshot ({}): the current numbers follow",
                cause_name(cause)
            )
        }
        (WatchItem::SnapshotComplete { revision }, true) => {
            json!({"kind": "snapshot_complete", "revision": revision}).to_string()
        }
        (WatchItem::SnapshotComplete { revision }, false) => {
            format!("-- snapshot complete at revision {revision}; changes follow")
        }
        (WatchItem::Progress { revision }, true) => {
            json!({"kind": "progress", "revision": revision}).to_string()
        }
        (WatchItem::Progress { .. }, false) => return Ok(()),
    };
    writeln!(out, "{line}").context("cannot write to standard output")
}

fn cause_name(cause: &SnapshotCause) -> &'static str {
    match cause {
        SnapshotCause::Requested => "requested",
        SnapshotCause::Compacted { .. } => "compacted",
        SnapshotCause::Interrupted => "interrupted",
    }
}

/// The revision saved in `path`; `None` when the file does not exist yet.
fn load_state(path: &Path) -> anyhow::Result<Option<i64>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{}: not a saved revision", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Saves `revision` to `path` atomically (a crash leaves the old or the new value).
fn save_state(path: &Path, revision: i64) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, format!("{revision}\n"))
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot save the state to {}", path.display()))
}
