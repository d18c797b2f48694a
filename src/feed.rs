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
    /// Bumped whenever an erasure redacted rows of the carrier (DESIGN §8): whoever holds
    /// rows of the carrier read before (a stream's read-ahead, a shared tail) drops them and
    /// reads them again from the database.
    pub erased_epoch: u64,
}

/// A carrier with more open streams than this is woken from a task of its own (see
/// [`Feed::announce`]).
const WAKE_INLINE_UP_TO: usize = 32;

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

    /// The carrier's status epoch now: it moves whenever the carrier's status may have
    /// changed (here, on another instance, or after notices were missed).
    pub fn status_epoch(&self, carrier: &str) -> u64 {
        self.sender(carrier).borrow().status_epoch
    }

    /// Subscribes to a carrier's signals. Subscribe before reading the database, so that no
    /// commit between the read and the wait goes unnoticed.
    pub fn subscribe(&self, carrier: &str) -> watch::Receiver<CarrierSignal> {
        self.sender(carrier).subscribe()
    }

    /// Announces that `carrier`'s number revision is now at least `revision`.
    pub fn publish(&self, carrier: &str, revision: i64) {
        self.announce(carrier, move |signal| {
            let newer = revision > signal.revision;
            if newer {
                signal.revision = revision;
            }
            newer
        });
    }

    /// Announces that `carrier`'s call-record (or quality-record) log now reaches `cursor`.
    pub fn publish_records(&self, carrier: &str, quality: bool, cursor: i64) {
        self.announce(carrier, move |signal| {
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

    /// Applies `modify` to `carrier`'s signal, waking its streams if it changed anything.
    /// Waking a stream is cheap but not free: a carrier with more than [`WAKE_INLINE_UP_TO`]
    /// streams is woken from a task of its own, so that the writer who committed answers its
    /// caller without first waking them all (1,000 watchers: several ms, in the writer's
    /// task). Positions only grow, so announcements that overtake each other are harmless.
    fn announce(
        &self,
        carrier: &str,
        modify: impl FnOnce(&mut CarrierSignal) -> bool + Send + 'static,
    ) {
        let sender = self.sender(carrier);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if sender.receiver_count() > WAKE_INLINE_UP_TO => {
                runtime.spawn(async move {
                    sender.send_if_modified(modify);
                });
            }
            _ => {
                sender.send_if_modified(modify);
            }
        }
    }

    /// Wakes every stream of every carrier: they re-check their carrier and re-read the
    /// database. Used after the cross-instance listener lost its connection, when
    /// notifications may have been missed.
    pub fn wake_all(&self) {
        let senders: Vec<watch::Sender<CarrierSignal>> = self
            .carriers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for sender in senders {
            sender.send_modify(|signal| signal.status_epoch = signal.status_epoch.wrapping_add(1));
        }
    }

    /// Applies a notification payload from another instance (see [`Notice`]).
    pub fn apply(&self, payload: &str) {
        match Notice::parse(payload) {
            Some(notice) => self.deliver(notice),
            None => tracing::warn!(payload, "unreadable change notification ignored"),
        }
    }

    /// Announces a change, whether committed here or by another instance.
    pub fn deliver(&self, notice: Notice) {
        match notice {
            Notice::Revision(carrier, revision) => self.publish(&carrier, revision),
            Notice::CallRecords(carrier, cursor) => self.publish_records(&carrier, false, cursor),
            Notice::QualityRecords(carrier, cursor) => {
                self.publish_records(&carrier, true, cursor);
            }
            Notice::Status(carrier) => self.carrier_changed(&carrier),
            Notice::Erased(carrier) => self.erased(&carrier),
        }
    }

    /// Announces that an erasure redacted rows of `carrier`.
    pub fn erased(&self, carrier: &str) {
        self.sender(carrier)
            .send_modify(|signal| signal.erased_epoch = signal.erased_epoch.wrapping_add(1));
    }

    /// The carrier's erasure epoch now (see [`CarrierSignal::erased_epoch`]).
    pub fn erased_epoch(&self, carrier: &str) -> u64 {
        self.sender(carrier).borrow().erased_epoch
    }

    /// Announces that `carrier`'s status changed.
    pub fn carrier_changed(&self, carrier: &str) {
        self.sender(carrier)
            .send_modify(|signal| signal.status_epoch = signal.status_epoch.wrapping_add(1));
    }
}

/// A change, as sent between instances through PostgreSQL `NOTIFY` (payload far below the
/// 8,000-byte limit: a carrier id is at most 63 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A carrier's number revision reached this value.
    Revision(String, i64),
    /// A carrier's call-record log reached this cursor.
    CallRecords(String, i64),
    /// A carrier's quality-record log reached this cursor.
    QualityRecords(String, i64),
    /// A carrier's status changed.
    Status(String),
    /// An erasure redacted rows of a carrier's logs.
    Erased(String),
}

impl Notice {
    /// The NOTIFY payload.
    pub fn payload(&self) -> String {
        match self {
            Self::Revision(c, v) => format!("r|{c}|{v}"),
            Self::CallRecords(c, v) => format!("c|{c}|{v}"),
            Self::QualityRecords(c, v) => format!("q|{c}|{v}"),
            Self::Status(c) => format!("s|{c}"),
            Self::Erased(c) => format!("e|{c}"),
        }
    }

    /// Reads a payload made by [`Notice::payload`].
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split('|');
        let kind = parts.next()?;
        let carrier = parts.next()?.to_owned();
        let value = parts.next().map(str::parse::<i64>);
        let notice = match (kind, value) {
            ("r", Some(Ok(v))) => Self::Revision(carrier, v),
            ("c", Some(Ok(v))) => Self::CallRecords(carrier, v),
            ("q", Some(Ok(v))) => Self::QualityRecords(carrier, v),
            ("s", None) => Self::Status(carrier),
            ("e", None) => Self::Erased(carrier),
            _ => return None,
        };
        parts.next().is_none().then_some(notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads round-trip; anything else is refused.
    #[test]
    fn notices_round_trip() {
        for n in [
            Notice::Revision("contoso".into(), 42),
            Notice::CallRecords("contoso".into(), 7),
            Notice::QualityRecords("fabrikam".into(), 0),
            Notice::Status("contoso".into()),
            Notice::Erased("contoso".into()),
        ] {
            assert_eq!(Notice::parse(&n.payload()), Some(n));
        }
        for bad in ["", "x|c|1", "r|c", "r|c|x", "s|c|1", "r|c|1|2"] {
            assert_eq!(Notice::parse(bad), None, "{bad}");
        }
    }

    /// A published revision wakes a subscriber; wake_all bumps every carrier's epoch.
    #[tokio::test]
    async fn publish_and_wake_all() {
        let feed = Feed::default();
        let mut a = feed.subscribe("a");
        let mut b = feed.subscribe("b");
        feed.apply("r|a|3");
        a.changed().await.unwrap();
        assert_eq!(a.borrow_and_update().revision, 3);
        feed.wake_all();
        b.changed().await.unwrap();
        assert_eq!(b.borrow_and_update().status_epoch, 1);
    }
}
