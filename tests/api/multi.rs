//! Several gateway instances on one PostgreSQL database, and PostgreSQL outages. These tests
//! need `OPCONNECT_TEST_DATABASE_URL`; without it they are listed as ignored (never passed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opconnect::pb::v1 as pb;
use opconnect::pb::v1::assignment_service_client::AssignmentServiceClient;
use opconnect::pb::v1::call_record_service_client::CallRecordServiceClient;
use opconnect::pb::v1::platform_service_client::PlatformServiceClient;
use opconnect::pki::{CertificateAuthority, Issued, Subject};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::helpers::*;

const NEEDS_POSTGRES: &str = "set OPCONNECT_TEST_DATABASE_URL to a PostgreSQL admin URL";

fn require_postgres() -> String {
    std::env::var(TEST_DATABASE_VAR).unwrap_or_else(|_| panic!("{NEEDS_POSTGRES}"))
}

/// Two instances on one fresh database, with the PKI in `dir`.
struct Pair {
    _dir: tempfile::TempDir,
    ca: CertificateAuthority,
    instances: Vec<Process>,
    platform: Issued,
    carrier: Issued,
}

impl Pair {
    async fn start() -> Self {
        let admin_url = require_postgres();
        let dir = tempfile::tempdir().unwrap();
        let ca = write_server_pki(dir.path());
        let database_url = create_postgres_database(&admin_url).await;
        let instances = vec![
            spawn_server(dir.path(), &database_url),
            spawn_server(dir.path(), &database_url),
        ];
        let platform = ca
            .issue_client(&Subject::Platform("ops".into()), TRUST_DOMAIN)
            .unwrap();
        let carrier = ca
            .issue_client(&Subject::Carrier("contoso".into()), TRUST_DOMAIN)
            .unwrap();
        let pair = Self {
            _dir: dir,
            ca,
            instances,
            platform,
            carrier,
        };
        pair.platform_client(0)
            .await
            .create_carrier(pb::CreateCarrierRequest {
                carrier_id: "contoso".into(),
                display_name: "Contoso".into(),
                sip_domain: "sip.contoso.example".into(),
            })
            .await
            .unwrap();
        pair
    }

    async fn channel(&self, instance: usize, cert: &Issued) -> Channel {
        channel_to(
            self.instances[instance].addr,
            &self.ca.cert_pem(),
            Some(cert),
        )
        .await
        .unwrap()
    }

