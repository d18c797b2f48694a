//! Call detail records and call quality records as the gateway stores and delivers them, and
//! the quality classification computed at ingestion.

use serde::{Deserialize, Serialize};

use super::ids::{E164, TenantId};
use super::values::{CallId, DurationMs, Ratio, SipCode, UnixMillis};
use super::{Violation, Violations};

/// Which way a call went, seen from Teams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallDirection {
    /// PSTN → Teams.
    Inbound,
    /// Teams → PSTN.
    Outbound,
}

/// A field as a request carried it: absent, present but invalid (the violation is already
/// recorded), or valid. Rules that tie fields together need the difference between the first
/// two: a successful call *requires* an end time, but a bad one was reported already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given<T> {
    /// The field was not sent.
    Absent,
    /// The field was sent and failed its own check.
    Invalid,
    /// The field was sent and is valid.
    Valid(T),
}

impl<T: Copy> Given<T> {
    /// The value, if valid.
    pub fn valid(self) -> Option<T> {
        match self {
            Self::Valid(v) => Some(v),
            Self::Absent | Self::Invalid => None,
        }
    }

    /// Whether the field was not sent.
    pub fn is_absent(self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl<T> Given<T> {
    /// From the outcome of parsing an optional field: `None` when it failed its check,
    /// `Some(None)` when absent.
    pub fn from_parsed(parsed: Option<Option<T>>) -> Self {
        match parsed {
            None => Self::Invalid,
            Some(None) => Self::Absent,
            Some(Some(v)) => Self::Valid(v),
        }
    }
}

/// How far a call's duration may exceed `end_time - start_time`: the platform measures the two
/// with different clocks.
pub const DURATION_TOLERANCE_MS: i64 = 1_000;

/// The fields of a call record in the order their problems are reported.
const CALL_RECORD_FIELDS: [&str; 18] = [
    "call_id",
    "correlation_id",
    "tenant_id",
    "call_type",
    "direction",
    "caller_number",
    "callee_number",
    "start_time",
    "invite_time",
    "end_time",
    "failure_time",
    "duration",
    "successful",
    "final_sip_code",
    "final_sip_phrase",
    "microsoft_subcode",
    "media_bypass",
    "trunk_fqdn",
];

/// A call record's fields as parsed one by one, each `None` (or [`Given::Invalid`]) where it
/// failed its own check; [`CallRecord::build`] applies the rules between fields.
#[derive(Debug, Clone)]
pub struct CallRecordDraft {
    /// The platform's call id.
    pub call_id: Option<CallId>,
    /// Correlation id; may be empty.
    pub correlation_id: Option<String>,
    /// Customer tenant.
    pub tenant_id: Option<TenantId>,
    /// Platform call type; may be empty.
    pub call_type: Option<String>,
    /// Direction.
    pub direction: Option<CallDirection>,
    /// Calling number; `Some(None)` when withheld.
    pub caller_number: Option<Option<E164>>,
    /// Called number.
    pub callee_number: Option<E164>,
    /// Call start (required).
    pub start: Option<UnixMillis>,
    /// INVITE time.
    pub invite: Given<UnixMillis>,
    /// End of a successful call.
    pub end: Given<UnixMillis>,
    /// Failure time of an unsuccessful call.
    pub failure: Given<UnixMillis>,
    /// Connected duration; absent means 0.
    pub duration: Given<DurationMs>,
    /// Whether the request carried a non-zero duration, sub-millisecond parts included: an
    /// unsuccessful call must carry none, even one that truncates to 0 ms.
    pub duration_nonzero: bool,
    /// Whether the call connected.
    pub successful: bool,
    /// Final SIP code.
    pub final_sip_code: Option<SipCode>,
    /// Final SIP phrase; may be empty.
    pub final_sip_phrase: Option<String>,
    /// Microsoft sub-code.
    pub microsoft_subcode: Option<i32>,
    /// Media bypass.
    pub media_bypass: bool,
    /// Carrier SBC FQDN; may be empty.
    pub trunk_fqdn: Option<String>,
}

/// A validated call detail record: built only by [`CallRecord::build`], so every record holds
/// the rules between its fields. Times are Unix milliseconds; durations milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    call_id: CallId,
    correlation_id: String,
    tenant_id: TenantId,
    call_type: String,
    direction: CallDirection,
    caller_number: Option<E164>,
    callee_number: E164,
    start_time_ms: UnixMillis,
    invite_time_ms: Option<UnixMillis>,
    end_time_ms: Option<UnixMillis>,
    failure_time_ms: Option<UnixMillis>,
    duration_ms: DurationMs,
    successful: bool,
    final_sip_code: SipCode,
    final_sip_phrase: String,
    microsoft_subcode: i32,
    media_bypass: bool,
    trunk_fqdn: String,
    /// Whether the tenant's personal data was erased: correlation id, caller and callee are
    /// then empty. Absent from the stored form of a record that never was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    redacted: bool,
}

impl CallRecord {
    /// Applies the rules between a call's fields to `draft` and builds the record; `v` holds
    /// the problems its fields already had. Every problem is reported at once, in field order:
    ///
    /// - end and failure times are not before the start;
    /// - a successful call has an end time and no failure time; an unsuccessful one has a
    ///   failure time and no connected duration;
    /// - the duration fits between start and end, with [`DURATION_TOLERANCE_MS`] of slack.
    pub fn build(draft: CallRecordDraft, mut v: Violations) -> Result<Self, Vec<Violation>> {
        let d = draft;
        let start = d.start.map(UnixMillis::get);
        let end = d.end.valid().map(UnixMillis::get);
        check_not_before_start(&mut v, "end_time", end, start);
        check_not_before_start(
            &mut v,
            "failure_time",
            d.failure.valid().map(UnixMillis::get),
            start,
        );
        if d.successful {
            if d.end.is_absent() {
                v.push("end_time", "is required for a successful call");
            }
            if !d.failure.is_absent() {
                v.push("failure_time", "must be absent for a successful call");
            }
        } else {
            if d.failure.is_absent() {
                v.push("failure_time", "is required for an unsuccessful call");
            }
            if d.duration.valid().is_some() && d.duration_nonzero {
                v.push("duration", "must be 0 for an unsuccessful call");
            }
        }
        let duration = match d.duration {
            Given::Absent => Some(DurationMs::default()),
            Given::Invalid => None,
            Given::Valid(ms) => Some(ms),
        };
        if let (Some(ms), Some(s), Some(e)) = (duration, start, end)
            && e >= s
            && ms.get() > e - s + DURATION_TOLERANCE_MS
        {
            v.push("duration", "must not exceed end_time - start_time");
        }
        v.sort_by_fields(&CALL_RECORD_FIELDS);
        v.finish_with(|| {
            Some(Self {
                call_id: d.call_id?,
                correlation_id: d.correlation_id?,
                tenant_id: d.tenant_id?,
                call_type: d.call_type?,
                direction: d.direction?,
                caller_number: d.caller_number?,
                callee_number: d.callee_number?,
                start_time_ms: d.start?,
                invite_time_ms: d.invite.valid(),
                end_time_ms: d.end.valid(),
                failure_time_ms: d.failure.valid(),
                duration_ms: duration?,
                successful: d.successful,
                final_sip_code: d.final_sip_code?,
                final_sip_phrase: d.final_sip_phrase?,
                microsoft_subcode: d.microsoft_subcode?,
                media_bypass: d.media_bypass,
                trunk_fqdn: d.trunk_fqdn?,
                redacted: false,
            })
        })
    }

