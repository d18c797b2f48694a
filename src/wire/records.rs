//! Call and quality records between the wire and the domain. Every field of an incoming record
//! is validated and every problem is reported at once, with field names relative to the record
//! (`start_time`, `callee_number`), so a caller can prefix them with the record's position.
//!
//! The domain keeps times as Unix milliseconds and call durations as milliseconds: the
//! sub-millisecond part of a wire timestamp or call duration is truncated. Jitter and round-trip
//! times are kept as fractional milliseconds and survive the round trip exactly.

use prost_types::Duration;

use super::time::{
    MILLIS_PER_SECOND, NANOS_PER_MILLI, NANOS_PER_SECOND, duration_from_fractional_ms,
    duration_from_ms, optional_time, required_time, timestamp,
};
use crate::domain::durations::CallDurationReport;
use crate::domain::ids::{E164, SipDomain, TenantId, parse_opaque_id, parse_optional_opaque_id};
use crate::domain::records::{
    CallDirection, CallRecord, CallRecordDraft, Classification, Given, PoorReason, QualityRecord,
    QualityRecordDraft, StreamDirection,
};
use crate::domain::values::{CallId, DurationMs, Ratio, SipCode, bounded};
use crate::domain::{Violation, Violations};
use crate::pb::v1 as pb;

/// The largest jitter or round-trip time a quality record may report: 60 seconds.
const MAX_DELAY_SECONDS: i64 = 60;
/// The largest average MOS degradation.
const MAX_AUDIO_DEGRADATION: f64 = 5.0;
/// Longest call type and audio codec name.
const MAX_NAME_LEN: usize = 64;
/// Longest SIP reason phrase, in characters.
const MAX_SIP_PHRASE_CHARS: usize = 256;
/// Largest Microsoft sub-code.
const MAX_MICROSOFT_SUBCODE: i32 = 999_999;

// === Wire → domain ===

/// Validates a wire call record: each field here, the rules between fields in
/// [`CallRecord::build`]. The cursor is ignored: the store assigns it.
pub(crate) fn call_record_from_pb(r: &pb::CallRecord) -> Result<CallRecord, Vec<Violation>> {
    let mut v = Violations::default();
    let draft = CallRecordDraft {
        call_id: v.check("call_id", CallId::parse(&r.call_id)),
        correlation_id: v.check(
            "correlation_id",
            parse_optional_opaque_id(&r.correlation_id),
        ),
        tenant_id: v.check("tenant_id", TenantId::parse(&r.tenant_id)),
        call_type: v.check("call_type", parse_optional_name(&r.call_type)),
        direction: v.check("direction", call_direction_from_pb(r.direction)),
        caller_number: v.check("caller_number", parse_optional_number(&r.caller_number)),
        callee_number: v.check("callee_number", E164::parse(&r.callee_number)),
        start: v.check("start_time", required_time(r.start_time.as_ref())),
        invite: Given::from_parsed(v.check("invite_time", optional_time(r.invite_time.as_ref()))),
        end: Given::from_parsed(v.check("end_time", optional_time(r.end_time.as_ref()))),
        failure: Given::from_parsed(
            v.check("failure_time", optional_time(r.failure_time.as_ref())),
        ),
        duration: Given::from_parsed(v.check(
            "duration",
            r.duration.as_ref().map(call_duration).transpose(),
        )),
        duration_nonzero: r.duration.is_some_and(|d| d != Duration::default()),
        successful: r.successful,
        final_sip_code: v.check("final_sip_code", SipCode::parse(r.final_sip_code)),
        final_sip_phrase: v.check("final_sip_phrase", parse_sip_phrase(&r.final_sip_phrase)),
        microsoft_subcode: v.check("microsoft_subcode", parse_subcode(r.microsoft_subcode)),
        media_bypass: r.media_bypass,
        trunk_fqdn: v.check("trunk_fqdn", parse_optional_fqdn(&r.trunk_fqdn)),
    };
    CallRecord::build(draft, v)
}

/// Validates a carrier's wire call duration. Field names are relative to the record.
pub(crate) fn call_duration_from_pb(
    r: &pb::CallDuration,
) -> Result<CallDurationReport, Vec<Violation>> {
    let mut v = Violations::default();
    let call_id = v.check("call_id", CallId::parse(&r.call_id));
    let tenant_id = v.check("tenant_id", TenantId::parse(&r.tenant_id));
    let direction = v.check("direction", call_direction_from_pb(r.direction));
    let caller_number = v.check("caller_number", parse_optional_number(&r.caller_number));
    let callee_number = v.check("callee_number", E164::parse(&r.callee_number));
    let start = v.check("start_time", required_time(r.start_time.as_ref()));
    let duration = v.check(
        "duration",
        r.duration
            .as_ref()
            .ok_or_else(|| "is required".to_owned())
            .and_then(call_duration),
    );
    v.finish_with(|| {
        Some(CallDurationReport::new(
            call_id?,
            tenant_id?,
            direction?,
            caller_number?,
            callee_number?,
            start?,
            duration?,
        ))
    })
}

