//! `opconnect certs`: create and extend the PKI for mutual TLS between carriers, the platform
//! and the server, and revoke certificates.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::pki::{self, DEFAULT_TRUST_DOMAIN, Subject};

/// Arguments of `opconnect certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// What `opconnect certs` does.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a CA, a server certificate and client certificates.
    Init {
        /// Directory to write the certificates and keys into (created if missing).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Issue a client certificate for this carrier id (repeatable).
        #[arg(long = "carrier", value_name = "ID")]
        carriers: Vec<String>,
        /// Issue a client certificate for this platform name (repeatable).
        #[arg(long = "platform", value_name = "NAME")]
        platforms: Vec<String>,
        /// DNS name or IP address for the server certificate (repeatable; default: localhost,
        /// 127.0.0.1 and ::1).
        #[arg(long = "server-name", value_name = "NAME")]
        server_names: Vec<String>,
        /// SPIFFE trust domain of the client identities.
        #[arg(long, default_value = DEFAULT_TRUST_DOMAIN, env = "OPCONNECT_TRUST_DOMAIN")]
        trust_domain: String,
        /// Mark the CA as a development CA (the server warns when it trusts one).
        #[arg(long)]
        dev: bool,
        /// Replace an existing CA, invalidating every certificate it signed.
        #[arg(long)]
        force: bool,
    },
    /// Issue one client certificate signed by the CA in DIR.
    Issue {
        /// Directory holding ca.pem and ca.key; the certificate is written there too.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Carrier id to issue the certificate for.
        #[arg(
            long,
            value_name = "ID",
            conflicts_with = "platform",
            required_unless_present = "platform"
        )]
        carrier: Option<String>,
        /// Platform name to issue the certificate for.
        #[arg(long, value_name = "NAME")]
        platform: Option<String>,
        /// SPIFFE trust domain of the client identity.
        #[arg(long, default_value = DEFAULT_TRUST_DOMAIN, env = "OPCONNECT_TRUST_DOMAIN")]
        trust_domain: String,
    },
    /// Revoke an identity's certificate: add it to DIR/crl.pem (signed by the CA in DIR, with
    /// every serial already listed kept), for `serve --client-crl`.
    Revoke {
        /// Directory holding ca.pem, ca.key and the identity's certificate; crl.pem is written
        /// there.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Carrier id whose certificate (carrier-<id>.pem) is revoked.
        #[arg(
            long,
            value_name = "ID",
            conflicts_with = "platform",
            required_unless_present = "platform"
        )]
        carrier: Option<String>,
        /// Platform name whose certificate (platform-<name>.pem) is revoked.
        #[arg(long, value_name = "NAME")]
        platform: Option<String>,
    },
}

/// The one identity named by `--carrier` or `--platform`.
fn one_subject(carrier: Option<String>, platform: Option<String>) -> anyhow::Result<Subject> {
    match (carrier, platform) {
        (Some(id), None) => Ok(Subject::Carrier(id)),
        (None, Some(name)) => Ok(Subject::Platform(name)),
        _ => bail!("give exactly one of --carrier or --platform"),
    }
}

/// Runs `opconnect certs` and prints each file written, one per line.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let written = match args.command {
        CertsCommand::Init {
            dir,
            carriers,
            platforms,
            server_names,
            trust_domain,
            dev,
            force,
        } => {
            let subjects: Vec<Subject> = carriers
                .into_iter()
                .map(Subject::Carrier)
                .chain(platforms.into_iter().map(Subject::Platform))
                .collect();
            pki::init(&dir, &trust_domain, &server_names, &subjects, dev, force)
                .with_context(|| format!("cannot create certificates in {}", dir.display()))?
        }
        CertsCommand::Issue {
            dir,
            carrier,
            platform,
            trust_domain,
        } => {
            let subject = one_subject(carrier, platform)?;
            let (cert, key) = pki::issue(&dir, &trust_domain, &subject).with_context(|| {
                format!(
                    "cannot issue a certificate for {}",
                    subject.spiffe_uri(&trust_domain)
                )
            })?;
            vec![cert, key]
        }
        CertsCommand::Revoke {
            dir,
            carrier,
            platform,
        } => {
            let subject = one_subject(carrier, platform)?;
            let crl = pki::revoke(&dir, &subject).with_context(|| {
                format!("cannot revoke the certificate of {}", subject.file_stem())
            })?;
            vec![crl]
        }
    };
    let mut stdout = std::io::stdout().lock();
    for path in written {
        writeln!(stdout, "{}", path.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// Wraps the subcommand the way the binary's parser does.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        certs: CertsArgs,
    }

    fn parse(args: &[&str]) -> Result<CertsCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("certs").chain(args.iter().copied()))
            .map(|cli| cli.certs.command)
    }

    /// The argument definitions are consistent (clap's own checks).
    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    /// `init` collects repeated flags and defaults the directory.
    #[test]
    fn init_parses_repeated_flags() -> Result<(), clap::Error> {
        let command = parse(&[
            "init",
            "--carrier",
            "contoso",
            "--carrier",
            "fabrikam",
            "--dev",
        ])?;
        let CertsCommand::Init {
            dir,
            carriers,
            dev,
            force,
            ..
        } = command
        else {
            panic!("parsed {command:?}");
        };
        assert_eq!(dir, PathBuf::from("certs"));
        assert_eq!(carriers, ["contoso", "fabrikam"]);
        assert!(dev);
        assert!(!force);
        Ok(())
    }

    /// `issue` needs exactly one of `--carrier` and `--platform`.
    #[test]
    fn issue_needs_exactly_one_subject() {
        assert!(parse(&["issue"]).is_err());
        assert!(parse(&["issue", "--carrier", "a1", "--platform", "ops"]).is_err());
        assert!(parse(&["issue", "--platform", "ops"]).is_ok());
        assert!(parse(&["issue", "--carrier", "contoso"]).is_ok());
    }

    /// `revoke` needs exactly one of `--carrier` and `--platform`.
    #[test]
    fn revoke_needs_exactly_one_subject() {
        assert!(parse(&["revoke"]).is_err());
        assert!(parse(&["revoke", "--carrier", "a1", "--platform", "ops"]).is_err());
        assert!(parse(&["revoke", "--platform", "ops", "--dir", "x"]).is_ok());
    }

    /// `init` then `issue` through the command layer leaves both certificates in the directory.
    #[test]
    fn init_then_issue() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_str().context("non-UTF-8 temp dir")?;
        run(CertsArgs {
            command: parse(&["init", "--dir", dir, "--platform", "ops"])?,
        })?;
        run(CertsArgs {
            command: parse(&["issue", "--dir", dir, "--carrier", "contoso"])?,
        })?;
        assert!(tmp.path().join("platform-ops.pem").exists());
        assert!(tmp.path().join("carrier-contoso.key").exists());
        Ok(())
    }
}