    async fn platform_client(&self, instance: usize) -> PlatformServiceClient<Channel> {
        PlatformServiceClient::new(self.channel(instance, &self.platform).await)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for p in &mut self.instances {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Makes exactly `changes` number changes (provision, assign, re-assign, unassign, in turn)
/// through `platform`, on numbers of its own.
async fn number_writer(mut platform: PlatformServiceClient<Channel>, w: usize, changes: usize) {
    for change in 0..changes {
        let number = format!("+1425{w}{:06}", change / 4);
        match change % 4 {
            0 => {
                platform
                    .provision_numbers(provision_request("contoso", TENANT_A, &[&number]))
                    .await
                    .unwrap();
            }
            1 => {
                platform
                    .assign_number(assign_request(&number, "a"))
                    .await
                    .unwrap();
            }
            2 => {
                platform
                    .assign_number(assign_request(&number, "b"))
                    .await
                    .unwrap();
            }
            _ => {
                platform
                    .unassign_number(pb::UnassignNumberRequest { number })
                    .await
                    .unwrap();
            }
        }
    }
}

/// Ingests `range` of call records through `platform` in messages of 250.
async fn record_writer(mut platform: PlatformServiceClient<Channel>, range: std::ops::Range<i64>) {
    let messages: Vec<pb::IngestCallRecordsRequest> = call_records("contoso", range)
        .chunks(250)
        .map(|c| pb::IngestCallRecordsRequest {
            records: c.to_vec(),
        })
        .collect();
    let summary = platform
        .ingest_call_records(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(summary.rejected, 0);
}

/// Reads a watch from `start` until revision `last`; returns the event revisions received.
async fn watch_until(channel: Channel, start: i64, last: i64) -> Vec<i64> {
    let mut stream = AssignmentServiceClient::new(channel)
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(start),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut at = start;
    while at < last {
        let msg = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("watch progresses")
            .unwrap()
            .unwrap();
        for e in msg.events {
            seen.push(e.revision);
            at = e.revision;
        }
    }
    seen
}

/// Follows call records after `start` until cursor `last`; returns the cursors received.
async fn follow_until(channel: Channel, start: i64, last: i64) -> Vec<i64> {
    let mut options = stream_options(Some(start));
    options.follow = true;
    let mut stream = CallRecordServiceClient::new(channel)
        .stream_call_records(pb::StreamCallRecordsRequest {
            options: Some(options),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut at = start;
    while at < last {
        let msg = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("follower progresses")
            .unwrap()
            .unwrap();
        seen.extend(msg.records.iter().map(|r| r.cursor));
        at = msg.next_cursor;
    }
    seen
}

/// Two `opconnect serve` processes on one PostgreSQL database: 8 writers spread over both
/// make 2,000 number changes and ingest 20,000 call records; a watcher and a follower on each
/// instance each receive the full gapless sequence, in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn two_instances_deliver_one_gapless_sequence() {
    const CHANGES: i64 = 2_000;
    const RECORDS: i64 = 20_000;
    let pair = Pair::start().await;
    let mut readers = Vec::new();
    for i in 0..2 {
        let channel = pair.channel(i, &pair.carrier).await;
        readers.push(tokio::spawn(watch_until(channel.clone(), 0, CHANGES)));
        readers.push(tokio::spawn(follow_until(channel, 0, RECORDS)));
    }
    let mut writers = Vec::new();
    for w in 0..8usize {
        let platform = pair.platform_client(w % 2).await;
        writers.push(tokio::spawn(number_writer(
            platform,
            w,
            (CHANGES / 8) as usize,
        )));
        let platform = pair.platform_client((w + 1) % 2).await;
        let per = RECORDS / 8;
        let start = w as i64 * per;
        writers.push(tokio::spawn(record_writer(platform, start..start + per)));
    }
    for w in writers {
        w.await.unwrap();
    }
    let results: Vec<Vec<i64>> = futures::future::join_all(readers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        results[0],
        (1..=CHANGES).collect::<Vec<_>>(),
        "watcher on instance A"
    );
    assert_eq!(
        results[1],
        (1..=RECORDS).collect::<Vec<_>>(),
        "follower on instance A"
    );
    assert_eq!(
        results[2],
        (1..=CHANGES).collect::<Vec<_>>(),
        "watcher on instance B"
    );
    assert_eq!(
        results[3],
        (1..=RECORDS).collect::<Vec<_>>(),
        "follower on instance B"
    );
}

/// Kill one instance mid-stream: its clients resume on the other from their last revision or
/// cursor and lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn clients_of_a_killed_instance_resume_on_the_other() {
    let mut pair = Pair::start().await;
    let mut platform_b = pair.platform_client(1).await;
    let mut watch = AssignmentServiceClient::new(pair.channel(0, &pair.carrier).await)
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut options = stream_options(Some(0));
    options.follow = true;
    let mut follow = CallRecordServiceClient::new(pair.channel(0, &pair.carrier).await)
        .stream_call_records(pb::StreamCallRecordsRequest {
            options: Some(options),
        })
        .await
        .unwrap()
        .into_inner();

    // Writes through B, seen on A.
    number_writer(platform_b.clone(), 0, 40).await;
    record_writer(platform_b.clone(), 0..1_000).await;
    let mut revisions = Vec::new();
    while revisions.last() != Some(&40) {
        let msg = watch.message().await.unwrap().unwrap();
        revisions.extend(msg.events.iter().map(|e| e.revision));
    }
    let mut cursors = Vec::new();
    let mut next_cursor = 0;
    while next_cursor < 500 {
        let msg = follow.message().await.unwrap().unwrap();
        cursors.extend(msg.records.iter().map(|r| r.cursor));
        next_cursor = msg.next_cursor;
    }

    pair.instances[0].child.kill().unwrap();
    let _ = pair.instances[0].child.wait();
    assert!(watch.message().await.is_err(), "A's streams break");
    number_writer(platform_b.clone(), 1, 40).await;
    record_writer(platform_b.clone(), 1_000..2_000).await;

    let channel = pair.channel(1, &pair.carrier).await;
    revisions.extend(watch_until(channel.clone(), 40, 80).await);
    cursors.extend(follow_until(channel, next_cursor, 2_000).await);
    assert_eq!(revisions, (1..=80).collect::<Vec<_>>());
    assert_eq!(cursors, (1..=2_000).collect::<Vec<_>>());
    let _ = platform_b
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .unwrap();
}

/// PostgreSQL unreachable (through a TCP proxy): calls fail fast with UNAVAILABLE and
/// RetryInfo, open streams end with UNAVAILABLE, nothing acknowledged is lost, and service
/// comes back by itself when the database does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn database_outage_fails_fast_and_recovers() {
    let admin_url = require_postgres();
    let real_url = create_postgres_database(&admin_url).await;
    // postgres://user@host:port/db → the same through the proxy.
    let (scheme_user, rest) = real_url.split_once('@').unwrap();
    let (host_port, path) = rest.split_once('/').unwrap();
    let target: std::net::SocketAddr = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .find(|a| a.is_ipv4())
        .unwrap();
    let proxy = CutProxy::start(target).await;
    let proxied = format!("{scheme_user}@{}/{path}", proxy.addr);
    let app = spawn_app_on(Some(proxied)).await;
    app.create_carrier("contoso").await;
    app.provision("contoso", TENANT_A, &["+14255550100"]).await;
    let acknowledged = app.ingest_calls(call_records("contoso", 0..100), 50).await;
    assert_eq!(acknowledged.accepted, 100);

    let mut watch = app
        .carrier("contoso")
        .await
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().events.len(), 1);

    proxy.set_down(true);
    let started = Instant::now();
    let mut request = tonic::Request::new(pb::GetNumberRequest {
        number: "+14255550100".into(),
    });
    request.set_timeout(Duration::from_secs(10));
    let status = app
        .carrier("contoso")
        .await
        .get_number(request)
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "STORE_UNAVAILABLE");
    assert!(status.get_details_retry_info().is_some(), "RetryInfo");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed fast: {:?}",
        started.elapsed()
    );

