//! `admin audit`: the audit log, as a table or as JSON Lines.

use anyhow::Context;
use serde_json::json;
use tonic::transport::Channel;

use super::super::status::explain;
use super::json::time;
use crate::pb::v1 as pb;
use crate::pb::v1::platform_service_client::PlatformServiceClient;

/// Arguments of `admin audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only events at or after this day (YYYY-MM-DD, UTC) or instant (Unix seconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events about this carrier.
    #[arg(long)]
    pub carrier: Option<String>,
    /// Only events about this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only events of this identity (`carrier/<id>`, `platform/<name>`).
    #[arg(long)]
    pub identity: Option<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--since` as a timestamp: a UTC day or Unix seconds.
fn since(raw: &str) -> anyhow::Result<prost_types::Timestamp> {
    let seconds = match raw.parse::<i64>() {
        Ok(s) => s,
        Err(_) => super::day_start(raw).context("--since")?,
    };
    Ok(prost_types::Timestamp { seconds, nanos: 0 })
}

fn position(p: Option<i64>) -> String {
    p.map_or_else(|| "-".into(), |p| p.to_string())
}

/// Prints every matching event, page by page.
pub(crate) async fn run(
    client: &mut PlatformServiceClient<Channel>,
    args: AuditArgs,
) -> anyhow::Result<()> {
    let filter = pb::AuditFilter {
        start_time: args.since.as_deref().map(since).transpose()?,
        end_time: None,
        identity: args.identity.unwrap_or_default(),
        carrier_id: args.carrier.unwrap_or_default(),
        tenant_id: args.tenant.unwrap_or_default(),
    };
    if !args.json {
        println!(
            "{:<24} {:<24} {:<22} {:<12} {:<36} {:<20} {:>8} {:>10} {:>10}",
            "TIME", "IDENTITY", "ACTION", "CARRIER", "TENANT", "OUTCOME", "COUNT", "FIRST", "LAST"
        );
    }
    let mut page_token = String::new();
    loop {
        let page = client
            .list_audit_events(pb::ListAuditEventsRequest {
                filter: Some(filter.clone()),
                page_size: 1000,
                page_token,
            })
            .await
            .map_err(explain)?
            .into_inner();
        for e in &page.events {
            if args.json {
                let details: serde_json::Map<String, serde_json::Value> = e
                    .details
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                println!(
                    "{}",
                    json!({
                        "id": e.id,
                        "time": time(e.time.as_ref()),
                        "identity": e.identity,
                        "action": e.action,
                        "carrier_id": e.carrier_id,
                        "tenant_id": e.tenant_id,
                        "outcome": e.outcome,
                        "first_position": e.first_position,
                        "last_position": e.last_position,
                        "record_count": e.record_count,
                        "details": details,
                    })
                );
            } else {
                let when = time(e.time.as_ref());
                println!(
                    "{:<24} {:<24} {:<22} {:<12} {:<36} {:<20} {:>8} {:>10} {:>10}",
                    when.as_str().unwrap_or("-"),
                    e.identity,
                    e.action,
                    e.carrier_id,
                    e.tenant_id,
                    e.outcome,
                    e.record_count,
                    position(e.first_position),
                    position(e.last_position)
                );
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}
