//! The audit log (DESIGN §8): what a scripted sequence of writes, reads, uploads and an
//! erasure leaves in it, who may read it, and the export and retention views around it.

use tonic::Code;

use crate::erasure::{TENANT_C, export_items, personal_values, populate};
use crate::helpers::*;
use opconnect::pb::v1 as pb;

/// Every audit event, through the listing's pages of `page_size`.
async fn audit_events(
    app: &TestApp,
    filter: pb::AuditFilter,
    page_size: i32,
) -> Vec<pb::AuditEvent> {
    let mut platform = app.platform().await;
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = platform
            .list_audit_events(pb::ListAuditEventsRequest {
                filter: Some(filter.clone()),
                page_size,
                page_token,
            })
            .await
            .expect("list audit")
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

fn summary(e: &pb::AuditEvent) -> (String, String, String, String, String, i64) {
    (
        e.identity.clone(),
        e.action.clone(),
        e.carrier_id.clone(),
        e.tenant_id.clone(),
        e.outcome.clone(),
        e.record_count,
    )
}

/// Two platform writes, a follow stream that reads 500 records and disconnects, an upload
/// and an erasure leave exactly five audit events, with their identities, ranges and counts;
/// none holds record content.
#[tokio::test]
async fn a_scripted_sequence_is_audited_exactly() {
    let app = spawn_app().await;
    // Write 1 and write 2.
    app.create_carrier("contoso").await;
    let summary_in = app.ingest_calls(call_records("contoso", 0..500), 250).await;
    assert_eq!(summary_in.accepted, 500);
    // A follow stream reads all 500, then the carrier disconnects.
    {
        let mut stream = app
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
            .expect("stream")
            .into_inner();
        let mut read = 0;
        while read < 500 {
            read += stream
                .message()
                .await
                .expect("batch")
                .expect("open")
                .records
                .len();
        }
    }
    eventually_async("the stream's audit event", || async {
        audit_events(&app, pb::AuditFilter::default(), 100)
            .await
            .iter()
            .any(|e| e.action == "StreamCallRecords")
    })
    .await;
    // One upload.
    let durations: Vec<pb::CallDuration> = (0..3).map(|i| duration(i, TENANT_A, 60_000)).collect();
    app.durations("contoso")
        .await
        .report_call_durations(tokio_stream::iter(upload_messages("up-1", &durations, 2)))
        .await
        .expect("upload");
    // One erasure.
    app.platform()
        .await
        .erase_tenant_data(pb::EraseTenantDataRequest {
            tenant_id: TENANT_A.into(),
            reason: "ticket 1".into(),
        })
        .await
        .expect("erase");

    let events = audit_events(&app, pb::AuditFilter::default(), 2).await;
    let got: Vec<_> = events.iter().map(summary).collect();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        got,
        [
            (
                s("platform/ops"),
                s("CreateCarrier"),
                s("contoso"),
                s(""),
                s("OK"),
                0
            ),
            (
                s("platform/ops"),
                s("IngestCallRecords"),
                s(""),
                s(""),
                s("OK"),
                500
            ),
            (
                s("carrier/contoso"),
                s("StreamCallRecords"),
                s("contoso"),
                s(""),
                s("CANCELLED"),
                500
            ),
            (
                s("carrier/contoso"),
                s("ReportCallDurations"),
                s("contoso"),
                s(""),
                s("OK"),
                3
            ),
            (
                s("platform/ops"),
                s("EraseTenantData"),
                s(""),
                s(TENANT_A),
                s("OK"),
                503
            ),
        ]
    );
    let stream = &events[2];
    assert_eq!(
        (stream.first_position, stream.last_position),
        (Some(1), Some(500))
    );
    assert_eq!(
        stream.details.get("follow").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        stream.details.get("after_cursor").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        events[3].details.get("upload_id").map(String::as_str),
        Some("up-1")
    );
    assert_eq!(
        events[4].details.get("reason").map(String::as_str),
        Some("ticket 1")
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let text = format!("{events:?}");
    assert!(
        !text.contains("+1425") && !text.contains("+1206") && !text.contains("corr-"),
        "{text}"
    );

    // Filters: by identity, carrier, tenant and time.
    let by = |identity: &str, carrier: &str, tenant: &str| pb::AuditFilter {
        identity: identity.into(),
        carrier_id: carrier.into(),
        tenant_id: tenant.into(),
        ..Default::default()
    };
    assert_eq!(
        audit_events(&app, by("carrier/contoso", "", ""), 10)
            .await
            .len(),
        2
    );
    assert_eq!(audit_events(&app, by("", "contoso", ""), 10).await.len(), 3);
    assert_eq!(audit_events(&app, by("", "", TENANT_A), 10).await.len(), 1);
    let future = pb::AuditFilter {
        start_time: ts(now_ms() / 1000 + 3600),
        ..Default::default()
    };
    assert!(audit_events(&app, future, 10).await.is_empty());
}

/// A carrier cannot read the audit log (nor erase or export).
#[tokio::test]
async fn a_carrier_cannot_read_the_audit_log() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let channel = app.channel(&app.carrier_cert("contoso")).await;
    let mut as_carrier = pb::platform_service_client::PlatformServiceClient::new(channel);
    let denied = as_carrier
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap_err();
    assert_error(&denied, Code::PermissionDenied, "ROLE_DENIED");
    let denied = as_carrier
        .erase_tenant_data(pb::EraseTenantDataRequest {
            tenant_id: TENANT_A.into(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_error(&denied, Code::PermissionDenied, "ROLE_DENIED");
    let denied = as_carrier
        .export_tenant_data(pb::ExportTenantDataRequest {
            tenant_id: TENANT_A.into(),
        })
        .await
        .unwrap_err();
    assert_error(&denied, Code::PermissionDenied, "ROLE_DENIED");
}

/// The export of tenant B holds exactly B's numbers, events, records and durations, and is
/// itself audited.
#[tokio::test]
async fn the_export_of_a_tenant_holds_exactly_its_data() {
    let app = spawn_app().await;
    let mut platform = app.platform().await;
    let mut uploads = vec![
        app.durations("contoso").await,
        app.durations("fabrikam").await,
    ];
    populate(&mut platform, &mut uploads).await;
    let items = export_items(&app, TENANT_B).await;
    use pb::export_item::Item;
    let mut numbers = Vec::new();
    let (mut events, mut calls, mut streams, mut durations) = (0, Vec::new(), 0, 0);
    for item in &items {
        match item.item.as_ref().expect("item") {
            Item::Number(n) => {
                assert_eq!(n.tenant_id, TENANT_B);
                numbers.push(n.number.clone());
            }
            Item::NumberEvent(e) => {
                let event = e.event.as_ref().expect("event");
                assert_eq!(event.number.as_ref().expect("state").tenant_id, TENANT_B);
                events += 1;
            }
            Item::CallRecord(r) => {
                let record = r.record.as_ref().expect("record");
                assert_eq!(record.tenant_id, TENANT_B);
                calls.push(record.call_id.clone());
            }
            Item::QualityRecord(r) => {
                assert_eq!(r.record.as_ref().expect("record").tenant_id, TENANT_B);
                streams += 1;
            }
            Item::Duration(d) => {
                assert_eq!(d.duration.as_ref().expect("duration").tenant_id, TENANT_B);
                durations += 1;
            }
        }
    }
    numbers.sort();
    let mut expected: Vec<String> = (0..2)
        .flat_map(|c| (0..2).map(move |k| crate::erasure::number(c, 1, k)))
        .collect();
    expected.sort();
    assert_eq!(numbers, expected);
    assert_eq!(events, 2 * 4);
    calls.sort();
    let mut expected_calls: Vec<String> = (0..2)
        .flat_map(|c| (0..5).map(move |i| format!("call-{c}-1-{i}")))
        .collect();
    expected_calls.sort();
    assert_eq!(calls, expected_calls);
    assert_eq!((streams, durations), (10, 10));
    // B's personal data is there; A's and C's are not.
    let text = format!("{items:?}");
    assert!(personal_values(1).iter().all(|v| text.contains(v.as_str())));
    assert!(!text.contains(TENANT_A) && !text.contains(TENANT_C));
    assert!(
        personal_values(0)
            .iter()
            .all(|v| !text.contains(v.as_str()))
    );

    let exports = audit_events(
        &app,
        pb::AuditFilter {
            tenant_id: TENANT_B.into(),
            ..Default::default()
        },
        100,
    )
    .await
    .into_iter()
    .filter(|e| e.action == "ExportTenantData")
    .collect::<Vec<_>>();
    assert_eq!(exports.len(), 1);
    assert_eq!(
        (exports[0].outcome.as_str(), exports[0].record_count),
        ("OK", items.len() as i64)
    );
}

/// Retention shows every class with its period; after a purge pass, its time and outcome.
#[tokio::test]
async fn retention_is_visible() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.ingest_calls(call_records("contoso", 0..3), 3).await;
    let mut platform = app.platform().await;
    let status = platform
        .get_retention_status(pb::GetRetentionStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let classes: Vec<&str> = status
        .classes
        .iter()
        .map(|c| c.data_class.as_str())
        .collect();
    assert_eq!(
        classes,
        [
            "number_events",
            "call_records",
            "quality_records",
            "call_durations",
            "audit_events"
        ]
    );
    let calls = &status.classes[1];
    assert_eq!(calls.period.as_ref().map(|d| d.seconds), Some(30 * 86_400));
    assert!(calls.oldest_item_time.is_some() && calls.last_purge_time.is_none());
    assert_eq!(
        status.classes[4].period.as_ref().map(|d| d.seconds),
        Some(400 * 86_400)
    );
    assert!(status.classes[2].oldest_item_time.is_none());

    let store = app.open_store().await;
    opconnect::retention::purge_pass(
        &store,
        &purge_only(opconnect::retention::DataClass::CallRecords),
        now_ms() + 1,
    )
    .await;
    let status = platform
        .get_retention_status(pb::GetRetentionStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let calls = &status.classes[1];
    assert!(calls.last_purge_time.is_some() && calls.oldest_item_time.is_none());
    assert_eq!(
        (calls.last_purge_outcome.as_str(), calls.last_purge_deleted),
        ("ok", 3)
    );
}
