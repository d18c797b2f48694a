//! Call durations reported by carriers, and the tally of an ingestion or upload stream.

use serde::{Deserialize, Serialize};

use super::ids::{E164, TenantId};
use super::records::CallDirection;
use super::values::{CallId, DurationMs, UnixMillis};

/// Most rejections listed in a tally; all are counted.
pub const MAX_LISTED_REJECTIONS: usize = 1_000;
/// Most bytes of a client's value a rejection echoes (a call id as sent).
pub const MAX_ECHO_BYTES: usize = 128;
/// Most bytes the listed rejections of a tally may take, as an upper bound of their encoded
/// size in a summary or a stored row: summaries stay far below 256 KiB whatever was sent.
pub const MAX_LISTED_BYTES: usize = 160 * 1024;

/// A validated duration report for one call; every field is a validated value, so the
/// constructor cannot fail. Times and durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallDurationReport {
    call_id: CallId,
    tenant_id: TenantId,
    direction: CallDirection,
    caller_number: Option<E164>,
    callee_number: E164,
    start_time_ms: UnixMillis,
    duration_ms: DurationMs,
    /// Whether the tenant's personal data was erased: caller and callee are then empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    redacted: bool,
}

impl CallDurationReport {
    /// A report of call `call_id` of `tenant_id`, which started at `start` and was connected
    /// for `duration` as the carrier measured it.
    pub fn new(
        call_id: CallId,
        tenant_id: TenantId,
        direction: CallDirection,
        caller_number: Option<E164>,
        callee_number: E164,
        start: UnixMillis,
        duration: DurationMs,
    ) -> Self {
        Self {
            call_id,
            tenant_id,
            direction,
            caller_number,
            callee_number,
            start_time_ms: start,
            duration_ms: duration,
            redacted: false,
        }
    }

    /// The platform's call id.
    pub fn call_id(&self) -> &CallId {
        &self.call_id
    }
    /// Customer tenant.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }
    /// Call start, Unix ms.
    pub fn start_time_ms(&self) -> i64 {
        self.start_time_ms.get()
    }
    /// Connected duration as the carrier measured it, ms.
    pub fn duration_ms(&self) -> i64 {
        self.duration_ms.get()
    }
    /// Which way the call went.
    pub fn direction(&self) -> CallDirection {
        self.direction
    }
    /// Calling number; `None` when withheld or redacted.
    pub fn caller_number(&self) -> Option<&E164> {
        self.caller_number.as_ref()
    }
    /// Called number; empty once redacted.
    pub fn callee_number(&self) -> &E164 {
        &self.callee_number
    }
    /// Whether the tenant's personal data was erased from the report.
    pub fn redacted(&self) -> bool {
        self.redacted
    }
}

/// Why one record was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectionKind {
    /// A field is invalid.
    InvalidField,
    /// A different record is stored under the same key.
    Conflict,
    /// The named carrier is not registered.
    CarrierUnknown,
}

impl Rejection {
    /// What a rejection keeps of a value a client sent: at most [`MAX_ECHO_BYTES`] bytes, cut
    /// on a character boundary, control characters replaced by U+FFFD. Nothing a client
    /// sends is kept beyond that, however large it was.
    pub fn echo(raw: &str) -> String {
        let mut echo = String::new();
        for c in raw.chars() {
            let c = if c.is_control() { '\u{fffd}' } else { c };
            if echo.len() + c.len_utf8() > MAX_ECHO_BYTES {
                break;
            }
            echo.push(c);
        }
        echo
    }

    /// An upper bound of the bytes this rejection takes in a summary, encoded as protobuf or
    /// as JSON (quotes and backslashes doubled, field names and numbers included).
    fn weight(&self) -> usize {
        2 * (self.call_id.len() + self.field.len() + self.description.len()) + 96
    }
}

/// One refused record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Position in the stream, from 0.
    pub index: i64,
    /// The call id as sent.
    pub call_id: String,
    /// The offending field; empty for conflicts.
    pub field: String,
    /// The reason class.
    pub kind: RejectionKind,
    /// Readable explanation.
    pub description: String,
}

