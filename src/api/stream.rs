//! The one engine every server stream runs on: `WatchNumbers`, `StreamCallRecords`,
//! `StreamQualityRecords` and both `ListDiscrepancies`.
//!
//! A stream is a spawned producer feeding a small bounded channel that tonic drains at the
//! client's pace. The engine owns everything streams have in common: the channel, the carrier's
//! wake-ups (feed, status epoch, idle timer), the carrier re-check that ends every stream of a
//! suspended carrier, shutdown, client-gone detection, and the final status. A stream supplies
//! only a [`Source`]: what it reads next and how it encodes it.
//!
//! A carrier's read stream is also audited (DESIGN §8): opened with [`Streams::open_audited`],
//! it leaves one audit event when it ends, with the first and last position it delivered
//! ([`Source::positions`]), the records delivered and the final status.
//!
//! The final status travels beside the data channel, not in it: a producer that fails while
//! its reader has stopped reading (a full channel) still ends at once, and the reader gets the
//! status right after the messages already buffered, never a silent OK.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::Instrument;

use super::auth::Authorizer;
use super::limits::StreamPermit;
use super::tail::LogTails;
use crate::audit::Auditor;
use crate::domain::audit::AuditEvent;
use crate::domain::ids::CarrierId;
use crate::error::ApiError;
use crate::feed::{CarrierSignal, Feed};
use crate::metrics::StreamMetrics;

/// The response stream type of every server-streaming RPC.
pub(crate) type ServerStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// Messages waiting per stream. Together with HTTP/2 flow control this bounds what a client
/// that stops reading costs: this many messages, then the producer waits; the rest stays in
/// the database.
const BUFFER: usize = 2;

/// A message waiting in a stream's channel, with its encoded size (for the buffered-bytes
/// accounting). Boxed: a tokio channel allocates its slots 32 at a time whatever its bound,
/// so an unboxed 72-byte entry made every stream hold a 2.3 KB block while idle (heaptrack,
/// 10,000 idle watches); boxed, the block is 256 bytes.
type Queued<M> = Box<(i64, M)>;

/// What a [`Source`] produced on one read.
pub(crate) enum Step<M> {
    /// Send this message, then read again.
    Send(M),
    /// Nothing more for now: wait until the carrier's data moves, or the idle timer fires.
    CaughtUp,
    /// The stream is complete and ends with OK.
    End,
}

/// What a server stream reads and how it encodes it; the engine does the rest.
pub(crate) trait Source: Send + Sync + 'static {
    /// The response message.
    type Message: prost::Message + Send + 'static;

    /// What the stream carries, as the `kind` label of its metrics.
    const KIND: &'static str;

    /// Reads what comes next; `known` is the carrier's newest positions announced so far.
    /// Errors end the stream with their status.
    fn next(
        &mut self,
        known: &CarrierSignal,
    ) -> impl Future<Output = Result<Step<Self::Message>, ApiError>> + Send;

    /// Whether a carrier signal may mean there is something new to read after
    /// [`Step::CaughtUp`].
    fn woken_by(&self, _signal: &CarrierSignal) -> bool {
        false
    }

    /// How long a caught-up stream stays quiet before the engine re-checks the carrier, reads
    /// again (a notice from another instance may have been missed) and asks for [`Self::idle`].
    fn idle_after(&self) -> Duration;

    /// The message sent when a caught-up stream was quiet for [`Self::idle_after`] and the
    /// re-read found nothing (a progress checkpoint), if any.
    fn idle(&mut self) -> Option<Self::Message> {
        None
    }

    /// How many records or events `message` carries, and how far behind the newest known
    /// (`signal`, the carrier's latest published positions) it was sent, for the delivery
    /// metrics.
    fn delivered(&self, _message: &Self::Message, _signal: &CarrierSignal) -> (u64, Option<i64>) {
        (0, None)
    }

    /// The first and last cursor or revision of the records or events `message` carries, for
    /// the audit log; `None` when it carries none.
    fn positions(&self, _message: &Self::Message) -> Option<(i64, i64)> {
        None
    }
}

