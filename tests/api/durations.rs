//! Call durations: exactly-once uploads, upload ids, usage and reconciliation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opconnect::pb::v1 as pb;
use opconnect::pb::v1::call_duration_service_client::CallDurationServiceClient;
use opconnect::pki::Subject;
use tonic::Code;

use crate::helpers::*;

const MISSING_PLATFORM: pb::ReconciliationClass = pb::ReconciliationClass::MissingPlatformRecord;

/// call id → duration in ms, from a carrier's own MISSING_PLATFORM_RECORD view: with no
/// platform records at all, that view is exactly the stored set.
async fn stored_set(app: &TestApp, carrier: &str) -> BTreeMap<String, i64> {
    carrier_discrepancies(app, carrier, &[MISSING_PLATFORM])
        .await
        .into_iter()
        .map(|d| {
            let c = d.carrier_duration.expect("carrier duration");
            (d.call_id, c.seconds * 1000 + i64::from(c.nanos) / 1_000_000)
        })
        .collect()
}

fn as_set(records: &[pb::CallDuration]) -> BTreeMap<String, i64> {
    records
        .iter()
        .map(|r| {
            let d = r.duration.expect("duration");
            (
                r.call_id.clone(),
                d.seconds * 1000 + i64::from(d.nanos) / 1_000_000,
            )
        })
        .collect()
}

async fn upload(
    client: &mut CallDurationServiceClient<tonic::transport::Channel>,
    upload_id: &str,
    records: &[pb::CallDuration],
) -> pb::UploadSummary {
    client
        .report_call_durations(tokio_stream::iter(upload_messages(
            upload_id, records, 1000,
        )))
        .await
        .expect("upload")
        .into_inner()
        .summary
        .expect("summary")
}

/// 50,000 records in one stream, cut after about half, then the whole stream again: the
/// stored set equals the input and the retry counts the first half as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_upload_then_retry_converges_exactly() {
    const TOTAL: i64 = 50_000;
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let records: Vec<pb::CallDuration> = (0..TOTAL)
        .map(|i| duration(i, TENANT_A, 60_000 + i % 1000))
        .collect();
    let messages = upload_messages("", &records, 1000);
    let half = messages[..25].to_vec();

    // The first attempt goes through a proxy, sends half, then stalls; the proxy then cuts
    // the connection.
    let proxy = CutProxy::start(app.addr).await;
    let channel = channel_to(
        proxy.addr,
        &app.ca.cert_pem(),
        Some(&app.carrier_cert("contoso")),
    )
    .await
    .unwrap();
    let mut client = CallDurationServiceClient::new(channel);
    let stalled =
        tokio_stream::StreamExt::chain(tokio_stream::iter(half), futures::stream::pending());
    let attempt = tokio::spawn(async move { client.report_call_durations(stalled).await });
    eventually("24,000 committed", || {
        app.metrics.records_ingested() >= 24_000
    })
    .await;
    proxy.cut();
    assert!(attempt.await.unwrap().is_err(), "the cut attempt fails");
    // On the cut, the server commits what it had received intact, then ends the upload.
    eventually("the cut upload to end", || app.metrics.open_streams() == 0).await;
    let committed = i64::try_from(app.metrics.records_ingested()).unwrap();
    assert!((24_000..=25_000).contains(&committed), "{committed}");

    let summary = upload(&mut app.durations("contoso").await, "", &records).await;
    assert_eq!(summary.received, TOTAL);
    assert_eq!(summary.duplicates, committed);
    assert_eq!(summary.accepted, TOTAL - committed);
    assert_eq!(summary.rejected, 0);
    assert_eq!(stored_set(&app, "contoso").await, as_set(&records));
}

