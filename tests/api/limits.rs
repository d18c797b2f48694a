//! Limits that keep one carrier from hurting another: open streams, call rate, records per
//! upload, idle uploads, and how much of a client's input the server keeps.

use std::time::{Duration, Instant};

use opconnect::pb::v1 as pb;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

/// An open upload of `carrier`: the sender of its messages and the pending call.
struct OpenUpload {
    tx: mpsc::Sender<pb::ReportCallDurationsRequest>,
    call: tokio::task::JoinHandle<Result<pb::ReportCallDurationsResponse, tonic::Status>>,
}

async fn open_upload(app: &TestApp, carrier: &str) -> OpenUpload {
    let (tx, rx) = mpsc::channel(4);
    let mut client = app.durations(carrier).await;
    let call = tokio::spawn(async move {
        client
            .report_call_durations(ReceiverStream::new(rx))
            .await
            .map(tonic::Response::into_inner)
    });
    OpenUpload { tx, call }
}

async fn open_watch(
    app: &TestApp,
    carrier: &str,
) -> Result<tonic::Streaming<pb::WatchNumbersResponse>, tonic::Status> {
    app.carrier(carrier)
        .await
        .watch_numbers(pb::WatchNumbersRequest::default())
        .await
        .map(tonic::Response::into_inner)
}

