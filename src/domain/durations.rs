//! Call durations reported by carriers, and the tally of an ingestion or upload stream.

use serde::{Deserialize, Serialize};

use super::ids::{E164, TenantId};
use super::records::CallDirection;
use super::values::{CallId, DurationMs, UnixMillis};

/// Most rejections listed in a tally; all are counted.
pub const MAX_LISTED_REJECTIONS: usize = 1_000;

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

    /// Orders the listed rejections by index and keeps the first [`MAX_LISTED_REJECTIONS`].
    pub fn settle(&mut self) {
        self.rejections.sort_by_key(|r| r.index);
        self.rejections.truncate(MAX_LISTED_REJECTIONS);
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