    /// The platform's call id (unique).
    pub fn call_id(&self) -> &CallId {
        &self.call_id
    }
    /// Correlation id; may be empty.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }
    /// Customer tenant.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
    /// Platform call type; may be empty.
    pub fn call_type(&self) -> &str {
        &self.call_type
    }
    /// Direction.
    pub fn direction(&self) -> CallDirection {
        self.direction
    }
    /// Calling number; `None` when withheld.
    pub fn caller_number(&self) -> Option<&E164> {
        self.caller_number.as_ref()
    }
    /// Called number; empty once redacted.
    pub fn callee_number(&self) -> &E164 {
        &self.callee_number
    }
    /// Whether the tenant's personal data was erased from the record.
    pub fn redacted(&self) -> bool {
        self.redacted
    }
    /// The tenant's own number in the call: the caller of an outbound call, the callee of an
    /// inbound one; `None` when an outbound caller withheld it.
    pub fn tenant_number(&self) -> Option<&E164> {
        match self.direction {
            CallDirection::Outbound => self.caller_number.as_ref(),
            CallDirection::Inbound => Some(&self.callee_number),
        }
    }
    /// Call start.
    pub fn start_time_ms(&self) -> i64 {
        self.start_time_ms.get()
    }
    /// INVITE time, if known.
    pub fn invite_time_ms(&self) -> Option<i64> {
        self.invite_time_ms.map(UnixMillis::get)
    }
    /// End of a successful call.
    pub fn end_time_ms(&self) -> Option<i64> {
        self.end_time_ms.map(UnixMillis::get)
    }
    /// Failure time of an unsuccessful call.
    pub fn failure_time_ms(&self) -> Option<i64> {
        self.failure_time_ms.map(UnixMillis::get)
    }
    /// Connected duration as the platform measured it.
    pub fn duration_ms(&self) -> i64 {
        self.duration_ms.get()
    }
    /// Whether the call connected.
    pub fn successful(&self) -> bool {
        self.successful
    }
    /// Final SIP code.
    pub fn final_sip_code(&self) -> i32 {
        self.final_sip_code.get()
    }
    /// Final SIP phrase; may be empty.
    pub fn final_sip_phrase(&self) -> &str {
        &self.final_sip_phrase
    }
    /// Microsoft sub-code; 0 when none.
    pub fn microsoft_subcode(&self) -> i32 {
        self.microsoft_subcode
    }
    /// Media bypass.
    pub fn media_bypass(&self) -> bool {
        self.media_bypass
    }
    /// Carrier SBC FQDN; may be empty.
    pub fn trunk_fqdn(&self) -> &str {
        &self.trunk_fqdn
    }
}

/// Records a violation on `field` when its time lies before the start time (both valid).
fn check_not_before_start(v: &mut Violations, field: &str, time: Option<i64>, start: Option<i64>) {
    if let (Some(t), Some(s)) = (time, start)
        && t < s
    {
        v.push(field, "must not be before start_time");
    }
}

/// Which media stream of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamDirection {
    /// Caller → callee.
    CallerToCallee,
    /// Callee → caller.
    CalleeToCaller,
}

