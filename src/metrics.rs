//! The server's own accounting of its streams: how many are open and how many bytes wait in
//! their channels. Slow readers must never make `buffered_bytes` grow without bound.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters shared by every stream of one server.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    open_streams: AtomicI64,
    buffered_bytes: AtomicI64,
    peak_buffered_bytes: AtomicI64,
    records_ingested: AtomicU64,
}

impl StreamMetrics {
    /// Streams currently open.
    pub fn open_streams(&self) -> i64 {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// Encoded bytes sitting in stream channels right now.
    pub fn buffered_bytes(&self) -> i64 {
        self.buffered_bytes.load(Ordering::Relaxed)
    }

    /// The highest `buffered_bytes` seen since start.
    pub fn peak_buffered_bytes(&self) -> i64 {
        self.peak_buffered_bytes.load(Ordering::Relaxed)
    }

    /// Records stored by ingestion.
    pub fn records_ingested(&self) -> u64 {
        self.records_ingested.load(Ordering::Relaxed)
    }

    /// Counts a stream as open until the returned guard is dropped, however the stream ends
    /// (a finished handler, an error, or hyper dropping the handler when the connection dies).
    pub(crate) fn open_stream(self: &std::sync::Arc<Self>) -> OpenStream {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    pub(crate) fn buffered(&self, bytes: i64) {
        let now = self.buffered_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak_buffered_bytes.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn unbuffered(&self, bytes: i64) {
        self.buffered_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub(crate) fn ingested(&self, records: u64) {
        self.records_ingested.fetch_add(records, Ordering::Relaxed);
    }
}

/// Keeps one stream counted in [`StreamMetrics::open_streams`] while alive.
#[derive(Debug)]
pub(crate) struct OpenStream(std::sync::Arc<StreamMetrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
