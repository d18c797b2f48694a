//! Keyset paging on text under a linguistic collation: on a PostgreSQL database whose default
//! collation is ICU `en-US` (where `_x` sorts before `A-1` and `a-1` before `A-1`), pages of
//! calls must still follow one order in SQL and in the server. Needs
//! `OPCONNECT_TEST_DATABASE_URL`; without it the test is listed as ignored (never passed).

use std::collections::BTreeMap;

use opconnect::pb::v1 as pb;
use sea_orm::ConnectionTrait;

use crate::helpers::*;

/// Prefixes that a linguistic collation orders differently from bytes: case, punctuation
/// that it ignores at the first level, and characters below and above the letters.
const PREFIXES: [&str; 10] = ["A-", "a-", "B_", "b.", "Z", "_x", "~y", "a", "A", "z."];

/// More calls than one reconciliation page (5,000) holds.
const CALLS: usize = 8_000;

/// The id of test call `i`: a prefix, then `i` (ids are distinct: a prefix ends at the
/// first digit).
fn call_id(i: usize) -> String {
    format!("{}{i}", PREFIXES[i % PREFIXES.len()])
}

/// The class test call `i` reconciles to: both sides equal, both sides 30 s apart, the
/// platform's record only, the carrier's duration only.
fn expected_class(i: usize) -> pb::ReconciliationClass {
    match i % 4 {
        0 => pb::ReconciliationClass::Exact,
        1 => pb::ReconciliationClass::Mismatch,
        2 => pb::ReconciliationClass::MissingCarrierRecord,
        _ => pb::ReconciliationClass::MissingPlatformRecord,
    }
}

/// With 8,000 calls under mixed-case and punctuated ids on an ICU `en-US` database, the
/// carrier's discrepancy listing returns every call exactly once, in byte order of call id,
/// with its class; the platform's report counts every call once; usage counts every platform
/// call once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn reconciliation_pages_follow_byte_order_under_a_linguistic_collation() {
    let url = create_postgres_database_with(
        &require_postgres_url(),
        "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
    )
    .await;
    let db = sea_orm::Database::connect(&url).await.expect("connect");
    let linguistic = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT ('a' < 'B' AND '_x' < 'A') AS linguistic",
        ))
        .await
        .expect("query")
        .expect("row")
        .try_get::<bool>("", "linguistic")
        .expect("bool");
    assert!(
        linguistic,
        "the database's default collation is not bytewise"
    );
    let _ = db.close().await;

    let app = spawn_app_on(Some(url)).await;
    app.create_carrier("contoso").await;
    let mut records = Vec::new();
    let mut durations = Vec::new();
    for i in 0..CALLS {
        let n = i64::try_from(i).expect("index");
        let class = expected_class(i);
        if class != pb::ReconciliationClass::MissingPlatformRecord {
            let mut call = call_record(n, TENANT_A);
            call.call_id = call_id(i);
            records.push(for_carrier("contoso", call));
        }
        if class != pb::ReconciliationClass::MissingCarrierRecord {
            let ms = if class == pb::ReconciliationClass::Mismatch {
                90_000
            } else {
                60_000
            };
            let mut reported = duration(n, TENANT_A, ms);
            reported.call_id = call_id(i);
            durations.push(reported);
        }
    }
    let platform_calls = i64::try_from(records.len()).expect("count");
    assert_eq!(
        app.ingest_calls(records, 500).await.accepted,
        platform_calls
    );
    let summary = app
        .durations("contoso")
        .await
        .report_call_durations(tokio_stream::iter(upload_messages("", &durations, 1000)))
        .await
        .expect("upload")
        .into_inner()
        .summary
        .expect("summary");
    assert_eq!(
        summary.accepted,
        i64::try_from(durations.len()).expect("count")
    );

    let every_class = [
        pb::ReconciliationClass::Exact,
        pb::ReconciliationClass::WithinTolerance,
        pb::ReconciliationClass::Mismatch,
        pb::ReconciliationClass::MissingCarrierRecord,
        pb::ReconciliationClass::MissingPlatformRecord,
    ];
    let listed: Vec<(String, i32)> = carrier_discrepancies(&app, "contoso", &every_class)
        .await
        .into_iter()
        .map(|d| (d.call_id, d.class))
        .collect();
    let mut expected: Vec<(String, i32)> = (0..CALLS)
        .map(|i| (call_id(i), expected_class(i) as i32))
        .collect();
    expected.sort();
    assert_eq!(listed.len(), CALLS, "every call listed exactly once");
    assert!(
        listed == expected,
        "the listing is every call once, in byte order, with its class"
    );

    let report = app
        .platform()
        .await
        .get_reconciliation_report(pb::GetReconciliationReportRequest {
            carrier_id: "contoso".into(),
            window: Some(test_window()),
        })
        .await
        .expect("report")
        .into_inner();
    let counts: BTreeMap<i32, i64> = report.counts.iter().map(|c| (c.class, c.calls)).collect();
    let quarter = i64::try_from(CALLS / 4).expect("count");
    assert_eq!(
        counts,
        BTreeMap::from([
            (pb::ReconciliationClass::Exact as i32, quarter),
            (pb::ReconciliationClass::WithinTolerance as i32, 0),
            (pb::ReconciliationClass::Mismatch as i32, quarter),
            (
                pb::ReconciliationClass::MissingCarrierRecord as i32,
                quarter
            ),
            (
                pb::ReconciliationClass::MissingPlatformRecord as i32,
                quarter
            ),
        ]),
        "the report counts every call once"
    );

    let usage = app
        .platform()
        .await
        .get_usage_summary(pb::GetUsageSummaryRequest {
            tenant_id: TENANT_A.into(),
            start_time: ts(BASE_SECONDS - 86_400),
            end_time: ts(BASE_SECONDS + 10 * 86_400),
            granularity: pb::UsageGranularity::Month as i32,
        })
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(
        usage.total_calls, platform_calls,
        "usage counts every call once"
    );
}
