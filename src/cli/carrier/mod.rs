//! `opconnect carrier`: the carrier integration engineer's command line, built on
//! [`crate::client`]: `watch` numbers, follow `records`, `upload` durations, list
//! `discrepancies`. Certificate files come from flags or `OPCONNECT_CARRIER_*` variables.
//!
//! Exit codes: 0 done, 1 records were rejected (upload), 2 anything else (bad configuration,
//! unreachable gateway, a refusal), each with one line on standard error.

mod discrepancies;
mod durations;
mod json;
mod records;
mod upload;
mod watch;

use std::path::PathBuf;

use tonic::transport::Channel;

use crate::client::{self, ClientTls};

/// Connection options and the command to run.
#[derive(Debug, clap::Args)]
pub struct CarrierArgs {
    /// Gateway endpoint.
    #[arg(
        long,
        env = "OPCONNECT_CARRIER_ENDPOINT",
        default_value = "https://localhost:50051"
    )]
    pub endpoint: String,
    /// The carrier's client certificate (PEM), e.g. certs/carrier-contoso.pem.
    #[arg(long, env = "OPCONNECT_CARRIER_CERT")]
    pub cert: PathBuf,
    /// The carrier's client key (PEM).
    #[arg(long, env = "OPCONNECT_CARRIER_KEY")]
    pub key: PathBuf,
    /// CA that signed the gateway's certificate (PEM).
    #[arg(long, env = "OPCONNECT_CARRIER_CA", default_value = "certs/ca.pem")]
    pub ca: PathBuf,
    /// Name the gateway's certificate must carry, when not the endpoint's host.
    #[arg(long, env = "OPCONNECT_CARRIER_SERVER_NAME")]
    pub server_name: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: CarrierCommand,
}

/// Carrier operations.
#[derive(Debug, clap::Subcommand)]
pub enum CarrierCommand {
    /// Print changes of the carrier's numbers as they happen; resumes from --state.
    Watch(watch::WatchArgs),
    /// Print or save call (or quality) records, from the committed cursor on.
    Records(records::RecordsArgs),
    /// Upload call durations from a CSV or JSON Lines file; prints the summary.
    Upload(upload::UploadArgs),
    /// List the calls on which the platform's and the carrier's durations disagree.
    Discrepancies(discrepancies::DiscrepancyArgs),
}

/// An upload the gateway stored only in part: exit code 1, not 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecordsRejected(String);

/// Runs one carrier command.
pub async fn run(args: CarrierArgs) -> anyhow::Result<()> {
    let mut tls = ClientTls::from_files(&args.ca, &args.cert, &args.key)?;
    if let Some(name) = &args.server_name {
        tls = tls.server_name(name.clone());
    }
    match args.command {
        CarrierCommand::Watch(watch) => watch::run(lazy(&args.endpoint, &tls)?, watch).await,
        CarrierCommand::Records(records) => {
            records::run(lazy(&args.endpoint, &tls)?, records).await
        }
        CarrierCommand::Upload(upload) => {
            upload::run(client::connect(&args.endpoint, &tls).await?, upload).await
        }
        CarrierCommand::Discrepancies(d) => {
            discrepancies::run(client::connect(&args.endpoint, &tls).await?, d).await
        }
    }
}

/// A channel for the long-running commands, which ride out outages.
fn lazy(endpoint: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    Ok(client::connect_lazy(endpoint, tls)?)
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
