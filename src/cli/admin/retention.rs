//! `admin retention`: each data class's retention period, its oldest kept item, and the time
//! and outcome of its last purge.

use tonic::transport::Channel;

use super::super::status::explain;
use super::json::time;
use crate::pb::v1 as pb;
use crate::pb::v1::platform_service_client::PlatformServiceClient;

/// A period in whole days when it is one, else in seconds.
fn period(d: Option<&prost_types::Duration>) -> String {
    match d {
        Some(d) if d.seconds % 86_400 == 0 => format!("{} days", d.seconds / 86_400),
        Some(d) => format!("{} s", d.seconds),
        None => "-".into(),
    }
}

/// Prints the retention table.
pub(crate) async fn run(client: &mut PlatformServiceClient<Channel>) -> anyhow::Result<()> {
    let status = client
        .get_retention_status(pb::GetRetentionStatusRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    println!(
        "{:<16} {:>10} {:<24} {:<24} {:>9} OUTCOME",
        "CLASS", "KEPT", "OLDEST ITEM", "LAST PURGE", "DELETED"
    );
    for c in &status.classes {
        let oldest = time(c.oldest_item_time.as_ref());
        let last = time(c.last_purge_time.as_ref());
        println!(
            "{:<16} {:>10} {:<24} {:<24} {:>9} {}",
            c.data_class,
            period(c.period.as_ref()),
            oldest.as_str().unwrap_or("(none)"),
            last.as_str().unwrap_or("(never)"),
            c.last_purge_deleted,
            if c.last_purge_outcome.is_empty() {
                "-"
            } else {
                &c.last_purge_outcome
            }
        );
    }
    Ok(())
}
