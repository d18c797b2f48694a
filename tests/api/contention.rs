//! Writers of different carriers racing for the same keys on PostgreSQL, where they run in
//! parallel (SQLite orders every writer): ownership never moves, nothing deadlocks, and every
//! record and every call ends with one clear verdict. These tests need
//! `OPCONNECT_TEST_DATABASE_URL`; without it they are listed as ignored (never passed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use opconnect::pb::v1 as pb;
use tokio::sync::Barrier;
use tonic::Code;

use crate::helpers::*;

const CARRIERS: [&str; 2] = ["contoso", "fabrikam"];

/// A gateway on a fresh PostgreSQL database with both carriers registered.
async fn two_carriers() -> TestApp {
    let url = create_postgres_database(&require_postgres_url()).await;
    let app = spawn_app_on(Some(url)).await;
    for carrier in CARRIERS {
        app.create_carrier(carrier).await;
    }
    app
}

/// `carrier`'s event history from revision 0 through `through`, read with WatchNumbers.
async fn history(app: &TestApp, carrier: &str, through: i64) -> Vec<pb::NumberEvent> {
    let mut events: Vec<pb::NumberEvent> = Vec::new();
    if through == 0 {
        return events;
    }
    let mut stream = app
        .carrier(carrier)
        .await
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(0),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    while events.last().map_or(0, |e| e.revision) < through {
        let msg = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("the watch catches up")
            .expect("watch ok")
            .expect("watch open");
        events.extend(msg.events);
    }
    events
}

/// number → (status, revision, tenant) of a list of numbers.
fn by_number<'a>(
    numbers: impl IntoIterator<Item = &'a pb::TelephoneNumber>,
) -> BTreeMap<String, (i32, i64, String)> {
    numbers
        .into_iter()
        .map(|n| {
            (
                n.number.clone(),
                (n.status, n.revision, n.tenant_id.clone()),
            )
        })
        .collect()
}

