//! Call detail records and call quality records as the gateway stores and delivers them, and
//! the quality classification computed at ingestion.

use serde::{Deserialize, Serialize};

use super::ids::{E164, TenantId};

/// Which way a call went, seen from Teams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallDirection {
    /// PSTN → Teams.
    Inbound,
    /// Teams → PSTN.
    Outbound,
}

/// A validated call detail record. Times are Unix milliseconds; durations milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The platform's call id (unique).
    pub call_id: String,
    /// Correlation id; may be empty.
    pub correlation_id: String,
    /// Customer tenant.
    pub tenant_id: TenantId,
    /// Platform call type; may be empty.
    pub call_type: String,
    /// Direction.
    pub direction: CallDirection,
    /// Calling number; `None` when withheld.
    pub caller_number: Option<E164>,
    /// Called number.
    pub callee_number: E164,
    /// Call start.
    pub start_time_ms: i64,
    /// INVITE time, if known.
    pub invite_time_ms: Option<i64>,
    /// End of a successful call.
    pub end_time_ms: Option<i64>,
    /// Failure time of an unsuccessful call.
    pub failure_time_ms: Option<i64>,
    /// Connected duration as the platform measured it.
    pub duration_ms: i64,
    /// Whether the call connected.
    pub successful: bool,
    /// Final SIP code, 100-699.
    pub final_sip_code: i32,
    /// Final SIP phrase; may be empty.
    pub final_sip_phrase: String,
    /// Microsoft sub-code; 0 when none.
    pub microsoft_subcode: i32,
    /// Media bypass.
    pub media_bypass: bool,
    /// Carrier SBC FQDN; may be empty.
    pub trunk_fqdn: String,
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

/// A validated quality record of one media stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityRecord {
    /// The platform's call id.
    pub call_id: String,
    /// Stream id within the call.
    pub stream_id: String,
    /// Customer tenant.
    pub tenant_id: TenantId,
    /// Which way media flowed.
    pub stream_direction: StreamDirection,
    /// Stream start.
    pub start_time_ms: i64,
    /// Stream end, if known.
    pub end_time_ms: Option<i64>,
    /// Audio codec; may be empty.
    pub audio_codec: String,
    /// The metrics.
    pub metrics: QualityMetrics,
    /// The verdict, computed once at ingestion by [`super::quality::classify`].
    pub classification: Classification,
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

/// One read from a log.
#[derive(Debug, Clone)]
pub struct RecordPage<T> {
    /// Matching records with their cursors, in cursor order.
    pub records: Vec<(i64, T)>,
    /// Every record up to this cursor was read or filtered out.
    pub next_cursor: i64,
    /// The log's bounds when it was read.
    pub bounds: LogBounds,
}
