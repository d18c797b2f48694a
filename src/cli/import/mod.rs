//! `opconnect admin import-call-records FILE` and `import-quality-records FILE`: stream call
//! detail records or call quality records from a CSV or JSON Lines file into
//! `PlatformService.IngestCallRecords` / `IngestQualityRecords`.
//!
//! One record per CSV row (with a header row) or per JSON Lines line. Columns and keys are the
//! proto field names plus `carrier_id`, every one optional, each listed once in its record
//! kind's table in `columns.rs`; `--help` shows the lists and the value syntax.
//!
//! A line this module cannot read (bad timestamp syntax, not a number, malformed JSON, wrong
//! number of CSV fields) is reported with its line number and skipped, or stops the import with
//! `--strict`. Whether the values make sense (E.164 numbers, time order...) is the server's
//! call; its rejections are reported with the line numbers of the records they name.
//!
//! Files: `input` opens the file, `readers` turn it into records with line numbers, `cells`
//! parses values, `pipeline` streams batches into the call, `report` and `progress` show what
//! happened, `help` documents the format.

pub(crate) mod cells;
pub(crate) mod columns;
mod help;
pub(crate) mod input;
mod pipeline;
pub(crate) mod progress;
pub(crate) mod readers;
mod report;

use std::path::PathBuf;

use tonic::transport::Channel;

use crate::pb::v1::platform_service_client::PlatformServiceClient;
use columns::{CallRecords, QualityRecords};

pub use report::ImportReport;

/// The server's limit on records per request message.
const MAX_BATCH: usize = 10_000;

/// Arguments shared by both imports.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = help::format_help())]
pub struct ImportArgs {
    /// CSV (RFC 4180, header row) or JSON Lines file; "-" for standard input.
    pub file: PathBuf,
    /// File format; by default from the extension (.csv, .jsonl/.ndjson/.json), CSV for stdin.
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Records per request message (1 to 10000).
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BATCH as u64)
    )]
    pub batch_size: usize,
    /// Stop at the first bad line instead of reporting it and going on.
    #[arg(long)]
    pub strict: bool,
}

/// The formats an import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// JSON Lines: one JSON object per line.
    Jsonl,
}

/// Streams the call records of `args.file` into `IngestCallRecords`.
///
/// Errors: the file cannot be opened or read, its CSV header names an unknown column, a bad
/// line with `--strict`, or the call fails.
pub async fn import_call_records(
    client: &mut PlatformServiceClient<Channel>,
    args: &ImportArgs,
) -> anyhow::Result<ImportReport> {
    pipeline::import::<CallRecords, _, _>(args, |requests| async move {
        let response = client.ingest_call_records(requests).await?;
        Ok(response.into_inner().summary)
    })
    .await
}

/// Streams the quality records of `args.file` into `IngestQualityRecords`.
///
/// Errors as [`import_call_records`].
pub async fn import_quality_records(
    client: &mut PlatformServiceClient<Channel>,
    args: &ImportArgs,
) -> anyhow::Result<ImportReport> {
    pipeline::import::<QualityRecords, _, _>(args, |requests| async move {
        let response = client.ingest_quality_records(requests).await?;
        Ok(response.into_inner().summary)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::import::columns::RecordKind;
    use clap::Parser;
    use std::path::Path;

    /// The arguments parse as a subcommand would, `--help` documents every column, and the
    /// batch size is bounded by the server's limit.
    #[test]
    fn arguments_and_help() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Cmd,
        }
        #[derive(Debug, clap::Subcommand)]
        enum Cmd {
            /// Import call records.
            ImportCallRecords(ImportArgs),
        }
        let cli = Cli::try_parse_from([
            "x",
            "import-call-records",
            "-",
            "--format",
            "jsonl",
            "--batch-size",
            "500",
            "--strict",
        ]);
        let Ok(Cli {
            command: Cmd::ImportCallRecords(args),
        }) = cli
        else {
            panic!("{cli:?}");
        };
        assert_eq!(args.file, Path::new("-"));
        assert_eq!(args.format, Some(FileFormat::Jsonl));
        assert_eq!(args.batch_size, 500);
        assert!(args.strict);
        for size in ["0", "10001"] {
            assert!(
                Cli::try_parse_from(["x", "import-call-records", "f", "--batch-size", size])
                    .is_err()
            );
        }

        let mut command = <Cli as clap::CommandFactory>::command();
        let help = command
            .find_subcommand_mut("import-call-records")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.starts_with("Import call records\n"), "{help}");
        let columns = CallRecords::COLUMNS.iter().map(|c| c.name);
        for column in columns.chain(QualityRecords::COLUMNS.iter().map(|c| c.name)) {
            assert!(help.contains(column), "--help lacks {column}");
        }
    }

    /// The import futures can run on a multi-threaded runtime.
    #[test]
    fn import_futures_are_send() {
        fn assert_send<T: Send>(_: T) {}
        fn check(client: &mut PlatformServiceClient<Channel>, args: &ImportArgs) {
            assert_send(import_call_records(client, args));
        }
        fn check_quality(client: &mut PlatformServiceClient<Channel>, args: &ImportArgs) {
            assert_send(import_quality_records(client, args));
        }
        let _ = check_quality;
        let _ = check;
    }
}
