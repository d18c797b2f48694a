//! Retention purges: durations leave, and on PostgreSQL only one instance purges at a time.

use opconnect::pb::v1 as pb;

use crate::helpers::*;

/// Durations past retention are purged; reconciliation then no longer sees them.
#[tokio::test]
async fn durations_past_retention_are_purged() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let summary = app
        .durations("contoso")
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
    let store = app.open_store().await;
    // A cut-off before the upload keeps everything; one after it removes everything.
    assert_eq!(store.purge_durations(0, 1).await.unwrap(), 0);
    assert_eq!(
        store
            .purge_durations(opconnect::store::now_ms() + 1, 1)
            .await
            .unwrap(),
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

/// While one instance holds the purge lock, another's purge pass is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn only_one_instance_purges_at_a_time() {
    std::env::var(TEST_DATABASE_VAR).expect("set OPCONNECT_TEST_DATABASE_URL");
    let app = spawn_app().await;
    let a = app.open_store().await;
    let b = app.open_store().await;
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(async move {
        a.exclusively(async move {
            let _ = started_tx.send(());
            let _ = hold_rx.await;
        })
        .await
    });
    started_rx.await.unwrap();
    assert!(
        !b.exclusively(async {}).await.unwrap(),
        "skipped while A purges"
    );
    hold_tx.send(()).unwrap();
    assert!(first.await.unwrap().unwrap(), "A ran");
    assert!(
        b.exclusively(async {}).await.unwrap(),
        "B runs once A is done"
    );
}
