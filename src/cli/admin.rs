//! `opconnect admin`: the operations team's client for `PlatformService`, over mutual TLS with
//! a platform certificate.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_types::StatusExt;

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
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn connect(args: &AdminArgs) -> anyhow::Result<PlatformServiceClient<Channel>> {
    crate::server::install_crypto_provider();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&args.ca)?))
        .identity(Identity::from_pem(read(&args.cert)?, read(&args.key)?));
    let channel = Channel::from_shared(args.endpoint.clone())
        .context("bad --endpoint")?
        .tls_config(tls)
        .context("TLS configuration")?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.endpoint))?;
    Ok(PlatformServiceClient::new(channel))
}

/// A status as one readable line: code, message, reason and field violations.
fn explain(status: tonic::Status) -> anyhow::Error {
    let mut line = format!("{:?}: {}", status.code(), status.message());
    if let Some(info) = status.get_details_error_info() {
        line.push_str(&format!(" [{}]", info.reason));
    }
    anyhow::anyhow!(line)
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
    let mut client = connect(&args).await?;
    match args.command {
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