/// SIGKILL of a real server in the middle of an upload, restart on the same database,
/// retry: the stored set is exact and the database intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_retry_converges_exactly() {
    const TOTAL: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let ca = write_server_pki(dir.path());
    let database_url = fresh_database_url(dir.path()).await;
    let platform = ca
        .issue_client(&Subject::Platform("ops".into()), TRUST_DOMAIN)
        .unwrap();
    let contoso = ca
        .issue_client(&Subject::Carrier("contoso".into()), TRUST_DOMAIN)
        .unwrap();
    let records: Vec<pb::CallDuration> = (0..TOTAL)
        .map(|i| duration(i, TENANT_A, 30_000 + i))
        .collect();

    let mut server = spawn_server(dir.path(), &database_url);
    let channel = channel_to(server.addr, &ca.cert_pem(), Some(&platform))
        .await
        .unwrap();
    opconnect::pb::v1::platform_service_client::PlatformServiceClient::new(channel)
        .create_carrier(pb::CreateCarrierRequest {
            carrier_id: "contoso".into(),
            display_name: "Contoso".into(),
            sip_domain: "sip.contoso.example".into(),
        })
        .await
        .unwrap();
    let channel = channel_to(server.addr, &ca.cert_pem(), Some(&contoso))
        .await
        .unwrap();
    let mut client = CallDurationServiceClient::new(channel);
    // Stream slowly enough that the kill lands mid-upload.
    let messages = upload_messages("", &records, 500);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let attempt = tokio::spawn(async move {
        client
            .report_call_durations(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for m in &messages[..messages.len() / 2] {
        tx.send(m.clone()).await.unwrap();
    }
    // Kill once some batches are committed: the carrier's own view shows them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let watcher = channel_to(server.addr, &ca.cert_pem(), Some(&contoso))
        .await
        .unwrap();
    loop {
        let mut stream = CallDurationServiceClient::new(watcher.clone())
            .list_discrepancies(pb::ListDiscrepanciesRequest {
                window: Some(test_window()),
                classes: vec![MISSING_PLATFORM as i32],
            })
            .await
            .unwrap()
            .into_inner();
        let mut seen = 0;
        while let Some(msg) = stream.message().await.unwrap() {
            seen += msg.discrepancies.len();
        }
        if seen >= 2_000 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing committed within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    let _ = server.child.wait();
    assert!(
        attempt.await.unwrap().is_err(),
        "the first attempt did not complete"
    );

    let restarted = spawn_server(dir.path(), &database_url);
    let channel = channel_to(restarted.addr, &ca.cert_pem(), Some(&contoso))
        .await
        .unwrap();
    let mut client = CallDurationServiceClient::new(channel.clone());
    let summary = upload(&mut client, "retry-1", &records).await;
    assert_eq!(summary.received, TOTAL);
    assert_eq!(summary.accepted + summary.duplicates, TOTAL);
    assert!(
        summary.accepted > 0 && summary.accepted < TOTAL,
        "{summary:?}"
    );
    let mut stream = client
        .list_discrepancies(pb::ListDiscrepanciesRequest {
            window: Some(test_window()),
            classes: vec![MISSING_PLATFORM as i32],
        })
        .await
        .unwrap()
        .into_inner();
    let mut stored = BTreeMap::new();
    while let Some(msg) = stream.message().await.unwrap() {
        for d in msg.discrepancies {
            let c = d.carrier_duration.unwrap();
            stored.insert(d.call_id, c.seconds * 1000 + i64::from(c.nanos) / 1_000_000);
        }
    }
    assert_eq!(stored, as_set(&records));
    let mut restarted = restarted;
    restarted.child.kill().unwrap();
    let _ = restarted.child.wait();
}

/// Valid, invalid, duplicate and conflicting records in one stream: each verdict is right,
/// the counts add up to `received`, and bad records do not end the stream.
#[tokio::test]
async fn mixed_stream_verdicts_add_up() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let mut client = app.durations("contoso").await;
    upload(
        &mut client,
        "",
        &[duration(1, TENANT_A, 60_000), duration(2, TENANT_A, 61_000)],
    )
    .await;

    let mut bad_number = duration(5, TENANT_A, 1000);
    bad_number.callee_number = "555-0100".into();
    let mut negative = duration(6, TENANT_A, 1000);
    negative.duration = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    let mut absurd = duration(7, TENANT_A, 1000);
    absurd.duration = Some(prost_types::Duration {
        seconds: 25 * 3600,
        nanos: 0,
    });
    let mut no_tenant = duration(8, TENANT_A, 1000);
    no_tenant.tenant_id = String::new();
    let mut no_start = duration(9, TENANT_A, 1000);
    no_start.start_time = None;
    let stream = vec![
        duration(1, TENANT_A, 60_000), // duplicate
        duration(2, TENANT_A, 99_000), // conflict
        duration(3, TENANT_A, 62_000), // new
        bad_number,
        negative,
        absurd,
        no_tenant,
        no_start,
        duration(4, TENANT_A, 63_000), // new
        duration(3, TENANT_A, 62_000), // duplicate within the stream
    ];
    let summary = upload(&mut client, "mixed", &stream).await;
    assert_eq!(summary.received, 10);
    assert_eq!(
        (summary.accepted, summary.duplicates, summary.rejected),
        (2, 2, 6)
    );
    assert_eq!(
        summary.accepted + summary.duplicates + summary.rejected,
        summary.received
    );
    let verdicts: Vec<(i64, String, i32)> = summary
        .rejections
        .iter()
        .map(|r| (r.index, r.field.clone(), r.reason))
        .collect();
    let invalid = pb::RejectionReason::InvalidField as i32;
    assert_eq!(
        verdicts,
        [
            (1, String::new(), pb::RejectionReason::Conflict as i32),
            (3, "callee_number".into(), invalid),
            (4, "duration".into(), invalid),
            (5, "duration".into(), invalid),
            (6, "tenant_id".into(), invalid),
            (7, "start_time".into(), invalid),
        ]
    );
    let stored = stored_set(&app, "contoso").await;
    assert_eq!(stored["call-00000002"], 61_000, "first write wins");
    assert_eq!(stored.len(), 4);
}

/// A completed upload's summary is stored under its id: GetUpload returns it and a second
/// stream with the same id returns it without ingesting.
#[tokio::test]
async fn upload_id_returns_the_stored_summary() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.create_carrier("fabrikam").await;
    let mut client = app.durations("contoso").await;
    let first = upload(&mut client, "u-1", &[duration(1, TENANT_A, 60_000)]).await;
    assert_eq!(first.accepted, 1);
    let again = upload(&mut client, "u-1", &[duration(2, TENANT_A, 60_000)]).await;
    assert_eq!(again, first, "the stored summary, nothing ingested");
    assert_eq!(stored_set(&app, "contoso").await.len(), 1);
    let got = client
        .get_upload(pb::GetUploadRequest {
            upload_id: "u-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(got, first);
    // Upload ids are per carrier.
    let status = app
        .durations("fabrikam")
        .await
        .get_upload(pb::GetUploadRequest {
            upload_id: "u-1".into(),
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, "UPLOAD_NOT_FOUND");
    let status = client
        .get_upload(pb::GetUploadRequest {
            upload_id: "bad id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["upload_id"]);
}

/// The hand-computed fixture: platform call records and carrier durations for contoso,
/// plus fabrikam reporting a duration for one of contoso's calls.
///
/// | call | platform | contoso reports | class (tolerance 2 s) |
/// |------|----------|-----------------|-----------------------|
/// | 0    | 60.000 s | 60.000 s        | EXACT                 |
/// | 1    | 60.000 s | 61.500 s        | WITHIN_TOLERANCE      |
/// | 2    | 60.000 s | 70.000 s        | MISMATCH              |
/// | 3    | 60.000 s | —               | MISSING_CARRIER       |
/// | 4    | failed   | —               | not compared          |
/// | 5    | —        | 30.000 s        | MISSING_PLATFORM      |
/// | 6    | 60.000 s (day 2, TENANT_B) | 60.000 s | EXACT    |
///
/// Platform seconds: 60×4 (calls 0-3) + 60 (call 6) = 300; carrier: 60+61.5+70+30+60 = 281.5;
/// difference (281.5 - 300) / 300 × 100 = -6.1666…%.
async fn fixture() -> TestApp {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.create_carrier("fabrikam").await;
    let mut calls: Vec<pb::CallRecord> = (0..4).map(|i| call_record(i, TENANT_A)).collect();
    let mut failed = call_record(4, TENANT_A);
    failed.successful = false;
    failed.end_time = None;
    failed.failure_time = failed.start_time;
    failed.duration = Some(prost_types::Duration::default());
    failed.final_sip_code = 486;
    calls.push(failed);
    let mut next_day = call_record(6, TENANT_B);
    next_day.start_time = ts(BASE_SECONDS + 86_400 + 60);
    next_day.invite_time = next_day.start_time;
    next_day.end_time = ts(BASE_SECONDS + 86_400 + 120);
    next_day.direction = pb::CallDirection::Inbound as i32;
    calls.push(next_day.clone());
    let summary = app
        .ingest_calls(
            calls
                .into_iter()
                .map(|c| for_carrier("contoso", c))
                .collect(),
            10,
        )
        .await;
    assert_eq!(summary.accepted, 6);

    let mut six = duration(6, TENANT_B, 60_000);
    six.start_time = next_day.start_time;
    six.direction = pb::CallDirection::Inbound as i32;
    let reports = [
        duration(0, TENANT_A, 60_000),
        duration(1, TENANT_A, 61_500),
        duration(2, TENANT_A, 70_000),
        duration(5, TENANT_A, 30_000),
        six,
    ];
    let s = upload(&mut app.durations("contoso").await, "", &reports).await;
    assert_eq!(s.accepted, 5);
    // fabrikam claims contoso's call 0 lasted an hour.
    let s = upload(
        &mut app.durations("fabrikam").await,
        "",
        &[duration(0, TENANT_A, 3_600_000)],
    )
    .await;
    assert_eq!(s.accepted, 1);
    app
}

/// Usage per number and day uses contoso's durations where it reported them and the
/// platform's otherwise; fabrikam's claim about contoso's call changes nothing.
#[tokio::test]
async fn usage_matches_the_hand_computed_fixture() {
    let app = fixture().await;
    let mut platform = app.platform().await;
    let usage = platform
        .get_usage_summary(pb::GetUsageSummaryRequest {
            tenant_id: TENANT_A.into(),
            start_time: ts(BASE_SECONDS - 86_400),
            end_time: ts(BASE_SECONDS + 10 * 86_400),
            granularity: pb::UsageGranularity::Day as i32,
        })
        .await
        .unwrap()
        .into_inner();
    // TENANT_A's outbound calls 0-3 all come from +14255550100 on day 1: calls 0-2 measured
    // by contoso (60 + 61.5 + 70 = 191.5 s), call 3 by the platform (60 s). Call 4 failed.
    let figures: Vec<(String, i64, i32, i64, f64)> = usage
        .figures
        .iter()
        .map(|f| {
            (
                f.number.clone(),
                f.period_start.unwrap().seconds,
                f.duration_source,
                f.calls,
                f.minutes,
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            (
                "+14255550100".into(),
                BASE_SECONDS,
                pb::DurationSource::Operator as i32,
                3,
                191.5 / 60.0
            ),
            (
                "+14255550100".into(),
                BASE_SECONDS,
                pb::DurationSource::Platform as i32,
                1,
                1.0
            ),
        ]
    );
    assert_eq!(usage.total_calls, 4);
    assert!((usage.total_minutes - 251.5 / 60.0).abs() < 1e-9);

    // TENANT_B's inbound call 6: the callee number, day 2, by month → the month of day 2.
    let usage = platform
        .get_usage_summary(pb::GetUsageSummaryRequest {
            tenant_id: TENANT_B.into(),
            start_time: ts(BASE_SECONDS - 86_400),
            end_time: ts(BASE_SECONDS + 10 * 86_400),
            granularity: pb::UsageGranularity::Month as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.figures.len(), 1);
    assert_eq!(usage.figures[0].number, "+12065550006");
    assert_eq!(usage.figures[0].period_start.unwrap().seconds, BASE_SECONDS);
    assert_eq!(usage.figures[0].minutes, 1.0);
}

/// Reconciliation counts, totals and percentage match the fixture; fabrikam's claim shows
/// only in fabrikam's own view, as a call the platform has no record of (for fabrikam).
#[tokio::test]
async fn reconciliation_matches_the_hand_computed_fixture() {
    let app = fixture().await;
    let mut platform = app.platform().await;
    let report = platform
        .get_reconciliation_report(pb::GetReconciliationReportRequest {
            carrier_id: "contoso".into(),
            window: Some(test_window()),
        })
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<(i32, i64)> = report.counts.iter().map(|c| (c.class, c.calls)).collect();
    assert_eq!(
        counts,
        [
            (pb::ReconciliationClass::Exact as i32, 2),
            (pb::ReconciliationClass::WithinTolerance as i32, 1),
            (pb::ReconciliationClass::Mismatch as i32, 1),
            (pb::ReconciliationClass::MissingCarrierRecord as i32, 1),
            (pb::ReconciliationClass::MissingPlatformRecord as i32, 1),
        ]
    );
    assert_eq!(report.platform_seconds, 300.0);
    assert_eq!(report.carrier_seconds, 281.5);
    assert!((report.difference_percent - (-18.5 / 300.0 * 100.0)).abs() < 1e-9);

    // With a tolerance of 1 s, call 1 becomes a mismatch.
    let mut strict = test_window();
    strict.tolerance = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let report = platform
        .get_reconciliation_report(pb::GetReconciliationReportRequest {
            carrier_id: "contoso".into(),
            window: Some(strict),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.counts[2].calls, 2);

    let contoso: Vec<(String, i32)> = carrier_discrepancies(&app, "contoso", &[])
        .await
        .into_iter()
        .map(|d| (d.call_id, d.class))
        .collect();
    assert_eq!(
        contoso,
        [
            (
                "call-00000001".into(),
                pb::ReconciliationClass::WithinTolerance as i32
            ),
            (
                "call-00000002".into(),
                pb::ReconciliationClass::Mismatch as i32
            ),
            (
                "call-00000003".into(),
                pb::ReconciliationClass::MissingCarrierRecord as i32
            ),
            (
                "call-00000005".into(),
                pb::ReconciliationClass::MissingPlatformRecord as i32
            ),
        ]
    );
    let fabrikam = carrier_discrepancies(&app, "fabrikam", &[]).await;
    assert_eq!(fabrikam.len(), 1);
    assert_eq!(fabrikam[0].class, MISSING_PLATFORM as i32);
    assert!(
        fabrikam[0].platform_duration.is_none(),
        "nothing of contoso's call leaks"
    );

    let report = platform
        .get_reconciliation_report(pb::GetReconciliationReportRequest {
            carrier_id: "fabrikam".into(),
            window: Some(test_window()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.platform_seconds, 0.0);
    assert_eq!(report.difference_percent, 0.0);

    let status = platform
        .get_reconciliation_report(pb::GetReconciliationReportRequest {
            carrier_id: "contoso".into(),
            window: Some(pb::ReconciliationWindow {
                end_time: ts(BASE_SECONDS - 10 * 86_400),
                ..test_window()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["window.end_time"]);
}
