//! `opconnect admin`: the operations team's client for `PlatformService`, over mutual TLS with
//! a platform certificate.

use std::path::PathBuf;

use tonic::transport::Channel;

mod audit;
mod json;
mod retention;
mod tenant;

use super::status::explain;
use crate::client::ClientTls;
use crate::domain::calendar::{civil_from_days, days_from_civil};
use crate::pb::v1 as pb;
use crate::pb::v1::platform_service_client::PlatformServiceClient;

/// Connection options and the command to run.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Gateway endpoint.
    #[arg(
        long,
        env = "OPCONNECT_ENDPOINT",
        default_value = "https://localhost:50051"
    )]
    pub endpoint: String,
    /// Platform client certificate (PEM).
    #[arg(
        long,
        env = "OPCONNECT_ADMIN_CERT",
        default_value = "certs/platform-ops.pem"
    )]
    pub cert: PathBuf,
    /// Platform client key (PEM).
    #[arg(
        long,
        env = "OPCONNECT_ADMIN_KEY",
        default_value = "certs/platform-ops.key"
    )]
    pub key: PathBuf,
    /// CA that signed the server certificate (PEM).
    #[arg(long, env = "OPCONNECT_ADMIN_CA", default_value = "certs/ca.pem")]
    pub ca: PathBuf,
    /// The command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Platform operations.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Register a carrier.
    CreateCarrier {
        /// Carrier id (as in its certificate).
        id: String,
        /// Human-readable name.
        #[arg(long)]
        name: String,
        /// The carrier's SIP domain.
        #[arg(long)]
        sip_domain: String,
    },
    /// List registered carriers.
    ListCarriers,
    /// Suspend a carrier.
    SuspendCarrier {
        /// Carrier id.
        id: String,
    },
    /// Reactivate a suspended carrier.
    ActivateCarrier {
        /// Carrier id.
        id: String,
    },
    /// Provision numbers of a carrier to a tenant.
    Provision {
        /// Carrier id.
        #[arg(long)]
        carrier: String,
        /// Tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// ISO country code.
        #[arg(long, default_value = "")]
        country: String,
        /// Numbers in E.164 form.
        #[arg(required = true)]
        numbers: Vec<String>,
    },
    /// Assign a provisioned number.
    Assign {
        /// The number.
        number: String,
        /// calling-user, voice-app or conference.
        #[arg(long, default_value = "calling-user")]
        usage: String,
        /// Assignment target id.
        #[arg(long)]
        target: String,
        /// SIP URI (default: derived from the carrier's SIP domain).
        #[arg(long, default_value = "")]
        sip_uri: String,
    },
    /// Unassign an assigned number.
    Unassign {
        /// The number.
        number: String,
    },
    /// Release numbers.
    Release {
        /// Numbers in E.164 form.
        #[arg(required = true)]
        numbers: Vec<String>,
    },
    /// Stream call detail records from a CSV or JSON Lines file into the gateway.
    ImportCallRecords(super::import::ImportArgs),
    /// Stream call quality records from a CSV or JSON Lines file into the gateway.
    ImportQualityRecords(super::import::ImportArgs),
    /// A tenant's usage per number and day or month.
    Usage {
        /// Tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// First day, YYYY-MM-DD (UTC, inclusive).
        #[arg(long)]
        from: String,
        /// Last day, YYYY-MM-DD (UTC, inclusive).
        #[arg(long)]
        to: String,
        /// Figures per month instead of per day.
        #[arg(long)]
        monthly: bool,
    },
    /// The gateway's health and key figures, from its metrics endpoint.
    Status(super::gateway_status::StatusArgs),
    /// Reconcile a carrier's durations with the platform's call records.
    Reconcile {
        /// Carrier id.
        #[arg(long)]
        carrier: String,
        /// First day, YYYY-MM-DD (UTC, inclusive).
        #[arg(long)]
        from: String,
        /// Last day, YYYY-MM-DD (UTC, inclusive).
        #[arg(long)]
        to: String,
        /// Largest difference still within tolerance, in seconds.
        #[arg(long, default_value_t = 2.0)]
        tolerance: f64,
        /// Also list each discrepancy (every class except EXACT).
        #[arg(long)]
        details: bool,
    },
    /// Write everything held about a tenant to a JSON Lines file (progress on a terminal).
    ExportTenant(tenant::ExportArgs),
    /// Erase a tenant's personal data everywhere (refused while it has assigned numbers).
    EraseTenant(tenant::EraseArgs),
    /// The audit log: writes, erasures, exports, carrier reads and uploads.
    Audit(audit::AuditArgs),
    /// Each data class's retention period, oldest kept item and last purge.
    Retention,
}