/// Quality metrics of one stream; each may be missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityMetrics {
    /// Average jitter, milliseconds.
    pub avg_jitter_ms: Option<f64>,
    /// Maximum jitter, milliseconds.
    pub max_jitter_ms: Option<f64>,
    /// Average round trip, milliseconds.
    pub avg_round_trip_ms: Option<f64>,
    /// Maximum round trip, milliseconds.
    pub max_round_trip_ms: Option<f64>,
    /// Average packet loss rate, 0-1.
    pub avg_packet_loss_rate: Option<f64>,
    /// Maximum packet loss rate, 0-1.
    pub max_packet_loss_rate: Option<f64>,
    /// Average MOS degradation, 0-5.
    pub avg_audio_degradation: Option<f64>,
    /// Average concealed-samples ratio, 0-1.
    pub avg_concealed_ratio: Option<f64>,
}

/// The fields of a quality record in the order their problems are reported.
const QUALITY_RECORD_FIELDS: [&str; 15] = [
    "call_id",
    "stream_id",
    "tenant_id",
    "stream_direction",
    "start_time",
    "end_time",
    "audio_codec",
    "avg_jitter",
    "max_jitter",
    "avg_round_trip",
    "max_round_trip",
    "avg_packet_loss_rate",
    "max_packet_loss_rate",
    "avg_audio_degradation",
    "avg_concealed_ratio",
];

/// A quality record's fields as parsed one by one, each `None` where it failed its own check;
/// a metric is `Some(None)` when absent. [`QualityRecord::build`] applies the rules between
/// fields and classifies the stream.
#[derive(Debug, Clone)]
pub struct QualityRecordDraft {
    /// The platform's call id.
    pub call_id: Option<CallId>,
    /// Stream id within the call.
    pub stream_id: Option<String>,
    /// Customer tenant.
    pub tenant_id: Option<TenantId>,
    /// Which way media flowed.
    pub stream_direction: Option<StreamDirection>,
    /// Stream start (required).
    pub start: Option<UnixMillis>,
    /// Stream end.
    pub end: Given<UnixMillis>,
    /// Audio codec; may be empty.
    pub audio_codec: Option<String>,
    /// Average jitter, milliseconds.
    pub avg_jitter_ms: Option<Option<f64>>,
    /// Maximum jitter, milliseconds.
    pub max_jitter_ms: Option<Option<f64>>,
    /// Average round trip, milliseconds.
    pub avg_round_trip_ms: Option<Option<f64>>,
    /// Maximum round trip, milliseconds.
    pub max_round_trip_ms: Option<Option<f64>>,
    /// Average packet loss rate.
    pub avg_packet_loss_rate: Option<Option<Ratio>>,
    /// Maximum packet loss rate.
    pub max_packet_loss_rate: Option<Option<Ratio>>,
    /// Average MOS degradation, 0-5.
    pub avg_audio_degradation: Option<Option<f64>>,
    /// Average concealed-samples ratio.
    pub avg_concealed_ratio: Option<Option<Ratio>>,
}

