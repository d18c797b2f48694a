//! The `opconnect` binary: parse the command line and dispatch.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use opconnect::cli::{Cli, Command, admin, carrier, certs, serve};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(flags) => serve::run(*flags).await,
        Command::Certs(args) => certs::run(args),
        Command::Admin(args) => admin::run(args).await,
        Command::Carrier(args) => carrier::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, the cause chain included; never a backtrace.
            eprintln!("opconnect: {err:#}");
            if err.is::<admin::PartialImport>() || err.is::<carrier::RecordsRejected>() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
