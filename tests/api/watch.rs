//! WatchNumbers: snapshot then live, resume, checkpoints, compaction and bounds.

use std::collections::BTreeMap;
use std::time::Duration;

use opconnect::pb::v1 as pb;
use opconnect::retention::{DataClass, Deleted, purge_pass};
use prost::Message;
use rand::Rng;
use tonic::Code;
use tonic::codec::Streaming;
use tonic_types::StatusExt;

use crate::helpers::*;

const WRITERS: usize = 4;
const NUMBERS_PER_WRITER: usize = 25;
/// provision, assign, re-assign, unassign, release: 5 changes per number, 500 in all.
const CHANGES: i64 = (WRITERS * NUMBERS_PER_WRITER * 5) as i64;

/// Makes 5 changes to each of its 25 numbers through PlatformService.
async fn writer(app: &TestApp, w: usize) {
    let mut platform = app.platform().await;
    for i in 0..NUMBERS_PER_WRITER {
        let number = format!("+1425{w}{i:06}");
        platform
            .provision_numbers(provision_request("contoso", TENANT_A, &[&number]))
            .await
            .unwrap();
        platform
            .assign_number(assign_request(&number, "a"))
            .await
            .unwrap();
        platform
            .assign_number(assign_request(&number, "b"))
            .await
            .unwrap();
        platform
            .unassign_number(pb::UnassignNumberRequest {
                number: number.clone(),
            })
            .await
            .unwrap();
        if i % 2 == 0 {
            platform
                .release_numbers(pb::ReleaseNumbersRequest {
                    numbers: vec![number],
                })
                .await
                .unwrap();
        } else {
            platform
                .assign_number(assign_request(&number, "c"))
                .await
                .unwrap();
        }
    }
}

async fn run_writers(app: &TestApp) {
    let writers: Vec<_> = (0..WRITERS).map(|w| writer(app, w)).collect();
    futures::future::join_all(writers).await;
}

async fn open_watch(
    app: &TestApp,
    request: pb::WatchNumbersRequest,
) -> Streaming<pb::WatchNumbersResponse> {
    app.carrier("contoso")
        .await
        .watch_numbers(request)
        .await
        .expect("watch opens")
        .into_inner()
}

async fn next(stream: &mut Streaming<pb::WatchNumbersResponse>) -> pb::WatchNumbersResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("message within 20 s")
        .expect("stream ok")
        .expect("stream open")
}

/// With 4 concurrent writers making 500 changes while a watcher starts with a snapshot, the
/// watcher's final view equals the database's and revisions after the snapshot have no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_live_converges_with_concurrent_writers() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let writers = run_writers(&app);
    let watcher = async {
        // Let some writes land first so the snapshot is not empty.
        let mut view: BTreeMap<String, pb::TelephoneNumber> = BTreeMap::new();
        let mut stream = open_watch(
            &app,
            pb::WatchNumbersRequest {
                include_snapshot: true,
                ..Default::default()
            },
        )
        .await;
        let mut snapshot_revision = None;
        let mut last = 0;
        loop {
            let msg = next(&mut stream).await;
            for event in msg.events {
                let number = event.number.clone().unwrap();
                match snapshot_revision {
                    None => assert_eq!(event.r#type, pb::NumberEventType::Snapshot as i32),
                    Some(_) => {
                        assert_eq!(event.revision, last + 1, "gapless, in order");
                        last = event.revision;
                    }
                }
                view.insert(number.number.clone(), number);
            }
            if let Some(cp) = msg.checkpoint
                && cp.r#type == pb::WatchCheckpointType::SnapshotComplete as i32
            {
                snapshot_revision = Some(cp.revision);
                last = cp.revision;
            }
            if last == CHANGES {
                return (view, snapshot_revision);
            }
        }
    };
    let ((view, snapshot_revision), ()) = tokio::join!(watcher, writers);
    assert!(snapshot_revision.is_some());
    let (numbers, revision) = app.list_all("contoso").await;
    assert_eq!(revision, CHANGES);
    let db: BTreeMap<String, pb::TelephoneNumber> =
        numbers.into_iter().map(|n| (n.number.clone(), n)).collect();
    assert_eq!(view, db);
}

/// A watcher that disconnects at a random point and resumes from its last revision receives
/// every change exactly once overall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_disconnect_delivers_every_change_once() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let writers = run_writers(&app);
    let watcher = async {
        let mut received: Vec<i64> = Vec::new();
        let mut resume_from = 0;
        let mut rng = rand::rng();
        while resume_from < CHANGES {
            let mut stream = open_watch(
                &app,
                pb::WatchNumbersRequest {
                    start_revision: Some(resume_from),
                    ..Default::default()
                },
            )
            .await;
            // Read a random number of messages, then hang up.
            let budget = rng.random_range(1..6);
            for _ in 0..budget {
                let msg = next(&mut stream).await;
                for event in &msg.events {
                    received.push(event.revision);
                    resume_from = resume_from.max(event.revision);
                }
                if let Some(cp) = msg.checkpoint {
                    resume_from = resume_from.max(cp.revision);
                }
                if resume_from == CHANGES {
                    break;
                }
            }
            drop(stream);
        }
        received
    };
    let (received, ()) = tokio::join!(watcher, writers);
    assert_eq!(received, (1..=CHANGES).collect::<Vec<_>>());
}