/// Validates a wire quality record: each field here, the rules between fields and the
/// classification in [`QualityRecord::build`]. The cursor, classification and poor reasons
/// sent are ignored: the server computes them.
pub(crate) fn quality_record_from_pb(
    r: &pb::QualityRecord,
) -> Result<QualityRecord, Vec<Violation>> {
    let mut v = Violations::default();
    let draft = QualityRecordDraft {
        call_id: v.check("call_id", CallId::parse(&r.call_id)),
        stream_id: v.check("stream_id", parse_opaque_id(&r.stream_id)),
        tenant_id: v.check("tenant_id", TenantId::parse(&r.tenant_id)),
        stream_direction: v.check(
            "stream_direction",
            stream_direction_from_pb(r.stream_direction),
        ),
        start: v.check("start_time", required_time(r.start_time.as_ref())),
        end: Given::from_parsed(v.check("end_time", optional_time(r.end_time.as_ref()))),
        audio_codec: v.check("audio_codec", parse_optional_name(&r.audio_codec)),
        avg_jitter_ms: v.check("avg_jitter", delay_ms(r.avg_jitter.as_ref())),
        max_jitter_ms: v.check("max_jitter", delay_ms(r.max_jitter.as_ref())),
        avg_round_trip_ms: v.check("avg_round_trip", delay_ms(r.avg_round_trip.as_ref())),
        max_round_trip_ms: v.check("max_round_trip", delay_ms(r.max_round_trip.as_ref())),
        avg_packet_loss_rate: v.check(
            "avg_packet_loss_rate",
            r.avg_packet_loss_rate.map(Ratio::new).transpose(),
        ),
        max_packet_loss_rate: v.check(
            "max_packet_loss_rate",
            r.max_packet_loss_rate.map(Ratio::new).transpose(),
        ),
        avg_audio_degradation: v.check(
            "avg_audio_degradation",
            r.avg_audio_degradation
                .map(|x| bounded(x, MAX_AUDIO_DEGRADATION))
                .transpose(),
        ),
        avg_concealed_ratio: v.check(
            "avg_concealed_ratio",
            r.avg_concealed_ratio.map(Ratio::new).transpose(),
        ),
    };
    QualityRecord::build(draft, v)
}

/// A wire duration as whole seconds and nanoseconds, both non-negative, at most
/// `max_seconds`; `limit` words the bound for the caller.
fn bounded_duration(d: &Duration, max_seconds: i64, limit: &str) -> Result<(i64, i64), String> {
    let nanos = i64::from(d.nanos);
    if !(0..NANOS_PER_SECOND).contains(&nanos.abs()) {
        return Err("nanos must be from -999999999 to 999999999".into());
    }
    if d.seconds < 0 || nanos < 0 || (d.seconds, nanos) > (max_seconds, 0) {
        return Err(format!("must be between 0 and {limit}"));
    }
    Ok((d.seconds, nanos))
}

/// A call's connected duration (sub-millisecond part truncated), bounded by [`DurationMs`].
fn call_duration(d: &Duration) -> Result<DurationMs, String> {
    let max_seconds = DurationMs::MAX / MILLIS_PER_SECOND;
    let (seconds, nanos) = bounded_duration(d, max_seconds, "24 hours")?;
    DurationMs::new(seconds * MILLIS_PER_SECOND + nanos / NANOS_PER_MILLI)
}

/// An optional jitter or round-trip time as fractional milliseconds.
fn delay_ms(d: Option<&Duration>) -> Result<Option<f64>, String> {
    let Some(d) = d else { return Ok(None) };
    let (seconds, nanos) = bounded_duration(d, MAX_DELAY_SECONDS, "60 seconds")?;
    // At most 6e10 nanoseconds: exact in an f64, and one division keeps the round trip exact.
    let total_nanos = seconds * NANOS_PER_SECOND + nanos;
    Ok(Some(total_nanos as f64 / NANOS_PER_MILLI as f64))
}

/// A Microsoft sub-code: 0 (none) to [`MAX_MICROSOFT_SUBCODE`].
fn parse_subcode(raw: i32) -> Result<i32, String> {
    if (0..=MAX_MICROSOFT_SUBCODE).contains(&raw) {
        Ok(raw)
    } else {
        Err(format!("must be from 0 to {MAX_MICROSOFT_SUBCODE}"))
    }
}

/// An optional short name (call type, audio codec): up to 64 printable ASCII characters
/// without spaces.
fn parse_optional_name(raw: &str) -> Result<String, String> {
    if raw.len() > MAX_NAME_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "must be at most {MAX_NAME_LEN} printable ASCII characters without spaces"
        ));
    }
    Ok(raw.to_owned())
}

/// An optional calling number: empty when withheld, else E.164.
fn parse_optional_number(raw: &str) -> Result<Option<E164>, String> {
    if raw.is_empty() {
        Ok(None)
    } else {
        E164::parse(raw)
            .map(Some)
            .map_err(|e| format!("{e}, or empty when withheld"))
    }
}