/// What a stream of records did; `accepted + duplicates + rejected == received`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Records received.
    pub received: i64,
    /// Records stored by this stream.
    pub accepted: i64,
    /// Records identical to stored ones.
    pub duplicates: i64,
    /// Records refused.
    pub rejected: i64,
    /// The first [`MAX_LISTED_REJECTIONS`] rejections.
    pub rejections: Vec<Rejection>,
    /// Whether a tenant's erasure emptied the descriptions of rejections of its calls.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

impl Tally {
    /// Counts a refused record. Rejections may arrive out of stream order (invalid records
    /// at once, conflicts when their batch commits); the list keeps the lowest indexes.
    pub fn reject(&mut self, rejection: Rejection) {
        self.rejected += 1;
        self.rejections.push(rejection);
        if self.rejections.len() >= 2 * MAX_LISTED_REJECTIONS {
            self.settle();
        }
    }

    /// Orders the listed rejections by index and keeps the first [`MAX_LISTED_REJECTIONS`],
    /// or fewer if they would take more than [`MAX_LISTED_BYTES`].
    pub fn settle(&mut self) {
        self.rejections.sort_by_key(|r| r.index);
        self.rejections.truncate(MAX_LISTED_REJECTIONS);
        let mut bytes = 0;
        let fit = self
            .rejections
            .iter()
            .take_while(|r| {
                bytes += r.weight();
                bytes <= MAX_LISTED_BYTES
            })
            .count();
        self.rejections.truncate(fit);
    }
}

/// What ingestion did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored now.
    Accepted,
    /// Identical to the stored record; not stored again.
    Duplicate,
    /// Another record is stored under the same key; this one was refused.
    Conflict,
    /// The carrier is not registered.
    CarrierUnknown,
}

/// A completed upload's stored summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    /// What the upload did.
    pub tally: Tally,
    /// When it completed, Unix ms.
    pub complete_time_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(index: i64) -> Rejection {
        Rejection {
            index,
            call_id: format!("c{index}"),
            field: String::new(),
            kind: RejectionKind::Conflict,
            description: String::new(),
        }
    }

    /// An echo keeps at most 128 bytes, whole characters, no control characters.
    #[test]
    fn echoes_are_short_and_printable() {
        assert_eq!(Rejection::echo("c-1"), "c-1");
        assert_eq!(
            Rejection::echo(&"x".repeat(4_000_000)).len(),
            MAX_ECHO_BYTES
        );
        let accents = "é".repeat(100);
        let echo = Rejection::echo(&accents);
        assert!(echo.len() <= MAX_ECHO_BYTES && echo.chars().all(|c| c == 'é'));
        assert_eq!(Rejection::echo("a\nb\0"), "a\u{fffd}b\u{fffd}");
        assert!(Rejection::echo(&"\0".repeat(1_000)).len() <= MAX_ECHO_BYTES);
    }

    /// However long the echoes, the listed rejections stay within their byte budget; all are
    /// still counted.
    #[test]
    fn listed_rejections_are_bounded_in_bytes() {
        let mut tally = Tally::default();
        for i in 0..1_000 {
            tally.reject(Rejection {
                call_id: Rejection::echo(&"\"".repeat(1_000)),
                ..rejection(i)
            });
        }
        tally.settle();
        assert_eq!(tally.rejected, 1_000);
        let listed: usize = tally.rejections.iter().map(Rejection::weight).sum();
        assert!(listed <= MAX_LISTED_BYTES, "{listed}");
        assert!(tally.rejections.len() > 100);
        assert_eq!(tally.rejections[0].index, 0);
    }

    /// Out-of-order rejections end up listed by index, the lowest 1,000 kept, all counted.
    #[test]
    fn tally_lists_the_lowest_indexes_in_order() {
        let mut tally = Tally::default();
        for i in (0..5_000).rev() {
            tally.reject(rejection(i));
        }
        tally.settle();
        assert_eq!(tally.rejected, 5_000);
        let indexes: Vec<i64> = tally.rejections.iter().map(|r| r.index).collect();
        assert_eq!(indexes, (0..1_000).collect::<Vec<_>>());
    }
}
