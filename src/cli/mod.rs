//! Command-line entry points: `serve`, `certs`, `admin`, `carrier`.

pub mod admin;
pub mod carrier;
pub mod certs;
pub mod gateway_status;
pub mod import;
pub mod serve;
mod status;

use clap::{Parser, Subcommand};

/// opconnect: the gRPC gateway between the Teams Operator Connect platform and carriers.
#[derive(Debug, Parser)]
#[command(name = "opconnect", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway server.
    Serve(Box<crate::config::ServeFlags>),
    /// Create a CA and certificates for the server, the platform and carriers.
    Certs(certs::CertsArgs),
    /// The operations team's client for PlatformService.
    Admin(admin::AdminArgs),
    /// The carrier's client: watch numbers, follow records, upload durations.
    Carrier(carrier::CarrierArgs),
}
