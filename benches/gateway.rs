//! `cargo bench --bench gateway`: the performance figures of DESIGN §7, each against a
//! baseline measured in the same run.
//!
//! The real gateway (`App::build` on 127.0.0.1:0) serves in this process over mutual TLS with
//! a fresh PKI, on a temporary SQLite database, or on a fresh PostgreSQL database when
//! `OPCONNECT_BENCH_DATABASE_URL` names a server (an admin URL; the run creates and drops its
//! own databases there). The run prints a table of figure, baseline, ratio, target and whether
//! it is met; `OPCONNECT_BENCH_JSON=PATH` also writes DESIGN §7's JSON object there;
//! `OPCONNECT_BENCH_QUICK=1` measures everything at a small size, in seconds. A missed target
//! is a result; the run fails only when something errors.
//!
//! The idle-stream memory is that of a server in a child process (this binary again, with
//! `OPCONNECT_BENCH_CHILD` set; see support/child.rs), so that it counts the server's side of
//! the streams only and no heap left by the other measurements hides their growth.

mod support;

/// Counts live heap bytes, for the idle-stream figures (support/heap.rs).
#[global_allocator]
static HEAP: support::heap::Counting = support::heap::Counting;

use std::time::Instant;

use anyhow::{Context, Result};
use opconnect::pb::v1::platform_service_client::PlatformServiceClient;
use support::report::Figures;
use support::setup::{self, Databases, Echo, Gateway, Pki};
use support::{Scale, baseline, child, measure, per_second, percentile};

