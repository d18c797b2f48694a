//! `opconnect serve`: resolve settings, start logging, serve until SIGINT/SIGTERM.

use crate::config::{ServeFlags, Settings};
use crate::server::{App, shutdown_signal};

/// Runs the server. Configuration errors come back before anything is served.
pub async fn run(flags: ServeFlags) -> anyhow::Result<()> {
    let settings = Settings::load(&flags)?;
    crate::telemetry::init(settings.log_format);
    let app = App::build(settings).await?;
    app.run_until(shutdown_signal()).await?;
    Ok(())
}
