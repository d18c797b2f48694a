//! The shared tail: per carrier and log, per instance, the newest events or records, read from
//! the database once and encoded once, and served to every stream of that carrier as shared
//! `Bytes`.
//!
//! Without it every watcher re-read the database on every change: one change to a carrier with
//! 1,000 watchers was 1,000 queries, and the writer queued behind them. With it, the first
//! stream to want a change reads it (under [`Tail::fill`]'s lock, so the others wait for that
//! read instead of repeating it) and every other stream copies a reference to the same bytes.
//!
//! A tail is a bounded ring covering positions `(start, end]` of a gapless log (revisions or
//! cursors), without holes. A stream positioned inside it reads from it; a stream behind it
//! (it fell further behind than the ring holds, or the ring started after it) reads the
//! database on its own until it catches up, then rejoins. Ordering and gaplessness are the
//! log's: the ring only caches a contiguous stretch of it. A purge that overtakes the ring
//! restarts it after the purged positions, so streams behind that see the database's verdict
//! (`REVISION_COMPACTED`, `CURSOR_EXPIRED`).
//!
//! An erasure (DESIGN §8) rewrites rows in place: when the carrier's erasure epoch moves, the
//! ring is emptied, and a read that raced an erasure is discarded (its stream reads the
//! database itself), so a ring never serves a row as it was before its redaction committed.
//!
//! Rings are dropped when their carrier's last stream on this instance ends.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::domain::ids::CarrierId;
use crate::domain::number::NumberEvent;
use crate::domain::records::LogKind;
use crate::error::ApiResult;
use crate::feed::{CommitObserver, Feed};
use crate::metrics::StreamMetrics;

/// A ring holds at most this many entries...
const MAX_ENTRIES: usize = 4_096;
/// ... and at most this many bytes of them: a carrier's tail on one instance costs at most
/// this, however many streams share it.
const MAX_BYTES: usize = 4 * 1024 * 1024;
/// A read that names no position to reach (an idle stream's periodic re-read) refills a ring
/// at most this often, however many streams ask at once.
const REFRESH: Duration = Duration::from_secs(1);

/// One event or record of a log, encoded once.
#[derive(Debug)]
pub(crate) struct Entry<M> {
    /// Its revision or cursor.
    pub position: i64,
    /// What streams filter on, so they need not decode `item`.
    pub meta: M,
    /// The element as framed in a response (`framing::frame_item`).
    pub item: Bytes,
}

/// What one read of the database added after a ring's end.
pub(crate) struct Fill<M> {
    /// New entries, in position order, contiguous after the position asked for unless
    /// `floor` says the log was purged past it.
    pub entries: Vec<Arc<Entry<M>>>,
    /// The log was read through here: the last entry, or the log's end when nothing more is
    /// committed.
    pub through: i64,
    /// Positions up to here no longer exist (purged).
    pub floor: i64,
}

/// What a stream gets from a tail.
pub(crate) enum Read<M> {
    /// The entries after the stream's position, through `through` (entries past it were not
    /// taken; `more` says whether there are any).
    Entries {
        entries: Vec<Arc<Entry<M>>>,
        through: i64,
        more: bool,
    },
    /// The stream is behind the ring: read the database.
    Behind,
}

#[derive(Debug)]
struct Ring<M> {
    entries: VecDeque<Arc<Entry<M>>>,
    /// The ring covers `(start, end]`; `None` until the first stream positions it.
    start: Option<i64>,
    end: i64,
    bytes: usize,
    /// When the ring last read the database.
    filled: Option<Instant>,
    /// The carrier's erasure epoch its entries were read under.
    erased_epoch: u64,
}

impl<M> Default for Ring<M> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            start: None,
            end: 0,
            bytes: 0,
            filled: None,
            erased_epoch: 0,
        }
    }
}

impl<M> Ring<M> {
    /// Up to `max` entries after `after`, if the ring covers it and holds any.
    fn after(&self, after: i64, max: usize) -> Option<Read<M>> {
        let start = self.start?;
        if after < start {
            return Some(Read::Behind);
        }
        if after >= self.end {
            return None;
        }
        // Contiguous positions: the entry after `after` is at a known index.
        let first = usize::try_from(after - start).ok()?;
        let taken: Vec<_> = self.entries.iter().skip(first).take(max).cloned().collect();
        let through = taken.last().map_or(self.end, |e| e.position);
        Some(Read::Entries {
            more: through < self.end,
            entries: taken,
            through,
        })
    }