/// Eight tasks, four per carrier, provision the same 200 new numbers in batches of 25, all
/// starting at once (one carrier naming each batch in reverse): every number ends with exactly
/// one owner, each carrier's watch history replays to exactly its own list, and every losing
/// call is refused with FAILED_PRECONDITION / NUMBER_OWNED_BY_OTHER_CARRIER.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn concurrent_provisioning_never_moves_ownership() {
    const NUMBERS: usize = 200;
    const BATCH: usize = 25;
    let app = two_carriers().await;
    let numbers: Vec<String> = (0..NUMBERS).map(|i| format!("+1425555{i:04}")).collect();
    let start = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let carrier = CARRIERS[t % 2];
        let mut platform = app.platform().await;
        let numbers = numbers.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut calls = Vec::new();
            for batch in numbers.chunks(BATCH) {
                let mut named: Vec<&str> = batch.iter().map(String::as_str).collect();
                if carrier == "fabrikam" {
                    named.reverse();
                }
                let result = platform
                    .provision_numbers(provision_request(carrier, TENANT_A, &named))
                    .await;
                calls.push((carrier, batch.to_vec(), result));
            }
            calls
        }));
    }
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    let mut refused = 0;
    for task in tasks {
        for (carrier, batch, result) in task.await.expect("task") {
            match result {
                Ok(response) => {
                    assert_eq!(response.into_inner().numbers.len(), batch.len());
                    for n in batch {
                        let before = owner.insert(n.clone(), carrier);
                        assert!(
                            before.is_none_or(|b| b == carrier),
                            "{n} was provisioned to both carriers"
                        );
                    }
                }
                Err(status) => {
                    assert_error(
                        &status,
                        Code::FailedPrecondition,
                        "NUMBER_OWNED_BY_OTHER_CARRIER",
                    );
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(owner.len(), NUMBERS, "every number has an owner");
    assert!(refused >= NUMBERS / BATCH, "each batch had a loser");

    for carrier in CARRIERS {
        let (listed, revision) = app.list_all(carrier).await;
        let listed = by_number(&listed);
        let own: BTreeSet<&String> = owner
            .iter()
            .filter(|(_, c)| **c == carrier)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            listed.keys().collect::<BTreeSet<_>>(),
            own,
            "{carrier} lists exactly the numbers it won"
        );
        let events = history(&app, carrier, revision).await;
        assert_eq!(
            events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            (1..=revision).collect::<Vec<_>>(),
            "{carrier}'s history is gapless"
        );
        assert!(
            events
                .iter()
                .all(|e| e.r#type == pb::NumberEventType::Provisioned as i32),
            "{carrier}'s history holds provisionings only"
        );
        let replayed = by_number(events.iter().filter_map(|e| e.number.as_ref()));
        assert_eq!(replayed, listed, "{carrier}'s history replays to its list");
    }
}

/// Eight IngestCallRecords streams, four per carrier, send the same 6,000 call ids at once,
/// the carriers' commits holding the same ids in opposite orders: no stream fails, every
/// call id is stored once for one carrier, and each stream's summary adds up, with the other
/// carrier's ids rejected as CONFLICT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn concurrent_ingestion_of_shared_call_ids_settles_without_errors() {
    const CALLS: i64 = 6_000;
    let app = two_carriers().await;
    let start = Arc::new(Barrier::new(8));
    let mut streams = Vec::new();
    for s in 0..8 {
        let carrier = CARRIERS[s % 2];
        let mut records = call_records(carrier, 0..CALLS);
        if carrier == "fabrikam" {
            // The server commits every 2,000 records: each of fabrikam's commits holds the
            // same ids as contoso's commit at the same point of the stream, reversed.
            for block in records.chunks_mut(2_000) {
                block.reverse();
            }
        }
        let messages: Vec<pb::IngestCallRecordsRequest> = records
            .chunks(250)
            .map(|c| pb::IngestCallRecordsRequest {
                records: c.to_vec(),
            })
            .collect();
        let mut platform = app.platform().await;
        let start = start.clone();
        streams.push(tokio::spawn(async move {
            start.wait().await;
            let result = platform
                .ingest_call_records(tokio_stream::iter(messages))
                .await;
            (carrier, result)
        }));
    }
    let mut summaries = Vec::new();
    for stream in streams {
        let (carrier, result) = stream.await.expect("task");
        let summary = match result {
            Ok(response) => response.into_inner().summary.expect("summary"),
            Err(status) => panic!(
                "an ingestion stream of {carrier} failed: {:?} {} {status:?}",
                status.code(),
                reason(&status)
            ),
        };
        summaries.push((carrier, summary));
    }

    let mut owned: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for carrier in CARRIERS {
        let stored = stored_call_ids(&app, carrier).await;
        let count = i64::try_from(stored.len()).expect("count");
        assert_eq!(
            stored.iter().map(|(cursor, _)| *cursor).collect::<Vec<_>>(),
            (1..=count).collect::<Vec<_>>(),
            "{carrier}'s cursors are gapless"
        );
        owned.insert(carrier, stored.into_iter().map(|(_, id)| id).collect());
    }
    let all: BTreeSet<String> = call_records("contoso", 0..CALLS)
        .into_iter()
        .map(|r| r.record.expect("record").call_id)
        .collect();
    assert!(
        owned["contoso"].is_disjoint(&owned["fabrikam"]),
        "one owner per call id"
    );
    assert_eq!(
        owned["contoso"]
            .union(&owned["fabrikam"])
            .cloned()
            .collect::<BTreeSet<_>>(),
        all,
        "every call id is stored"
    );

    let mut accepted: BTreeMap<&str, i64> = BTreeMap::new();
    for (carrier, summary) in &summaries {
        let own = i64::try_from(owned[carrier].len()).expect("count");
        assert_eq!(summary.received, CALLS, "{carrier}: {summary:?}");
        assert_eq!(
            summary.accepted + summary.duplicates + summary.rejected,
            CALLS,
            "{carrier}: {summary:?}"
        );
        assert_eq!(summary.accepted + summary.duplicates, own, "{carrier}");
        assert_eq!(summary.rejected, CALLS - own, "{carrier}");
        assert!(
            summary
                .rejections
                .iter()
                .all(|r| r.reason == pb::RejectionReason::Conflict as i32
                    && !owned[carrier].contains(&r.call_id)),
            "{carrier}: only the other carrier's ids are rejected, as CONFLICT"
        );
        *accepted.entry(carrier).or_default() += summary.accepted;
    }
    for carrier in CARRIERS {
        assert_eq!(
            accepted[carrier],
            i64::try_from(owned[carrier].len()).expect("count"),
            "{carrier}: each stored record was accepted exactly once"
        );
    }
}
