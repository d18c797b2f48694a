//! Call and quality records: ingestion, isolation, cursors, resume, follow, back-pressure.

use std::collections::BTreeSet;
use std::time::Duration;

use opconnect::pb::v1 as pb;
use opconnect::retention::{DataClass, Deleted, purge_pass};
use rand::Rng;
use tonic::Code;
use tonic::codec::Streaming;
use tonic_types::StatusExt;

use crate::helpers::*;

async fn open_calls(
    app: &TestApp,
    carrier: &str,
    options: pb::RecordStreamOptions,
) -> Streaming<pb::StreamCallRecordsResponse> {
    app.records(carrier)
        .await
        .stream_call_records(pb::StreamCallRecordsRequest {
            options: Some(options),
        })
        .await
        .expect("stream opens")
        .into_inner()
}

/// Reads a finite stream to its end: (call ids with cursors, last next_cursor).
async fn read_all(
    mut stream: Streaming<pb::StreamCallRecordsResponse>,
) -> (Vec<(i64, String)>, i64) {
    let mut records = Vec::new();
    let mut next = 0;
    while let Some(msg) = stream.message().await.expect("stream ok") {
        records.extend(msg.records.into_iter().map(|r| (r.cursor, r.call_id)));
        next = msg.next_cursor;
    }
    (records, next)
}

async fn next_message(
    stream: &mut Streaming<pb::StreamCallRecordsResponse>,
) -> pb::StreamCallRecordsResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("message within 20 s")
        .expect("stream ok")
        .expect("stream open")
}

async fn two_carriers() -> TestApp {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.create_carrier("fabrikam").await;
    app
}

