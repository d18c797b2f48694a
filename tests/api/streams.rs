//! What every server stream shares, because they all run on one engine: suspending a carrier
//! ends each of its open streams, in whatever state, with PERMISSION_DENIED.

use std::time::Duration;

use opconnect::pb::v1 as pb;
use prost::Message;
use tonic::{Code, Status, Streaming};

use crate::helpers::*;

/// Drains `stream` until it fails, and returns the failure; a stream that ends OK, or does not
/// end within 10 s, fails the test.
async fn final_error<M>(what: &str, mut stream: Streaming<M>) -> Status {
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("{what} ended OK after the suspension"),
                Err(status) => return status,
            }
        }
    });
    drained
        .await
        .unwrap_or_else(|_| panic!("{what} did not end after the suspension"))
}

/// A discrepancy as the listings send it for a test call without a platform record.
fn one_discrepancy() -> pb::Discrepancy {
    let d = duration(10_000, TENANT_A, 60_000);
    pb::Discrepancy {
        call_id: d.call_id,
        tenant_id: d.tenant_id,
        start_time: d.start_time,
        class: pb::ReconciliationClass::MissingPlatformRecord as i32,
        platform_duration: None,
        carrier_duration: d.duration,
        difference: None,
    }
}

/// The five server streams (WatchNumbers, StreamCallRecords, StreamQualityRecords and both
/// ListDiscrepancies) are open, some following and idle, the discrepancy listings blocked on
/// readers that do not read; suspending the carrier ends every producer at once, and each
/// reader then gets CARRIER_SUSPENDED after what was already buffered.
#[tokio::test]
async fn suspension_ends_each_of_the_five_server_streams() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.provision("contoso", TENANT_A, &["+14255550100"]).await;
    app.ingest_calls(call_records("contoso", 0..3), 10).await;
    // 60,000 carrier durations without platform records: listings (about 5 MB each) far larger
    // than what the channels and HTTP/2 windows hold, so their producers block on the unread
    // streams.
    let durations: Vec<pb::CallDuration> = (1_000..61_000)
        .map(|i| duration(i, TENANT_A, 60_000))
        .collect();
    let summary = app
        .durations("contoso")
        .await
        .report_call_durations(tokio_stream::iter(upload_messages("", &durations, 2_000)))
        .await
        .expect("upload")
        .into_inner()
        .summary
        .expect("summary");
    assert_eq!(summary.accepted, 60_000);

    let mut watch = app
        .carrier("contoso")
        .await
        .watch_numbers(pb::WatchNumbersRequest {
            include_snapshot: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let snapshot = watch.message().await.expect("snapshot").expect("a message");
    assert_eq!(snapshot.events.len(), 1);
    let mut follow = stream_options(Some(0));
    follow.follow = true;
    let mut calls = app
        .records("contoso")
        .await
        .stream_call_records(pb::StreamCallRecordsRequest {
            options: Some(follow.clone()),
        })
        .await
        .expect("call records")
        .into_inner();
    let first = calls.message().await.expect("records").expect("a message");
    assert_eq!(first.records.len(), 3);
    let quality = app
        .records("contoso")
        .await
        .stream_quality_records(pb::StreamQualityRecordsRequest {
            options: Some(follow),
        })
        .await
        .expect("quality records")
        .into_inner();
    let own_discrepancies = app
        .durations("contoso")
        .await
        .list_discrepancies(pb::ListDiscrepanciesRequest {
            window: Some(test_window()),
            classes: Vec::new(),
        })
        .await
        .expect("carrier discrepancies")
        .into_inner();
    let platform_discrepancies = app
        .platform()
        .await
        .list_discrepancies(pb::PlatformServiceListDiscrepanciesRequest {
            carrier_id: "contoso".into(),
            window: Some(test_window()),
            classes: Vec::new(),
        })
        .await
        .expect("platform discrepancies")
        .into_inner();
    // Both listings are blocked once each has filled its channel (two messages of 1,000).
    let message = pb::ListDiscrepanciesResponse {
        discrepancies: vec![one_discrepancy(); 1_000],
    }
    .encoded_len();
    let full = i64::try_from(4 * message).unwrap();
    eventually("both listings to wait for their readers", || {
        app.metrics.buffered_bytes() >= full
    })
    .await;

    app.platform()
        .await
        .set_carrier_status(pb::SetCarrierStatusRequest {
            carrier_id: "contoso".into(),
            status: pb::CarrierStatus::Suspended as i32,
        })
        .await
        .expect("suspend");
    // Every producer ends without waiting for its reader, even those blocked on a full stream.
    eventually("every stream's producer to end", || {
        app.metrics.open_streams() == 0
    })
    .await;

    let ended = [
        final_error("WatchNumbers", watch).await,
        final_error("StreamCallRecords", calls).await,
        final_error("StreamQualityRecords", quality).await,
        final_error("CallDurationService.ListDiscrepancies", own_discrepancies).await,
        final_error("PlatformService.ListDiscrepancies", platform_discrepancies).await,
    ];
    for status in &ended {
        assert_error(status, Code::PermissionDenied, "CARRIER_SUSPENDED");
    }
}

/// Suspension ends, each within 1 s, a record stream draining a 100,000-record backlog, a
/// record stream whose reader stopped reading, and an upload; the upload keeps what it had
/// committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_ends_busy_streams_within_a_second() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let summary = app
        .ingest_calls(call_records("contoso", 0..100_000), 5_000)
        .await;
    assert_eq!(summary.accepted, 100_000);
    let open = || async {
        app.records("contoso")
            .await
            .stream_call_records(pb::StreamCallRecordsRequest {
                options: Some(stream_options(Some(0))),
            })
            .await
            .expect("record stream")
            .into_inner()
    };
    let mut draining = open().await;
    draining
        .message()
        .await
        .expect("draining")
        .expect("a message");
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let end = loop {
            match draining.message().await {
                Ok(Some(_)) => {}
                other => break other.map(|_| ()),
            }
        };
        let _ = ended_tx.send((end, std::time::Instant::now()));
    });
    let mut stopped = open().await;
    stopped
        .message()
        .await
        .expect("stopped")
        .expect("a message");
    let (upload_tx, upload_rx) = tokio::sync::mpsc::channel(4);
    let mut uploads = app.durations("contoso").await;
    let upload = tokio::spawn(async move {
        uploads
            .report_call_durations(tokio_stream::wrappers::ReceiverStream::new(upload_rx))
            .await
    });
    upload_tx
        .send(pb::ReportCallDurationsRequest {
            upload_id: String::new(),
            records: vec![duration(1, TENANT_A, 60_000)],
        })
        .await
        .unwrap();
    eventually("three streams open", || app.metrics.open_streams() == 3).await;

    app.platform()
        .await
        .set_carrier_status(pb::SetCarrierStatusRequest {
            carrier_id: "contoso".into(),
            status: pb::CarrierStatus::Suspended as i32,
        })
        .await
        .expect("suspend");
    let suspended = std::time::Instant::now();
    while app.metrics.open_streams() > 0 {
        assert!(
            suspended.elapsed() < Duration::from_secs(1),
            "{} streams still open 1 s after the suspension",
            app.metrics.open_streams()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (end, at) = ended_rx.await.unwrap();
    assert!(at.duration_since(suspended) < Duration::from_secs(1));
    assert_error(
        &end.unwrap_err(),
        Code::PermissionDenied,
        "CARRIER_SUSPENDED",
    );
    assert_error(
        &final_error("the stopped reader", stopped).await,
        Code::PermissionDenied,
        "CARRIER_SUSPENDED",
    );
    drop(upload_tx);
    let status = upload.await.unwrap().expect_err("upload ended");
    assert_error(&status, Code::PermissionDenied, "CARRIER_SUSPENDED");
}
