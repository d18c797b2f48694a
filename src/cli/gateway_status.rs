//! `opconnect admin status`: the gateway's health (gRPC health over mutual TLS) and a few key
//! figures from its Prometheus endpoint, scraped twice a moment apart for rates: open streams
//! per carrier, ingest rates per kind, limit rejections per reason, certificate days left.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// What `status` reads: the metrics URL and how long to wait between its two scrapes.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The gateway's Prometheus endpoint (`serve --metrics-listen`).
    #[arg(
        long,
        env = "OPCONNECT_METRICS_URL",
        default_value = "http://127.0.0.1:9464/metrics"
    )]
    pub metrics_url: String,
    /// Seconds between the two scrapes that rates are computed from.
    #[arg(long, default_value_t = 2)]
    pub interval_secs: u64,
}

/// Prints the gateway's health and key figures.
pub async fn run(channel: Channel, args: &StatusArgs) -> anyhow::Result<()> {
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(super::status::explain)?;
    let health = match ServingStatus::try_from(health) {
        Ok(status) => status.as_str_name().to_owned(),
        Err(_) => format!("status {health}"),
    };
    let first = scrape(&args.metrics_url).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.interval_secs.max(1))).await;
    let second = scrape(&args.metrics_url).await?;
    let seconds = started.elapsed().as_secs_f64();
    print!("{}", report(&health, &first, &second, seconds));
    Ok(())
}

/// The report as text: one table per figure.
fn report(
    health: &str,
    first: &prometheus_parse::Scrape,
    second: &prometheus_parse::Scrape,
    seconds: f64,
) -> String {
    let mut out = format!("health                 {health}\n");
    if let Some(expiry) = sum(
        second,
        "opconnect_tls_certificate_expiry_timestamp_seconds",
        &[],
    ) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        out += &format!("certificate days left  {:.1}\n", (expiry - now) / 86_400.0);
    }
    out += "\nopen streams           carrier            count\n";
    for (carrier, count) in by_label(second, "opconnect_open_streams", "carrier") {
        let carrier = if carrier.is_empty() {
            "(platform)"
        } else {
            &carrier
        };
        out += &format!("                       {carrier:<18} {count:>5.0}\n");
    }
    out += "\ningested per second    kind               rate\n";
    let before = by_label(first, "opconnect_records_ingested_total", "kind");
    for (kind, after) in by_label(second, "opconnect_records_ingested_total", "kind") {
        let was = before.get(&kind).copied().unwrap_or(0.0);
        let rate = (after - was).max(0.0) / seconds.max(f64::EPSILON);
        out += &format!("                       {kind:<18} {rate:>8.1}\n");
    }
    out += "\nlimit rejections       reason             total\n";
    for (reason, total) in by_label(second, "opconnect_limit_rejections_total", "reason") {
        out += &format!("                       {reason:<18} {total:>5.0}\n");
    }
    out
}

/// Sums the samples of `name` per value of `label`.
fn by_label(scrape: &prometheus_parse::Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for sample in scrape.samples.iter().filter(|s| s.metric == name) {
        let key = sample.labels.get(label).unwrap_or_default().to_owned();
        *sums.entry(key).or_insert(0.0) += value(&sample.value);
    }
    sums
}

/// The sum of the samples of `name` with `labels`, if there is one.
fn sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for sample in scrape.samples.iter().filter(|s| s.metric == name) {
        if labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v)) {
            *found.get_or_insert(0.0) += value(&sample.value);
        }
    }
    found
}

fn value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        _ => 0.0,
    }
}

/// Fetches and parses `url` (plain `http://host:port/path`) with one HTTP/1.1 GET.
async fn scrape(url: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: the metrics URL must start with http://"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, "metrics"));
    let mut tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .with_context(|| format!("{url}: no answer"))?
    .with_context(|| format!("cannot connect to {url}"))?;
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response))
        .await
        .with_context(|| format!("{url}: the answer did not end"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{url}: not an HTTP answer"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{url}: {}",
        head.lines().next().unwrap_or_default()
    );
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .with_context(|| format!("{url}: not Prometheus text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }

    /// The report sums streams per carrier, turns counters into rates and lists rejections.
    #[test]
    fn the_report_shows_streams_rates_and_rejections() {
        let first = parse(
            "# TYPE opconnect_records_ingested counter\n\
             opconnect_records_ingested_total{kind=\"call_records\"} 100\n",
        );
        let second = parse(
            "# TYPE opconnect_open_streams gauge\n\
             opconnect_open_streams{kind=\"number_events\",carrier=\"contoso\"} 2\n\
             opconnect_open_streams{kind=\"call_records\",carrier=\"contoso\"} 1\n\
             # TYPE opconnect_records_ingested counter\n\
             opconnect_records_ingested_total{kind=\"call_records\"} 300\n\
             # TYPE opconnect_limit_rejections counter\n\
             opconnect_limit_rejections_total{reason=\"rate_limit\"} 7\n",
        );
        let text = report("SERVING", &first, &second, 2.0);
        assert!(text.contains("SERVING"), "{text}");
        assert!(text.contains("contoso                3"), "{text}");
        assert!(text.contains("call_records          100.0"), "{text}");
        assert!(text.contains("rate_limit             7"), "{text}");
    }
}