/// An import that ran but left lines or records behind: exit code 1, not 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PartialImport(String);

/// Midnight UTC of a `YYYY-MM-DD` date, in Unix seconds.
fn day_start(date: &str) -> anyhow::Result<i64> {
    let parts: Vec<&str> = date.split('-').collect();
    let parsed = match parts.as_slice() {
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>())
        }
        _ => anyhow::bail!("{date}: expected YYYY-MM-DD"),
    };
    let (Ok(y), Ok(m), Ok(d)) = parsed else {
        anyhow::bail!("{date}: expected YYYY-MM-DD");
    };
    anyhow::ensure!(
        (1..=12).contains(&m) && (1..=31).contains(&d),
        "{date}: not a date"
    );
    Ok(days_from_civil(y, i64::from(m), i64::from(d)) * 86_400)
}

/// A `[from, to]` day range as protobuf timestamps `[from 00:00, to+1 00:00)`.
pub(super) fn day_range(
    from: &str,
    to: &str,
) -> anyhow::Result<(prost_types::Timestamp, prost_types::Timestamp)> {
    let start = day_start(from)?;
    let end = day_start(to)? + 86_400;
    anyhow::ensure!(end > start, "--to must not be before --from");
    Ok((
        prost_types::Timestamp {
            seconds: start,
            nanos: 0,
        },
        prost_types::Timestamp {
            seconds: end,
            nanos: 0,
        },
    ))
}

fn utc_date(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else {
        return "-".into();
    };
    let (y, m, d) = civil_from_days(ts.seconds.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

pub(super) fn seconds(d: Option<&prost_types::Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.3}", d.seconds as f64 + f64::from(d.nanos) / 1e9),
    )
}

pub(super) fn class_name(raw: i32) -> String {
    pb::ReconciliationClass::try_from(raw)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("RECONCILIATION_CLASS_")
                .to_owned()
        })
        .unwrap_or_else(|_| raw.to_string())
}

/// A mutual-TLS channel to the gateway with the platform identity of `args`.
async fn channel(args: &AdminArgs) -> anyhow::Result<Channel> {
    let tls = ClientTls::from_files(&args.ca, &args.cert, &args.key)?;
    Ok(crate::client::connect(&args.endpoint, &tls).await?)
}

fn print_number(n: &pb::TelephoneNumber) {
    let status = pb::NumberStatus::try_from(n.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("NUMBER_STATUS_")
                .to_owned()
        })
        .unwrap_or_default();
    println!(
        "{:<17} {:<11} tenant={} revision={} {}",
        n.number, status, n.tenant_id, n.revision, n.sip_uri
    );
}

fn print_carrier(c: &pb::Carrier) {
    let status = pb::CarrierStatus::try_from(c.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("CARRIER_STATUS_")
                .to_owned()
        })
        .unwrap_or_default();
    println!(
        "{:<20} {:<10} {:<30} {} (revision {})",
        c.carrier_id, status, c.sip_domain, c.display_name, c.number_revision
    );
}