    fn append(&mut self, fill: Fill<M>) {
        if fill.floor > self.end {
            // Purged past the ring: restart it where the log now begins.
            self.entries.clear();
            self.bytes = 0;
            self.start = Some(fill.floor);
            self.end = fill.floor;
        }
        for entry in fill.entries {
            if entry.position != self.end + 1 {
                // Not contiguous (a purge raced the read): restart at this entry.
                self.entries.clear();
                self.bytes = 0;
                self.start = Some(entry.position - 1);
            }
            self.end = entry.position;
            self.bytes += entry.item.len();
            self.entries.push_back(entry);
        }
        if fill.through > self.end {
            // Positions read past without an entry cannot be served from the ring: restart it
            // after them.
            self.entries.clear();
            self.bytes = 0;
            self.start = Some(fill.through);
            self.end = fill.through;
        }
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.item.len();
            self.start = Some(old.position);
        }
        if self.entries.is_empty() {
            // Nothing cached: the ring covers nothing before its end.
            self.start = Some(self.end);
        }
        self.filled = Some(Instant::now());
    }
}

/// One carrier's tail of one log on this instance.
#[derive(Debug)]
pub(crate) struct Tail<M> {
    ring: RwLock<Ring<M>>,
    /// Held while reading the database for the ring: streams woken together wait for one
    /// read instead of each making their own.
    fill: tokio::sync::Mutex<()>,
    /// The log's `kind` label, and where its reads are counted.
    kind: &'static str,
    metrics: Arc<StreamMetrics>,
    /// Whose log it is, and where erasures of it are announced.
    carrier: CarrierId,
    feed: Feed,
}

impl<M: Send + Sync> Tail<M> {
    fn new(
        kind: &'static str,
        metrics: &Arc<StreamMetrics>,
        carrier: CarrierId,
        feed: Feed,
    ) -> Self {
        Self {
            ring: RwLock::new(Ring::default()),
            fill: tokio::sync::Mutex::new(()),
            kind,
            metrics: metrics.clone(),
            carrier,
            feed,
        }
    }

    fn erased_epoch(&self) -> u64 {
        self.feed.erased_epoch(self.carrier.as_str())
    }

    fn ring(&self) -> std::sync::RwLockReadGuard<'_, Ring<M>> {
        self.ring.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn ring_mut(&self) -> std::sync::RwLockWriteGuard<'_, Ring<M>> {
        self.ring.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Up to `max` entries after `after`. When the ring holds nothing after `after`, it first
    /// reads the database with `read` (given the ring's end): always when `target` (the newest
    /// position announced) is past the ring, at most every [`REFRESH`] when there is no target.
    /// `Behind` when the stream must read the database itself.
    pub(crate) async fn after<F, Fut>(
        &self,
        after: i64,
        target: Option<i64>,
        max: usize,
        read: F,
    ) -> ApiResult<Read<M>>
    where
        F: Fn(i64) -> Fut,
        Fut: Future<Output = ApiResult<Fill<M>>>,
    {
        let found = self.serve(after, target, max, read).await;
        if let Ok(found) = &found {
            let source = match found {
                Read::Entries { .. } => "tail",
                Read::Behind => "behind",
            };
            self.metrics.tail_read(self.kind, source);
        }
        found
    }

    async fn serve<F, Fut>(
        &self,
        after: i64,
        target: Option<i64>,
        max: usize,
        read: F,
    ) -> ApiResult<Read<M>>
    where
        F: Fn(i64) -> Fut,
        Fut: Future<Output = ApiResult<Fill<M>>>,
    {
        let epoch = self.erased_epoch();
        {
            let ring = self.ring();
            if ring.erased_epoch == epoch
                && let Some(found) = ring.after(after, max)
            {
                return Ok(found);
            }
        }
        let _filling = self.fill.lock().await;
        {
            let mut ring = self.ring_mut();
            if ring.erased_epoch != epoch {
                // Rows were redacted in place since the ring read them.
                *ring = Ring {
                    erased_epoch: epoch,
                    ..Ring::default()
                };
            }
            if ring.start.is_none() {
                // The first stream here positions the ring.
                ring.start = Some(after);
                ring.end = after;
            }
            if let Some(found) = ring.after(after, max) {
                return Ok(found);
            }
            let fresh = ring.filled.is_some_and(|t| t.elapsed() < REFRESH);
            let needed = match target {
                Some(t) => t > ring.end,
                None => !fresh,
            };
            if !needed {
                return Ok(Read::Entries {
                    entries: Vec::new(),
                    through: after,
                    more: false,
                });
            }
        }
        // Read until the ring reaches past `after` (a stream ahead of the ring, which read the
        // database itself, needs it to catch up) or the log has nothing more.
        loop {
            let end = self.ring().end;
            self.metrics.tail_read(self.kind, "fill");
            let fill = read(end).await?;
            if self.erased_epoch() != epoch {
                // An erasure committed during the read: its rows may predate it.
                return Ok(Read::Behind);
            }
            let progressed = !fill.entries.is_empty() || fill.through > end;
            let mut ring = self.ring_mut();
            ring.append(fill);
            if let Some(found) = ring.after(after, max) {
                return Ok(found);
            }
            if !progressed || ring.end >= after {
                return Ok(Read::Entries {
                    entries: Vec::new(),
                    through: after,
                    more: false,
                });
            }
        }
    }

