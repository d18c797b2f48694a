//! `admin export-tenant` (everything held about a tenant, as JSON Lines) and `admin
//! erase-tenant` (its personal data redacted everywhere).

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::transport::Channel;

use super::super::status::explain;
use super::json::export_item;
use crate::pb::v1 as pb;
use crate::pb::v1::platform_service_client::PlatformServiceClient;

/// Arguments of `admin export-tenant`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Tenant id (GUID).
    pub tenant: String,
    /// The JSON Lines file to write (replaced if it exists); `-` for standard output.
    #[arg(long, value_name = "FILE.jsonl")]
    pub out: PathBuf,
}

/// Arguments of `admin erase-tenant`.
#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    /// Tenant id (GUID).
    pub tenant: String,
    /// Why (a ticket, a legal basis); kept in the audit log.
    #[arg(long)]
    pub reason: String,
}

/// A spinner with the items written, on standard error when it is a terminal.
fn progress() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} items {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Streams the export into `args.out`, one JSON object per line.
pub(crate) async fn export(
    client: &mut PlatformServiceClient<Channel>,
    args: ExportArgs,
) -> anyhow::Result<()> {
    let out: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.out)
                .with_context(|| format!("cannot create {}", args.out.display()))?,
        )
    };
    let mut out = BufWriter::new(out);
    let mut stream = client
        .export_tenant_data(pb::ExportTenantDataRequest {
            tenant_id: args.tenant,
        })
        .await
        .map_err(explain)?
        .into_inner();
    let bar = progress();
    let mut written = 0u64;
    while let Some(batch) = stream.message().await.map_err(explain)? {
        for item in &batch.items {
            serde_json::to_writer(&mut out, &export_item(item))?;
            out.write_all(b"\n")?;
        }
        written += batch.items.len() as u64;
        bar.set_position(written);
    }
    out.flush()?;
    bar.finish_and_clear();
    eprintln!("{written} items written");
    Ok(())
}

/// Erases the tenant's personal data and prints the rows redacted per log.
pub(crate) async fn erase(
    client: &mut PlatformServiceClient<Channel>,
    args: EraseArgs,
) -> anyhow::Result<()> {
    let r = client
        .erase_tenant_data(pb::EraseTenantDataRequest {
            tenant_id: args.tenant,
            reason: args.reason,
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!("{:<18} {:>10}", "LOG", "REDACTED");
    for (log, n) in [
        ("call records", r.call_records),
        ("quality records", r.quality_records),
        ("durations", r.durations),
        ("number events", r.number_events),
        ("numbers", r.numbers),
        ("upload summaries", r.upload_summaries),
    ] {
        println!("{log:<18} {n:>10}");
    }
    Ok(())
}
