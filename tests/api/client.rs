//! `opconnect::client` against the real gateway: the watcher across restarts and compaction,
//! the follower (as `opconnect carrier records --follow`) across SIGKILL, the uploader across a
//! broken stream, and which errors are retried.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use opconnect::client::{
    self, BackoffPolicy, DurationUploader, FollowOptions, NumberWatcher, RecordFollower,
    RecordKind, SnapshotCause, UploadOptions, WatchItem, WatchOptions, WatchStart,
};
use opconnect::pb::v1 as pb;
use opconnect::retention::{DataClass, purge_pass};
use tokio::sync::mpsc;
use tonic::Code;

use crate::helpers::*;

/// Short waits, so that a test spends its time on behaviour, not on backoff.
fn quick() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(300),
        max_attempts: None,
    }
}

/// Every event of `carrier` after `after`, up to the current revision, read directly.
async fn history_after(app: &TestApp, carrier: &str, after: i64) -> Vec<pb::NumberEvent> {
    let (_, current) = app.list_all(carrier).await;
    let mut events = Vec::new();
    if current == after {
        return events;
    }
    let mut stream = app
        .carrier(carrier)
        .await
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(after),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    while let Some(message) = stream.message().await.expect("stream ok") {
        events.extend(message.events);
        if events.last().is_some_and(|e| e.revision >= current) {
            return events;
        }
    }
    panic!("the history stream ended early");
}

/// Receives watcher items into `seen` until one is an event at `revision` or later.
async fn until_revision(
    rx: &mut mpsc::UnboundedReceiver<WatchItem>,
    seen: &mut Vec<WatchItem>,
    revision: i64,
) {
    loop {
        let item = rx.recv().await.expect("the watcher stopped");
        let done = matches!(&item, WatchItem::Event(e) if e.revision >= revision);
        seen.push(item);
        if done {
            return;
        }
    }
}

/// Numbers by E.164 number after applying `events` in order.
fn fold(events: &[pb::NumberEvent]) -> HashMap<String, pb::TelephoneNumber> {
    let mut state = HashMap::new();
    for e in events {
        let number = e.number.clone().expect("state after");
        state.insert(number.number.clone(), number);
    }
    state
}

