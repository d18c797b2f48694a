//! Change notification inside one process: writers publish a carrier's new revision after
//! they commit, watchers wait on it. A notification only wakes a reader; the reader then reads
//! the shared tail, which the writer filled through its [`CommitObserver`], or the database,
//! which is the source of truth, at its own pace. Nothing is buffered per event. A carrier's
//! streams are woken in groups, the first at once and the others one after another, so that
//! a carrier with 1,000 watchers does not delay everything else (see [`Feed::announce`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use tokio::sync::watch;

use crate::domain::number::NumberEvent;

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

/// A carrier's streams are woken in groups of at most this many (see [`Feed::announce`]).
const GROUP: usize = 32;

/// Told of what a writer of this instance committed, before its streams are woken (the shared
/// tails, which then serve the change without reading it back from the database).
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    /// `events` (ascending, contiguous revisions) of `carrier` were committed by a write that
    /// began while the carrier's erasure epoch was `erased_epoch`.
    fn number_events(&self, carrier: &str, erased_epoch: u64, events: &[NumberEvent]);
}

/// One carrier's wake-up groups. The first holds the carrier's signal as announced; each other
/// group holds a copy of it, brought up to date after the first (see [`Feed::announce`]).
/// Every stream subscribes to one group.
#[derive(Debug)]
struct Groups(Vec<watch::Sender<CarrierSignal>>);

impl Default for Groups {
    fn default() -> Self {
        Self(vec![watch::channel(CarrierSignal::default()).0])
    }
}

impl Groups {
    fn first(&self) -> &watch::Sender<CarrierSignal> {
        &self.0[0]
    }
}

/// Per-carrier wake-ups; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    carriers: Arc<Mutex<HashMap<String, Groups>>>,
    /// Who is told of committed events; held weakly (the observer holds this feed).
    observer: Arc<RwLock<Option<Weak<dyn CommitObserver>>>>,
}

impl Feed {
    /// `carrier`'s signal as announced.
    fn signal(&self, carrier: &str) -> CarrierSignal {
        let mut map = self.carriers.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(carrier.to_owned()).or_default().first().borrow()
    }

    /// The carrier's status epoch now: it moves whenever the carrier's status may have
    /// changed (here, on another instance, or after notices were missed).
    pub fn status_epoch(&self, carrier: &str) -> u64 {
        self.signal(carrier).status_epoch
    }

    /// Subscribes to a carrier's signals. Subscribe before reading the database, so that no
    /// commit between the read and the wait goes unnoticed.
    pub fn subscribe(&self, carrier: &str) -> watch::Receiver<CarrierSignal> {
        let mut map = self.carriers.lock().unwrap_or_else(PoisonError::into_inner);
        let groups = map.entry(carrier.to_owned()).or_default();
        if let Some(group) = groups.0.iter().find(|g| g.receiver_count() < GROUP) {
            return group.subscribe();
        }
        // Every group is full: a new one, holding the signal as announced.
        let (group, receiver) = watch::channel(*groups.first().borrow());
        groups.0.push(group);
        receiver
    }

    /// Makes `observer` the one told of events committed on this instance (replacing any
    /// earlier one), for as long as it lives.
    pub fn observe(&self, observer: Weak<dyn CommitObserver>) {
        *self
            .observer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(observer);
    }