/// Without a snapshot, a watch sees changes from now on; a PROGRESS checkpoint comes while
/// idle; a tenant filter drops other tenants' events but not checkpoints.
#[tokio::test]
async fn live_watch_with_filter_and_progress() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.provision("contoso", TENANT_A, &["+14255550100"]).await;
    let mut stream = open_watch(
        &app,
        pb::WatchNumbersRequest {
            tenant_id: TENANT_B.into(),
            progress_interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    app.provision("contoso", TENANT_A, &["+14255550101"]).await;
    app.provision("contoso", TENANT_B, &["+12065550100"]).await;
    let msg = next(&mut stream).await;
    assert_eq!(msg.events.len(), 1);
    assert_eq!(msg.events[0].revision, 3);
    assert_eq!(
        msg.events[0].r#type,
        pb::NumberEventType::Provisioned as i32
    );
    assert_eq!(msg.events[0].number.as_ref().unwrap().tenant_id, TENANT_B);
    let msg = next(&mut stream).await;
    let cp = msg.checkpoint.expect("progress checkpoint");
    assert_eq!(cp.r#type, pb::WatchCheckpointType::Progress as i32);
    assert_eq!(cp.revision, 3);
}

/// Events carry the state before and after.
#[tokio::test]
async fn events_carry_previous_state() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.provision("contoso", TENANT_A, &["+14255550100"]).await;
    app.assign("+14255550100", "user-1").await;
    let mut stream = open_watch(
        &app,
        pb::WatchNumbersRequest {
            start_revision: Some(0),
            ..Default::default()
        },
    )
    .await;
    let msg = next(&mut stream).await;
    assert_eq!(msg.events.len(), 2);
    assert!(msg.events[0].previous.is_none());
    let assigned = &msg.events[1];
    assert_eq!(assigned.r#type, pb::NumberEventType::Assigned as i32);
    assert_eq!(
        assigned.previous.as_ref().unwrap().status,
        pb::NumberStatus::Provisioned as i32
    );
    assert_eq!(
        assigned.number.as_ref().unwrap().assignment_target_id,
        "user-1"
    );
}

/// A start revision past the current one is OUT_OF_RANGE; one before the purged part of the
/// log is FAILED_PRECONDITION REVISION_COMPACTED with the oldest and current revisions.
#[tokio::test]
async fn ahead_and_compacted_revisions() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.provision("contoso", TENANT_A, &["+14255550100", "+14255550101"])
        .await;
    app.assign("+14255550100", "u").await;

    let mut stream = open_watch(
        &app,
        pb::WatchNumbersRequest {
            start_revision: Some(4),
            ..Default::default()
        },
    )
    .await;
    let status = stream.message().await.unwrap_err();
    assert_error(&status, Code::OutOfRange, "REVISION_AHEAD");

    let store = app.open_store().await;
    let deleted = purge_pass(&store, &purge_only(DataClass::NumberEvents), now_ms() + 1)
        .await
        .deleted();
    assert_eq!(
        deleted,
        Deleted {
            number_events: 3,
            ..Deleted::default()
        }
    );
    app.assign("+14255550101", "v").await;

    let mut stream = open_watch(
        &app,
        pb::WatchNumbersRequest {
            start_revision: Some(1),
            ..Default::default()
        },
    )
    .await;
    let status = stream.message().await.unwrap_err();
    assert_error(&status, Code::FailedPrecondition, "REVISION_COMPACTED");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata["oldest_revision"], "4");
    assert_eq!(info.metadata["current_revision"], "4");

    // From the purge point on, the log is complete.
    let mut stream = open_watch(
        &app,
        pb::WatchNumbersRequest {
            start_revision: Some(3),
            ..Default::default()
        },
    )
    .await;
    let msg = next(&mut stream).await;
    assert_eq!(
        msg.events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [4]
    );
}

/// A snapshot cannot be combined with a start revision.
#[tokio::test]
async fn snapshot_and_start_revision_conflict() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let status = app
        .carrier("contoso")
        .await
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(0),
            include_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "INVALID_FIELD");
    assert_eq!(bad_fields(&status), ["include_snapshot"]);
}