async fn open_follow(
    app: &TestApp,
    carrier: &str,
) -> Result<tonic::Streaming<pb::StreamCallRecordsResponse>, tonic::Status> {
    let mut options = stream_options(Some(0));
    options.follow = true;
    app.records(carrier)
        .await
        .stream_call_records(pb::StreamCallRecordsRequest {
            options: Some(options),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// With a cap of 4, contoso's fifth stream (watches, a follower and an upload open) gets
/// STREAM_LIMIT with RetryInfo while fabrikam opens its own 4 and makes 200 calls; once contoso
/// closes a stream it can open another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_cap_is_per_carrier_and_held_by_the_stream() {
    let app = spawn_app_with(|s| s.max_streams_per_carrier = 4).await;
    app.create_carrier("contoso").await;
    app.create_carrier("fabrikam").await;
    let first_watch = open_watch(&app, "contoso").await.expect("watch 1");
    let _second_watch = open_watch(&app, "contoso").await.expect("watch 2");
    let _follow = open_follow(&app, "contoso").await.expect("follow");
    let upload = open_upload(&app, "contoso").await;
    upload
        .tx
        .send(pb::ReportCallDurationsRequest {
            upload_id: String::new(),
            records: vec![duration(1, TENANT_A, 60_000)],
        })
        .await
        .expect("first message");
    eventually("contoso's four streams to be open", || {
        app.metrics.open_streams() == 4
    })
    .await;

    let refused = open_watch(&app, "contoso").await.expect_err("fifth stream");
    assert_error(&refused, Code::ResourceExhausted, "STREAM_LIMIT");
    assert!(retry_delay(&refused).is_some(), "RetryInfo");
    let refused = open_follow(&app, "contoso")
        .await
        .expect_err("fifth stream");
    assert_error(&refused, Code::ResourceExhausted, "STREAM_LIMIT");

    let mut fabrikam_streams = Vec::new();
    for _ in 0..4 {
        fabrikam_streams.push(open_watch(&app, "fabrikam").await.expect("fabrikam watch"));
    }
    let mut records = app.records("fabrikam").await;
    for _ in 0..200 {
        records
            .get_cursor(pb::GetCursorRequest {
                kind: pb::RecordKind::CallRecords as i32,
            })
            .await
            .expect("fabrikam's calls are served");
    }

    drop(first_watch);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open_watch(&app, "contoso").await {
            Ok(_) => break,
            Err(status) => {
                assert_error(&status, Code::ResourceExhausted, "STREAM_LIMIT");
                assert!(
                    Instant::now() < deadline,
                    "the closed stream's permit came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(upload.tx);
    let summary = upload.call.await.unwrap().expect("upload").summary.unwrap();
    assert_eq!(summary.accepted, 1);
}

/// Past its rate a carrier gets RATE_LIMIT with a RetryInfo that, honoured, leads to success;
/// the other carrier's calls are unaffected.
#[tokio::test]
async fn the_rate_limit_is_per_carrier_and_says_when_to_retry() {
    let app = spawn_app_with(|s| s.rate_limit_per_carrier = 5).await;
    app.create_carrier("contoso").await;
    app.create_carrier("fabrikam").await;
    let get = || pb::GetCursorRequest {
        kind: pb::RecordKind::CallRecords as i32,
    };
    let mut contoso = app.records("contoso").await;
    let mut refused = None;
    for _ in 0..20 {
        if let Err(status) = contoso.get_cursor(get()).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("the burst of 10 runs out");
    assert_error(&refused, Code::ResourceExhausted, "RATE_LIMIT");
    let wait = retry_delay(&refused).expect("RetryInfo");
    assert!(wait <= Duration::from_secs(1), "{wait:?}");

    let mut fabrikam = app.records("fabrikam").await;
    for _ in 0..5 {
        fabrikam
            .get_cursor(get())
            .await
            .expect("fabrikam unaffected");
    }
    tokio::time::sleep(wait).await;
    contoso.get_cursor(get()).await.expect("after the wait");
}

/// An upload past its record bound ends RESOURCE_EXHAUSTED / UPLOAD_TOO_LARGE; what came before
/// is committed and counted in the error's metadata.
#[tokio::test]
async fn an_upload_past_its_record_bound_keeps_what_came_before() {
    let app = spawn_app_with(|s| s.max_records_per_upload = 10).await;
    app.create_carrier("contoso").await;
    let records: Vec<pb::CallDuration> = (0..15).map(|i| duration(i, TENANT_A, 1_000)).collect();
    let status = app
        .durations("contoso")
        .await
        .report_call_durations(tokio_stream::iter(upload_messages("", &records, 5)))
        .await
        .expect_err("too large");
    assert_error(&status, Code::ResourceExhausted, "UPLOAD_TOO_LARGE");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata["received"], "10");
    assert_eq!(info.metadata["accepted"], "10");
    let stored = carrier_discrepancies(
        &app,
        "contoso",
        &[pb::ReconciliationClass::MissingPlatformRecord],
    )
    .await;
    assert_eq!(stored.len(), 10);
}

/// An upload that goes quiet past the idle bound ends DEADLINE_EXCEEDED / UPLOAD_IDLE with
/// what it received committed.
#[tokio::test]
async fn an_idle_upload_ends_and_keeps_what_it_received() {
    let app = spawn_app_with(|s| s.upload_idle_timeout_secs = 1).await;
    app.create_carrier("contoso").await;
    let upload = open_upload(&app, "contoso").await;
    upload
        .tx
        .send(pb::ReportCallDurationsRequest {
            upload_id: String::new(),
            records: (0..3).map(|i| duration(i, TENANT_A, 1_000)).collect(),
        })
        .await
        .unwrap();
    eventually("the upload to start", || app.metrics.open_streams() == 1).await;
    eventually("the idle upload to end", || app.metrics.open_streams() == 0).await;
    // A tonic client takes the early answer once its side is done.
    drop(upload.tx);
    let status = upload.call.await.unwrap().expect_err("idle");
    assert_error(&status, Code::DeadlineExceeded, "UPLOAD_IDLE");
    assert_eq!(
        status.get_details_error_info().unwrap().metadata["accepted"],
        "3"
    );
}

/// The resident memory of a process, in bytes, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// 100 messages each carrying one record with a 3.5 MB invalid call id: every record is
/// rejected, the summary, GetUpload's answer and the stored row each stay under 256 KiB, and
/// the server (a real `opconnect serve` process) grows by less than 64 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_invalid_values_are_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_server_pki(dir.path());
    let database_url = fresh_database_url(dir.path()).await;
    let mut server = spawn_server(dir.path(), &database_url);
    let pid = server.child.id();
    let platform = ca
        .issue_client(
            &opconnect::pki::Subject::Platform("ops".into()),
            TRUST_DOMAIN,
        )
        .unwrap();
    let contoso = ca
        .issue_client(
            &opconnect::pki::Subject::Carrier("contoso".into()),
            TRUST_DOMAIN,
        )
        .unwrap();
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
    let mut durations =
        opconnect::pb::v1::call_duration_service_client::CallDurationServiceClient::new(channel);
    let before = resident_bytes(pid);
    let huge = "x".repeat(3_500_000);
    let messages = (0..100).map(move |i| {
        let mut record = duration(i, TENANT_A, 1_000);
        record.call_id = format!("{i}{huge}");
        pb::ReportCallDurationsRequest {
            upload_id: if i == 0 {
                "huge-1".into()
            } else {
                String::new()
            },
            records: vec![record],
        }
    });
    let summary = durations
        .report_call_durations(tokio_stream::iter(messages))
        .await
        .expect("the upload completes")
        .into_inner()
        .summary
        .unwrap();
    let grown = resident_bytes(pid).saturating_sub(before);
    assert_eq!((summary.received, summary.rejected), (100, 100));
    assert!(summary.rejections.iter().all(|r| r.call_id.len() <= 128));
    assert!(
        summary.encoded_len() < 256 * 1024,
        "{}",
        summary.encoded_len()
    );
    let fetched = durations
        .get_upload(pb::GetUploadRequest {
            upload_id: "huge-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(fetched.encoded_len() < 256 * 1024);
    let db = sea_orm::Database::connect(&database_url).await.unwrap();
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT summary FROM uploads",
        ))
        .await
        .unwrap()
        .expect("stored summary");
    let stored: String = row.try_get("", "summary").unwrap();
    assert!(stored.len() < 256 * 1024, "{}", stored.len());
    eprintln!("the server grew by {grown} bytes");
    assert!(grown < 64 * 1024 * 1024, "grew by {grown} bytes");
    server.child.kill().unwrap();
    let _ = server.child.wait();
}