/// Each carrier receives exactly its own records, in cursor order, whatever filters or
/// cursors it sends; cursors are per carrier and gapless.
#[tokio::test]
async fn carriers_receive_only_their_own_records() {
    let app = two_carriers().await;
    let mut mixed = Vec::new();
    for i in 0..300 {
        let carrier = if i % 3 == 0 { "fabrikam" } else { "contoso" };
        let tenant = if i % 2 == 0 { TENANT_A } else { TENANT_B };
        mixed.push(for_carrier(carrier, call_record(i, tenant)));
    }
    let summary = app.ingest_calls(mixed, 70).await;
    assert_eq!(
        (summary.received, summary.accepted, summary.rejected),
        (300, 300, 0)
    );

    let (contoso, next) = read_all(open_calls(&app, "contoso", stream_options(None)).await).await;
    let (fabrikam, _) = read_all(open_calls(&app, "fabrikam", stream_options(None)).await).await;
    assert_eq!(contoso.len(), 200);
    assert_eq!(fabrikam.len(), 100);
    assert_eq!(next, 200);
    assert_eq!(
        contoso.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    assert_eq!(
        fabrikam.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    let contoso_ids: BTreeSet<_> = contoso.iter().map(|r| r.1.clone()).collect();
    assert!(fabrikam.iter().all(|(_, id)| !contoso_ids.contains(id)));

    // Filters never widen what a carrier sees.
    let mut filtered = stream_options(Some(0));
    filtered.tenant_id = TENANT_B.into();
    filtered.start_time = ts(BASE_SECONDS + 1000);
    filtered.end_time = ts(BASE_SECONDS + 2000);
    let (records, next) = read_all(open_calls(&app, "fabrikam", filtered).await).await;
    assert!(!records.is_empty());
    assert!(records.iter().all(|(_, id)| !contoso_ids.contains(id)));
    assert_eq!(next, 100, "next_cursor moves past filtered-out records");

    // fabrikam's log ends at 100 even though contoso's goes on.
    let mut stream = open_calls(&app, "fabrikam", stream_options(Some(150))).await;
    let status = stream.message().await.unwrap_err();
    assert_error(&status, Code::OutOfRange, "CURSOR_AHEAD");
    assert_eq!(
        status.get_details_error_info().unwrap().metadata["latestCursor"],
        "100"
    );
}

/// 10,000 records read with disconnects at random points, resuming from the last cursor
/// received: every record arrives exactly once overall. Same from the committed cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_last_or_committed_cursor_delivers_each_record_once() {
    const TOTAL: i64 = 10_000;
    let app = two_carriers().await;
    let summary = app
        .ingest_calls(call_records("contoso", 0..TOTAL), 1000)
        .await;
    assert_eq!(summary.accepted, TOTAL);

    for use_commit in [false, true] {
        let mut received = Vec::new();
        let mut last = 0;
        let mut rng = rand::rng();
        if use_commit {
            let mut client = app.records("contoso").await;
            client
                .commit_cursor(pb::CommitCursorRequest {
                    kind: pb::RecordKind::CallRecords as i32,
                    cursor: 0,
                })
                .await
                .unwrap();
        }
        while last < TOTAL {
            let options = if use_commit {
                stream_options(None)
            } else {
                stream_options(Some(last))
            };
            let mut stream = open_calls(&app, "contoso", options).await;
            for _ in 0..rng.random_range(1..4) {
                let Some(msg) = stream.message().await.unwrap() else {
                    break;
                };
                received.extend(msg.records.iter().map(|r| r.cursor));
                last = msg.next_cursor;
                if use_commit {
                    app.records("contoso")
                        .await
                        .commit_cursor(pb::CommitCursorRequest {
                            kind: pb::RecordKind::CallRecords as i32,
                            cursor: last,
                        })
                        .await
                        .unwrap();
                }
            }
            drop(stream);
        }
        assert_eq!(
            received,
            (1..=TOTAL).collect::<Vec<_>>(),
            "commit mode: {use_commit}"
        );
    }
    let cursor = app
        .records("contoso")
        .await
        .get_cursor(pb::GetCursorRequest {
            kind: pb::RecordKind::CallRecords as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cursor.committed_cursor, Some(TOTAL));
    assert_eq!((cursor.oldest_cursor, cursor.latest_cursor), (1, TOTAL));
}

/// Records ingested while a follower is open arrive on it, in order; max_records ends a
/// stream after that many records.
#[tokio::test]
async fn follow_delivers_new_records_in_order() {
    let app = two_carriers().await;
    app.ingest_calls(call_records("contoso", 0..5), 5).await;
    let mut options = stream_options(Some(0));
    options.follow = true;
    let mut stream = open_calls(&app, "contoso", options).await;
    let first = next_message(&mut stream).await;
    assert_eq!(first.records.len(), 5);
    for round in 0..3 {
        let start = 5 + round * 10;
        app.ingest_calls(call_records("contoso", start..start + 10), 3)
            .await;
    }
    let mut cursors: Vec<i64> = first.records.iter().map(|r| r.cursor).collect();
    while cursors.len() < 35 {
        let msg = next_message(&mut stream).await;
        cursors.extend(msg.records.iter().map(|r| r.cursor));
    }
    assert_eq!(cursors, (1..=35).collect::<Vec<_>>());

    let mut limited = stream_options(Some(10));
    limited.max_records = 7;
    let (records, next) = read_all(open_calls(&app, "contoso", limited).await).await;
    assert_eq!(
        records.iter().map(|r| r.0).collect::<Vec<_>>(),
        (11..=17).collect::<Vec<_>>()
    );
    assert_eq!(next, 17);
}

/// Ingesting the same records twice stores each once; a different record under a stored
/// call id is a CONFLICT rejection and the stored one is unchanged.
#[tokio::test]
async fn ingestion_is_idempotent_and_first_write_wins() {
    let app = two_carriers().await;
    let records = call_records("contoso", 0..50);
    let first = app.ingest_calls(records.clone(), 20).await;
    assert_eq!((first.accepted, first.duplicates), (50, 0));
    let second = app.ingest_calls(records, 7).await;
    assert_eq!(
        (
            second.received,
            second.accepted,
            second.duplicates,
            second.rejected
        ),
        (50, 0, 50, 0)
    );

    let mut changed = call_record(3, TENANT_A);
    changed.final_sip_code = 486;
    let mut other_carrier = call_record(4, TENANT_A);
    other_carrier.call_type = "x".into();
    let third = app
        .ingest_calls(
            vec![
                for_carrier("contoso", changed),
                for_carrier("fabrikam", call_record(4, TENANT_A)),
                for_carrier("globex", call_record(99, TENANT_A)),
                for_carrier("contoso", call_record(50, TENANT_A)),
            ],
            10,
        )
        .await;
    assert_eq!(
        (
            third.received,
            third.accepted,
            third.duplicates,
            third.rejected
        ),
        (4, 1, 0, 3)
    );
    let reasons: Vec<(i64, i32)> = third
        .rejections
        .iter()
        .map(|r| (r.index, r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (0, pb::RejectionReason::Conflict as i32),
            (1, pb::RejectionReason::Conflict as i32),
            (2, pb::RejectionReason::CarrierUnknown as i32),
        ]
    );

    let (records, _) = read_all(open_calls(&app, "contoso", stream_options(Some(3))).await).await;
    assert_eq!(records[0], (4, "call-00000003".to_owned()));
    let mut stream = open_calls(&app, "contoso", stream_options(Some(3))).await;
    let stored = stream.message().await.unwrap().unwrap().records[0].clone();
    assert_eq!(stored.final_sip_code, 200, "the stored record is unchanged");
    assert_eq!(records.len(), 48, "51 stored, after cursor 3");
    let (fabrikam, _) = read_all(open_calls(&app, "fabrikam", stream_options(None)).await).await;
    assert!(fabrikam.is_empty());
}

/// Malformed records are rejected one by one with the field named; the valid records of the
/// same stream are stored.
#[tokio::test]
async fn malformed_records_are_rejected_one_by_one() {
    let app = two_carriers().await;
    let valid = |i| call_record(i, TENANT_A);
    let bad: Vec<(pb::CallRecord, &str)> = vec![
        (
            pb::CallRecord {
                call_id: String::new(),
                ..valid(1)
            },
            "record.call_id",
        ),
        (
            pb::CallRecord {
                end_time: ts(BASE_SECONDS - 100),
                ..valid(2)
            },
            "record.end_time",
        ),
        (
            pb::CallRecord {
                duration: Some(prost_types::Duration {
                    seconds: -5,
                    nanos: 0,
                }),
                ..valid(3)
            },
            "record.duration",
        ),
        (
            pb::CallRecord {
                duration: Some(prost_types::Duration {
                    seconds: 90 * 86_400,
                    nanos: 0,
                }),
                end_time: ts(BASE_SECONDS + 90 * 86_400 + 100),
                ..valid(4)
            },
            "record.duration",
        ),
        (
            pb::CallRecord {
                callee_number: "12065550100".into(),
                ..valid(5)
            },
            "record.callee_number",
        ),
        (
            pb::CallRecord {
                final_sip_code: 99,
                ..valid(6)
            },
            "record.final_sip_code",
        ),
        (
            pb::CallRecord {
                final_sip_code: 700,
                ..valid(7)
            },
            "record.final_sip_code",
        ),
        (
            pb::CallRecord {
                tenant_id: String::new(),
                ..valid(8)
            },
            "record.tenant_id",
        ),
        (
            pb::CallRecord {
                direction: 9,
                ..valid(9)
            },
            "record.direction",
        ),
    ];
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (i, (record, field)) in bad.into_iter().enumerate() {
        stream.push(for_carrier("contoso", valid(100 + i as i64)));
        stream.push(for_carrier("contoso", record));
        expected.push((2 * i as i64 + 1, field.to_owned()));
    }
    stream.push(pb::CarrierCallRecord {
        carrier_id: "contoso".into(),
        record: None,
    });
    expected.push((stream.len() as i64 - 1, "record".into()));
    stream.push(for_carrier("Not A Carrier", valid(200)));
    expected.push((stream.len() as i64 - 1, "carrier_id".into()));

    let summary = app.ingest_calls(stream, 4).await;
    assert_eq!(summary.received, 20);
    assert_eq!(summary.accepted, 9);
    assert_eq!(summary.rejected, 11);
    let got: Vec<(i64, String)> = summary
        .rejections
        .iter()
        .map(|r| {
            assert_eq!(r.reason, pb::RejectionReason::InvalidField as i32, "{r:?}");
            (r.index, r.field.clone())
        })
        .collect();
    assert_eq!(got, expected);
    let (records, _) = read_all(open_calls(&app, "contoso", stream_options(None)).await).await;
    assert_eq!(records.len(), 9);
}

/// A cursor older than retention is CURSOR_EXPIRED with oldestCursor; the committed cursor
/// is never silently reset.
#[tokio::test]
async fn expired_cursors_are_reported() {
    let app = two_carriers().await;
    app.ingest_calls(call_records("contoso", 0..10), 10).await;
    let mut client = app.records("contoso").await;
    client
        .commit_cursor(pb::CommitCursorRequest {
            kind: pb::RecordKind::CallRecords as i32,
            cursor: 2,
        })
        .await
        .unwrap();
    let store = app.open_store().await;
    let purged = purge_pass(&store, &purge_only(DataClass::CallRecords), now_ms() + 1)
        .await
        .deleted();
    assert_eq!(
        purged,
        Deleted {
            call_records: 10,
            ..Deleted::default()
        }
    );
    app.ingest_calls(call_records("contoso", 10..12), 10).await;

    for options in [stream_options(Some(5)), stream_options(None)] {
        let mut stream = open_calls(&app, "contoso", options).await;
        let status = stream.message().await.unwrap_err();
        assert_error(&status, Code::FailedPrecondition, "CURSOR_EXPIRED");
        assert_eq!(
            status.get_details_error_info().unwrap().metadata["oldestCursor"],
            "11"
        );
    }
    let (records, _) = read_all(open_calls(&app, "contoso", stream_options(Some(10))).await).await;
    assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), [11, 12]);

    let status = client
        .commit_cursor(pb::CommitCursorRequest {
            kind: pb::RecordKind::CallRecords as i32,
            cursor: 13,
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::OutOfRange, "CURSOR_AHEAD");
    let status = client
        .get_cursor(pb::GetCursorRequest { kind: 0 })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["kind"]);
}

