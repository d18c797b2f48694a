//! The measurements through gRPC: ingestion, uploads, record streams, unary calls, watch
//! fan-out and idle streams, against the gateway (and, for the unary and idle baselines, the
//! bare tonic server). Each returns raw samples; the report turns them into figures.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use opconnect::pb::v1 as pb;
use opconnect::pb::v1::assignment_service_client::AssignmentServiceClient;
use opconnect::pb::v1::call_duration_service_client::CallDurationServiceClient;
use opconnect::pb::v1::platform_service_client::PlatformServiceClient;
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::Channel;

use super::child::{ChildServer, ServerKind};
use super::setup::{self, Gateway, Pki};
use super::{Scale, ms, sorted};

/// Streams opened at once while opening thousands: enough to keep the server busy, few enough
/// that the database pool's queue stays short.
const OPENING_AT_ONCE: usize = 64;

/// How long any one awaited message may take before the run counts as failed.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

// === Records ===

/// Ingests `records` through `PlatformService.IngestCallRecords`, `per_message` per message,
/// in one stream; returns the time from the first message to the summary. Fails unless every
/// record was accepted.
pub async fn ingest(
    channel: Channel,
    records: &[pb::CarrierCallRecord],
    per_message: usize,
) -> Result<Duration> {
    let messages: Vec<pb::IngestCallRecordsRequest> = records
        .chunks(per_message)
        .map(|chunk| pb::IngestCallRecordsRequest {
            records: chunk.to_vec(),
        })
        .collect();
    let mut platform = PlatformServiceClient::new(channel);
    let started = Instant::now();
    let summary = platform
        .ingest_call_records(tokio_stream::iter(messages))
        .await?
        .into_inner()
        .summary
        .context("ingestion without summary")?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        summary.accepted == records.len() as i64,
        "ingestion accepted {} of {} records: {:?}",
        summary.accepted,
        records.len(),
        summary.rejections.first()
    );
    Ok(elapsed)
}

/// Uploads `durations` through `CallDurationService.ReportCallDurations`, `per_message` per
/// message, in one stream with an upload id; returns the time from the first message to the
/// summary. Fails unless every record was accepted.
pub async fn report_durations(
    channel: Channel,
    durations: &[pb::CallDuration],
    per_message: usize,
) -> Result<Duration> {
    let messages: Vec<pb::ReportCallDurationsRequest> = durations
        .chunks(per_message)
        .enumerate()
        .map(|(i, chunk)| pb::ReportCallDurationsRequest {
            upload_id: if i == 0 {
                "bench-upload".into()
            } else {
                String::new()
            },
            records: chunk.to_vec(),
        })
        .collect();
    let mut client = CallDurationServiceClient::new(channel);
    let started = Instant::now();
    let summary = client
        .report_call_durations(tokio_stream::iter(messages))
        .await?
        .into_inner()
        .summary
        .context("upload without summary")?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        summary.accepted == durations.len() as i64,
        "upload accepted {} of {} durations: {:?}",
        summary.accepted,
        durations.len(),
        summary.rejections.first()
    );
    Ok(elapsed)
}

/// `StreamCallRecordsResponse` as a client that keeps each record's encoding reads it: the
/// records' bytes and the cursor, without decoding the records' fields.
#[derive(Clone, PartialEq, prost::Message)]
struct RecordBytes {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    records: Vec<bytes::Bytes>,
    #[prost(int64, tag = "2")]
    next_cursor: i64,
}

/// How the bench's client reads a record stream.
#[derive(Debug, Clone, Copy)]
pub enum Decode {
    /// Each record's bytes, as the baseline reads the stored encoding: what the gateway
    /// delivers, without the client's own decoding in the same process.
    Bytes,
    /// Every field of every record, as a carrier's generated stub does.
    Fields,
}

