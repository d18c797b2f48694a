//! Retention purges: durations leave, the periodic loop purges on its own, and on PostgreSQL
//! only one instance purges at a time.

use std::time::Duration;

use opconnect::pb::v1 as pb;
use opconnect::retention::{self, DataClass, Deleted, PurgeReport, RetentionPolicy, purge_pass};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

/// Uploads durations of test calls 1 and 2 for `carrier`.
async fn upload_two_durations(app: &TestApp, carrier: &str) {
    let summary = app
        .durations(carrier)
        .await
        .report_call_durations(tokio_stream::iter(upload_messages(
            "",
            &[duration(1, TENANT_A, 60_000), duration(2, TENANT_A, 61_000)],
            10,
        )))
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.accepted, 2);
}

/// Durations past retention are purged; reconciliation then no longer sees them.
#[tokio::test]
async fn durations_past_retention_are_purged() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    upload_two_durations(&app, "contoso").await;
    let store = app.open_store().await;
    // One row per transaction, so the purge takes several.
    let policy = RetentionPolicy {
        batch: 1,
        ..purge_only(DataClass::Durations)
    };
    // A cut-off before the upload keeps everything; one after it removes everything.
    assert_eq!(purge_pass(&store, &policy, 0).await.deleted().durations, 0);
    assert_eq!(
        purge_pass(&store, &policy, now_ms() + 1)
            .await
            .deleted()
            .durations,
        2
    );
    let left = carrier_discrepancies(
        &app,
        "contoso",
        &[pb::ReconciliationClass::MissingPlatformRecord],
    )
    .await;
    assert!(left.is_empty());
}

/// The retention loop purges by itself: started with a short interval and a policy that keeps
/// nothing, it deletes every class's rows, reports the counts, and stops when told.
#[tokio::test]
async fn the_loop_purges_every_class_on_its_own() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.provision("contoso", TENANT_A, &["+14255550100"]).await;
    app.ingest_calls(call_records("contoso", 0..10), 10).await;
    let quality = app
        .ingest_quality(vec![
            quality_record("contoso", 0, "s1"),
            quality_record("contoso", 0, "s2"),
        ])
        .await;
    assert_eq!(quality.accepted, 2);
    upload_two_durations(&app, "contoso").await;

    let keep_nothing = RetentionPolicy {
        number_events: Duration::ZERO,
        call_records: Duration::ZERO,
        quality_records: Duration::ZERO,
        durations: Duration::ZERO,
        audit_events: Duration::MAX,
        batch: 3,
    };
    let stop = CancellationToken::new();
    let task = retention::spawn(
        app.open_store().await,
        keep_nothing,
        Duration::from_millis(20),
        stop.clone(),
    );
    let everything = Deleted {
        number_events: 1,
        call_records: 10,
        quality_records: 2,
        durations: 2,
        audit_events: 0,
    };
    let mut progress = task.progress();
    let seen = tokio::time::timeout(
        Duration::from_secs(20),
        progress.wait_for(|p| p.deleted == everything),
    )
    .await
    .expect("purged within 20 s")
    .expect("loop running")
    .clone();
    assert!(seen.passes >= 1);
    assert!(
        matches!(seen.last, Some(PurgeReport::Ran { ref failed, .. }) if failed.is_empty()),
        "{seen:?}"
    );

    // The rows are gone, as readers see it.
    let status = app
        .records("contoso")
        .await
        .stream_call_records(pb::StreamCallRecordsRequest {
            options: Some(stream_options(Some(0))),
        })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, "CURSOR_EXPIRED");
    assert_eq!(
        status.get_details_error_info().unwrap().metadata["oldestCursor"],
        "11"
    );
    // A duration without its purged platform record would be a missing platform record.
    let left = carrier_discrepancies(
        &app,
        "contoso",
        &[pb::ReconciliationClass::MissingPlatformRecord],
    )
    .await;
    assert!(left.is_empty(), "{left:?}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task.stopped())
        .await
        .expect("the loop ends once stopped");
}

/// While another instance holds the purge lock, a pass is skipped and purges nothing; once the
/// lock is free, a pass runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn only_one_instance_purges_at_a_time() {
    use sea_orm::sqlx::{Connection, postgres::PgConnection};
    std::env::var(TEST_DATABASE_VAR).expect("set OPCONNECT_TEST_DATABASE_URL");
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    upload_two_durations(&app, "contoso").await;
    let store = app.open_store().await;
    let policy = purge_only(DataClass::Durations);

    // Instance A: a session of its own that takes the purge lock, as a purging instance does.
    let mut a = PgConnection::connect(&app.database_url).await.unwrap();
    let locked: bool = sea_orm::sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(retention::PURGE_LOCK_KEY)
        .fetch_one(&mut a)
        .await
        .unwrap();
    assert!(locked, "A holds the purge lock");
    assert_eq!(
        purge_pass(&store, &policy, now_ms() + 1).await,
        PurgeReport::Skipped,
        "skipped while A purges"
    );

    let unlocked: bool = sea_orm::sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
        .bind(retention::PURGE_LOCK_KEY)
        .fetch_one(&mut a)
        .await
        .unwrap();
    assert!(unlocked, "A released the purge lock");
    let report = purge_pass(&store, &policy, now_ms() + 1).await;
    assert_eq!(
        report,
        PurgeReport::Ran {
            deleted: Deleted {
                durations: 2,
                ..Deleted::default()
            },
            failed: Vec::new(),
        },
        "B runs once A is done, and finds the rows the skipped pass left"
    );
    a.close().await.unwrap();
}