    let status = tokio::time::timeout(Duration::from_secs(45), watch.message())
        .await
        .expect("the open watch ends")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // An ingestion during the outage is refused, never acknowledged.
    let failed = app
        .platform()
        .await
        .ingest_call_records(tokio_stream::iter(vec![pb::IngestCallRecordsRequest {
            records: call_records("contoso", 100..110),
        }]))
        .await;
    assert_eq!(failed.unwrap_err().code(), Code::Unavailable);

    proxy.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    let number = loop {
        match app
            .carrier("contoso")
            .await
            .get_number(pb::GetNumberRequest {
                number: "+14255550100".into(),
            })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                assert!(Instant::now() < deadline, "service did not come back");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(number.telephone_number.unwrap().revision, 1);
    let mut stream = app
        .records("contoso")
        .await
        .stream_call_records(pb::StreamCallRecordsRequest {
            options: Some(stream_options(Some(0))),
        })
        .await
        .unwrap()
        .into_inner();
    let mut cursors: BTreeMap<i64, String> = BTreeMap::new();
    while let Some(msg) = stream.message().await.unwrap() {
        cursors.extend(msg.records.into_iter().map(|r| (r.cursor, r.call_id)));
    }
    assert_eq!(cursors.len(), 100, "exactly what was acknowledged");
}

/// A carrier suspended through one instance is refused by the other within a second, although
/// that instance had just authorized it (its cached status is dropped by the NOTIFY, and in
/// any case after a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OPCONNECT_TEST_DATABASE_URL"]
async fn a_suspension_on_one_instance_is_seen_by_the_other() {
    let pair = Pair::start().await;
    let mut records = CallRecordServiceClient::new(pair.channel(1, &pair.carrier).await);
    let get = || pb::GetCursorRequest {
        kind: pb::RecordKind::CallRecords as i32,
    };
    records.get_cursor(get()).await.expect("authorized on B");
    pair.platform_client(0)
        .await
        .set_carrier_status(pb::SetCarrierStatusRequest {
            carrier_id: "contoso".into(),
            status: pb::CarrierStatus::Suspended as i32,
        })
        .await
        .unwrap();
    let suspended = Instant::now();
    loop {
        match records.get_cursor(get()).await {
            Ok(_) => assert!(
                suspended.elapsed() < Duration::from_secs(1),
                "B still authorizes the suspended carrier after 1 s"
            ),
            Err(status) => {
                assert_error(&status, Code::PermissionDenied, "CARRIER_SUSPENDED");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