/// Why a producer stopped before its source ended.
enum Stop {
    /// The client went away: nothing more to send.
    ClientGone,
    /// End the stream with this error.
    Fail(ApiError),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Self::Fail(e)
    }
}

/// Opens server streams; one per service, cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Streams {
    auth: Authorizer,
    feed: Feed,
    /// Cancelled when the server shuts down: every stream then ends with UNAVAILABLE.
    shutdown: CancellationToken,
    metrics: Arc<StreamMetrics>,
    /// Every carrier's shared tails on this instance.
    tails: Arc<LogTails>,
    /// Where audited streams record their end; none: not audited.
    audit: Option<Auditor>,
}

impl Streams {
    /// An engine checking carriers with `auth`, woken by `feed`, ended by `shutdown`.
    pub(crate) fn new(
        auth: Authorizer,
        feed: Feed,
        shutdown: CancellationToken,
        metrics: Arc<StreamMetrics>,
    ) -> Self {
        let tails = Arc::new(LogTails::new(&metrics, &feed));
        let observer: Arc<dyn crate::feed::CommitObserver> = tails.clone();
        feed.observe(Arc::downgrade(&observer));
        Self {
            auth,
            tails,
            feed,
            shutdown,
            metrics,
            audit: None,
        }
    }

    /// The engine recording audited streams' ends with `auditor`.
    pub(crate) fn with_audit(mut self, auditor: Auditor) -> Self {
        self.audit = Some(auditor);
        self
    }

    /// Records `event` in the audit log, when this engine has one.
    pub(crate) async fn audit(&self, event: AuditEvent) {
        if let Some(auditor) = &self.audit {
            auditor.record(event).await;
        }
    }

    /// Waits until the audit events recorded so far are written.
    pub(crate) async fn flush_audit(&self) {
        if let Some(auditor) = &self.audit {
            auditor.flush().await;
        }
    }

    /// Like [`Streams::open`], and when the stream ends, records `read` (who, what, filters)
    /// in the audit log with the positions and count delivered and the final status.
    pub(crate) fn open_audited<S: Source>(
        &self,
        carrier: CarrierId,
        permit: Option<StreamPermit>,
        source: S,
        read: AuditEvent,
    ) -> ServerStream<S::Message> {
        self.start(carrier, permit, source, Some(read))
    }

    /// The shared tails of this instance's streams.
    pub(crate) fn tails(&self) -> &LogTails {
        &self.tails
    }

    /// Starts a stream about `carrier`'s data, produced by `source`, holding `permit` (a
    /// carrier's own streams count against its limit) until it ends. It ends when the source
    /// ends, fails, the client leaves, the server shuts down, or the carrier is suspended.
    pub(crate) fn open<S: Source>(
        &self,
        carrier: CarrierId,
        permit: Option<StreamPermit>,
        source: S,
    ) -> ServerStream<S::Message> {
        self.start(carrier, permit, source, None)
    }

