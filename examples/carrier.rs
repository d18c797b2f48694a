//! A carrier's collector on `opconnect::client`: keeps its numbers up to date from the watch,
//! follows call records into a JSON Lines file (committing the cursor as it goes), and reports
//! its own measured duration of each followed call back in batches.
//!
//! ```text
//! OPCONNECT_CARRIER_ENDPOINT=https://localhost:50051 OPCONNECT_CARRIER_CA=certs/ca.pem \
//! OPCONNECT_CARRIER_CERT=certs/carrier-contoso.pem OPCONNECT_CARRIER_KEY=certs/carrier-contoso.key \
//!   cargo run --example carrier -- calls.jsonl
//! ```
//! It runs until Ctrl-C. Restarted, it resumes after the committed cursor; records seen twice
//! carry the same cursor and can be dropped by it.

use std::collections::HashMap;
use std::io::Write;

use opconnect::client::{
    self, ClientTls, DurationUploader, FollowOptions, NumberWatcher, RecordFollower, RecordKind,
    Records, UploadOptions, WatchItem, WatchOptions, WatchStart,
};
use opconnect::pb::v1 as pb;

/// Durations are reported once this many calls have been collected.
const UPLOAD_EVERY: usize = 500;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let out_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "calls.jsonl".into());
    let endpoint = env("OPCONNECT_CARRIER_ENDPOINT", "https://localhost:50051");
    let tls = ClientTls::from_files(
        env("OPCONNECT_CARRIER_CA", "certs/ca.pem").as_ref(),
        env("OPCONNECT_CARRIER_CERT", "certs/carrier-contoso.pem").as_ref(),
        env("OPCONNECT_CARRIER_KEY", "certs/carrier-contoso.key").as_ref(),
    )?;
    // One lazily connecting channel: it reconnects by itself, the loops below retry.
    let channel = client::connect_lazy(&endpoint, &tls)?;

    let numbers = tokio::spawn(watch_numbers(channel.clone()));
    let calls = tokio::spawn(collect_calls(channel, out_path));
    tokio::select! {
        r = numbers => r??,
        r = calls => r??,
        _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
    }
    Ok(())
}

/// Keeps a map of the carrier's numbers: a snapshot first, then every change; after a
/// compaction the watcher re-snapshots and the map is rebuilt.
async fn watch_numbers(channel: tonic::transport::Channel) -> Result<(), client::ClientError> {
    let options = WatchOptions {
        start: WatchStart::Snapshot,
        ..WatchOptions::default()
    };
    let mut watcher = NumberWatcher::new(channel, options);
    let mut numbers: HashMap<String, pb::TelephoneNumber> = HashMap::new();
    loop {
        match watcher.next().await? {
            WatchItem::SnapshotStart { cause } => {
                eprintln!("numbers: snapshot ({cause:?})");
                numbers.clear();
            }
            WatchItem::Event(event) => {
                if let Some(number) = event.number {
                    numbers.insert(number.number.clone(), number);
                }
            }
            WatchItem::SnapshotComplete { revision } => {
                eprintln!("numbers: {} as of revision {revision}", numbers.len());
            }
            WatchItem::Progress { .. } => {}
        }
    }
}

/// Follows call records into `out_path` and reports a duration for each call.
async fn collect_calls(
    channel: tonic::transport::Channel,
    out_path: String,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)?;
    let mut follower = RecordFollower::new(channel.clone(), FollowOptions::new(RecordKind::Call));
    let mut measured = Vec::new();
    while let Some(batch) = follower.next_batch().await? {
        let batch_cursor = batch.next_cursor;
        let Records::Call(records) = batch.records else {
            continue;
        };
        for r in &records {
            writeln!(
                out,
                "{{\"cursor\":{},\"call_id\":{:?}}}",
                r.cursor, r.call_id
            )?;
            measured.push(pb::CallDuration {
                call_id: r.call_id.clone(),
                tenant_id: r.tenant_id.clone(),
                direction: r.direction,
                caller_number: r.caller_number.clone(),
                callee_number: r.callee_number.clone(),
                start_time: r.start_time,
                // A real collector reports what its own switch measured.
                duration: r.duration,
                ..Default::default()
            });
        }
        // Durable before the follower may commit past it (on the next `next_batch`).
        out.sync_data()?;
        if measured.len() >= UPLOAD_EVERY {
            let batch = std::mem::take(&mut measured);
            // An id per cursor range: a retry of the same range finds its stored summary.
            let options = UploadOptions {
                upload_id: Some(format!("durations-through-{}", batch_cursor)),
                ..UploadOptions::default()
            };
            let mut uploader = DurationUploader::new(channel.clone(), options);
            let summary = uploader.upload(batch).await?;
            eprintln!(
                "durations {}: {} accepted, {} duplicates, {} rejected",
                summary.upload_id, summary.accepted, summary.duplicates, summary.rejected
            );
        }
    }
    Ok(())
}