/// Reads the carrier's whole call-record log through `CallRecordService.StreamCallRecords`
/// (after cursor 0, not following), decoding as `decode` says; returns the time from the
/// request to the stream's end. Fails unless exactly `expected` records arrive.
pub async fn stream_call_records(
    channel: Channel,
    expected: usize,
    decode: Decode,
) -> Result<Duration> {
    let request = pb::StreamCallRecordsRequest {
        options: Some(pb::RecordStreamOptions {
            after_cursor: Some(0),
            ..Default::default()
        }),
    };
    let started = Instant::now();
    let received = match decode {
        Decode::Fields => {
            count_streamed::<pb::StreamCallRecordsResponse>(channel, request, |m| m.records.len())
                .await?
        }
        Decode::Bytes => {
            count_streamed::<RecordBytes>(channel, request, |m| m.records.len()).await?
        }
    };
    let elapsed = started.elapsed();
    anyhow::ensure!(
        received == expected,
        "streamed {received} of {expected} records"
    );
    Ok(elapsed)
}

/// Reads a whole `StreamCallRecords` stream, decoding its messages as `R`; returns the records
/// `count` finds in them.
async fn count_streamed<R: prost::Message + Default + Send + 'static>(
    channel: Channel,
    request: pb::StreamCallRecordsRequest,
    count: impl Fn(&R) -> usize,
) -> Result<usize> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opconnect.v1.CallRecordService/StreamCallRecords",
    );
    let codec = tonic_prost::ProstCodec::<pb::StreamCallRecordsRequest, R>::default();
    let mut stream = grpc
        .server_streaming(tonic::Request::new(request), path, codec)
        .await?
        .into_inner();
    let mut received = 0;
    while let Some(message) = stream.message().await? {
        received += count(&message);
    }
    Ok(received)
}

// === Unary calls ===

/// What a closed loop of unary calls did.
pub struct Calls {
    /// Calls completed.
    pub count: usize,
    /// From the start of the loop to the end of its last call.
    pub elapsed: Duration,
    /// Each call's latency in milliseconds, ascending.
    pub latencies_ms: Vec<f64>,
    /// CPU time this process (servers and clients together) spent per call, in microseconds:
    /// steadier than calls per second on a machine that other work shares.
    pub cpu_us_per_call: f64,
}