/// A validated quality record of one media stream: built only by [`QualityRecord::build`],
/// which also computes its classification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityRecord {
    call_id: CallId,
    stream_id: String,
    tenant_id: TenantId,
    stream_direction: StreamDirection,
    start_time_ms: UnixMillis,
    end_time_ms: Option<UnixMillis>,
    audio_codec: String,
    metrics: QualityMetrics,
    /// The verdict, computed once at ingestion by [`super::quality::classify`].
    classification: Classification,
    /// Whether the tenant's personal data was erased (a quality record holds none: only
    /// this mark changes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    redacted: bool,
}

impl QualityRecord {
    /// Applies the rules between a stream's fields to `draft`, classifies it and builds the
    /// record; `v` holds the problems its fields already had. The end is not before the start,
    /// and no maximum lies below its average.
    pub fn build(draft: QualityRecordDraft, mut v: Violations) -> Result<Self, Vec<Violation>> {
        let d = draft;
        check_not_before_start(
            &mut v,
            "end_time",
            d.end.valid().map(UnixMillis::get),
            d.start.map(UnixMillis::get),
        );
        let ratio = |r: Option<Option<Ratio>>| r.map(|r| r.map(Ratio::get));
        let metrics = (|| {
            Some(QualityMetrics {
                avg_jitter_ms: d.avg_jitter_ms?,
                max_jitter_ms: d.max_jitter_ms?,
                avg_round_trip_ms: d.avg_round_trip_ms?,
                max_round_trip_ms: d.max_round_trip_ms?,
                avg_packet_loss_rate: ratio(d.avg_packet_loss_rate)?,
                max_packet_loss_rate: ratio(d.max_packet_loss_rate)?,
                avg_audio_degradation: d.avg_audio_degradation?,
                avg_concealed_ratio: ratio(d.avg_concealed_ratio)?,
            })
        })();
        let pairs = [
            ("max_jitter", d.max_jitter_ms, "avg_jitter", d.avg_jitter_ms),
            (
                "max_round_trip",
                d.max_round_trip_ms,
                "avg_round_trip",
                d.avg_round_trip_ms,
            ),
            (
                "max_packet_loss_rate",
                ratio(d.max_packet_loss_rate),
                "avg_packet_loss_rate",
                ratio(d.avg_packet_loss_rate),
            ),
        ];
        for (max_field, max, avg_field, avg) in pairs {
            if let (Some(Some(max)), Some(Some(avg))) = (max, avg)
                && max < avg
            {
                v.push(max_field, format!("must not be below {avg_field}"));
            }
        }
        v.sort_by_fields(&QUALITY_RECORD_FIELDS);
        v.finish_with(|| {
            let metrics = metrics?;
            Some(Self {
                call_id: d.call_id?,
                stream_id: d.stream_id?,
                tenant_id: d.tenant_id?,
                stream_direction: d.stream_direction?,
                start_time_ms: d.start?,
                end_time_ms: d.end.valid(),
                audio_codec: d.audio_codec?,
                classification: super::quality::classify(&metrics),
                metrics,
                redacted: false,
            })
        })
    }

    /// The platform's call id.
    pub fn call_id(&self) -> &CallId {
        &self.call_id
    }
    /// Stream id within the call.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }
    /// Customer tenant.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
    /// Which way media flowed.
    pub fn stream_direction(&self) -> StreamDirection {
        self.stream_direction
    }
    /// Stream start.
    pub fn start_time_ms(&self) -> i64 {
        self.start_time_ms.get()
    }
    /// Stream end, if known.
    pub fn end_time_ms(&self) -> Option<i64> {
        self.end_time_ms.map(UnixMillis::get)
    }
    /// Audio codec; may be empty.
    pub fn audio_codec(&self) -> &str {
        &self.audio_codec
    }
    /// The metrics.
    pub fn metrics(&self) -> &QualityMetrics {
        &self.metrics
    }
    /// The verdict computed at ingestion.
    pub fn classification(&self) -> &Classification {
        &self.classification
    }
    /// Whether the tenant's personal data was erased.
    pub fn redacted(&self) -> bool {
        self.redacted
    }
}

