//! The JSON form of what `opconnect carrier` prints: proto field names, enums by their short
//! lower-case names (as the import files spell them), timestamps in RFC 3339 (UTC), durations
//! as `<field>_seconds`, and int64 values as JSON numbers.

use serde_json::{Map, Value, json};

use crate::domain::calendar::civil_from_days;
use crate::pb::v1 as pb;

/// An RFC 3339 UTC timestamp, `null` when unset.
pub(crate) fn timestamp(ts: Option<&prost_types::Timestamp>) -> Value {
    let Some(ts) = ts else {
        return Value::Null;
    };
    let (y, m, d) = civil_from_days(ts.seconds.div_euclid(86_400));
    let secs = ts.seconds.rem_euclid(86_400);
    let mut text = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if ts.nanos > 0 {
        let fraction = format!("{:09}", ts.nanos);
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Value::String(text)
}

/// Seconds as a number, `null` when unset.
pub(crate) fn seconds(d: Option<&prost_types::Duration>) -> Value {
    d.map_or(Value::Null, |d| {
        json!(d.seconds as f64 + f64::from(d.nanos) / 1e9)
    })
}

/// An enum's short lower-case name (`NUMBER_STATUS_ASSIGNED` → `assigned`), or its number.
pub(crate) fn name(full: Option<&str>, prefix: &str, raw: i32) -> Value {
    match full {
        Some(full) => Value::String(full.trim_start_matches(prefix).to_ascii_lowercase()),
        None => json!(raw),
    }
}

pub(crate) fn number(n: &pb::TelephoneNumber) -> Value {
    let status = pb::NumberStatus::try_from(n.status).ok();
    let usage = pb::NumberUsage::try_from(n.usage).ok();
    let capabilities: Vec<Value> = n
        .capabilities
        .iter()
        .map(|&c| {
            let full = pb::NumberCapability::try_from(c).ok();
            name(full.map(|c| c.as_str_name()), "NUMBER_CAPABILITY_", c)
        })
        .collect();
    json!({
        "number": n.number,
        "tenant_id": n.tenant_id,
        "status": name(status.map(|s| s.as_str_name()), "NUMBER_STATUS_", n.status),
        "usage": name(usage.map(|u| u.as_str_name()), "NUMBER_USAGE_", n.usage),
        "capabilities": capabilities,
        "assignment_target_id": n.assignment_target_id,
        "sip_uri": n.sip_uri,
        "calling_profile_id": n.calling_profile_id,
        "location_id": n.location_id,
        "iso_country_code": n.iso_country_code,
        "update_time": timestamp(n.update_time.as_ref()),
        "revision": n.revision,
    })
}

pub(crate) fn event(e: &pb::NumberEvent) -> Value {
    let kind = pb::NumberEventType::try_from(e.r#type).ok();
    json!({
        "revision": e.revision,
        "type": name(kind.map(|k| k.as_str_name()), "NUMBER_EVENT_TYPE_", e.r#type),
        "number": e.number.as_ref().map_or(Value::Null, number),
        "previous": e.previous.as_ref().map_or(Value::Null, number),
        "commit_time": timestamp(e.commit_time.as_ref()),
    })
}

pub(crate) fn call_record(r: &pb::CallRecord) -> Value {
    let direction = pb::CallDirection::try_from(r.direction).ok();
    json!({
        "cursor": r.cursor,
        "call_id": r.call_id,
        "correlation_id": r.correlation_id,
        "tenant_id": r.tenant_id,
        "call_type": r.call_type,
        "direction": name(direction.map(|d| d.as_str_name()), "CALL_DIRECTION_", r.direction),
        "caller_number": r.caller_number,
        "callee_number": r.callee_number,
        "start_time": timestamp(r.start_time.as_ref()),
        "invite_time": timestamp(r.invite_time.as_ref()),
        "end_time": timestamp(r.end_time.as_ref()),
        "failure_time": timestamp(r.failure_time.as_ref()),
        "duration_seconds": seconds(r.duration.as_ref()),
        "successful": r.successful,
        "final_sip_code": r.final_sip_code,
        "final_sip_phrase": r.final_sip_phrase,
        "microsoft_subcode": r.microsoft_subcode,
        "media_bypass": r.media_bypass,
        "trunk_fqdn": r.trunk_fqdn,
    })
}

pub(crate) fn quality_record(r: &pb::QualityRecord) -> Value {
    let direction = pb::StreamDirection::try_from(r.stream_direction).ok();
    let class = pb::QualityClassification::try_from(r.classification).ok();
    let reasons: Vec<Value> = r
        .poor_reasons
        .iter()
        .map(|&p| {
            let full = pb::PoorReason::try_from(p).ok();
            name(full.map(|p| p.as_str_name()), "POOR_REASON_", p)
        })
        .collect();
    let mut object = Map::new();
    for (key, value) in [
        ("cursor", json!(r.cursor)),
        ("call_id", json!(r.call_id)),
        ("stream_id", json!(r.stream_id)),
        ("tenant_id", json!(r.tenant_id)),
        (
            "stream_direction",
            name(
                direction.map(|d| d.as_str_name()),
                "STREAM_DIRECTION_",
                r.stream_direction,
            ),
        ),
        ("start_time", timestamp(r.start_time.as_ref())),
        ("end_time", timestamp(r.end_time.as_ref())),
        ("audio_codec", json!(r.audio_codec)),
        ("avg_jitter_seconds", seconds(r.avg_jitter.as_ref())),
        ("max_jitter_seconds", seconds(r.max_jitter.as_ref())),
        ("avg_round_trip_seconds", seconds(r.avg_round_trip.as_ref())),
        ("max_round_trip_seconds", seconds(r.max_round_trip.as_ref())),
        ("avg_packet_loss_rate", json!(r.avg_packet_loss_rate)),
        ("max_packet_loss_rate", json!(r.max_packet_loss_rate)),
        ("avg_audio_degradation", json!(r.avg_audio_degradation)),
        ("avg_concealed_ratio", json!(r.avg_concealed_ratio)),
        (
            "classification",
            name(
                class.map(|c| c.as_str_name()),
                "QUALITY_CLASSIFICATION_",
                r.classification,
            ),
        ),
        ("poor_reasons", Value::Array(reasons)),
    ] {
        object.insert(key.to_owned(), value);
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamps print as RFC 3339 UTC with only the fraction digits they need.
    #[test]
    fn timestamps() {
        let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(
            timestamp(Some(&ts(1_793_491_200, 0))),
            "2026-11-01T00:00:00Z"
        );
        assert_eq!(
            timestamp(Some(&ts(1_793_491_261, 500_000_000))),
            "2026-11-01T00:01:01.5Z"
        );
        assert_eq!(timestamp(Some(&ts(-1, 0))), "1969-12-31T23:59:59Z");
        assert_eq!(timestamp(None), Value::Null);
    }

    /// Enums print by their short names, unknown values by number.
    #[test]
    fn enums() {
        let e = pb::NumberEvent {
            revision: 7,
            r#type: pb::NumberEventType::Assigned as i32,
            ..Default::default()
        };
        assert_eq!(event(&e)["type"], "assigned");
        assert_eq!(event(&e)["revision"], 7);
        assert_eq!(name(None, "X_", 42), 42);
    }
}
