//! Logging: tracing to stderr as text or JSON, filtered by `RUST_LOG` (default `info`). Colour
//! only when stderr is a terminal: escape codes in a log file or a collector are noise.
//!
//! A JSON line is one object: `timestamp`, `level`, `message`, the event's own fields at the
//! top level (flattened, so that `jq .code` or a collector's field index sees them), `target`,
//! and for a line written inside a call, `span` and `spans` with the call's `method`, `caller`
//! and `request_id`. No line at info level or above carries a phone number in full; one that
//! needs a number shows it through [`mask_number`].

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call (tests) is ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let _ = subscriber(format, filter, std::io::stderr, ansi).try_init();
}

/// The subscriber `init` installs, writing to `writer` (the benchmark measures the per-RPC line
/// with it).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

/// A phone number as it may appear in a log line at info level or above: every digit but the
/// last four kept, those four replaced by `*` (`+14255550100` → `+1425555****`). Enough to tell
/// a range or a carrier's block apart, not enough to name a subscriber. A value with four digits
/// or fewer is masked whole.
pub fn mask_number(number: &str) -> String {
    let mut hidden = 0;
    let mut masked: Vec<char> = number
        .chars()
        .rev()
        .map(|c| {
            if c.is_ascii_digit() && hidden < 4 {
                hidden += 1;
                '*'
            } else {
                c
            }
        })
        .collect();
    masked.reverse();
    masked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last four digits are hidden, whatever the format; short values are hidden whole.
    #[test]
    fn numbers_are_masked() {
        assert_eq!(mask_number("+14255550100"), "+1425555****");
        assert_eq!(mask_number("+442079460958"), "+44207946****");
        assert_eq!(mask_number("+1 (425) 555-0100"), "+1 (425) 555-****");
        assert_eq!(mask_number("123"), "***");
        assert_eq!(mask_number(""), "");
    }
}
