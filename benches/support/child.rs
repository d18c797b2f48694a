//! A server in a child process of its own (this binary again, with `OPCONNECT_BENCH_CHILD`
//! set), for the idle-stream memory: the child's resident memory then holds the server's side
//! of the streams only, not the clients' (they stay in the parent), and no heap left over by
//! the other measurements, which new streams could reuse without the process growing.
//!
//! The child talks on stdin/stdout, one line each way: it prints `addr <address>` once
//! serving; to `rss` it answers `rss <bytes>` (its `VmRSS`), to `heap` `heap <bytes>` (its
//! live heap); on `stop` or the end of its input
//! it shuts the server down and exits.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result};
use tokio::task::block_in_place;

use super::setup::{Databases, Echo, Gateway, Pki};

/// Set in a child to the server it runs: `gateway` or `bare`.
pub const CHILD_VAR: &str = "OPCONNECT_BENCH_CHILD";
/// The directory of the server's TLS files, passed to a child.
const FILES_VAR: &str = "OPCONNECT_BENCH_CHILD_FILES";

/// Which server a child runs.
#[derive(Debug, Clone, Copy)]
pub enum ServerKind {
    /// The gateway, on a fresh database.
    Gateway,
    /// The bare tonic Health server.
    Bare,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Bare => "bare",
        }
    }
}

/// The parent's handle on a child server.
pub struct ChildServer {
    process: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    /// Where the child's server listens.
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Starts a child serving `kind` with `pki`'s server files; returns once it listens.
    pub fn spawn(kind: ServerKind, pki: &Pki) -> Result<Self> {
        block_in_place(|| {
            let mut process = Command::new(std::env::current_exe()?)
                .env(CHILD_VAR, kind.name())
                .env(FILES_VAR, pki.server_files())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting the child server")?;
            let input = process.stdin.take().context("child stdin")?;
            let mut output = BufReader::new(process.stdout.take().context("child stdout")?);
            let addr = reply(&mut output, "addr")?.parse()?;
            Ok(Self {
                process,
                input,
                output,
                addr,
            })
        })
    }

    /// The child's resident memory now, in bytes.
    pub fn resident_bytes(&mut self) -> Result<u64> {
        block_in_place(|| {
            writeln!(self.input, "rss")?;
            self.input.flush()?;
            Ok(reply(&mut self.output, "rss")?.parse()?)
        })
    }

    /// The child's live heap now, in bytes (see `heap.rs`).
    pub fn heap_bytes(&mut self) -> Result<u64> {
        block_in_place(|| {
            writeln!(self.input, "heap")?;
            self.input.flush()?;
            Ok(reply(&mut self.output, "heap")?.parse()?)
        })
    }

    /// Stops the child's server and waits for the child to exit successfully.
    pub fn stop(mut self) -> Result<()> {
        block_in_place(|| {
            writeln!(self.input, "stop")?;
            self.input.flush()?;
            let status = self.process.wait()?;
            anyhow::ensure!(status.success(), "the child server failed: {status}");
            Ok(())
        })
    }
}

/// The rest of the next line of `output` that starts with `tag` and a space.
fn reply(output: &mut impl BufRead, tag: &str) -> Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(output.read_line(&mut line)? > 0, "the child server exited");
        if let Some(rest) = line
            .trim_end()
            .strip_prefix(tag)
            .and_then(|r| r.strip_prefix(' '))
        {
            return Ok(rest.to_owned());
        }
    }
}

/// The child's side: serves the server `kind` names until the parent says stop.
pub async fn serve(kind: &str) -> Result<()> {
    let files = PathBuf::from(std::env::var_os(FILES_VAR).context("no server files given")?);
    match kind {
        "gateway" => {
            let databases = Databases::from_env()?;
            let served = serve_gateway(&files, &databases).await;
            databases.drop_created().await?;
            served
        }
        "bare" => {
            let echo = Echo::start(&files).await?;
            answer(echo.addr).await?;
            echo.stop().await
        }
        other => anyhow::bail!("{CHILD_VAR}={other}: expected gateway or bare"),
    }
}

async fn serve_gateway(files: &Path, databases: &Databases) -> Result<()> {
    let gateway = Gateway::start(files, databases.fresh("idle").await?).await?;
    answer(gateway.addr).await?;
    gateway.stop().await
}

/// Announces `addr`, then answers the parent until it says stop or closes the pipe.
async fn answer(addr: SocketAddr) -> Result<()> {
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "addr {addr}")?;
        out.flush()?;
        for line in std::io::stdin().lock().lines() {
            match line?.trim() {
                "rss" => writeln!(out, "rss {}", super::resident_bytes()?)?,
                "heap" => writeln!(out, "heap {}", super::heap::live_bytes())?,
                "stop" => break,
                other => anyhow::bail!("unknown request {other:?}"),
            }
            out.flush()?;
        }
        Ok(())
    })
    .await?
}
