//! How each stored row is redacted when a tenant's personal data is erased (DESIGN §8), and how
//! a resent record is compared with a redacted one. The one place that knows which stored
//! fields are personal: call and quality records are stored as protobuf ([`RedactableRecord`]),
//! durations and number states as JSON.
//!
//! Personal fields are emptied: caller and callee numbers, correlation id, an assignment's
//! target and SIP URI. The mark `redacted: true` is added. Everything else (ids, times,
//! durations, the classification) is kept as stored. Each function returns `None` for a row
//! that is redacted already, so a second erasure changes and counts nothing.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::StoreError;
use crate::pb::v1 as pb;

/// A record stored as its protobuf encoding, and what erasing its tenant empties.
pub(crate) trait RedactableRecord: prost::Message + Default + PartialEq + Clone {
    /// Whether it was redacted.
    fn is_redacted(&self) -> bool;
    /// Empties its personal fields and marks it redacted.
    fn redact(&mut self);
}

impl RedactableRecord for pb::CallRecord {
    fn is_redacted(&self) -> bool {
        self.redacted
    }
    fn redact(&mut self) {
        self.correlation_id.clear();
        self.caller_number.clear();
        self.callee_number.clear();
        self.redacted = true;
    }
}

impl RedactableRecord for pb::QualityRecord {
    fn is_redacted(&self) -> bool {
        self.redacted
    }
    fn redact(&mut self) {
        // No personal field of its own: it is marked, as every row of the tenant is.
        self.redacted = true;
    }
}

/// A stored record encoding redacted; `None` when it is redacted already.
pub(crate) fn redact_encoded<W: RedactableRecord>(
    encoded: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut record = W::decode(encoded)
        .map_err(|e| StoreError::Corrupt(format!("stored record does not decode: {e}")))?;
    if record.is_redacted() {
        return Ok(None);
    }
    record.redact();
    Ok(Some(record.encode_to_vec()))
}

/// Whether a stored record encoding holds the same record as `incoming`, compared decoded,
/// never as bytes (field order, a field a newer proto added at its default), and, when the
/// stored one was redacted, the same once `incoming` is redacted too: a record resent after
/// its tenant's erasure is a duplicate, not a conflict.
pub(crate) fn same_encoded<W: RedactableRecord>(
    encoded: &[u8],
    incoming: &W,
) -> Result<bool, StoreError> {
    let stored = W::decode(encoded)
        .map_err(|e| StoreError::Corrupt(format!("stored record does not decode: {e}")))?;
    if stored == *incoming {
        return Ok(true);
    }
    if !stored.is_redacted() {
        return Ok(false);
    }
    let mut redacted = incoming.clone();
    redacted.redact();
    Ok(stored == redacted)
}

/// The stored log a row stored as JSON belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// A carrier-reported duration.
    Duration,
    /// A number's state (current, or before / after an event).
    NumberState,
}

fn object(json: &str, what: Stored) -> Result<Map<String, Value>, StoreError> {
    match serde_json::from_str(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(StoreError::Corrupt(format!("{what:?}: not an object"))),
        Err(e) => Err(StoreError::Corrupt(format!("{what:?}: {e}"))),
    }
}

fn is_redacted(map: &Map<String, Value>) -> bool {
    map.get("redacted") == Some(&Value::Bool(true))
}

/// `json`, a stored row of `what`, redacted; `None` when it is redacted already.
pub(crate) fn redact(what: Stored, json: &str) -> Result<Option<String>, StoreError> {
    let mut map = object(json, what)?;
    if is_redacted(&map) {
        return Ok(None);
    }
    let empty = || Value::String(String::new());
    match what {
        Stored::Duration => {
            map.insert("caller_number".into(), Value::Null);
            map.insert("callee_number".into(), empty());
        }
        Stored::NumberState => {
            if let Some(Value::Object(assignment)) = map.get_mut("assignment") {
                assignment.insert("target_id".into(), empty());
                assignment.insert("sip_uri".into(), empty());
            }
        }
    }
    map.insert("redacted".into(), Value::Bool(true));
    serde_json::to_string(&map)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("{what:?}: {e}")))
}