    /// Announces `events` of `carrier`, just committed: the observer gets them first, then
    /// streams are woken up to `revision`. `erased_epoch` is [`Feed::erased_epoch`] read before
    /// the write committed: an erasure that commits after the events may have redacted them,
    /// and it moves the epoch, so the observer can tell and discard them.
    pub fn publish_events(
        &self,
        carrier: &str,
        erased_epoch: u64,
        events: &[NumberEvent],
        revision: i64,
    ) {
        let observer = self
            .observer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade);
        if let Some(observer) = observer
            && !events.is_empty()
        {
            observer.number_events(carrier, erased_epoch, events);
        }
        self.publish(carrier, revision);
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
    ///
    /// The first group of streams (at most [`GROUP`]) is woken here; the others get the new
    /// signal from a task of their own, one group at a time, each after the tasks already
    /// queued in the runtime. Waking 1,000 watchers at once put all of them, and all they then
    /// do, ahead of the writer's own answer; this way the writer answers first and the
    /// runtime's other work goes on between groups. Positions only grow, and a group always
    /// gets the newest signal, so announcements that overtake each other are harmless.
    fn announce(&self, carrier: &str, modify: impl FnOnce(&mut CarrierSignal) -> bool) {
        let (first, rest) = {
            let mut map = self.carriers.lock().unwrap_or_else(PoisonError::into_inner);
            let groups = map.entry(carrier.to_owned()).or_default();
            if !groups.first().send_if_modified(modify) || groups.0.len() == 1 {
                return;
            }
            (groups.first().clone(), groups.0[1..].to_vec())
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    for group in rest {
                        tokio::task::yield_now().await;
                        catch_up(&group, &first);
                    }
                });
            }
            _ => {
                for group in &rest {
                    catch_up(group, &first);
                }
            }
        }
    }

    /// Applies `modify` to `carrier`'s signal and wakes all its streams now (status changes
    /// and erasures: rare, and a stream must not act on the old state for long).
    fn announce_now(&self, carrier: &str, modify: impl FnOnce(&mut CarrierSignal)) {
        let map = &mut *self.carriers.lock().unwrap_or_else(PoisonError::into_inner);
        let groups = map.entry(carrier.to_owned()).or_default();
        groups.first().send_modify(modify);
        for group in &groups.0[1..] {
            catch_up(group, groups.first());
        }
    }

    /// Wakes every stream of every carrier: they re-check their carrier and re-read the
    /// database. Used after the cross-instance listener lost its connection, when
    /// notifications may have been missed.
    pub fn wake_all(&self) {
        let carriers: Vec<String> = self
            .carriers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for carrier in carriers {
            self.carrier_changed(&carrier);
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
        self.announce_now(carrier, |signal| {
            signal.erased_epoch = signal.erased_epoch.wrapping_add(1);
        });
    }

    /// The carrier's erasure epoch now (see [`CarrierSignal::erased_epoch`]).
    pub fn erased_epoch(&self, carrier: &str) -> u64 {
        self.signal(carrier).erased_epoch
    }

    /// Announces that `carrier`'s status changed.
    pub fn carrier_changed(&self, carrier: &str) {
        self.announce_now(carrier, |signal| {
            signal.status_epoch = signal.status_epoch.wrapping_add(1);
        });
    }
}

/// Brings `group` up to the signal of `first`, waking its streams if that changes it.
fn catch_up(group: &watch::Sender<CarrierSignal>, first: &watch::Sender<CarrierSignal>) {
    let newest = *first.borrow();
    group.send_if_modified(|signal| {
        let changed = *signal != newest;
        *signal = newest;
        changed
    });
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

    /// Every stream of a carrier with many, in whichever group, is woken by a publish (the
    /// groups after the first from a task) and at once by a status change.
    #[tokio::test]
    async fn every_group_is_woken() {
        let feed = Feed::default();
        let mut receivers: Vec<_> = (0..3 * GROUP + 1).map(|_| feed.subscribe("a")).collect();
        assert_eq!(feed.carriers.lock().unwrap()["a"].0.len(), 4);
        feed.publish("a", 7);
        for r in &mut receivers {
            r.changed().await.unwrap();
            assert_eq!(r.borrow_and_update().revision, 7);
        }
        feed.carrier_changed("a");
        for r in &mut receivers {
            assert!(
                r.has_changed().unwrap(),
                "a status change reaches every group at once"
            );
            assert_eq!(r.borrow_and_update().status_epoch, 1);
        }
        assert_eq!(feed.status_epoch("a"), 1);
        // A freed place is taken again before a new group is made.
        drop(receivers.swap_remove(0));
        receivers.push(feed.subscribe("a"));
        assert_eq!(feed.carriers.lock().unwrap()["a"].0.len(), 4);
        // The last group holds 1: GROUP more fill it and start a fifth.
        let more: Vec<_> = (0..GROUP).map(|_| feed.subscribe("a")).collect();
        assert_eq!(feed.carriers.lock().unwrap()["a"].0.len(), 5);
        let late = more.last().unwrap();
        assert_eq!(
            late.borrow().revision,
            7,
            "a new group starts from the signal"
        );
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
