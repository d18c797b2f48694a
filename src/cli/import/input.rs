//! The input of an import: a file or standard input, and the format it is in.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::path::Path;

use anyhow::Context;

use super::FileFormat;

/// The format `path` is in, by its extension; CSV for standard input.
pub(crate) fn format_of(path: &Path) -> anyhow::Result<FileFormat> {
    if is_stdin(path) {
        return Ok(FileFormat::Csv);
    }
    let extension = path
        .extension()
        .and_then(OsStr::to_str)
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => Ok(FileFormat::Csv),
        Some("jsonl" | "ndjson" | "json") => Ok(FileFormat::Jsonl),
        _ => anyhow::bail!(
            "cannot tell the format of {} from its extension: use --format csv or --format jsonl",
            path.display()
        ),
    }
}

/// Whether `path` means standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// How messages name `path`.
pub(crate) fn display_name(path: &Path) -> String {
    if is_stdin(path) {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Opens `path` (standard input for "-") and tells its size when it has one.
pub(crate) fn open(path: &Path) -> anyhow::Result<(Box<dyn Read + Send>, Option<u64>)> {
    if is_stdin(path) {
        return Ok((Box::new(io::stdin()), None));
    }
    let file = std::fs::File::open(path).context("cannot open it")?;
    let size = file.metadata().ok().map(|m| m.len()).filter(|&len| len > 0);
    Ok((Box::new(file), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format comes from the extension, CSV for standard input, else an error.
    #[test]
    fn format_from_extension() {
        assert_eq!(format_of(Path::new("-")).ok(), Some(FileFormat::Csv));
        assert_eq!(format_of(Path::new("a.CSV")).ok(), Some(FileFormat::Csv));
        assert_eq!(
            format_of(Path::new("a.ndjson")).ok(),
            Some(FileFormat::Jsonl)
        );
        assert_eq!(format_of(Path::new("a.json")).ok(), Some(FileFormat::Jsonl));
        assert!(format_of(Path::new("a.txt")).is_err());
    }
}