/// A snapshot of 200,000 numbers read by a client that pauses: the server holds at most a few
/// pages for it, never the whole snapshot, and the client still gets every number once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_is_streamed_in_pages() {
    const NUMBERS: usize = 200_000;
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let mut platform = app.platform().await;
    for batch in 0..NUMBERS / 1_000 {
        let numbers: Vec<String> = (0..1_000)
            .map(|i| format!("+1425{:07}", batch * 1_000 + i))
            .collect();
        let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
        platform
            .provision_numbers(provision_request("contoso", TENANT_A, &refs))
            .await
            .expect("provision");
    }
    let mut stream = app
        .carrier("contoso")
        .await
        .watch_numbers(pb::WatchNumbersRequest {
            include_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let page_bytes = i64::try_from(first.encoded_len()).unwrap();
    let mut seen = first.events.len();
    // The client pauses: the producer fills its channel (two messages) and waits with a
    // third; later pages run a little larger (longer revisions), hence room for four.
    let mut last = -1;
    while app.metrics.buffered_bytes() != last {
        last = app.metrics.buffered_bytes();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        app.metrics.peak_buffered_bytes() <= 4 * page_bytes,
        "{} bytes buffered for pages of {page_bytes}",
        app.metrics.peak_buffered_bytes()
    );
    let complete = loop {
        let message = stream.message().await.unwrap().unwrap();
        seen += message.events.len();
        if let Some(checkpoint) = message.checkpoint {
            break checkpoint;
        }
    };
    assert_eq!(
        complete.r#type,
        pb::WatchCheckpointType::SnapshotComplete as i32
    );
    assert_eq!(seen, NUMBERS);
    assert_eq!(complete.revision, i64::try_from(NUMBERS).unwrap());
    assert!(
        app.metrics.peak_buffered_bytes() <= 4 * page_bytes,
        "after the read: {} bytes for pages of {page_bytes}",
        app.metrics.peak_buffered_bytes()
    );
}

/// Watches that open together read their start bounds together (`store/batched.rs`): 60
/// watches each of two carriers, opened at once with the carrier's current revision, all
/// start there and get exactly the next change; the other carrier's revision, ahead of a
/// carrier's own, is REVISION_AHEAD for it. A watch opened right after a change commits, with
/// that change's revision, is never told it is ahead, even while other watches are starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_opened_together_each_start_at_their_own_carriers_revision() {
    const WATCHES: usize = 60;
    let app = spawn_app_with(|s| {
        s.rate_limit_per_carrier = 100_000;
        s.max_streams_per_carrier = 200;
    })
    .await;
    app.create_carrier("contoso").await;
    app.create_carrier("fabrikam").await;
    let contoso_numbers = ["+14255550100", "+14255550101", "+14255550102"];
    app.provision("contoso", TENANT_A, &contoso_numbers).await;
    app.provision("fabrikam", TENANT_A, &["+14255550200"]).await;
    let contoso_revision = app.assign("+14255550100", "u").await.revision;
    let fabrikam_revision = 1;
    assert!(contoso_revision > fabrikam_revision);

    let open = |carrier: &'static str, start_revision: i64| {
        let app = &app;
        async move {
            app.carrier(carrier)
                .await
                .watch_numbers(pb::WatchNumbersRequest {
                    start_revision: Some(start_revision),
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let opening = (0..WATCHES).flat_map(|_| {
        [
            open("contoso", contoso_revision),
            open("fabrikam", fabrikam_revision),
            open("fabrikam", contoso_revision),
        ]
    });
    let opened = futures::future::join_all(opening).await;
    let (mut contoso, mut fabrikam) = (Vec::new(), Vec::new());
    for (i, stream) in opened.into_iter().enumerate() {
        let stream = stream.expect("watch opens");
        match i % 3 {
            0 => contoso.push(stream),
            1 => fabrikam.push(stream),
            _ => {
                let mut stream = stream;
                let status = stream.message().await.unwrap_err();
                assert_error(&status, Code::OutOfRange, "REVISION_AHEAD");
            }
        }
    }
    let assigned = app.assign("+14255550101", "v").await;
    for stream in &mut contoso {
        let events = next(stream).await.events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].revision, assigned.revision);
        assert_eq!(events[0].revision, contoso_revision + 1);
    }
    let fabrikam_assigned = app.assign("+14255550200", "w").await;
    for stream in &mut fabrikam {
        let events = next(stream).await.events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].revision, fabrikam_assigned.revision);
        assert_eq!(events[0].number.as_ref().unwrap().number, "+14255550200");
    }

    // Read-your-writes: a watch from the revision a change just returned starts there, while
    // other watches are starting beside it.
    let client = app.carrier("contoso").await;
    for (i, target) in ["x", "y", "z"].into_iter().enumerate() {
        let busy: Vec<_> = (0..20)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    client
                        .watch_numbers(pb::WatchNumbersRequest::default())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let changed = app.assign(contoso_numbers[i], target).await;
        let mut stream = open("contoso", changed.revision)
            .await
            .expect("a watch from the revision just returned opens");
        app.assign(contoso_numbers[(i + 1) % 3], target).await;
        let events = next(&mut stream).await.events;
        assert_eq!(events[0].revision, changed.revision + 1);
        for call in busy {
            drop(call.await.unwrap());
        }
    }
}