    /// Appends `entries` (committed by a writer of this instance, ascending and contiguous)
    /// when they continue the ring exactly: the streams woken for them then find them here and
    /// nobody reads them back from the database. Anything else leaves the ring as it is (its
    /// streams read the database as before): a ring not positioned yet or ending elsewhere
    /// (another commit's entries were not offered yet, or it never reached this far), a fill
    /// under way (it reads these too), or an erasure epoch other than the one the write began
    /// under (the entries may predate a redaction).
    fn offer(&self, erased_epoch: u64, entries: impl FnOnce() -> Vec<Arc<Entry<M>>>) {
        if self.erased_epoch() != erased_epoch {
            return;
        }
        let Ok(_filling) = self.fill.try_lock() else {
            return;
        };
        let mut ring = self.ring_mut();
        if ring.start.is_none() || ring.erased_epoch != erased_epoch {
            return;
        }
        let entries = entries();
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        if first.position != ring.end + 1 {
            return;
        }
        let through = last.position;
        ring.append(Fill {
            entries,
            through,
            floor: 0,
        });
        drop(ring);
        self.metrics.tail_read(self.kind, "offered");
    }
}

/// Every log's tails on this instance.
#[derive(Debug)]
pub(crate) struct LogTails {
    /// Number events, for `WatchNumbers`.
    pub numbers: Tails<super::watch::EventMeta>,
    /// Call records, for following `StreamCallRecords`.
    pub calls: Tails<super::records::RecordMeta>,
    /// Quality records, for following `StreamQualityRecords`.
    pub quality: Tails<super::records::RecordMeta>,
}

impl LogTails {
    /// No tails yet; reads counted in `metrics`.
    pub(crate) fn new(metrics: &Arc<StreamMetrics>, feed: &Feed) -> Self {
        Self {
            numbers: Tails::new("number_events", metrics, feed),
            calls: Tails::new(LogKind::CallRecords.label(), metrics, feed),
            quality: Tails::new(LogKind::QualityRecords.label(), metrics, feed),
        }
    }
}

/// Number events committed on this instance go straight into their carrier's tail.
impl CommitObserver for LogTails {
    fn number_events(&self, carrier: &str, erased_epoch: u64, events: &[NumberEvent]) {
        if let Some(tail) = self.numbers.existing(carrier) {
            tail.offer(erased_epoch, || {
                events.iter().map(super::watch::entry).collect()
            });
        }
    }
}

/// The tails of one log for every carrier with an open stream on this instance.
#[derive(Debug)]
pub(crate) struct Tails<M> {
    by_carrier: Mutex<HashMap<CarrierId, Weak<Tail<M>>>>,
    kind: &'static str,
    metrics: Arc<StreamMetrics>,
    feed: Feed,
}

impl<M: Send + Sync> Tails<M> {
    fn new(kind: &'static str, metrics: &Arc<StreamMetrics>, feed: &Feed) -> Self {
        Self {
            by_carrier: Mutex::new(HashMap::new()),
            kind,
            metrics: metrics.clone(),
            feed: feed.clone(),
        }
    }

    /// `carrier`'s tail, if a stream holds one.
    fn existing(&self, carrier: &str) -> Option<Arc<Tail<M>>> {
        self.by_carrier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(carrier)
            .and_then(Weak::upgrade)
    }

    /// `carrier`'s tail, shared with its other streams; kept while a stream holds it.
    pub(crate) fn of(&self, carrier: &CarrierId) -> Arc<Tail<M>> {
        let mut map = self
            .by_carrier
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tail) = map.get(carrier).and_then(Weak::upgrade) {
            return tail;
        }
        if map.len() >= 64 && map.len().is_power_of_two() {
            map.retain(|_, tail| tail.strong_count() > 0);
        }
        let tail = Arc::new(Tail::new(
            self.kind,
            &self.metrics,
            carrier.clone(),
            self.feed.clone(),
        ));
        map.insert(carrier.clone(), Arc::downgrade(&tail));
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(position: i64) -> Arc<Entry<()>> {
        Arc::new(Entry {
            position,
            meta: (),
            item: Bytes::from(vec![0u8; 10]),
        })
    }

