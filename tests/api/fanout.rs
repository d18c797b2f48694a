//! One change, many watchers: every watcher of a carrier is served from the carrier's shared
//! tail (which the writer fills, or one database read per change for all of them), and a watcher that falls behind the
//! tail reads the database on its own, then rejoins. Either way: every event exactly once, in
//! revision order, without a gap.

use opconnect::pb::v1 as pb;
use opconnect::pki::Issued;
use tonic::Streaming;

use crate::helpers::*;

const WATCHERS: usize = 1_000;
const CONNECTIONS: usize = 10;
const CHANGES: usize = 200;
/// Events committed while one watcher does not read: more than a tail holds (4,096) plus what
/// the unread stream's buffers take (its channel, h2's send buffer, the client's window).
const BULK: usize = 10_000;

fn number(prefix: u32, i: usize) -> String {
    format!("+1425{prefix:03}{i:04}")
}

async fn watch(
    channel: tonic::transport::Channel,
    after: i64,
    tenant: &str,
) -> Streaming<pb::WatchNumbersResponse> {
    pb::assignment_service_client::AssignmentServiceClient::new(channel)
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(after),
            tenant_id: tenant.into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner()
}

/// A channel like [`TestApp::channel`], with a 64 KiB stream window instead of hyper's 2 MiB.
async fn small_window_channel(app: &TestApp, client: &Issued) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(app.ca.cert_pem()))
        .domain_name("localhost")
        .identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    tonic::transport::Channel::from_shared(format!("https://{}", app.addr))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .initial_stream_window_size(65_535)
        .connect()
        .await
        .expect("connect")
}

/// Revisions received until `through`, checking that they come in order and once.
async fn revisions_through(
    stream: &mut Streaming<pb::WatchNumbersResponse>,
    through: i64,
) -> Vec<i64> {
    let mut seen = Vec::new();
    while seen.last().is_none_or(|&last| last < through) {
        let message = stream.message().await.expect("message").expect("open");
        for event in message.events {
            if let Some(&last) = seen.last() {
                assert!(
                    event.revision > last,
                    "revision {} after {last}",
                    event.revision
                );
            }
            seen.push(event.revision);
        }
    }
    seen
}

/// 1,000 watchers of one carrier on 10 connections each see every change of their tenant
/// exactly once while another tenant's 10,000 events pass by, and a watcher of everything that
/// stopped reading until the tail had moved past it gets all 10,200 events, gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_and_one_that_fell_behind_see_every_event_once() {
    // More streams than the per-carrier default (64), opened faster than its rate limit;
    // metrics recorded (a scrape listener), for the tail's read counts.
    let app = spawn_app_with(|s| {
        s.max_streams_per_carrier = 2 * WATCHERS as u32;
        s.rate_limit_per_carrier = 0;
        s.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    app.create_carrier("contoso").await;
    let watched: Vec<String> = (0..CHANGES).map(|i| number(555, i)).collect();
    let refs: Vec<&str> = watched.iter().map(String::as_str).collect();
    app.provision("contoso", TENANT_B, &refs).await;
    let (_, start) = app.list_all("contoso").await;

    let cert = app.carrier_cert("contoso");
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(app.channel(&cert).await);
    }
    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        watchers.push(watch(channels[i % CONNECTIONS].clone(), start, TENANT_B).await);
    }
    // The laggard's connection has a small window, so that what it does not read stays on the
    // server, which then has to leave it behind.
    let laggard_channel = small_window_channel(&app, &cert).await;
    let mut laggard = watch(laggard_channel, start, "").await;

    // Another tenant's numbers: 10,000 events the tenant-B watchers filter out, and the
    // laggard does not read yet.
    let bulk: Vec<String> = (0..BULK).map(|i| number(777, i)).collect();
    for chunk in bulk.chunks(1_000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        app.provision("contoso", TENANT_A, &refs).await;
    }
    for n in &watched {
        app.assign(n, "user-1").await;
    }
    let last = start + (BULK + CHANGES) as i64;

    let expected: Vec<i64> = (start + BULK as i64 + 1..=last).collect();
    let readers = watchers.into_iter().map(|mut stream| {
        let expected = expected.clone();
        tokio::spawn(async move {
            assert_eq!(revisions_through(&mut stream, last).await, expected);
        })
    });
    for reader in futures::future::join_all(readers).await {
        reader.expect("watcher");
    }

    let everything: Vec<i64> = (start + 1..=last).collect();
    assert_eq!(revisions_through(&mut laggard, last).await, everything);
    let metrics = &app.metrics;
    assert!(
        metrics.tail_reads("number_events", "behind") > 0,
        "the laggard fell behind the tail and read the database itself"
    );
    // The writers of this instance put their events in the tail themselves; the tail reads
    // the database only when it could not continue from an offer (far fewer reads than
    // changes, let alone changes × watchers).
    let offered = metrics.tail_reads("number_events", "offered");
    let fills = metrics.tail_reads("number_events", "fill");
    assert!(offered > 0, "no commit was offered to the tail");
    assert!(
        fills < CHANGES as u64,
        "{fills} database reads for {CHANGES} changes ({offered} offered)"
    );
    app.stop().await;
}
