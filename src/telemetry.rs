//! Logging: tracing to stderr as text or JSON, filtered by `RUST_LOG` (default `info`). Colour
//! only when stderr is a terminal: escape codes in a log file or a collector are noise.
//!
//! A JSON line is one object: `timestamp`, `level`, `message`, the event's own fields at the
//! top level (flattened, so that `jq .code` or a collector's field index sees them), `target`,
//! and for a line written inside a call, `span` and `spans` with the call's `method`, `caller`
//! and `request_id`. No line at info level or above carries a phone number in full; one that
//! needs a number shows it through [`mask_number`], and the writer masks every E.164-looking
//! number (`+` and 5 to 15 digits) left in a line at info level or above, wherever it came
//! from: a database error quoting a key, an error message echoing a request. Debug and trace
//! lines (off unless `RUST_LOG` asks for them) are left whole for troubleshooting.

use std::io::{self, IsTerminal};

use tracing::{Level, Metadata, Subscriber};
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
        .with_writer(Masked(writer))
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

/// Every E.164-looking number in `text` (`+` followed by 5 to 15 digits) masked with
/// [`mask_number`]; everything else as it was.
pub fn mask_numbers_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(plus) = rest.find('+') {
        out.push_str(&rest[..plus]);
        let after = &rest[plus + 1..];
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if (5..=15).contains(&digits) {
            out.push_str(&mask_number(&rest[plus..=plus + digits]));
        } else {
            out.push_str(&rest[plus..=plus + digits]);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// A log writer that masks phone numbers in lines at info level and above.
struct Masked<W>(W);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Masked<W> {
    type Writer = MaskedWriter<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedWriter {
            inner: self.0.make_writer(),
            mask: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        MaskedWriter {
            inner: self.0.make_writer_for(meta),
            mask: *meta.level() <= Level::INFO,
        }
    }
}

/// One line's writer; the formatter hands it the whole line in one write.
struct MaskedWriter<W> {
    inner: W,
    /// Whether the line is at info level or above.
    mask: bool,
}

impl<W: io::Write> io::Write for MaskedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.mask || !buf.contains(&b'+') {
            return self.inner.write(buf);
        }
        let masked = mask_numbers_in(&String::from_utf8_lossy(buf));
        self.inner.write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers anywhere in a text are masked; short runs, offsets and plain digits are not.
    #[test]
    fn numbers_in_text_are_masked() {
        assert_eq!(
            mask_numbers_in("Key (number)=(+14255550100) exists; +4420794609581 too"),
            "Key (number)=(+1425555****) exists; +442079460**** too"
        );
        assert_eq!(
            mask_numbers_in("at +00:00, 14255550100, +12 and +"),
            "at +00:00, 14255550100, +12 and +"
        );
    }

    /// A line at info level or above is masked whatever wrote the number; a debug line is not.
    #[test]
    fn info_lines_are_masked_and_debug_lines_are_not() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let out = sink.clone();
        for format in [LogFormat::Text, LogFormat::Json] {
            let writer = sink.clone();
            let subscriber = subscriber(
                format,
                EnvFilter::new("debug"),
                move || writer.clone(),
                false,
            );
            tracing::subscriber::with_default(subscriber, || {
                tracing::warn!(error = "duplicate key (+14255550100)", "write failed");
                tracing::info!("assigned +14255550199");
                tracing::debug!("detail +14255550142");
            });
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            !text.contains("+14255550100") && !text.contains("+14255550199"),
            "{text}"
        );
        assert!(text.contains("+1425555****"), "{text}");
        assert_eq!(text.matches("+14255550142").count(), 2, "{text}");
    }

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
