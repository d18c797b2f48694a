//! Export items as JSON objects, one per line of `admin export-tenant`'s output. Field names are
//! the proto's; times are RFC 3339 UTC, durations seconds, enums their proto names.

use serde_json::{Value, json};

use crate::pb::v1 as pb;
use crate::pb::v1::export_item::Item;

pub(crate) fn time(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.map_or(Value::Null, |t| {
        let days = t.seconds.div_euclid(86_400);
        let secs = t.seconds.rem_euclid(86_400);
        let (y, m, d) = crate::domain::calendar::civil_from_days(days);
        json!(format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            t.nanos / 1_000_000
        ))
    })
}

fn seconds(d: Option<&prost_types::Duration>) -> Value {
    d.map_or(Value::Null, |d| {
        json!(d.seconds as f64 + f64::from(d.nanos) / 1e9)
    })
}

fn enum_name<E: TryFrom<i32>>(raw: i32, name: impl Fn(&E) -> &'static str) -> Value {
    E::try_from(raw).map_or_else(|_| json!(raw), |e| json!(name(&e)))
}

fn number(n: &pb::TelephoneNumber) -> Value {
    json!({
        "number": n.number,
        "tenant_id": n.tenant_id,
        "status": enum_name(n.status, pb::NumberStatus::as_str_name),
        "usage": enum_name(n.usage, pb::NumberUsage::as_str_name),
        "capabilities": n.capabilities.iter().map(|c| enum_name(*c, pb::NumberCapability::as_str_name)).collect::<Vec<_>>(),
        "assignment_target_id": n.assignment_target_id,
        "sip_uri": n.sip_uri,
        "calling_profile_id": n.calling_profile_id,
        "location_id": n.location_id,
        "iso_country_code": n.iso_country_code,
        "update_time": time(n.update_time.as_ref()),
        "revision": n.revision,
        "redacted": n.redacted,
    })
}

fn call_record(r: &pb::CallRecord) -> Value {
    json!({
        "cursor": r.cursor,
        "call_id": r.call_id,
        "correlation_id": r.correlation_id,
        "tenant_id": r.tenant_id,
        "call_type": r.call_type,
        "direction": enum_name(r.direction, pb::CallDirection::as_str_name),
        "caller_number": r.caller_number,
        "callee_number": r.callee_number,
        "start_time": time(r.start_time.as_ref()),
        "invite_time": time(r.invite_time.as_ref()),
        "end_time": time(r.end_time.as_ref()),
        "failure_time": time(r.failure_time.as_ref()),
        "duration": seconds(r.duration.as_ref()),
        "successful": r.successful,
        "final_sip_code": r.final_sip_code,
        "final_sip_phrase": r.final_sip_phrase,
        "microsoft_subcode": r.microsoft_subcode,
        "media_bypass": r.media_bypass,
        "trunk_fqdn": r.trunk_fqdn,
        "redacted": r.redacted,
    })
}

fn quality_record(r: &pb::QualityRecord) -> Value {
    json!({
        "cursor": r.cursor,
        "call_id": r.call_id,
        "stream_id": r.stream_id,
        "tenant_id": r.tenant_id,
        "stream_direction": enum_name(r.stream_direction, pb::StreamDirection::as_str_name),
        "start_time": time(r.start_time.as_ref()),
        "end_time": time(r.end_time.as_ref()),
        "audio_codec": r.audio_codec,
        "avg_jitter": seconds(r.avg_jitter.as_ref()),
        "max_jitter": seconds(r.max_jitter.as_ref()),
        "avg_round_trip": seconds(r.avg_round_trip.as_ref()),
        "max_round_trip": seconds(r.max_round_trip.as_ref()),
        "avg_packet_loss_rate": r.avg_packet_loss_rate,
        "max_packet_loss_rate": r.max_packet_loss_rate,
        "avg_audio_degradation": r.avg_audio_degradation,
        "avg_concealed_ratio": r.avg_concealed_ratio,
        "classification": enum_name(r.classification, pb::QualityClassification::as_str_name),
        "poor_reasons": r.poor_reasons.iter().map(|p| enum_name(*p, pb::PoorReason::as_str_name)).collect::<Vec<_>>(),
        "redacted": r.redacted,
    })
}

fn duration(d: &pb::CallDuration) -> Value {
    json!({
        "call_id": d.call_id,
        "tenant_id": d.tenant_id,
        "direction": enum_name(d.direction, pb::CallDirection::as_str_name),
        "caller_number": d.caller_number,
        "callee_number": d.callee_number,
        "start_time": time(d.start_time.as_ref()),
        "duration": seconds(d.duration.as_ref()),
        "redacted": d.redacted,
    })
}

/// One export item as a JSON object: `{"type": ..., "carrier_id": ..., <the item>}`.
pub(crate) fn export_item(item: &pb::ExportItem) -> Value {
    match &item.item {
        Some(Item::Number(n)) => json!({"type": "number", "number": number(n)}),
        Some(Item::NumberEvent(e)) => {
            let event = e.event.as_ref();
            json!({
                "type": "number_event",
                "carrier_id": e.carrier_id,
                "revision": event.map(|e| e.revision),
                "event_type": event.map(|e| enum_name(e.r#type, pb::NumberEventType::as_str_name)),
                "number": event.and_then(|e| e.number.as_ref()).map(number),
                "previous": event.and_then(|e| e.previous.as_ref()).map(number),
                "commit_time": time(event.and_then(|e| e.commit_time.as_ref())),
            })
        }
        Some(Item::CallRecord(r)) => json!({
            "type": "call_record",
            "carrier_id": r.carrier_id,
            "record": r.record.as_ref().map(call_record),
        }),
        Some(Item::QualityRecord(r)) => json!({
            "type": "quality_record",
            "carrier_id": r.carrier_id,
            "record": r.record.as_ref().map(quality_record),
        }),
        Some(Item::Duration(d)) => json!({
            "type": "call_duration",
            "carrier_id": d.carrier_id,
            "duration": d.duration.as_ref().map(duration),
        }),
        None => json!({"type": "unknown"}),
    }
}