/// Runs one admin command and prints its result.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let channel = channel(&args).await?;
    let mut client = PlatformServiceClient::new(channel.clone());
    match args.command {
        AdminCommand::ExportTenant(export) => tenant::export(&mut client, export).await?,
        AdminCommand::EraseTenant(erase) => tenant::erase(&mut client, erase).await?,
        AdminCommand::Audit(audit) => audit::run(&mut client, audit).await?,
        AdminCommand::Retention => retention::run(&mut client).await?,
        AdminCommand::Status(status) => {
            super::gateway_status::run(channel, &status).await?;
        }
        AdminCommand::CreateCarrier {
            id,
            name,
            sip_domain,
        } => {
            let r = client
                .create_carrier(pb::CreateCarrierRequest {
                    carrier_id: id,
                    display_name: name,
                    sip_domain,
                })
                .await
                .map_err(explain)?;
            r.get_ref().carrier.iter().for_each(print_carrier);
        }
        AdminCommand::ListCarriers => {
            let mut page_token = String::new();
            loop {
                let r = client
                    .list_carriers(pb::ListCarriersRequest {
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                r.carriers.iter().for_each(print_carrier);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
        }
        AdminCommand::SuspendCarrier { id } => {
            set_status(&mut client, id, pb::CarrierStatus::Suspended).await?;
        }
        AdminCommand::ActivateCarrier { id } => {
            set_status(&mut client, id, pb::CarrierStatus::Active).await?;
        }
        AdminCommand::Provision {
            carrier,
            tenant,
            country,
            numbers,
        } => {
            let r = client
                .provision_numbers(pb::ProvisionNumbersRequest {
                    carrier_id: carrier,
                    tenant_id: tenant,
                    numbers,
                    capabilities: vec![
                        pb::NumberCapability::InboundCalling as i32,
                        pb::NumberCapability::OutboundCalling as i32,
                    ],
                    iso_country_code: country,
                })
                .await
                .map_err(explain)?;
            r.get_ref().numbers.iter().for_each(print_number);
        }
        AdminCommand::Assign {
            number,
            usage,
            target,
            sip_uri,
        } => {
            let usage = match usage.as_str() {
                "calling-user" => pb::NumberUsage::CallingUser,
                "voice-app" => pb::NumberUsage::VoiceApp,
                "conference" => pb::NumberUsage::Conference,
                other => {
                    anyhow::bail!("--usage {other}: use calling-user, voice-app or conference")
                }
            };
            let r = client
                .assign_number(pb::AssignNumberRequest {
                    number,
                    usage: usage as i32,
                    assignment_target_id: target,
                    sip_uri,
                    calling_profile_id: String::new(),
                    location_id: String::new(),
                })
                .await
                .map_err(explain)?;
            r.get_ref().telephone_number.iter().for_each(print_number);
        }
        AdminCommand::Unassign { number } => {
            let r = client
                .unassign_number(pb::UnassignNumberRequest { number })
                .await
                .map_err(explain)?;
            r.get_ref().telephone_number.iter().for_each(print_number);
        }
        AdminCommand::Release { numbers } => {
            let r = client
                .release_numbers(pb::ReleaseNumbersRequest { numbers })
                .await
                .map_err(explain)?;
            r.get_ref().numbers.iter().for_each(print_number);
        }
        AdminCommand::ImportCallRecords(import) => {
            let report = super::import::import_call_records(&mut client, &import).await?;
            finish_import(&report)?;
        }
        AdminCommand::ImportQualityRecords(import) => {
            let report = super::import::import_quality_records(&mut client, &import).await?;
            finish_import(&report)?;
        }
        AdminCommand::Usage {
            tenant,
            from,
            to,
            monthly,
        } => {
            let (start, end) = day_range(&from, &to)?;
            let granularity = if monthly {
                pb::UsageGranularity::Month
            } else {
                pb::UsageGranularity::Day
            };
            let usage = client
                .get_usage_summary(pb::GetUsageSummaryRequest {
                    tenant_id: tenant,
                    start_time: Some(start),
                    end_time: Some(end),
                    granularity: granularity as i32,
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "{:<17} {:<10} {:<9} {:>8} {:>12}",
                "NUMBER", "PERIOD", "SOURCE", "CALLS", "MINUTES"
            );
            for f in &usage.figures {
                let source = pb::DurationSource::try_from(f.duration_source)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("DURATION_SOURCE_")
                            .to_owned()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<17} {:<10} {:<9} {:>8} {:>12.2}",
                    if f.number.is_empty() {
                        "(withheld)"
                    } else {
                        &f.number
                    },
                    utc_date(f.period_start.as_ref()),
                    source,
                    f.calls,
                    f.minutes
                );
            }
            println!(
                "{:<17} {:<10} {:<9} {:>8} {:>12.2}",
                "TOTAL", "", "", usage.total_calls, usage.total_minutes
            );
        }
        AdminCommand::Reconcile {
            carrier,
            from,
            to,
            tolerance,
            details,
        } => {
            let (start, end) = day_range(&from, &to)?;
            anyhow::ensure!(
                tolerance.is_finite() && (0.0..=3600.0).contains(&tolerance),
                "--tolerance must be between 0 and 3600 seconds"
            );
            let window = pb::ReconciliationWindow {
                start_time: Some(start),
                end_time: Some(end),
                tolerance: Some(prost_types::Duration {
                    seconds: tolerance.trunc() as i64,
                    nanos: (tolerance.fract() * 1e9) as i32,
                }),
            };
            let report = client
                .get_reconciliation_report(pb::GetReconciliationReportRequest {
                    carrier_id: carrier.clone(),
                    window: Some(window),
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!("{:<24} {:>10}", "CLASS", "CALLS");
            for c in &report.counts {
                println!("{:<24} {:>10}", class_name(c.class), c.calls);
            }
            println!(
                "platform {:.3} s, carrier {:.3} s, difference {:+.3} %",
                report.platform_seconds, report.carrier_seconds, report.difference_percent
            );
            if details {
                let mut stream = client
                    .list_discrepancies(pb::PlatformServiceListDiscrepanciesRequest {
                        carrier_id: carrier,
                        window: Some(window),
                        classes: Vec::new(),
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                println!();
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
            }
        }
    }
    Ok(())
}

async fn set_status(
    client: &mut PlatformServiceClient<Channel>,
    id: String,
    status: pb::CarrierStatus,
) -> anyhow::Result<()> {
    let r = client
        .set_carrier_status(pb::SetCarrierStatusRequest {
            carrier_id: id,
            status: status as i32,
        })
        .await
        .map_err(explain)?;
    r.get_ref().carrier.iter().for_each(print_carrier);
    Ok(())
}

/// Prints an import's report; lines or records left behind make it a [`PartialImport`].
fn finish_import(report: &super::import::ImportReport) -> anyhow::Result<()> {
    report.print(&mut std::io::stdout().lock())?;
    if report.is_clean() {
        Ok(())
    } else {
        Err(PartialImport(format!(
            "{} unreadable lines, {} rejected records",
            report.bad_lines.len(),
            report.summary.rejected
        ))
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dates turn into UTC day bounds and back.
    #[test]
    fn day_bounds() {
        assert_eq!(day_start("1970-01-01").unwrap(), 0);
        assert_eq!(day_start("2026-11-01").unwrap(), 1_793_491_200);
        assert_eq!(
            day_start("2028-02-29").unwrap() + 86_400,
            day_start("2028-03-01").unwrap()
        );
        assert!(day_start("2026-13-01").is_err());
        assert!(day_start("26-1-1").is_err());
        let (a, b) = day_range("2026-11-01", "2026-11-30").unwrap();
        assert_eq!(b.seconds - a.seconds, 30 * 86_400);
        assert!(day_range("2026-11-02", "2026-11-01").is_err());
        assert_eq!(utc_date(Some(&a)), "2026-11-01");
        assert_eq!(
            utc_date(Some(&prost_types::Timestamp {
                seconds: 1_835_395_200,
                nanos: 0
            })),
            "2028-02-29"
        );
    }
}