/// Runs `callers` concurrent callers for `run_for`, caller `k` on `clients[k % len]`, each
/// making one call after another with `call` (which hands its client back with the outcome).
/// Fails on the first failed call.
pub async fn closed_loop<C, F, Fut>(
    clients: &[C],
    callers: usize,
    run_for: Duration,
    call: F,
) -> Result<Calls>
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = (C, Result<()>)> + Send,
{
    let started = Instant::now();
    let cpu_before = super::process_cpu()?;
    let deadline = started + run_for;
    let tasks: Vec<_> = (0..callers)
        .map(|k| {
            let mut client = clients[k % clients.len()].clone();
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let (back, outcome) = call(client).await;
                    client = back;
                    outcome?;
                    latencies.push(ms(sent.elapsed()));
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let cpu = super::process_cpu()?.saturating_sub(cpu_before);
    Ok(Calls {
        count: latencies.len(),
        elapsed: started.elapsed(),
        cpu_us_per_call: cpu.as_secs_f64() * 1e6 / latencies.len().max(1) as f64,
        latencies_ms: sorted(latencies),
    })
}

/// `AssignmentService.GetNumber` of the carrier's numbers `0..numbers` in turn (so that calls
/// made together ask for different numbers), per [`closed_loop`], after an unmeasured warm-up
/// of a tenth of `run_for`.
pub async fn get_number_calls(
    channels: &[Channel],
    scale: &Scale,
    numbers: usize,
) -> Result<Calls> {
    let clients: Vec<_> = channels
        .iter()
        .map(|c| AssignmentServiceClient::new(c.clone()))
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let call = move |mut client: AssignmentServiceClient<Channel>| {
        let number = setup::number(next.fetch_add(1, Ordering::Relaxed) % numbers.max(1));
        async move {
            let outcome = client.get_number(pb::GetNumberRequest { number }).await;
            (client, outcome.map(drop).map_err(anyhow::Error::from))
        }
    };
    closed_loop(
        &clients,
        scale.unary_callers,
        scale.unary_time / 10,
        call.clone(),
    )
    .await?;
    closed_loop(&clients, scale.unary_callers, scale.unary_time, call).await
}

/// `grpc.health.v1.Health/Check` on the bare tonic server, per [`closed_loop`], after the
/// same warm-up.
pub async fn health_check_calls(channels: &[Channel], scale: &Scale) -> Result<Calls> {
    use tonic_health::pb::health_client::HealthClient;
    let clients: Vec<_> = channels
        .iter()
        .map(|c| HealthClient::new(c.clone()))
        .collect();
    let call = |mut client: HealthClient<Channel>| async move {
        let outcome = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        (client, outcome.map(drop).map_err(anyhow::Error::from))
    };
    closed_loop(&clients, scale.unary_callers, scale.unary_time / 10, call).await?;
    closed_loop(&clients, scale.unary_callers, scale.unary_time, call).await
}

// === Watch fan-out ===

/// What the fan-out measurement saw.
pub struct Fanout {
    /// Watchers open during the changes.
    pub watchers: usize,
    /// From the start of each `AssignNumber` to its event's receipt, per watcher and change,
    /// in milliseconds, ascending.
    pub delivery_ms: Vec<f64>,
    /// `AssignNumber` latencies while the watchers watch, ascending.
    pub write_ms: Vec<f64>,
    /// `AssignNumber` latencies of the same changes with no watcher open, ascending.
    pub write_alone_ms: Vec<f64>,
}

/// Numbers the fan-out uses: one warm-up, then `changes` without and `changes` with watchers.
pub fn fanout_numbers(scale: &Scale) -> usize {
    1 + 2 * scale.changes
}

/// The fan-out of DESIGN §7: `changes` assignments at `change_rate` with no watcher, then the
/// same with `watchers` watchers of the carrier on `watcher_connections` connections. The
/// carrier must hold [`fanout_numbers`] provisioned numbers.
pub async fn fanout(gateway: &Gateway, pki: &Pki, scale: &Scale) -> Result<Fanout> {
    let platform =
        PlatformServiceClient::new(setup::channel(gateway.addr, pki, &pki.platform).await?);
    let alone: Vec<String> = (1..=scale.changes).map(setup::number).collect();
    let watched: Vec<String> = (scale.changes + 1..=2 * scale.changes)
        .map(setup::number)
        .collect();
    let write_alone_ms = paced_writes(&platform, &alone, scale.change_rate).await?;

    let connections =
        setup::channels(gateway.addr, pki, &pki.carrier, scale.watcher_connections).await?;
    let revision = current_revision(&connections[0]).await?;
    let streams = open_streams(&connections, scale.watchers, |channel| {
        open_watch(channel, revision)
    })
    .await?;
    let warm_up = setup::number(0);
    let index: Arc<HashMap<String, usize>> = Arc::new(
        watched
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect(),
    );
    let (ready, mut all_ready) = mpsc::channel::<()>(scale.watchers);
    let watchers: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(watch(stream, warm_up.clone(), index.clone(), ready.clone())))
        .collect();
    drop(ready);
    // One change every watcher must see first: then every stream is past its start-up reads
    // and waiting, and the measured changes see the steady state.
    platform
        .clone()
        .assign_number(setup::assign(&warm_up, "warm-up"))
        .await?;
    for _ in 0..scale.watchers {
        tokio::time::timeout(MESSAGE_TIMEOUT, all_ready.recv())
            .await
            .context("a watcher did not see the warm-up change")?
            .context("a watcher failed before the warm-up change")?;
    }

    let writes = paced(&platform, &watched, scale.change_rate).await?;
    let mut delivery_ms = Vec::with_capacity(scale.watchers * scale.changes);
    for watcher in watchers {
        for (change, received) in watcher.await?? {
            delivery_ms.push(ms(received.saturating_duration_since(writes[change].0)));
        }
    }
    gateway.streams_ended().await?;
    Ok(Fanout {
        watchers: scale.watchers,
        delivery_ms: sorted(delivery_ms),
        write_ms: sorted(writes.iter().map(|w| ms(w.1)).collect()),
        write_alone_ms,
    })
}

/// [`paced`] calls, returning only their latencies, ascending.
async fn paced_writes(
    platform: &PlatformServiceClient<Channel>,
    numbers: &[String],
    rate: u32,
) -> Result<Vec<f64>> {
    let writes = paced(platform, numbers, rate).await?;
    Ok(sorted(writes.iter().map(|w| ms(w.1)).collect()))
}

/// Assigns each of `numbers`, starting one call every 1/`rate` s whether or not the earlier
/// ones have finished (an open loop: a slow write does not hold back the next, so slowness
/// shows in the latencies instead of hiding in a lower rate). Returns each call's start and
/// latency, in the order of `numbers`.
async fn paced(
    platform: &PlatformServiceClient<Channel>,
    numbers: &[String],
    rate: u32,
) -> Result<Vec<(Instant, Duration)>> {
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut calls = Vec::with_capacity(numbers.len());
    for (i, number) in numbers.iter().enumerate() {
        ticks.tick().await;
        let mut client = platform.clone();
        let request = setup::assign(number, &format!("user-{i}"));
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            client.assign_number(request).await?;
            Ok::<_, anyhow::Error>((started, started.elapsed()))
        }));
    }
    let mut writes = Vec::with_capacity(calls.len());
    for call in calls {
        writes.push(call.await??);
    }
    Ok(writes)
}