/// The watcher rides out two server restarts and one compaction of the events it had not
/// seen: it yields exactly the database's history up to the compaction, then a marked
/// re-snapshot equal to the state at its revision, then exactly the history after it.
#[tokio::test]
async fn the_watcher_survives_restarts_and_compaction_without_a_silent_gap() {
    let mut app = spawn_app().await;
    app.create_carrier("contoso").await;
    let numbers: Vec<String> = (0..6).map(|i| format!("+1425555010{i}")).collect();
    let n = |i: usize| numbers[i].as_str();
    let proxy = CutProxy::start(app.addr).await;
    let tls = app.client_tls(&app.carrier_cert("contoso"));
    let channel = client::connect_lazy(&format!("https://{}", proxy.addr), &tls).unwrap();
    let mut watcher = NumberWatcher::new(
        channel,
        WatchOptions {
            start: WatchStart::After(0),
            backoff: quick(),
            ..WatchOptions::default()
        },
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let item = watcher.next().await;
            if tx.send(item.expect("the watcher gave up")).is_err() {
                return watcher.reconnects();
            }
        }
    });
    let mut seen = Vec::new();

    // Before the first restart.
    app.provision("contoso", TENANT_A, &[n(0), n(1), n(2)])
        .await;
    app.assign(n(0), "user-0").await;
    until_revision(&mut rx, &mut seen, app.list_all("contoso").await.1).await;

    // Restart 1: the stream breaks, the watcher resumes after its last revision.
    app.restart().await;
    app.assign(n(1), "user-1").await;
    app.provision("contoso", TENANT_B, &[n(3)]).await;
    let before_compaction = app.list_all("contoso").await.1;
    until_revision(&mut rx, &mut seen, before_compaction).await;

    // Restart 2 with the watcher kept away; meanwhile changes, and a purge of every event.
    proxy.set_down(true);
    app.restart().await;
    app.assign(n(2), "user-2").await;
    app.provision("contoso", TENANT_A, &[n(4)]).await;
    let history = history_after(&app, "contoso", 0).await;
    let purged_through = history.last().unwrap().revision;
    let store = app.open_store().await;
    let deleted = purge_pass(&store, &purge_only(DataClass::NumberEvents), now_ms() + 1)
        .await
        .deleted();
    assert_eq!(deleted.number_events, history.len() as u64);
    app.assign(n(4), "user-4").await;
    proxy.set_down(false);

    // The watcher re-snapshots; then live changes.
    loop {
        let item = rx.recv().await.unwrap();
        let done = matches!(item, WatchItem::SnapshotComplete { .. });
        seen.push(item);
        if done {
            break;
        }
    }
    app.provision("contoso", TENANT_B, &[n(5)]).await;
    {
        let mut platform = app.platform().await;
        platform
            .unassign_number(pb::UnassignNumberRequest {
                number: n(0).into(),
            })
            .await
            .unwrap();
    }
    let history = [
        history,
        history_after(&app, "contoso", purged_through).await,
    ]
    .concat();
    let last = history.last().unwrap().revision;
    until_revision(&mut rx, &mut seen, last).await;
    drop(rx);
    app.provision("contoso", TENANT_A, &["+14255550199"]).await;
    let reconnects = task.await.unwrap();
    assert!(reconnects >= 2, "reconnects: {reconnects}");

    // What the watcher yielded, in three parts around the one re-snapshot marker.
    let seen: Vec<WatchItem> = seen
        .into_iter()
        .filter(|i| !matches!(i, WatchItem::Progress { .. }))
        .collect();
    let marks: Vec<usize> = (0..seen.len())
        .filter(|&i| matches!(seen[i], WatchItem::SnapshotStart { .. }))
        .collect();
    assert_eq!(marks.len(), 1, "exactly one re-snapshot: {seen:#?}");
    let mark = marks[0];
    assert_eq!(
        seen[mark],
        WatchItem::SnapshotStart {
            cause: SnapshotCause::Compacted {
                after_revision: before_compaction,
                oldest_revision: purged_through + 1,
            }
        }
    );
    let complete = seen
        .iter()
        .position(|i| matches!(i, WatchItem::SnapshotComplete { .. }))
        .unwrap();
    let WatchItem::SnapshotComplete {
        revision: snapshot_at,
    } = seen[complete]
    else {
        unreachable!()
    };
    let events = |items: &[WatchItem]| -> Vec<pb::NumberEvent> {
        items
            .iter()
            .map(|i| match i {
                WatchItem::Event(e) => (**e).clone(),
                other => panic!("not an event: {other:?}"),
            })
            .collect()
    };
    let before = events(&seen[..mark]);
    let snapshot = events(&seen[mark + 1..complete]);
    let after = events(&seen[complete + 1..]);

    // Before the compaction: the database's history, each event once, none missing.
    let expected: Vec<_> = history
        .iter()
        .filter(|e| e.revision <= before_compaction)
        .cloned()
        .collect();
    assert_eq!(before, expected);
    // The re-snapshot: the state the history reaches at the snapshot's revision.
    assert!(
        snapshot
            .iter()
            .all(|e| e.r#type == pb::NumberEventType::Snapshot as i32)
    );
    let upto: Vec<_> = history
        .iter()
        .filter(|e| e.revision <= snapshot_at)
        .cloned()
        .collect();
    assert_eq!(fold(&snapshot), fold(&upto));
    // After it: the rest of the history, exactly.
    let rest: Vec<_> = history
        .iter()
        .filter(|e| e.revision > snapshot_at)
        .cloned()
        .collect();
    assert_eq!(after, rest);
    assert!(!rest.is_empty());
    // And the state the watcher holds is the carrier's list.
    let mut state = fold(&snapshot);
    state.extend(fold(&after));
    let listed: HashMap<_, _> = app
        .list_all("contoso")
        .await
        .0
        .into_iter()
        .filter(|t| t.revision <= last)
        .map(|t| (t.number.clone(), t))
        .collect();
    assert_eq!(state, listed);
}

/// Writes the carrier's certificate files into `dir`; returns the `opconnect carrier`
/// connection flags for `app`.
fn carrier_flags(app: &TestApp, dir: &Path, carrier: &str) -> Vec<String> {
    let cert = app.carrier_cert(carrier);
    let cert_path = dir.join(format!("carrier-{carrier}.pem"));
    let key_path = dir.join(format!("carrier-{carrier}.key"));
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    vec![
        format!("--endpoint=https://{}", app.addr),
        "--server-name=localhost".into(),
        format!("--ca={}", dir.join("ca.pem").display()),
        format!("--cert={}", cert_path.display()),
        format!("--key={}", key_path.display()),
    ]
}

/// Starts `opconnect carrier <flags> records --follow --out <out>` committing often.
fn spawn_follower(flags: &[String], out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_opconnect"))
        .arg("carrier")
        .args(flags)
        .args(["records", "--follow", "--commit-every=250"])
        .arg("--commit-interval-secs=1")
        .arg(format!("--out={}", out.display()))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn opconnect carrier")
}

/// The complete lines of `path` as (cursor, call id, line).
fn written(path: &Path) -> Vec<(i64, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            (
                value["cursor"].as_i64().expect("cursor"),
                value["call_id"].as_str().expect("call_id").to_owned(),
                line.to_owned(),
            )
        })
        .collect()
}