/// Why a stream is poor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PoorReason {
    /// Degradation above 1.0.
    AudioDegradation,
    /// Round trip above 500 ms.
    RoundTrip,
    /// Packet loss rate above 0.1.
    PacketLoss,
    /// Jitter above 30 ms.
    Jitter,
    /// Concealed ratio above 0.07.
    ConcealedRatio,
}

/// The verdict on a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Classification {
    /// All metrics present and within thresholds.
    Good,
    /// At least one metric past its threshold.
    Poor(Vec<PoorReason>),
    /// None past its threshold, at least one missing.
    Unclassified,
}

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// Call detail records.
    CallRecords,
    /// Call quality records.
    QualityRecords,
}

impl LogKind {
    /// The log's name in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Self::CallRecords => "call_records",
            Self::QualityRecords => "quality_records",
        }
    }
}

/// Filters of a record read.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// Only this tenant.
    pub tenant_id: Option<TenantId>,
    /// Only records starting at or after this time (Unix ms).
    pub start_from_ms: Option<i64>,
    /// Only records starting before this time (Unix ms).
    pub start_before_ms: Option<i64>,
}

/// A log's bounds for one carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// Every record up to this cursor was purged.
    pub purged_through: i64,
    /// The newest record's cursor.
    pub latest: i64,
}

/// A stored record as read for a stream: its place, what streams filter on, and its stored
/// encoding (the wire message with cursor 0), framed into responses without decoding.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    /// Its cursor in the carrier's log.
    pub cursor: i64,
    /// Its tenant.
    pub tenant_id: String,
    /// Call start, Unix milliseconds.
    pub start_time_ms: i64,
    /// The stored encoding.
    pub encoded: bytes::Bytes,
}

impl RecordFilter {
    /// Whether a record of `tenant_id` starting at `start_time_ms` passes the filter.
    pub fn admits(&self, tenant_id: &str, start_time_ms: i64) -> bool {
        self.tenant_id
            .as_ref()
            .is_none_or(|t| t.as_str() == tenant_id)
            && self.start_from_ms.is_none_or(|from| start_time_ms >= from)
            && self
                .start_before_ms
                .is_none_or(|before| start_time_ms < before)
    }
}

/// One read from a log.
#[derive(Debug, Clone)]
pub struct RecordPage {
    /// Matching records, in cursor order.
    pub records: Vec<EncodedRecord>,
    /// Every record up to this cursor was read or filtered out.
    pub next_cursor: i64,
    /// The log's bounds when it was read.
    pub bounds: LogBounds,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-01T00:00:00Z.
    const T0: i64 = 1_793_491_200_000;

    fn at(ms: i64) -> UnixMillis {
        UnixMillis::new(ms).unwrap()
    }

    /// A successful 60 s call, every field valid.
    fn call() -> CallRecordDraft {
        CallRecordDraft {
            call_id: Some(CallId::parse("c-1").unwrap()),
            correlation_id: Some(String::new()),
            tenant_id: Some(TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap()),
            call_type: Some(String::new()),
            direction: Some(CallDirection::Outbound),
            caller_number: Some(Some(E164::parse("+14255550100").unwrap())),
            callee_number: Some(E164::parse("+14255550123").unwrap()),
            start: Some(at(T0)),
            invite: Given::Absent,
            end: Given::Valid(at(T0 + 60_000)),
            failure: Given::Absent,
            duration: Given::Valid(DurationMs::new(60_000).unwrap()),
            duration_nonzero: true,
            successful: true,
            final_sip_code: Some(SipCode::parse(200).unwrap()),
            final_sip_phrase: Some("OK".into()),
            microsoft_subcode: Some(0),
            media_bypass: false,
            trunk_fqdn: Some(String::new()),
        }
    }

    fn problems(draft: CallRecordDraft) -> Vec<String> {
        match CallRecord::build(draft, Violations::default()) {
            Ok(r) => panic!("built {r:?}"),
            Err(v) => v.into_iter().map(|v| v.field).collect(),
        }
    }