/// Whether `incoming` (a record as it would be stored) is a resend of the stored `stored`: the
/// same text, or, when `stored` was redacted, the same once redacted. A carrier or the
/// platform resending a record after its tenant's erasure gets a duplicate, not a conflict.
pub(crate) fn same_record(what: Stored, stored: &str, incoming: &str) -> bool {
    if stored == incoming {
        return true;
    }
    if !stored.contains("\"redacted\":true") {
        return false;
    }
    match (redact(what, incoming), object(stored, what)) {
        (Ok(Some(redacted)), Ok(stored)) => {
            object(&redacted, what).is_ok_and(|incoming| incoming == stored)
        }
        _ => false,
    }
}

/// An upload summary (a tally as JSON) with the descriptions of rejections of `call_ids`
/// emptied and marked redacted; `None` when it lists none of them or is redacted already.
pub(crate) fn redact_tally(
    json: &str,
    call_ids: &HashSet<String>,
) -> Result<Option<String>, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(format!("upload summary: {e}"));
    let mut tally: Value = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    let Some(map) = tally.as_object_mut() else {
        return Err(corrupt("not an object".into()));
    };
    if is_redacted(map) {
        return Ok(None);
    }
    let mut touched = false;
    if let Some(Value::Array(rejections)) = map.get_mut("rejections") {
        for r in rejections.iter_mut().filter_map(Value::as_object_mut) {
            let ours = r
                .get("call_id")
                .and_then(Value::as_str)
                .is_some_and(|id| call_ids.contains(id));
            if ours {
                r.insert("description".into(), Value::String(String::new()));
                touched = true;
            }
        }
    }
    if !touched {
        return Ok(None);
    }
    map.insert("redacted".into(), Value::Bool(true));
    serde_json::to_string(&tally)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// A call record loses its numbers and correlation id, keeps the rest, and is redacted
    /// once only; a resend of the original is the same record as the redacted row.
    #[test]
    fn call_records_are_redacted_once() {
        let original = pb::CallRecord {
            call_id: "c1".into(),
            correlation_id: "k".into(),
            caller_number: "+14255550100".into(),
            callee_number: "+14255550123".into(),
            duration: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ..Default::default()
        };
        let stored = original.encode_to_vec();
        let redacted = redact_encoded::<pb::CallRecord>(&stored).unwrap().unwrap();
        let decoded = pb::CallRecord::decode(redacted.as_slice()).unwrap();
        assert!(decoded.redacted);
        assert!(decoded.caller_number.is_empty() && decoded.callee_number.is_empty());
        assert!(decoded.correlation_id.is_empty());
        assert_eq!(
            (decoded.call_id.as_str(), decoded.duration),
            ("c1", original.duration)
        );
        assert_eq!(redact_encoded::<pb::CallRecord>(&redacted).unwrap(), None);
        assert!(same_encoded(&redacted, &original).unwrap());
        let other = pb::CallRecord {
            duration: None,
            ..original
        };
        assert!(!same_encoded(&redacted, &other).unwrap());
    }

    /// A number event's assignment loses its target and SIP URI.
    #[test]
    fn assignments_are_redacted() {
        let stored = r#"{"number":"+14255550100","assignment":{"target_id":"u1","sip_uri":"sip:+14255550100@x;user=phone","usage":"CallingUser"}}"#;
        let redacted = redact(Stored::NumberState, stored).unwrap().unwrap();
        assert!(
            !redacted.contains("u1") && !redacted.contains("sip:"),
            "{redacted}"
        );
        assert!(redacted.contains("CallingUser"));
    }

    /// Only summaries listing the tenant's calls change.
    #[test]
    fn tallies_redact_only_the_tenants_rejections() {
        let json = r#"{"received":2,"rejections":[{"call_id":"a","description":"x"},{"call_id":"b","description":"y"}]}"#;
        let ids: HashSet<String> = ["a".to_owned()].into();
        let out = redact_tally(json, &ids).unwrap().unwrap();
        assert!(out.contains(r#""description":"y""#) && !out.contains(r#""description":"x""#));
        assert_eq!(redact_tally(&out, &ids).unwrap(), None);
        let none: HashSet<String> = HashSet::new();
        assert_eq!(redact_tally(json, &none).unwrap(), None);
    }
}
