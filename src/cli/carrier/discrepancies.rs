//! `opconnect carrier discrepancies`: the carrier's own reconciliation view, one line per call
//! whose durations disagree (or that only one side has).

use tonic::transport::Channel;

use crate::cli::admin::{class_name, day_range, seconds};
use crate::cli::status::explain;
use crate::pb::v1 as pb;
use crate::pb::v1::call_duration_service_client::CallDurationServiceClient;

#[derive(Debug, clap::Args)]
pub struct DiscrepancyArgs {
    /// First day, YYYY-MM-DD (UTC, inclusive).
    #[arg(long)]
    pub from: String,
    /// Last day, YYYY-MM-DD (UTC, inclusive).
    #[arg(long)]
    pub to: String,
    /// Largest difference still within tolerance, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub tolerance: f64,
}

pub(super) async fn run(channel: Channel, args: DiscrepancyArgs) -> anyhow::Result<()> {
    let (start, end) = day_range(&args.from, &args.to)?;
    anyhow::ensure!(
        args.tolerance.is_finite() && (0.0..=3600.0).contains(&args.tolerance),
        "--tolerance must be between 0 and 3600 seconds"
    );
    let window = pb::ReconciliationWindow {
        start_time: Some(start),
        end_time: Some(end),
        tolerance: Some(prost_types::Duration {
            seconds: args.tolerance.trunc() as i64,
            nanos: (args.tolerance.fract() * 1e9) as i32,
        }),
    };
    let mut stream = CallDurationServiceClient::new(channel)
        .list_discrepancies(pb::ListDiscrepanciesRequest {
            window: Some(window),
            classes: Vec::new(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!(
        "{:<40} {:<24} {:>12} {:>12} {:>12}",
        "CALL", "CLASS", "PLATFORM_S", "CARRIER_S", "DIFF_S"
    );
    while let Some(batch) = stream.message().await.map_err(explain)? {
        for d in batch.discrepancies {
            println!(
                "{:<40} {:<24} {:>12} {:>12} {:>12}",
                d.call_id,
                class_name(d.class),
                seconds(d.platform_duration.as_ref()),
                seconds(d.carrier_duration.as_ref()),
                seconds(d.difference.as_ref())
            );
        }
    }
    Ok(())
}