/// An optional SIP reason phrase: up to 256 characters, no control characters.
fn parse_sip_phrase(raw: &str) -> Result<String, String> {
    if raw.chars().count() > MAX_SIP_PHRASE_CHARS || raw.chars().any(char::is_control) {
        return Err(format!(
            "must be at most {MAX_SIP_PHRASE_CHARS} characters without control characters"
        ));
    }
    Ok(raw.to_owned())
}

/// An optional SBC host name, folded to lower case.
fn parse_optional_fqdn(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        Ok(String::new())
    } else {
        SipDomain::parse(raw).map(|d| d.as_str().to_owned())
    }
}

fn call_direction_from_pb(raw: i32) -> Result<CallDirection, String> {
    match pb::CallDirection::try_from(raw) {
        Ok(pb::CallDirection::Inbound) => Ok(CallDirection::Inbound),
        Ok(pb::CallDirection::Outbound) => Ok(CallDirection::Outbound),
        _ => Err("must be CALL_DIRECTION_INBOUND or CALL_DIRECTION_OUTBOUND".into()),
    }
}

fn stream_direction_from_pb(raw: i32) -> Result<StreamDirection, String> {
    match pb::StreamDirection::try_from(raw) {
        Ok(pb::StreamDirection::CallerToCallee) => Ok(StreamDirection::CallerToCallee),
        Ok(pb::StreamDirection::CalleeToCaller) => Ok(StreamDirection::CalleeToCaller),
        _ => Err(
            "must be STREAM_DIRECTION_CALLER_TO_CALLEE or STREAM_DIRECTION_CALLEE_TO_CALLER".into(),
        ),
    }
}

// === Domain → wire ===

/// A stored call record as sent to carriers, at `cursor` in the carrier's log.
pub(crate) fn call_record_to_pb(cursor: i64, r: &CallRecord) -> pb::CallRecord {
    pb::CallRecord {
        cursor,
        call_id: r.call_id().as_str().to_owned(),
        correlation_id: r.correlation_id().to_owned(),
        tenant_id: r.tenant_id().as_str().to_owned(),
        call_type: r.call_type().to_owned(),
        direction: match r.direction() {
            CallDirection::Inbound => pb::CallDirection::Inbound,
            CallDirection::Outbound => pb::CallDirection::Outbound,
        } as i32,
        caller_number: r
            .caller_number()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        callee_number: r.callee_number().as_str().to_owned(),
        start_time: Some(timestamp(r.start_time_ms())),
        invite_time: r.invite_time_ms().map(timestamp),
        end_time: r.end_time_ms().map(timestamp),
        failure_time: r.failure_time_ms().map(timestamp),
        duration: Some(duration_from_ms(r.duration_ms())),
        successful: r.successful(),
        final_sip_code: r.final_sip_code(),
        final_sip_phrase: r.final_sip_phrase().to_owned(),
        microsoft_subcode: r.microsoft_subcode(),
        media_bypass: r.media_bypass(),
        trunk_fqdn: r.trunk_fqdn().to_owned(),
        redacted: r.redacted(),
    }
}

/// A stored carrier duration as exported.
pub(crate) fn call_duration_to_pb(d: &CallDurationReport) -> pb::CallDuration {
    pb::CallDuration {
        call_id: d.call_id().as_str().to_owned(),
        tenant_id: d.tenant_id().as_str().to_owned(),
        direction: match d.direction() {
            CallDirection::Inbound => pb::CallDirection::Inbound,
            CallDirection::Outbound => pb::CallDirection::Outbound,
        } as i32,
        caller_number: d
            .caller_number()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        callee_number: d.callee_number().as_str().to_owned(),
        start_time: Some(timestamp(d.start_time_ms())),
        duration: Some(duration_from_ms(d.duration_ms())),
        redacted: d.redacted(),
    }
}

/// A stored quality record as sent to carriers, at `cursor` in the carrier's log, with the
/// classification computed at ingestion.
pub(crate) fn quality_record_to_pb(cursor: i64, r: &QualityRecord) -> pb::QualityRecord {
    let (classification, poor_reasons) = match r.classification() {
        Classification::Good => (pb::QualityClassification::Good, Vec::new()),
        Classification::Poor(reasons) => (
            pb::QualityClassification::Poor,
            reasons
                .iter()
                .map(|r| poor_reason_to_pb(*r) as i32)
                .collect(),
        ),
        Classification::Unclassified => (pb::QualityClassification::Unclassified, Vec::new()),
    };
    let m = r.metrics();
    pb::QualityRecord {
        cursor,
        call_id: r.call_id().as_str().to_owned(),
        stream_id: r.stream_id().to_owned(),
        stream_direction: match r.stream_direction() {
            StreamDirection::CallerToCallee => pb::StreamDirection::CallerToCallee,
            StreamDirection::CalleeToCaller => pb::StreamDirection::CalleeToCaller,
        } as i32,
        start_time: Some(timestamp(r.start_time_ms())),
        end_time: r.end_time_ms().map(timestamp),
        audio_codec: r.audio_codec().to_owned(),
        avg_jitter: m.avg_jitter_ms.map(duration_from_fractional_ms),
        max_jitter: m.max_jitter_ms.map(duration_from_fractional_ms),
        avg_round_trip: m.avg_round_trip_ms.map(duration_from_fractional_ms),
        max_round_trip: m.max_round_trip_ms.map(duration_from_fractional_ms),
        avg_packet_loss_rate: m.avg_packet_loss_rate,
        max_packet_loss_rate: m.max_packet_loss_rate,
        avg_audio_degradation: m.avg_audio_degradation,
        avg_concealed_ratio: m.avg_concealed_ratio,
        classification: classification as i32,
        poor_reasons,
        tenant_id: r.tenant_id().as_str().to_owned(),
        redacted: r.redacted(),
    }
}