/// The carrier's current number revision, as `ListNumbers` reports it.
async fn current_revision(channel: &Channel) -> Result<i64> {
    Ok(AssignmentServiceClient::new(channel.clone())
        .list_numbers(pb::ListNumbersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .revision)
}

/// A watch of every change after `revision`, with progress checkpoints as rare as allowed
/// (one an hour), so that only changes make messages.
async fn open_watch(
    channel: Channel,
    revision: i64,
) -> Result<Streaming<pb::WatchNumbersResponse>> {
    Ok(AssignmentServiceClient::new(channel)
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(revision),
            progress_interval: Some(prost_types::Duration {
                seconds: 3_600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// Opens `n` streams with `open`, stream `i` on `channels[i % len]`, [`OPENING_AT_ONCE`] at a
/// time.
async fn open_streams<S, F, Fut>(channels: &[Channel], n: usize, open: F) -> Result<Vec<S>>
where
    F: Fn(Channel) -> Fut,
    Fut: Future<Output = Result<S>>,
{
    futures::stream::iter(0..n)
        .map(|i| open(channels[i % channels.len()].clone()))
        .buffer_unordered(OPENING_AT_ONCE)
        .collect::<Vec<Result<S>>>()
        .await
        .into_iter()
        .collect()
}

/// The next message of a stream, which must come within [`MESSAGE_TIMEOUT`].
async fn next<M>(stream: &mut Streaming<M>) -> Result<M> {
    tokio::time::timeout(MESSAGE_TIMEOUT, stream.message())
        .await
        .context("no message within 60 s")??
        .context("the stream ended")
}

/// One watcher: waits for the warm-up change, says so on `ready`, then records when each
/// change of `index` arrives, until it has seen them all. Returns (change, receipt time).
async fn watch(
    mut stream: Streaming<pb::WatchNumbersResponse>,
    warm_up: String,
    index: Arc<HashMap<String, usize>>,
    ready: mpsc::Sender<()>,
) -> Result<Vec<(usize, Instant)>> {
    let number = |e: &pb::NumberEvent| {
        e.number
            .as_ref()
            .map(|n| n.number.clone())
            .unwrap_or_default()
    };
    loop {
        let message = next(&mut stream).await?;
        if message.events.iter().any(|e| number(e) == warm_up) {
            break;
        }
    }
    ready.send(()).await?;
    drop(ready);
    let mut seen = Vec::with_capacity(index.len());
    while seen.len() < index.len() {
        let message = next(&mut stream).await?;
        let received = Instant::now();
        seen.extend(
            message
                .events
                .iter()
                .filter_map(|e| index.get(&number(e)))
                .map(|&change| (change, received)),
        );
    }
    Ok(seen)
}

// === Idle streams ===

/// The server's memory per idle stream: `n` streams opened with `open` over `channels`, each
/// having received its first message from `first_message` (so every server-side producer is
/// past its start-up and waiting again), measured as the growth of the child `server`'s
/// resident memory, and of its live heap, from before the first stream to after the last.
async fn idle_bytes_per_stream<S, F, Fut, W, WFut>(
    server: &mut ChildServer,
    channels: &[Channel],
    n: usize,
    open: F,
    first_message: W,
) -> Result<IdleBytes>
where
    F: Fn(Channel) -> Fut,
    Fut: Future<Output = Result<S>>,
    W: FnOnce(Vec<S>) -> WFut,
    WFut: Future<Output = Result<Vec<S>>>,
{
    let (before, heap_before) = (server.resident_bytes()?, server.heap_bytes()?);
    let streams = open_streams(channels, n, open).await?;
    let streams = first_message(streams).await?;
    // Let the last producers finish their turn and go back to waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, heap_after) = (server.resident_bytes()?, server.heap_bytes()?);
    drop(streams);
    let per_stream = |grown: u64| grown as f64 / n.max(1) as f64;
    Ok(IdleBytes {
        resident: per_stream(after.saturating_sub(before)),
        heap: per_stream(heap_after.saturating_sub(heap_before)),
    })
}

/// Memory per idle stream.
pub struct IdleBytes {
    /// Growth of resident memory.
    pub resident: f64,
    /// Growth of live heap: what the server holds, without the allocator's overhead.
    pub heap: f64,
}

/// Idle `WatchNumbers` streams on a gateway in a child process: opened after the current
/// revision, woken once by one change.
pub async fn idle_gateway_streams(pki: &Pki, scale: &Scale) -> Result<IdleBytes> {
    let mut server = ChildServer::spawn(ServerKind::Gateway, pki)?;
    let mut platform =
        PlatformServiceClient::new(setup::channel(server.addr, pki, &pki.platform).await?);
    setup::prepare_carrier(&mut platform, 1).await?;
    let connections =
        setup::channels(server.addr, pki, &pki.carrier, scale.idle_connections).await?;
    let revision = current_revision(&connections[0]).await?;
    let bytes = idle_bytes_per_stream(
        &mut server,
        &connections,
        scale.idle_streams,
        |channel| open_watch(channel, revision),
        |mut streams| async move {
            platform
                .assign_number(setup::assign(&setup::number(0), "warm-up"))
                .await?;
            for stream in &mut streams {
                next(stream).await?;
            }
            Ok(streams)
        },
    )
    .await?;
    drop(connections);
    server.stop()?;
    Ok(bytes)
}

/// Idle `grpc.health.v1.Health/Watch` streams on a bare tonic server in a child process, each
/// having received the current status.
pub async fn idle_bare_streams(pki: &Pki, scale: &Scale) -> Result<IdleBytes> {
    use tonic_health::pb::health_client::HealthClient;
    let mut server = ChildServer::spawn(ServerKind::Bare, pki)?;
    let connections =
        setup::channels(server.addr, pki, &pki.carrier, scale.idle_connections).await?;
    let bytes = idle_bytes_per_stream(
        &mut server,
        &connections,
        scale.idle_streams,
        |channel| async move {
            Ok(HealthClient::new(channel)
                .watch(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await?
                .into_inner())
        },
        |mut streams| async move {
            for stream in &mut streams {
                next(stream).await?;
            }
            Ok(streams)
        },
    )
    .await?;
    drop(connections);
    server.stop()?;
    Ok(bytes)
}