async fn committed_cursor(app: &TestApp, carrier: &str) -> Option<i64> {
    app.records(carrier)
        .await
        .get_cursor(pb::GetCursorRequest {
            kind: pb::RecordKind::CallRecords as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .committed_cursor
}

/// A follower killed with SIGKILL and restarted resumes from the committed cursor: its file
/// ends with every record exactly once after de-duplication by cursor (duplicates identical),
/// and the committed cursor equals the last cursor delivered.
#[tokio::test]
async fn a_killed_follower_resumes_from_its_committed_cursor() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.ingest_calls(call_records("contoso", 0..4000), 500)
        .await;
    let flags = carrier_flags(&app, app.dir(), "contoso");
    let out = app.dir().join("calls.jsonl");

    let mut follower = spawn_follower(&flags, &out);
    eventually("the follower to write 2,500 records", || {
        written(&out).len() >= 2500
    })
    .await;
    follower.kill().unwrap(); // SIGKILL
    follower.wait().unwrap();
    let first_run = written(&out).len();
    app.ingest_calls(call_records("contoso", 4000..6000), 500)
        .await;
    // Read once the killed follower's last requests were served: a CommitCursor it sent just
    // before the kill may reach the server after the kill.
    let committed_at_kill = committed_cursor(&app, "contoso").await.unwrap_or(0);
    assert!(committed_at_kill <= written(&out).last().unwrap().0);
    let stored = stored_call_ids(&app, "contoso").await;
    let last = stored.last().unwrap().0;
    let mut follower = spawn_follower(&flags, &out);
    eventually("the follower to write the last record", || {
        written(&out).last().is_some_and(|w| w.0 == last)
    })
    .await;
    // The commit of the tail comes on the follower's interval; wait for it, then stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while committed_cursor(&app, "contoso").await != Some(last) {
        assert!(
            std::time::Instant::now() < deadline,
            "the tail was never committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let term = Command::new("kill")
        .args(["-TERM", &follower.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // Waited for off the runtime's thread: the server under test runs on it.
    let exit = tokio::task::spawn_blocking(move || follower.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());

    let lines = written(&out);
    // The second run started right after the committed cursor.
    assert_eq!(lines[first_run].0, committed_at_kill + 1);
    let mut unique: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for (cursor, call_id, line) in &lines {
        if let Some((_, earlier)) = unique.insert(*cursor, (call_id.clone(), line.clone())) {
            assert_eq!(&earlier, line, "a re-delivered record differs");
        }
    }
    let deduplicated: Vec<(i64, String)> = unique
        .into_iter()
        .map(|(cursor, (call_id, _))| (cursor, call_id))
        .collect();
    assert_eq!(deduplicated, stored);
    assert_eq!(committed_cursor(&app, "contoso").await, Some(last));
}

/// An upload whose connection breaks midway is completed by the uploader: it finds no
/// summary under its id, sends everything again, and the server stores each record once.
#[tokio::test]
async fn the_uploader_completes_an_upload_after_a_broken_stream() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let proxy = Arc::new(CutProxy::start(app.addr).await);
    let tls = app.client_tls(&app.carrier_cert("contoso"));
    let channel = client::connect_lazy(&format!("https://{}", proxy.addr), &tls).unwrap();
    let records: Vec<pb::CallDuration> = (0..3000).map(|i| duration(i, TENANT_A, 60_000)).collect();
    let mut uploader = DurationUploader::new(
        channel,
        UploadOptions {
            upload_id: Some("nightly-2026-11-01".into()),
            records_per_message: 100,
            backoff: BackoffPolicy {
                max_attempts: Some(5),
                ..quick()
            },
        },
    );
    let mut attempt = 0;
    let source = records.clone();
    let summary = uploader
        .upload_from(move || {
            attempt += 1;
            let cut = (attempt == 1).then(|| proxy.clone());
            source.clone().into_iter().enumerate().map(move |(i, r)| {
                if i == 1500
                    && let Some(proxy) = &cut
                {
                    proxy.cut();
                }
                r
            })
        })
        .await
        .unwrap();
    assert_eq!(uploader.attempts(), 2);
    assert_eq!(summary.upload_id, "nightly-2026-11-01");
    assert_eq!(summary.received, 3000);
    assert_eq!(summary.rejected, 0);
    assert_eq!(summary.accepted + summary.duplicates, 3000);

    // Stored once each: the same records again are all duplicates.
    let again = DurationUploader::new(
        app.channel(&app.carrier_cert("contoso")).await,
        UploadOptions::default(),
    )
    .upload(records)
    .await
    .unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 3000));
    // And the server keeps the summary under the id.
    let stored = app
        .durations("contoso")
        .await
        .get_upload(pb::GetUploadRequest {
            upload_id: "nightly-2026-11-01".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(stored, summary);
}

/// How many streams the server refused for the per-carrier stream cap.
fn stream_limit_rejections(app: &TestApp) -> u64 {
    app.metrics
        .encode()
        .lines()
        .filter(|l| l.contains("limit_rejections") && l.contains("stream_limit"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A stream refused for the per-carrier stream cap (RESOURCE_EXHAUSTED with RetryInfo) is
/// retried until the cap frees up; a refusal that waiting cannot fix (PERMISSION_DENIED) is
/// returned at once.
#[tokio::test]
async fn retry_info_is_honoured_and_permanent_errors_are_not_retried() {
    // Metrics recorded (a scrape listener), to see the refusal counted.
    let app = spawn_app_with(|s| {
        s.max_streams_per_carrier = 1;
        s.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    app.create_carrier("contoso").await;
    app.ingest_calls(call_records("contoso", 0..10), 10).await;
    let mut holder = app
        .records("contoso")
        .await
        .stream_call_records(pb::StreamCallRecordsRequest {
            options: Some(pb::RecordStreamOptions {
                after_cursor: Some(0),
                follow: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(holder.message().await.unwrap().is_some());

    let channel = app.channel(&app.carrier_cert("contoso")).await;
    let mut options = FollowOptions::new(RecordKind::Call);
    options.follow = false;
    options.after_cursor = Some(0);
    let mut follower = RecordFollower::new(channel, options);
    let first = tokio::spawn(async move {
        let batch = follower.next_batch().await;
        (batch, follower)
    });
    // The follower is refused while the holder's stream is open...
    eventually("the follower to be refused", || {
        stream_limit_rejections(&app) >= 1
    })
    .await;
    // ...and gets its records once it closes.
    drop(holder);
    let (batch, mut follower) = first.await.unwrap();
    assert_eq!(batch.unwrap().unwrap().records.len(), 10);
    assert!(follower.next_batch().await.unwrap().is_none());

    // A carrier that is not registered: PERMISSION_DENIED, returned, not retried.
    let channel = app.channel(&app.carrier_cert("unknown")).await;
    let mut watcher = NumberWatcher::new(channel, WatchOptions::default());
    let error = watcher.next().await.unwrap_err();
    assert_eq!(
        error.status().map(|s| s.code()),
        Some(Code::PermissionDenied)
    );
    assert_eq!(watcher.reconnects(), 0);
}

/// `opconnect carrier` with a file it cannot read or an endpoint that is not https: one line
/// on standard error naming the problem, exit code 2.
#[test]
fn carrier_bad_configuration_is_one_line_and_exit_code_2() {
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let cert = format!("--cert={}", certs.join("carrier-contoso.pem").display());
    let key = format!("--key={}", certs.join("carrier-contoso.key").display());
    let ca = format!("--ca={}", certs.join("ca.pem").display());
    for (args, expected) in [
        (
            vec!["carrier", "--cert=/nonexistent/c.pem", &key, &ca, "records"],
            "/nonexistent/c.pem",
        ),
        (
            vec![
                "carrier",
                "--endpoint=http://localhost:1",
                &cert,
                &key,
                &ca,
                "records",
            ],
            "https://",
        ),
    ] {
        let (code, stderr) = run_opconnect(&args);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// `opconnect carrier upload` prints the summary as a table and exits 1 when the server
/// rejected a record (the valid one is stored).
#[tokio::test]
async fn carrier_upload_reports_rejections_with_exit_code_1() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let flags = carrier_flags(&app, app.dir(), "contoso");
    let file = app.dir().join("durations.csv");
    std::fs::write(
        &file,
        "call_id,tenant_id,direction,caller_number,callee_number,start_time,duration_seconds\n\
         c-1,72f988bf-86f1-41af-91ab-2d7cd011db47,outbound,+14255550100,+12065550100,2026-11-01T00:00:00Z,60\n\
         ,72f988bf-86f1-41af-91ab-2d7cd011db47,outbound,+14255550100,+12065550100,2026-11-01T00:00:00Z,60\n",
    )
    .unwrap();
    // Off the runtime's thread: the server under test runs on it.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_opconnect"))
            .arg("carrier")
            .args(&flags)
            .args(["upload", "--upload-id=cli-1"])
            .arg(&file)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
    };
    assert_eq!(row("RECEIVED").as_deref(), Some("2"));
    assert_eq!(row("ACCEPTED").as_deref(), Some("1"));
    assert_eq!(row("REJECTED").as_deref(), Some("1"));
    // The rejection names the file's line 3 and the field.
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("3 ") && l.contains("call_id")),
        "{stdout}"
    );
}