fn poor_reason_to_pb(reason: PoorReason) -> pb::PoorReason {
    match reason {
        PoorReason::AudioDegradation => pb::PoorReason::AudioDegradation,
        PoorReason::RoundTrip => pb::PoorReason::RoundTrip,
        PoorReason::PacketLoss => pb::PoorReason::PacketLoss,
        PoorReason::Jitter => pb::PoorReason::Jitter,
        PoorReason::ConcealedRatio => pb::PoorReason::ConcealedRatio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    /// 2024-05-01T12:00:00Z.
    const T0: i64 = 1_714_564_800;

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn dur(seconds: i64, nanos: i32) -> Option<Duration> {
        Some(Duration { seconds, nanos })
    }

    /// A valid successful call record whose times are whole milliseconds.
    fn call() -> pb::CallRecord {
        pb::CallRecord {
            redacted: false,
            cursor: 0,
            call_id: "call-1".into(),
            correlation_id: "corr-1".into(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            call_type: "oc_in".into(),
            direction: pb::CallDirection::Inbound as i32,
            caller_number: "+14255550100".into(),
            callee_number: "+14255550199".into(),
            start_time: ts(T0, 0),
            invite_time: ts(T0, 250_000_000),
            end_time: ts(T0 + 60, 500_000_000),
            failure_time: None,
            duration: dur(58, 125_000_000),
            successful: true,
            final_sip_code: 200,
            final_sip_phrase: "OK".into(),
            microsoft_subcode: 0,
            media_bypass: true,
            trunk_fqdn: "sbc1.contoso.example".into(),
        }
    }

    /// A valid failed call record.
    fn failed_call() -> pb::CallRecord {
        pb::CallRecord {
            end_time: None,
            failure_time: ts(T0 + 5, 0),
            duration: None,
            successful: false,
            final_sip_code: 486,
            final_sip_phrase: "Busy Here".into(),
            microsoft_subcode: 560_486,
            ..call()
        }
    }

    /// A valid quality record with every metric present and good.
    fn quality() -> pb::QualityRecord {
        pb::QualityRecord {
            redacted: false,
            cursor: 0,
            call_id: "call-1".into(),
            stream_id: "stream-1".into(),
            stream_direction: pb::StreamDirection::CallerToCallee as i32,
            start_time: ts(T0, 0),
            end_time: ts(T0 + 60, 0),
            audio_codec: "SILK".into(),
            avg_jitter: dur(0, 5_500_000),
            max_jitter: dur(0, 20_000_000),
            avg_round_trip: dur(0, 80_000_000),
            max_round_trip: dur(0, 250_000_000),
            avg_packet_loss_rate: Some(0.01),
            max_packet_loss_rate: Some(0.05),
            avg_audio_degradation: Some(0.3),
            avg_concealed_ratio: Some(0.02),
            classification: pb::QualityClassification::Unspecified as i32,
            poor_reasons: Vec::new(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        }
    }

    /// The field names of the violations of a call record that must be rejected.
    fn call_fields(r: &pb::CallRecord) -> Vec<String> {
        match call_record_from_pb(r) {
            Ok(ok) => panic!("accepted: {ok:?}"),
            Err(violations) => violations.into_iter().map(|v| v.field).collect(),
        }
    }

    /// The field names of the violations of a quality record that must be rejected.
    fn quality_fields(r: &pb::QualityRecord) -> Vec<String> {
        match quality_record_from_pb(r) {
            Ok(ok) => panic!("accepted: {ok:?}"),
            Err(violations) => violations.into_iter().map(|v| v.field).collect(),
        }
    }

    /// A call record mutated by `f`.
    fn call_with(f: impl FnOnce(&mut pb::CallRecord)) -> pb::CallRecord {
        let mut r = call();
        f(&mut r);
        r
    }

    /// A failed call record mutated by `f`.
    fn failed_call_with(f: impl FnOnce(&mut pb::CallRecord)) -> pb::CallRecord {
        let mut r = failed_call();
        f(&mut r);
        r
    }

    /// A quality record mutated by `f`.
    fn quality_with(f: impl FnOnce(&mut pb::QualityRecord)) -> pb::QualityRecord {
        let mut r = quality();
        f(&mut r);
        r
    }

    /// A valid call record comes back from the domain unchanged, with the cursor set.
    #[test]
    fn call_record_round_trips() {
        for wire in [call(), failed_call()] {
            let domain = call_record_from_pb(&wire).unwrap();
            let mut expected = wire.clone();
            expected.cursor = 42;
            if expected.duration.is_none() {
                expected.duration = dur(0, 0);
            }
            assert_eq!(call_record_to_pb(42, &domain), expected);
        }
    }

    /// The domain holds what the wire said: milliseconds, lower-case ids, parsed numbers.
    #[test]
    fn call_record_is_converted_to_milliseconds() {
        let r = call_record_from_pb(&call_with(|r| {
            r.tenant_id = r.tenant_id.to_uppercase();
            r.trunk_fqdn = "SBC1.Contoso.Example".into();
            r.caller_number.clear();
        }))
        .unwrap();
        assert_eq!(r.start_time_ms(), T0 * 1000);
        assert_eq!(r.invite_time_ms(), Some(T0 * 1000 + 250));
        assert_eq!(r.end_time_ms(), Some(T0 * 1000 + 60_500));
        assert_eq!(r.duration_ms(), 58_125);
        assert_eq!(
            r.tenant_id().as_str(),
            "72f988bf-86f1-41af-91ab-2d7cd011db47"
        );
        assert_eq!(r.trunk_fqdn(), "sbc1.contoso.example");
        assert_eq!(r.caller_number(), None);
        assert_eq!(r.direction(), CallDirection::Inbound);
    }

    /// Sub-millisecond parts of times and durations are truncated, not rounded.
    #[test]
    fn sub_millisecond_parts_are_truncated() {
        let r = call_record_from_pb(&call_with(|r| {
            r.start_time = ts(T0, 999_999);
            r.duration = dur(1, 1_999_999);
        }))
        .unwrap();
        assert_eq!(r.start_time_ms(), T0 * 1000);
        assert_eq!(r.duration_ms(), 1_001);
    }

    /// Identifiers, tenant, direction and numbers are checked, each under its own field.
    #[test]
    fn call_identity_fields_are_validated() {
        let cases: Vec<(&str, pb::CallRecord)> = vec![
            ("call_id", call_with(|r| r.call_id.clear())),
            ("call_id", call_with(|r| r.call_id = "a b".into())),
            ("call_id", call_with(|r| r.call_id = "x".repeat(129))),
            (
                "correlation_id",
                call_with(|r| r.correlation_id = "c".repeat(129)),
            ),
            (
                "correlation_id",
                call_with(|r| r.correlation_id = "é".into()),
            ),
            ("call_type", call_with(|r| r.call_type = "t".repeat(65))),
            ("call_type", call_with(|r| r.call_type = "oc\tin".into())),
            ("tenant_id", call_with(|r| r.tenant_id.clear())),
            ("tenant_id", call_with(|r| r.tenant_id = "contoso".into())),
            (
                "direction",
                call_with(|r| r.direction = pb::CallDirection::Unspecified as i32),
            ),
            ("direction", call_with(|r| r.direction = 7)),
            ("direction", call_with(|r| r.direction = -1)),
            (
                "caller_number",
                call_with(|r| r.caller_number = "4255550100".into()),
            ),
            ("callee_number", call_with(|r| r.callee_number.clear())),
            (
                "callee_number",
                call_with(|r| r.callee_number = "+0123".into()),
            ),
        ];
        for (field, r) in cases {
            assert_eq!(call_fields(&r), [field], "{r:?}");
        }
        assert!(call_record_from_pb(&call_with(|r| r.correlation_id.clear())).is_ok());
        assert!(call_record_from_pb(&call_with(|r| r.call_type.clear())).is_ok());
    }

    /// Timestamps must be present where required, well formed, between 2000 and 2100 and in
    /// order; extreme values are rejected without overflow.
    #[test]
    fn call_timestamps_are_validated() {
        let cases: Vec<(&str, pb::CallRecord)> = vec![
            ("start_time", call_with(|r| r.start_time = None)),
            ("start_time", call_with(|r| r.start_time = ts(T0, -1))),
            (
                "start_time",
                call_with(|r| r.start_time = ts(T0, 1_000_000_000)),
            ),
            ("start_time", call_with(|r| r.start_time = ts(T0, i32::MIN))),
            ("start_time", call_with(|r| r.start_time = ts(T0, i32::MAX))),
            ("start_time", call_with(|r| r.start_time = ts(0, 0))),
            (
                "start_time",
                call_with(|r| r.start_time = ts(946_684_799, 999_999_999)),
            ),
            (
                "start_time",
                call_with(|r| r.start_time = ts(4_102_444_800, 0)),
            ),
            ("start_time", call_with(|r| r.start_time = ts(-T0, 0))),
            (
                "start_time",
                call_with(|r| r.start_time = ts(i64::MAX, 999_999_999)),
            ),
            ("start_time", call_with(|r| r.start_time = ts(i64::MIN, 0))),
            (
                "invite_time",
                call_with(|r| r.invite_time = ts(i64::MAX, 0)),
            ),
            ("end_time", call_with(|r| r.end_time = ts(T0 - 1, 0))),
            ("end_time", call_with(|r| r.end_time = ts(T0 + 60, -5))),
            ("end_time", call_with(|r| r.end_time = None)),
        ];
        for (field, r) in cases {
            assert_eq!(call_fields(&r), [field], "{r:?}");
        }
        assert_eq!(
            call_fields(&failed_call_with(
                |r| r.failure_time = ts(T0 - 1, 999_000_000)
            )),
            ["failure_time"]
        );
        let first_ok = call_with(|r| {
            r.start_time = ts(946_684_800, 0);
            r.invite_time = None;
            r.end_time = ts(946_684_900, 0);
            r.duration = dur(100, 0);
        });
        assert!(call_record_from_pb(&first_ok).is_ok());
    }

    /// Success needs an end and no failure time; failure needs a failure time and no duration.
    #[test]
    fn outcome_rules_are_enforced() {
        assert_eq!(
            call_fields(&call_with(|r| r.failure_time = ts(T0 + 60, 0))),
            ["failure_time"]
        );
        assert_eq!(call_fields(&call_with(|r| r.end_time = None)), ["end_time"]);
        assert_eq!(
            call_fields(&failed_call_with(|r| r.failure_time = None)),
            ["failure_time"]
        );
        assert_eq!(
            call_fields(&failed_call_with(|r| r.duration = dur(0, 1_000))),
            ["duration"]
        );
        assert!(call_record_from_pb(&failed_call_with(|r| r.duration = dur(0, 0))).is_ok());
    }

    /// Durations must be non-negative, at most 24 hours, well formed, and fit between start and
    /// end with a one-second tolerance.
    #[test]
    fn call_duration_is_validated() {
        let cases: Vec<(&str, pb::CallRecord)> = vec![
            ("duration", call_with(|r| r.duration = dur(-1, 0))),
            ("duration", call_with(|r| r.duration = dur(0, -1))),
            (
                "duration",
                call_with(|r| r.duration = dur(1, 1_000_000_000)),
            ),
            ("duration", call_with(|r| r.duration = dur(0, i32::MIN))),
            ("duration", call_with(|r| r.duration = dur(i64::MAX, 0))),
            ("duration", call_with(|r| r.duration = dur(i64::MIN, 0))),
            ("duration", call_with(|r| r.duration = dur(86_400, 1))),
            ("duration", call_with(|r| r.duration = dur(61, 501_000_000))),
        ];
        for (field, r) in cases {
            assert_eq!(call_fields(&r), [field], "{r:?}");
        }
        // 60.5 s between start and end: 61.5 s is within the tolerance, 61.501 s is not.
        for ok in [
            call_with(|r| r.duration = dur(61, 500_000_000)),
            call_with(|r| r.duration = dur(61, 500_999_999)),
            call_with(|r| r.duration = None),
            call_with(|r| {
                r.end_time = ts(T0 + 90_000, 0);
                r.duration = dur(86_400, 0);
            }),
        ] {
            assert!(call_record_from_pb(&ok).is_ok(), "{ok:?}");
        }
    }

    /// SIP code, phrase, sub-code and trunk FQDN are checked against their ranges.
    #[test]
    fn sip_outcome_fields_are_validated() {
        let cases: Vec<(&str, pb::CallRecord)> = vec![
            ("final_sip_code", call_with(|r| r.final_sip_code = 0)),
            ("final_sip_code", call_with(|r| r.final_sip_code = 99)),
            ("final_sip_code", call_with(|r| r.final_sip_code = 700)),
            ("final_sip_code", call_with(|r| r.final_sip_code = i32::MIN)),
            (
                "final_sip_phrase",
                call_with(|r| r.final_sip_phrase = "é".repeat(257)),
            ),
            (
                "final_sip_phrase",
                call_with(|r| r.final_sip_phrase = "OK\r\n".into()),
            ),
            ("microsoft_subcode", call_with(|r| r.microsoft_subcode = -1)),
            (
                "microsoft_subcode",
                call_with(|r| r.microsoft_subcode = 1_000_000),
            ),
            (
                "trunk_fqdn",
                call_with(|r| r.trunk_fqdn = "localhost".into()),
            ),
            (
                "trunk_fqdn",
                call_with(|r| r.trunk_fqdn = "sbc .contoso.example".into()),
            ),
        ];
        for (field, r) in cases {
            assert_eq!(call_fields(&r), [field], "{r:?}");
        }
        for ok in [
            call_with(|r| r.final_sip_code = 100),
            call_with(|r| r.final_sip_code = 699),
            call_with(|r| r.final_sip_phrase = "é".repeat(256)),
            call_with(|r| r.microsoft_subcode = 999_999),
            call_with(|r| r.trunk_fqdn.clear()),
        ] {
            assert!(call_record_from_pb(&ok).is_ok(), "{ok:?}");
        }
    }

    /// Every problem of a record is reported at once, each under its own field.
    #[test]
    fn several_violations_are_reported_together() {
        let r = pb::CallRecord {
            call_id: String::new(),
            tenant_id: "nope".into(),
            direction: 0,
            callee_number: "555".into(),
            start_time: None,
            duration: dur(-3, 0),
            final_sip_code: 42,
            ..call()
        };
        assert_eq!(
            call_fields(&r),
            [
                "call_id",
                "tenant_id",
                "direction",
                "callee_number",
                "start_time",
                "duration",
                "final_sip_code",
            ]
        );
        assert_eq!(
            call_fields(&pb::CallRecord::default()),
            [
                "call_id",
                "tenant_id",
                "direction",
                "callee_number",
                "start_time",
                "failure_time",
                "final_sip_code",
            ]
        );
    }

    /// A valid quality record keeps its fields and comes back unchanged, with cursor and
    /// classification set.
    #[test]
    fn quality_record_round_trips() {
        let domain = quality_record_from_pb(&quality()).unwrap();
        assert_eq!(domain.metrics().avg_jitter_ms, Some(5.5));
        assert_eq!(domain.metrics().max_round_trip_ms, Some(250.0));
        assert_eq!(domain.start_time_ms(), T0 * 1000);
        assert_eq!(domain.stream_direction(), StreamDirection::CallerToCallee);
        let expected = pb::QualityRecord {
            cursor: 7,
            classification: pb::QualityClassification::Good as i32,
            ..quality()
        };
        assert_eq!(quality_record_to_pb(7, &domain), expected);
    }

    /// Odd-nanosecond delays survive the trip through fractional milliseconds exactly.
    #[test]
    fn delays_round_trip_to_the_nanosecond() {
        for (seconds, nanos) in [(0, 1), (0, 123_456_789), (59, 999_999_999), (60, 0), (0, 0)] {
            let r = quality_with(|r| {
                r.avg_jitter = dur(0, 0);
                r.max_jitter = dur(seconds, nanos);
            });
            let back = quality_record_to_pb(0, &quality_record_from_pb(&r).unwrap());
            assert_eq!(back.max_jitter, dur(seconds, nanos));
        }
    }

    /// The server classifies the record and ignores a classification the client sent.
    #[test]
    fn quality_record_is_classified() {
        let poor = quality_with(|r| {
            r.avg_round_trip = dur(0, 600_000_000);
            r.max_round_trip = dur(1, 0);
            r.avg_packet_loss_rate = Some(0.2);
            r.max_packet_loss_rate = Some(0.3);
            r.classification = pb::QualityClassification::Good as i32;
        });
        let domain = quality_record_from_pb(&poor).unwrap();
        assert_eq!(
            *domain.classification(),
            Classification::Poor(vec![PoorReason::RoundTrip, PoorReason::PacketLoss])
        );
        let wire = quality_record_to_pb(1, &domain);
        assert_eq!(wire.classification, pb::QualityClassification::Poor as i32);
        assert_eq!(
            wire.poor_reasons,
            [
                pb::PoorReason::RoundTrip as i32,
                pb::PoorReason::PacketLoss as i32
            ]
        );

        let partial = quality_with(|r| r.avg_concealed_ratio = None);
        let domain = quality_record_from_pb(&partial).unwrap();
        assert_eq!(*domain.classification(), Classification::Unclassified);
        let wire = quality_record_to_pb(2, &domain);
        assert_eq!(
            wire.classification,
            pb::QualityClassification::Unclassified as i32
        );
        assert!(wire.poor_reasons.is_empty());
    }

    /// Identity, direction and time fields of a quality record are checked.
    #[test]
    fn quality_identity_and_time_fields_are_validated() {
        let cases: Vec<(&str, pb::QualityRecord)> = vec![
            ("call_id", quality_with(|r| r.call_id.clear())),
            ("stream_id", quality_with(|r| r.stream_id.clear())),
            (
                "stream_id",
                quality_with(|r| r.stream_id = "s\u{7f}".into()),
            ),
            ("tenant_id", quality_with(|r| r.tenant_id = "t".into())),
            ("stream_direction", quality_with(|r| r.stream_direction = 0)),
            ("stream_direction", quality_with(|r| r.stream_direction = 3)),
            ("start_time", quality_with(|r| r.start_time = None)),
            (
                "start_time",
                quality_with(|r| r.start_time = ts(i64::MIN, -1)),
            ),
            ("end_time", quality_with(|r| r.end_time = ts(T0 - 1, 0))),
            (
                "end_time",
                quality_with(|r| r.end_time = ts(T0, 1_000_000_000)),
            ),
            (
                "audio_codec",
                quality_with(|r| r.audio_codec = "c".repeat(65)),
            ),
            (
                "audio_codec",
                quality_with(|r| r.audio_codec = "G 722".into()),
            ),
        ];
        for (field, r) in cases {
            assert_eq!(quality_fields(&r), [field], "{r:?}");
        }
        assert!(quality_record_from_pb(&quality_with(|r| r.end_time = None)).is_ok());
        assert!(quality_record_from_pb(&quality_with(|r| r.audio_codec.clear())).is_ok());
    }

    /// Metrics out of range, NaN or infinite are rejected without panics, each under its field.
    #[test]
    fn quality_metrics_are_validated() {
        let cases: Vec<(&str, pb::QualityRecord)> = vec![
            ("avg_jitter", quality_with(|r| r.avg_jitter = dur(-1, 0))),
            ("avg_jitter", quality_with(|r| r.avg_jitter = dur(0, -1))),
            (
                "avg_jitter",
                quality_with(|r| r.avg_jitter = dur(0, 1_000_000_000)),
            ),
            ("max_jitter", quality_with(|r| r.max_jitter = dur(60, 1))),
            (
                "max_jitter",
                quality_with(|r| r.max_jitter = dur(i64::MAX, i32::MAX)),
            ),
            (
                "avg_round_trip",
                quality_with(|r| r.avg_round_trip = dur(i64::MIN, 0)),
            ),
            (
                "max_round_trip",
                quality_with(|r| r.max_round_trip = dur(61, 0)),
            ),
            (
                "avg_packet_loss_rate",
                quality_with(|r| r.avg_packet_loss_rate = Some(f64::NAN)),
            ),
            (
                "avg_packet_loss_rate",
                quality_with(|r| r.avg_packet_loss_rate = Some(-0.1)),
            ),
            (
                "max_packet_loss_rate",
                quality_with(|r| r.max_packet_loss_rate = Some(1.01)),
            ),
            (
                "max_packet_loss_rate",
                quality_with(|r| r.max_packet_loss_rate = Some(f64::INFINITY)),
            ),
            (
                "avg_audio_degradation",
                quality_with(|r| r.avg_audio_degradation = Some(5.000_001)),
            ),
            (
                "avg_audio_degradation",
                quality_with(|r| r.avg_audio_degradation = Some(f64::NEG_INFINITY)),
            ),
            (
                "avg_concealed_ratio",
                quality_with(|r| r.avg_concealed_ratio = Some(2.0)),
            ),
            (
                "avg_concealed_ratio",
                quality_with(|r| r.avg_concealed_ratio = Some(-f64::NAN)),
            ),
        ];
        for (field, r) in cases {
            assert_eq!(quality_fields(&r), [field], "{r:?}");
        }
        let edges = quality_with(|r| {
            r.avg_jitter = dur(60, 0);
            r.max_jitter = dur(60, 0);
            r.avg_packet_loss_rate = Some(1.0);
            r.max_packet_loss_rate = Some(1.0);
            r.avg_audio_degradation = Some(5.0);
            r.avg_concealed_ratio = Some(0.0);
        });
        assert!(quality_record_from_pb(&edges).is_ok());
    }

    /// A maximum below its average is reported on the maximum's field.
    #[test]
    fn maxima_must_not_be_below_averages() {
        let r = quality_with(|r| {
            r.max_jitter = dur(0, 5_000_000);
            r.max_round_trip = dur(0, 1_000_000);
            r.max_packet_loss_rate = Some(0.001);
        });
        assert_eq!(
            quality_fields(&r),
            ["max_jitter", "max_round_trip", "max_packet_loss_rate"]
        );
        let only_max = quality_with(|r| {
            r.avg_jitter = None;
            r.avg_packet_loss_rate = None;
        });
        assert!(quality_record_from_pb(&only_max).is_ok());
    }

    /// A quality record with nothing in it reports every required field at once.
    #[test]
    fn empty_quality_record_reports_every_required_field() {
        assert_eq!(
            quality_fields(&pb::QualityRecord::default()),
            [
                "call_id",
                "stream_id",
                "tenant_id",
                "stream_direction",
                "start_time"
            ]
        );
    }

    /// Domain values outside what validation allows still convert without panics.
    #[test]
    fn to_pb_never_panics_on_extreme_values() {
        // Only a stored row read back can hold such values: constructors refuse them.
        let mut q = serde_json::to_value(quality_record_from_pb(&quality()).unwrap()).unwrap();
        q["metrics"]["avg_jitter_ms"] = serde_json::json!(null);
        q["metrics"]["max_jitter_ms"] = serde_json::json!(1e308);
        q["metrics"]["avg_round_trip_ms"] = serde_json::json!(-1.5);
        q["start_time_ms"] = serde_json::json!(i64::MIN);
        let q: QualityRecord = serde_json::from_value(q).unwrap();
        let wire = quality_record_to_pb(i64::MAX, &q);
        assert_eq!(wire.avg_jitter, None);
        assert_eq!(wire.avg_round_trip, dur(0, -1_500_000));
        let mut c = serde_json::to_value(call_record_from_pb(&call()).unwrap()).unwrap();
        c["duration_ms"] = serde_json::json!(i64::MIN);
        c["end_time_ms"] = serde_json::json!(i64::MAX);
        let c: CallRecord = serde_json::from_value(c).unwrap();
        let wire = call_record_to_pb(0, &c);
        assert!(wire.duration.is_some_and(|d| d.seconds < 0 && d.nanos <= 0));
    }
}