#[tokio::main]
async fn main() -> Result<()> {
    if let Ok(kind) = std::env::var(child::CHILD_VAR) {
        return child::serve(&kind).await;
    }
    let scale = Scale::from_env();
    support::install_log_sink()?;
    let started = Instant::now();
    let pki = Pki::generate()?;
    let databases = Databases::from_env()?;
    let measured = measure_all(&pki, &databases, &scale).await;
    let dropped = databases.drop_created().await;
    let figures = measured?;
    dropped?;
    println!("{}", figures.table(databases.backend(), &scale));
    if let Some(path) = std::env::var_os("OPCONNECT_BENCH_JSON") {
        let json = serde_json::to_string_pretty(&figures.json())?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("writing {}", path.to_string_lossy()))?;
        eprintln!("wrote {}", path.to_string_lossy());
    }
    eprintln!("bench: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Prints what runs next, to stderr, so that a slow step shows where the time goes.
fn step(what: &str, since: Instant) {
    eprintln!("bench: [{:>6.1} s] {what}", since.elapsed().as_secs_f64());
}

/// Every measurement, in an order where none disturbs the next: each ends its streams first.
async fn measure_all(pki: &Pki, databases: &Databases, scale: &Scale) -> Result<Figures> {
    let t = Instant::now();
    let mut f = Figures::default();
    step(&format!("{}: starting the gateway", databases.backend()), t);
    let gateway = Gateway::start(pki.server_files(), databases.fresh("gateway").await?).await?;
    let echo = Echo::start(pki.server_files()).await?;
    let platform_channel = setup::channel(gateway.addr, pki, &pki.platform).await?;
    let carrier_channel = setup::channel(gateway.addr, pki, &pki.carrier).await?;
    setup::prepare_carrier(
        &mut PlatformServiceClient::new(platform_channel.clone()),
        measure::fanout_numbers(scale),
    )
    .await?;
    if support::measures("ingest") {
        measure_ingest(&gateway, &platform_channel, databases, scale, &mut f, t).await?;
    }
    if support::measures("durations") {
        measure_durations(&carrier_channel, databases, scale, &mut f, t).await?;
    }
    if support::measures("stream") {
        measure_stream(&gateway, &carrier_channel, scale, &mut f, t).await?;
    }
    if support::measures("unary") {
        measure_unary(&gateway, &echo, pki, scale, &mut f, t).await?;
    }
    if support::measures("fanout") {
        step("fan-out: AssignNumber without, then with watchers", t);
        let fanout = measure::fanout(&gateway, pki, scale).await?;
        f.fanout_watchers = fanout.watchers;
        f.fanout_p50_ms = percentile(&fanout.delivery_ms, 50.0);
        f.fanout_p99_ms = percentile(&fanout.delivery_ms, 99.0);
        f.fanout_write_p50_ms = percentile(&fanout.write_ms, 50.0);
        f.fanout_write_p99_ms = percentile(&fanout.write_ms, 99.0);
        f.write_p99_ms_no_watchers = percentile(&fanout.write_alone_ms, 99.0);
        f.write_p50_ms_no_watchers = percentile(&fanout.write_alone_ms, 50.0);
    }
    drop((platform_channel, carrier_channel));
    gateway.stop().await?;
    echo.stop().await?;

    if support::measures("idle") {
        step(
            "idle streams: gateway, then bare tonic (each in a child process)",
            t,
        );
        f.idle_streams = scale.idle_streams;
        let gateway = measure::idle_gateway_streams(pki, scale).await?;
        let bare = measure::idle_bare_streams(pki, scale).await?;
        (f.idle_stream_bytes, f.idle_stream_heap_bytes) = (gateway.resident, gateway.heap);
        (f.idle_bare_stream_bytes, f.idle_bare_stream_heap_bytes) = (bare.resident, bare.heap);
    }
    step("measured", t);
    Ok(f)
}

/// `IngestCallRecords` through the gateway, then the same rows inserted by the baseline.
async fn measure_ingest(
    gateway: &Gateway,
    platform_channel: &tonic::transport::Channel,
    databases: &Databases,
    scale: &Scale,
    f: &mut Figures,
    t: Instant,
) -> Result<()> {
    step("ingest: gateway, then the baseline", t);
    let records = setup::carrier_call_records(scale.records);
    let took = measure::ingest(platform_channel.clone(), &records, scale.per_message).await?;
    f.ingest_records_per_s = per_second(records.len(), took);
    let (took, json_bytes) =
        baseline::insert_call_records(&databases.fresh("ingest_base").await?, &records).await?;
    f.ingest_baseline_records_per_s = per_second(records.len(), took);
    f.baseline_record_bytes = json_bytes;
    f.gateway_record_bytes = baseline::mean_record_bytes(&gateway.database_url).await?;
    Ok(())
}

/// `ReportCallDurations` through the gateway, then the same rows inserted by the baseline.
async fn measure_durations(
    carrier_channel: &tonic::transport::Channel,
    databases: &Databases,
    scale: &Scale,
    f: &mut Figures,
    t: Instant,
) -> Result<()> {
    step("durations: gateway, then the baseline", t);
    let durations: Vec<_> = (0..scale.records).map(setup::call_duration).collect();
    let took =
        measure::report_durations(carrier_channel.clone(), &durations, scale.per_message).await?;
    f.durations_records_per_s = per_second(durations.len(), took);
    let took =
        baseline::insert_durations(&databases.fresh("durations_base").await?, &durations).await?;
    f.durations_baseline_records_per_s = per_second(durations.len(), took);
    Ok(())
}

/// The records ingested, streamed through `StreamCallRecords`, then read by one plain query.
async fn measure_stream(
    gateway: &Gateway,
    carrier_channel: &tonic::transport::Channel,
    scale: &Scale,
    f: &mut Figures,
    t: Instant,
) -> Result<()> {
    step("stream: gateway, then the baseline", t);
    // The decoding client first: the figure against the baseline is the second read of the
    // rows, like the baseline's own.
    let took = measure::stream_call_records(
        carrier_channel.clone(),
        scale.records,
        measure::Decode::Fields,
    )
    .await?;
    f.stream_decoded_records_per_s = per_second(scale.records, took);
    let took = measure::stream_call_records(
        carrier_channel.clone(),
        scale.records,
        measure::Decode::Bytes,
    )
    .await?;
    f.stream_records_per_s = per_second(scale.records, took);
    let (rows, took) = baseline::read_call_records(&gateway.database_url).await?;
    anyhow::ensure!(
        rows == scale.records,
        "the baseline read {rows} of {} rows",
        scale.records
    );
    f.stream_baseline_records_per_s = per_second(rows, took);
    gateway.streams_ended().await
}

/// `GetNumber` on the gateway, then the bare tonic echo, each over `scale.unary_channels`
/// connections.
async fn measure_unary(
    gateway: &Gateway,
    echo: &Echo,
    pki: &Pki,
    scale: &Scale,
    f: &mut Figures,
    t: Instant,
) -> Result<()> {
    step(
        "unary: GetNumber on the gateway, then Health/Check on bare tonic",
        t,
    );
    let channels = setup::channels(gateway.addr, pki, &pki.carrier, scale.unary_channels).await?;
    let calls = measure::get_number_calls(&channels, scale, measure::fanout_numbers(scale)).await?;
    f.unary_qps = per_second(calls.count, calls.elapsed);
    f.unary_p99_ms = percentile(&calls.latencies_ms, 99.0);
    f.unary_cpu_us = calls.cpu_us_per_call;
    drop(channels);
    let channels = setup::channels(echo.addr, pki, &pki.carrier, scale.unary_channels).await?;
    let calls = measure::health_check_calls(&channels, scale).await?;
    f.unary_baseline_qps = per_second(calls.count, calls.elapsed);
    f.unary_baseline_p99_ms = percentile(&calls.latencies_ms, 99.0);
    f.unary_baseline_cpu_us = calls.cpu_us_per_call;
    drop(channels);
    Ok(())
}