    fn start<S: Source>(
        &self,
        carrier: CarrierId,
        permit: Option<StreamPermit>,
        source: S,
        read: Option<AuditEvent>,
    ) -> ServerStream<S::Message> {
        let (tx, rx) = mpsc::channel(BUFFER);
        let (end_tx, end_rx) = oneshot::channel::<Status>();
        // Subscribe before the source's first read, so no commit in between goes unnoticed.
        let mut signals = self.feed.subscribe(carrier.as_str());
        let status_epoch = signals.borrow_and_update().status_epoch;
        let carrier_label = carrier.clone();
        let mut producer = Producer {
            auth: self.auth.clone(),
            carrier,
            tx,
            signals,
            status_epoch,
            data_moved: false,
            shutdown: self.shutdown.clone(),
            metrics: self.metrics.clone(),
            delivered: Delivered::default(),
        };
        let audit = self.audit.clone().zip(read);
        let open = self.metrics.open_stream(S::KIND, carrier_label.as_str());
        tokio::spawn(
            async move {
                let code = match producer.run(source).await {
                    Ok(()) => tonic::Code::Ok,
                    Err(Stop::ClientGone) => tonic::Code::Cancelled,
                    Err(Stop::Fail(err)) => {
                        tracing::debug!(reason = err.reason().as_str(), "stream failed");
                        let status = Status::from(err);
                        let code = status.code();
                        // Nobody waits for it when the client has gone.
                        let _ = end_tx.send(status);
                        code
                    }
                };
                drop(open);
                drop(permit);
                if let Some((auditor, read)) = audit {
                    // Boxed, like every await a stream makes only once or rarely (see
                    // `recheck`): the task is sized for its largest await while it rests.
                    Box::pin(auditor.record(producer.delivered.into_event(read, code))).await;
                }
            }
            .instrument(tracing::Span::current()),
        );
        let metrics = self.metrics.clone();
        let data = ReceiverStream::new(rx).map(move |queued: Queued<S::Message>| {
            let (bytes, message) = *queued;
            metrics.unbuffered(bytes);
            Ok(message)
        });
        // A dropped sender (the source ended, or the client left) yields no item: OK.
        let end = futures::stream::once(end_rx).filter_map(|end| async move { end.ok().map(Err) });
        Box::pin(data.chain(end))
    }
}

/// One running stream.
struct Producer<M> {
    auth: Authorizer,
    carrier: CarrierId,
    tx: mpsc::Sender<Queued<M>>,
    signals: watch::Receiver<CarrierSignal>,
    /// The carrier's status epoch last checked; a new one means "re-check the carrier".
    status_epoch: u64,
    /// A data change was consumed while sending: read again before waiting.
    data_moved: bool,
    shutdown: CancellationToken,
    metrics: Arc<StreamMetrics>,
    /// What was sent so far, for the audit log.
    delivered: Delivered,
}

/// What a stream delivered: the first and last position, and how many records or events.
#[derive(Debug, Default)]
struct Delivered {
    first: Option<i64>,
    last: Option<i64>,
    records: u64,
}

impl Delivered {
    /// The audit event `read` completed with what was delivered and the final `code`.
    fn into_event(self, mut read: AuditEvent, code: tonic::Code) -> AuditEvent {
        read.time_ms = crate::store::now_ms();
        read.outcome = crate::rpc_log::code_name(code).to_owned();
        read.first_position = self.first;
        read.last_position = self.last;
        read.record_count = i64::try_from(self.records).unwrap_or(i64::MAX);
        read
    }
}