    fn fill(range: std::ops::RangeInclusive<i64>, floor: i64) -> Fill<()> {
        Fill {
            through: *range.end(),
            entries: range.map(entry).collect(),
            floor,
        }
    }

    fn positions(read: Read<()>) -> Option<Vec<i64>> {
        match read {
            Read::Entries { entries, .. } => Some(entries.iter().map(|e| e.position).collect()),
            Read::Behind => None,
        }
    }

    /// Streams woken together cause one database read; each gets the entries after its own
    /// position, and a stream before the ring is sent to the database.
    #[tokio::test]
    async fn one_read_serves_every_stream() {
        let tail = Tail::<()>::new(
            "test",
            &Arc::default(),
            CarrierId::parse("contoso").unwrap(),
            Feed::default(),
        );
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let read = |end: i64| {
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok(fill(end + 1..=12, 0)) }
        };
        let first = tail.after(10, Some(12), 100, read).await.unwrap();
        assert_eq!(positions(first), Some(vec![11, 12]));
        let second = tail.after(11, Some(12), 100, read).await.unwrap();
        assert_eq!(positions(second), Some(vec![12]));
        let caught_up = tail.after(12, Some(12), 100, read).await.unwrap();
        assert_eq!(positions(caught_up), Some(vec![]));
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(positions(tail.after(9, Some(12), 100, read).await.unwrap()).is_none());
    }

    /// A writer's entries go in only where they continue the ring, under the epoch the
    /// write began at; the streams then read them without a database read.
    #[tokio::test]
    async fn offers_continue_the_ring_or_are_left_out() {
        let feed = Feed::default();
        let carrier = CarrierId::parse("contoso").unwrap();
        let tail = Tail::<()>::new("test", &Arc::default(), carrier.clone(), feed.clone());
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let read = |end: i64| {
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok(fill(end + 1..=end, 0)) }
        };
        let offer = |range: std::ops::RangeInclusive<i64>, epoch: u64| {
            tail.offer(epoch, || range.map(entry).collect());
        };
        // Not positioned yet: nothing to continue.
        offer(1..=2, 0);
        assert_eq!(tail.ring().start, None);
        // A stream positions the ring at 5 (the log's end).
        let positioned = tail.after(5, None, 100, read).await.unwrap();
        assert_eq!(positions(positioned), Some(vec![]));
        let reads_before = reads.load(std::sync::atomic::Ordering::SeqCst);
        offer(7..=8, 0); // a gap: another commit (6) was not offered yet
        offer(6..=7, 1); // an erasure epoch the feed has not reached
        assert_eq!(tail.ring().end, 5);
        offer(6..=7, 0);
        let served = tail.after(5, Some(7), 100, read).await.unwrap();
        assert_eq!(positions(served), Some(vec![6, 7]));
        assert_eq!(
            reads.load(std::sync::atomic::Ordering::SeqCst),
            reads_before
        );
        // A write that began before an erasure committed is not taken.
        feed.erased(carrier.as_str());
        offer(8..=8, 0);
        assert_eq!(tail.ring().end, 7);
    }

    /// The ring keeps its bound; a stream left behind by it reads the database, and a purge
    /// past the ring restarts it.
    #[test]
    fn bounded_and_restarted_by_purges() {
        let mut ring = Ring::<()> {
            start: Some(0),
            ..Ring::default()
        };
        ring.append(fill(1..=(MAX_ENTRIES as i64 + 10), 0));
        assert_eq!(ring.entries.len(), MAX_ENTRIES);
        assert_eq!(ring.start, Some(10));
        assert!(matches!(ring.after(5, 10), Some(Read::Behind)));
        assert_eq!(positions(ring.after(10, 2).unwrap()), Some(vec![11, 12]));
        let end = ring.end;
        ring.append(fill(end + 50..=end + 51, end + 49));
        assert_eq!(ring.start, Some(end + 49));
        assert!(matches!(ring.after(end, 10), Some(Read::Behind)));
        assert_eq!(
            positions(ring.after(end + 49, 10).unwrap()),
            Some(vec![end + 50, end + 51])
        );
    }
}
