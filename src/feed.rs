//! Change notification inside one process: writers publish a carrier's new revision after
//! they commit, watchers wait on it. A notification only wakes a reader; the reader then reads
//! the database, which is the source of truth, at its own pace. Nothing is buffered per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// What a watcher of one carrier is woken by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarrierSignal {
    /// The highest committed number revision published so far.
    pub revision: i64,
    /// Bumped whenever the carrier's status changes, so open streams re-check it.
    pub status_epoch: u64,
    /// The newest committed call-record cursor published so far.
    pub call_record_cursor: i64,
    /// The newest committed quality-record cursor published so far.
    pub quality_record_cursor: i64,
}

/// Per-carrier wake-ups; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    carriers: Arc<Mutex<HashMap<String, watch::Sender<CarrierSignal>>>>,
}

impl Feed {
    fn sender(&self, carrier: &str) -> watch::Sender<CarrierSignal> {
        let mut map = self.carriers.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(carrier.to_owned())
            .or_insert_with(|| watch::channel(CarrierSignal::default()).0)
            .clone()
    }

    /// Subscribes to a carrier's signals. Subscribe before reading the database, so that no
    /// commit between the read and the wait goes unnoticed.
    pub fn subscribe(&self, carrier: &str) -> watch::Receiver<CarrierSignal> {
        self.sender(carrier).subscribe()
    }

    /// Announces that `carrier`'s number revision is now at least `revision`.
    pub fn publish(&self, carrier: &str, revision: i64) {
        self.sender(carrier).send_if_modified(|signal| {
            let newer = revision > signal.revision;
            if newer {
                signal.revision = revision;
            }
            newer
        });
    }

    /// Announces that `carrier`'s call-record (or quality-record) log now reaches `cursor`.
    pub fn publish_records(&self, carrier: &str, quality: bool, cursor: i64) {
        self.sender(carrier).send_if_modified(|signal| {
            let slot = if quality {
                &mut signal.quality_record_cursor
            } else {
                &mut signal.call_record_cursor
            };
            let newer = cursor > *slot;
            if newer {
                *slot = cursor;
            }
            newer
        });
    }

    /// Announces that `carrier`'s status changed.
    pub fn carrier_changed(&self, carrier: &str) {
        self.sender(carrier)
            .send_modify(|signal| signal.status_epoch = signal.status_epoch.wrapping_add(1));
    }
}
