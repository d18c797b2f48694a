//! Failed calls as errors for a person: what `admin` and its imports print when the server says no.

use tonic_types::StatusExt;

/// A status as one readable error: code, message, reason and field violations.
pub(crate) fn explain(status: tonic::Status) -> anyhow::Error {
    let mut line = format!("{:?}: {}", status.code(), status.message());
    if let Some(info) = status.get_details_error_info() {
        line.push_str(&format!(" [{}]", info.reason));
    }
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            line.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    anyhow::anyhow!(line)
}
