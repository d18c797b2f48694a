//! `opconnect::client`: what a carrier's collector needs to talk to the gateway for months
//! without losing or repeating data, over mutual TLS with its certificate files.
//!
//! - [`connect`] / [`connect_lazy`] make a channel from a [`ClientTls`] (CA, certificate, key,
//!   optional server name).
//! - [`NumberWatcher`] watches the carrier's numbers as one continuous stream: it reconnects
//!   with jittered backoff, resumes after the last revision it delivered, and when the server
//!   has compacted that revision away it re-opens with a snapshot, marking it
//!   ([`WatchItem::SnapshotStart`]) so the caller rebuilds its state. Never a silent gap.
//! - [`RecordFollower`] follows call or quality records from a cursor (the committed one by
//!   default), resumes after the last cursor it delivered, and commits the cursor of what the
//!   caller has handled every N records or T seconds. Records carry their cursor, so a caller
//!   restarted from the committed cursor drops the few it sees twice.
//! - [`DurationUploader`] uploads call durations in batches under a client-chosen
//!   `upload_id`; after a broken stream it asks `GetUpload` first and resends the whole upload
//!   only when the server has no summary (the server's exactly-once key makes a resend
//!   converge).
//!
//! Every loop retries what may succeed later (see [`retry::is_retryable`]), honouring the
//! server's `RetryInfo`, and returns at once on errors that will not go away by waiting.
//! Files: `connect` (channels), `retry` (codes and backoff), `watch`, `follow`, `upload`.

mod connect;
mod follow;
pub mod retry;
mod upload;
mod watch;

pub use connect::{ClientTls, connect, connect_lazy, endpoint};
pub use follow::{FollowOptions, RecordBatch, RecordFollower, RecordKind, Records};
pub use retry::{Backoff, BackoffPolicy};
pub use upload::{DurationUploader, UploadOptions};
pub use watch::{NumberWatcher, SnapshotCause, WatchItem, WatchOptions, WatchStart};

/// Why a client gave up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot work: a file cannot be read, an endpoint is malformed.
    #[error("{0}")]
    Config(String),
    /// The gateway could not be reached (eager [`connect`] only).
    #[error("{0}")]
    Connect(String),
    /// The gateway refused the call with an error that waiting will not fix, or retries ran
    /// out.
    #[error("{}", describe(.0))]
    Status(#[from] tonic::Status),
}

impl ClientError {
    /// The status, when the gateway answered with one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Status(status) => Some(status),
            _ => None,
        }
    }
}

/// A status on one line: code, message and `ErrorInfo` reason.
fn describe(status: &tonic::Status) -> String {
    let reason = retry::reason(status);
    let mut line = format!("{:?}: {}", status.code(), status.message());
    if !reason.is_empty() {
        line.push_str(&format!(" [{reason}]"));
    }
    line
}
