//! The Prometheus endpoint: after a known sequence of calls, `/metrics` shows exactly those
//! counts in the right families and labels, read through a Prometheus text parser.

use opconnect::pb::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::helpers::*;

/// `GET /metrics` over plain HTTP/1.1.
async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: opconnect\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("openmetrics-text"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text")
}

/// The value of the sample `name` whose labels include `labels`, if any.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Three watches, one ingestion of 1,000 records and five streams refused by the cap show as
/// exactly those counts, per family and label; other carriers and kinds stay absent.
#[tokio::test]
async fn metrics_count_what_happened() {
    let app = spawn_app_with(|s| {
        s.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        s.max_streams_per_carrier = 3;
    })
    .await;
    let addr = app.metrics_addr.expect("metrics listener");
    app.create_carrier("contoso").await;
    let mut watches = Vec::new();
    for _ in 0..3 {
        watches.push(
            app.carrier("contoso")
                .await
                .watch_numbers(pb::WatchNumbersRequest::default())
                .await
                .expect("watch")
                .into_inner(),
        );
    }
    for _ in 0..5 {
        let refused = app
            .carrier("contoso")
            .await
            .watch_numbers(pb::WatchNumbersRequest::default())
            .await
            .expect_err("past the cap");
        assert_error(&refused, Code::ResourceExhausted, "STREAM_LIMIT");
    }
    let summary = app
        .ingest_calls(call_records("contoso", 0..1_000), 500)
        .await;
    assert_eq!(summary.accepted, 1_000);

    let scraped = scrape(addr).await;
    assert_eq!(
        value(
            &scraped,
            "opconnect_rpcs_total",
            &[
                ("method", "/opconnect.v1.AssignmentService/WatchNumbers"),
                ("code", "RESOURCE_EXHAUSTED"),
                ("carrier", "contoso"),
            ]
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &scraped,
            "opconnect_rpcs_total",
            &[
                ("method", "/opconnect.v1.PlatformService/IngestCallRecords"),
                ("code", "OK"),
                ("carrier", ""),
            ]
        ),
        Some(1.0)
    );
    let open = |kind| {
        value(
            &scraped,
            "opconnect_open_streams",
            &[("kind", kind), ("carrier", "contoso")],
        )
    };
    assert_eq!(open("number_events"), Some(3.0));
    assert_eq!(
        value(
            &scraped,
            "opconnect_records_ingested_total",
            &[("kind", "call_records")]
        ),
        Some(1_000.0)
    );
    assert_eq!(
        value(
            &scraped,
            "opconnect_limit_rejections_total",
            &[("reason", "stream_limit")]
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &scraped,
            "opconnect_limit_rejections_total",
            &[("reason", "rate_limit")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &scraped,
            "opconnect_records_ingested_total",
            &[("kind", "quality_records")]
        ),
        Some(0.0)
    );
    assert!(
        value(
            &scraped,
            "opconnect_tls_certificate_expiry_timestamp_seconds",
            &[]
        )
        .unwrap()
            > 1.7e9
    );
    assert!(value(&scraped, "opconnect_db_query_duration_seconds_count", &[]).unwrap() > 0.0);
    assert!(
        value(
            &scraped,
            "opconnect_db_pool_connections",
            &[("state", "idle")]
        )
        .is_some()
    );

    drop(watches);
    eventually("the watches to close", || app.metrics.open_streams() == 0).await;
    assert_eq!(
        value(
            &scrape(addr).await,
            "opconnect_open_streams",
            &[("kind", "number_events"), ("carrier", "contoso")]
        ),
        Some(0.0)
    );
}

/// Every metric the shipped Grafana dashboard queries is one the server exposes.
#[tokio::test]
async fn the_dashboard_queries_only_exposed_metrics() {
    let app = spawn_app_with(|s| s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    // One call and one open stream: families labelled by method or carrier exist once used.
    app.create_carrier("contoso").await;
    let _watch = app
        .carrier("contoso")
        .await
        .watch_numbers(pb::WatchNumbersRequest::default())
        .await
        .expect("watch");
    let mut tcp = tokio::net::TcpStream::connect(app.metrics_addr.unwrap())
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: opconnect\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let families: Vec<String> = response
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/grafana/opconnect.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard JSON");
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("opconnect_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.push(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in queried {
        let family = ["_bucket", "_count", "_sum", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            families.iter().any(|f| f == family),
            "the dashboard queries {name}, which the server does not expose ({families:?})"
        );
    }
}

/// `opconnect admin status` prints the health and the figures of a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_status_prints_health_and_figures() {
    let app = spawn_app_with(|s| s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    app.create_carrier("contoso").await;
    let _watch = app
        .carrier("contoso")
        .await
        .watch_numbers(pb::WatchNumbersRequest::default())
        .await
        .expect("watch");
    let dir = tempfile::tempdir().unwrap();
    let ops = app
        .ca
        .issue_client(
            &opconnect::pki::Subject::Platform("ops".into()),
            TRUST_DOMAIN,
        )
        .unwrap();
    std::fs::write(dir.path().join("ops.pem"), &ops.cert_pem).unwrap();
    std::fs::write(dir.path().join("ops.key"), &ops.key_pem).unwrap();
    std::fs::write(dir.path().join("ca.pem"), app.ca.cert_pem()).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_opconnect"));
    command
        .arg("admin")
        .arg(format!("--endpoint=https://localhost:{}", app.addr.port()))
        .arg(format!("--cert={}", dir.path().join("ops.pem").display()))
        .arg(format!("--key={}", dir.path().join("ops.key").display()))
        .arg(format!("--ca={}", dir.path().join("ca.pem").display()))
        .arg("status")
        .arg(format!(
            "--metrics-url=http://{}/metrics",
            app.metrics_addr.unwrap()
        ))
        .arg("--interval-secs=1");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SERVING"), "{stdout}");
    assert!(stdout.contains("contoso"), "{stdout}");
    assert!(stdout.contains("certificate days left"), "{stdout}");
}