    /// A valid draft builds; the tenant's number of an outbound call is its caller.
    #[test]
    fn a_valid_call_builds() {
        let r = CallRecord::build(call(), Violations::default()).unwrap();
        assert_eq!(r.duration_ms(), 60_000);
        assert_eq!(r.tenant_number().map(E164::as_str), Some("+14255550100"));
    }

    /// A successful call needs an end and no failure; an unsuccessful one a failure time and
    /// no duration, even a sub-millisecond one.
    #[test]
    fn the_outcome_decides_which_times_a_call_has() {
        assert_eq!(
            problems(CallRecordDraft {
                end: Given::Absent,
                ..call()
            }),
            ["end_time"]
        );
        // An end that failed its own check is not reported again as missing.
        let mut v = Violations::default();
        v.push("end_time", "bad");
        let invalid_end = CallRecord::build(
            CallRecordDraft {
                end: Given::Invalid,
                ..call()
            },
            v,
        );
        assert_eq!(invalid_end.unwrap_err().len(), 1);
        let failed = || CallRecordDraft {
            successful: false,
            end: Given::Absent,
            failure: Given::Valid(at(T0 + 5_000)),
            duration: Given::Absent,
            duration_nonzero: false,
            ..call()
        };
        assert!(CallRecord::build(failed(), Violations::default()).is_ok());
        assert_eq!(
            problems(CallRecordDraft {
                failure: Given::Absent,
                ..failed()
            }),
            ["failure_time"]
        );
        assert_eq!(
            problems(CallRecordDraft {
                duration: Given::Valid(DurationMs::default()),
                duration_nonzero: true,
                ..failed()
            }),
            ["duration"]
        );
    }

    /// Times follow the start, and the duration fits between start and end with 1 s of slack.
    #[test]
    fn times_and_duration_agree() {
        assert_eq!(
            problems(CallRecordDraft {
                end: Given::Valid(at(T0 - 1)),
                duration: Given::Absent,
                ..call()
            }),
            ["end_time"]
        );
        let longer = |ms| CallRecordDraft {
            duration: Given::Valid(DurationMs::new(ms).unwrap()),
            ..call()
        };
        assert!(CallRecord::build(longer(61_000), Violations::default()).is_ok());
        assert_eq!(problems(longer(61_001)), ["duration"]);
    }

    /// Problems come in field order, whatever order they were found in.
    #[test]
    fn problems_are_reported_in_field_order() {
        let mut v = Violations::default();
        v.push("trunk_fqdn", "bad");
        v.push("call_id", "bad");
        let fields: Vec<String> = CallRecord::build(
            CallRecordDraft {
                call_id: None,
                trunk_fqdn: None,
                end: Given::Absent,
                ..call()
            },
            v,
        )
        .unwrap_err()
        .into_iter()
        .map(|v| v.field)
        .collect();
        assert_eq!(fields, ["call_id", "end_time", "trunk_fqdn"]);
    }

    /// A stream builds with its classification; a maximum below its average is refused.
    #[test]
    fn quality_records_classify_and_check_maxima() {
        let stream = || QualityRecordDraft {
            call_id: Some(CallId::parse("c-1").unwrap()),
            stream_id: Some("s1".into()),
            tenant_id: Some(TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap()),
            stream_direction: Some(StreamDirection::CallerToCallee),
            start: Some(at(T0)),
            end: Given::Absent,
            audio_codec: Some(String::new()),
            avg_jitter_ms: Some(Some(5.0)),
            max_jitter_ms: Some(Some(9.0)),
            avg_round_trip_ms: Some(Some(80.0)),
            max_round_trip_ms: Some(None),
            avg_packet_loss_rate: Some(Some(Ratio::new(0.01).unwrap())),
            max_packet_loss_rate: Some(None),
            avg_audio_degradation: Some(Some(0.2)),
            avg_concealed_ratio: Some(Some(Ratio::new(0.01).unwrap())),
        };
        let good = QualityRecord::build(stream(), Violations::default()).unwrap();
        assert_eq!(*good.classification(), Classification::Good);
        let bad = QualityRecord::build(
            QualityRecordDraft {
                max_jitter_ms: Some(Some(4.0)),
                ..stream()
            },
            Violations::default(),
        )
        .unwrap_err();
        assert_eq!(bad[0].field, "max_jitter");
    }
}