impl<M: prost::Message + Send + 'static> Producer<M> {
    async fn run<S: Source<Message = M>>(&mut self, mut source: S) -> Result<(), Stop> {
        let mut idle_due = Instant::now() + source.idle_after();
        // Whether the idle timer fired and nothing was sent since.
        let mut quiet = false;
        loop {
            self.recheck_if_changed().await?;
            let known = *self.signals.borrow();
            // Boxed: a stream rests in `wait`, and an inline `next` (reads, fills) would size
            // every resting stream for its largest read.
            match Box::pin(source.next(&known)).await? {
                Step::Send(message) => {
                    let (records, lag) = source.delivered(&message, &self.signals.borrow());
                    let positions = source.positions(&message);
                    self.send(message).await?;
                    if records > 0 {
                        self.metrics.delivered(S::KIND, records, lag);
                    }
                    if let Some((first, last)) = positions {
                        self.delivered.first.get_or_insert(first);
                        self.delivered.last = Some(last);
                    }
                    self.delivered.records += records;
                    idle_due = Instant::now() + source.idle_after();
                    quiet = false;
                }
                Step::End => return Ok(()),
                Step::CaughtUp if std::mem::take(&mut self.data_moved) => {}
                Step::CaughtUp => {
                    if std::mem::take(&mut quiet)
                        && let Some(message) = source.idle()
                    {
                        self.send(message).await?;
                        idle_due = Instant::now() + source.idle_after();
                    }
                    if self.wait(&source, idle_due).await? {
                        quiet = true;
                        idle_due = Instant::now() + source.idle_after();
                    }
                }
            }
        }
    }

    /// Waits until the source may have something new; returns whether the idle timer fired.
    async fn wait<S: Source>(&mut self, source: &S, idle_due: Instant) -> Result<bool, Stop> {
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(ApiError::ShuttingDown.into()),
                () = self.tx.closed() => return Err(Stop::ClientGone),
                changed = self.signals.changed() => {
                    if changed.is_err() {
                        return Err(ApiError::Internal("change feed closed".into()).into());
                    }
                    let signal = *self.signals.borrow_and_update();
                    if signal.status_epoch != self.status_epoch {
                        // A status change, or a wake-up after missed notices: re-check the
                        // carrier and read again.
                        self.status_epoch = signal.status_epoch;
                        self.recheck().await?;
                        return Ok(false);
                    }
                    if source.woken_by(&signal) {
                        return Ok(false);
                    }
                }
                () = sleep_until(idle_due) => {
                    // Also catches a suspension made, or a notice missed, on another instance.
                    self.recheck().await?;
                    return Ok(true);
                }
            }
        }
    }

    /// Sends one message, waiting for room while watching shutdown and the carrier's status,
    /// so that a suspension ends even a stream whose reader stopped reading.
    async fn send(&mut self, message: M) -> Result<(), Stop> {
        let bytes = i64::try_from(message.encoded_len()).unwrap_or(i64::MAX);
        self.metrics.buffered(bytes);
        let result = self.send_counted(bytes, message).await;
        if result.is_err() {
            self.metrics.unbuffered(bytes);
        }
        result
    }

    async fn send_counted(&mut self, bytes: i64, message: M) -> Result<(), Stop> {
        // Room right away (the usual case: the reader keeps up): no waiting, nothing to watch.
        match self.tx.try_reserve() {
            Ok(permit) => {
                permit.send(Box::new((bytes, message)));
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Stop::ClientGone),
            Err(mpsc::error::TrySendError::Full(())) => {}
        }
        let permit = loop {
            tokio::select! {
                permit = self.tx.reserve() => break permit.map_err(|_| Stop::ClientGone)?,
                () = self.shutdown.cancelled() => return Err(ApiError::ShuttingDown.into()),
                changed = self.signals.changed() => {
                    if changed.is_err() {
                        return Err(ApiError::Internal("change feed closed".into()).into());
                    }
                    // A status change is checked now; a data change is remembered, so the
                    // stream reads again before it waits.
                    let epoch = self.signals.borrow_and_update().status_epoch;
                    self.data_moved = true;
                    if epoch != self.status_epoch {
                        self.status_epoch = epoch;
                        self.recheck().await?;
                    }
                }
            }
        };
        permit.send(Box::new((bytes, message)));
        Ok(())
    }

    /// Re-checks the carrier if its status epoch moved since the last check.
    /// (`borrow` leaves the change unseen, so a data change still wakes [`Self::wait`].)
    async fn recheck_if_changed(&mut self) -> Result<(), Stop> {
        let epoch = self.signals.borrow().status_epoch;
        if epoch != self.status_epoch {
            self.status_epoch = epoch;
            self.recheck().await?;
        }
        Ok(())
    }

    /// Ends the stream unless the carrier is still registered and active.
    async fn recheck(&self) -> Result<(), Stop> {
        // Boxed: the check may read the database, and that read, inline, would size every
        // resting stream's task for it (it is awaited from `wait`, where streams rest).
        Box::pin(self.auth.active_carrier(&self.carrier)).await?;
        Ok(())
    }
}