/// A follower that does not read while 100,000 records are ingested costs the server a
/// bounded buffer, and still receives every record once it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_follower_costs_bounded_memory_and_loses_nothing() {
    const TOTAL: i64 = 100_000;
    let app = two_carriers().await;
    let mut options = stream_options(Some(0));
    options.follow = true;
    let mut stream = open_calls(&app, "contoso", options).await;
    for start in (0..TOTAL).step_by(20_000) {
        let summary = app
            .ingest_calls(call_records("contoso", start..start + 20_000), 2_000)
            .await;
        assert_eq!(summary.accepted, 20_000);
    }
    // The producer has long filled its channel and waits; nothing more was buffered.
    let peak = app.metrics.peak_buffered_bytes();
    assert!(peak > 0, "the follower's channel was used");
    assert!(peak <= 4 * 1024 * 1024, "peak buffered {peak} bytes");
    let mut next = 1;
    while next <= TOTAL {
        let msg = next_message(&mut stream).await;
        for r in msg.records {
            assert_eq!(r.cursor, next, "in order, exactly once");
            next += 1;
        }
    }
    assert!(app.metrics.peak_buffered_bytes() <= 4 * 1024 * 1024);
}

/// Quality records are classified at ingestion, idempotent on (call id, stream id), and
/// streamed to their carrier only.
#[tokio::test]
async fn quality_records_are_classified_and_streamed() {
    let app = two_carriers().await;
    let good = pb::QualityRecord {
        call_id: "call-1".into(),
        stream_id: "s1".into(),
        tenant_id: TENANT_A.into(),
        stream_direction: pb::StreamDirection::CallerToCallee as i32,
        start_time: ts(BASE_SECONDS),
        end_time: ts(BASE_SECONDS + 60),
        audio_codec: "SATIN".into(),
        avg_jitter: Some(prost_types::Duration {
            seconds: 0,
            nanos: 10_000_000,
        }),
        avg_round_trip: Some(prost_types::Duration {
            seconds: 0,
            nanos: 80_000_000,
        }),
        avg_packet_loss_rate: Some(0.01),
        avg_audio_degradation: Some(0.2),
        avg_concealed_ratio: Some(0.01),
        ..Default::default()
    };
    let poor = pb::QualityRecord {
        stream_id: "s2".into(),
        stream_direction: pb::StreamDirection::CalleeToCaller as i32,
        avg_packet_loss_rate: Some(0.2),
        avg_jitter: Some(prost_types::Duration {
            seconds: 0,
            nanos: 45_000_000,
        }),
        ..good.clone()
    };
    let partial = pb::QualityRecord {
        stream_id: "s3".into(),
        avg_concealed_ratio: None,
        ..good.clone()
    };
    let bad = pb::QualityRecord {
        stream_id: "s4".into(),
        avg_packet_loss_rate: Some(1.5),
        ..good.clone()
    };
    let records: Vec<pb::CarrierQualityRecord> = [good, poor, partial, bad]
        .into_iter()
        .map(|r| pb::CarrierQualityRecord {
            carrier_id: "contoso".into(),
            record: Some(r),
        })
        .collect();
    let summary = app.ingest_quality(records.clone()).await;
    assert_eq!((summary.accepted, summary.rejected), (3, 1));
    assert_eq!(summary.rejections[0].field, "record.avg_packet_loss_rate");
    let again = app.ingest_quality(records).await;
    assert_eq!(
        (again.accepted, again.duplicates, again.rejected),
        (0, 3, 1)
    );

    let mut stream = app
        .records("contoso")
        .await
        .stream_quality_records(pb::StreamQualityRecordsRequest {
            options: Some(stream_options(None)),
        })
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    let got: Vec<(String, i32, Vec<i32>)> = msg
        .records
        .into_iter()
        .map(|r| (r.stream_id, r.classification, r.poor_reasons))
        .collect();
    assert_eq!(
        got,
        [
            (
                "s1".to_owned(),
                pb::QualityClassification::Good as i32,
                vec![]
            ),
            (
                "s2".to_owned(),
                pb::QualityClassification::Poor as i32,
                vec![
                    pb::PoorReason::PacketLoss as i32,
                    pb::PoorReason::Jitter as i32
                ]
            ),
            (
                "s3".to_owned(),
                pb::QualityClassification::Unclassified as i32,
                vec![]
            ),
        ]
    );
    let mut fabrikam = app
        .records("fabrikam")
        .await
        .stream_quality_records(pb::StreamQualityRecordsRequest { options: None })
        .await
        .unwrap()
        .into_inner();
    assert!(
        fabrikam.message().await.unwrap().is_none(),
        "nothing for fabrikam"
    );
}

/// Suspending a carrier ends its following record stream with PERMISSION_DENIED.
#[tokio::test]
async fn suspension_ends_followers() {
    let app = two_carriers().await;
    let mut options = stream_options(Some(0));
    options.follow = true;
    let mut stream = open_calls(&app, "contoso", options).await;
    app.platform()
        .await
        .set_carrier_status(pb::SetCarrierStatusRequest {
            carrier_id: "contoso".into(),
            status: pb::CarrierStatus::Suspended as i32,
        })
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the follower ends promptly")
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "CARRIER_SUSPENDED");
}
