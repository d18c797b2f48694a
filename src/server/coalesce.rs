//! Write coalescing for served connections.
//!
//! Every stream of an HTTP/2 connection hands its frames to the connection's task, which writes
//! them and flushes. Under tokio's scheduler the connection task usually runs right after the
//! stream that woke it (the woken task goes first), so a change delivered to the 100 watch
//! streams of one connection became 100 flushes: 100 TLS records, 100 `writev` calls, and as
//! many wake-ups of the reader at the other end (one `writev` per delivery, measured on the
//! 1,000-watcher fan-out). [`Coalesced`] keeps what is written in a buffer and, on a flush,
//! first lets the runtime run what is already queued (once, through `yield_now`): the
//! connection's other streams add their frames meanwhile, and one write carries them all. A
//! flush is then late by at most one turn of the runtime's queue; a lone response on an idle
//! server goes out at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Past this many buffered bytes a write first drains the buffer to the connection: what waits
/// for a flush stays bounded, and a large message still streams out at the connection's pace.
const WRITE_THROUGH: usize = 64 * 1024;
/// A drained buffer keeps its allocation up to this size; a larger one is freed, so that an
/// idle connection holds no more than this.
const KEEP_CAPACITY: usize = 16 * 1024;

/// A connection whose writes are gathered until a flush, and whose flushes wait one turn of the
/// runtime so that writes of other streams join them.
#[derive(Debug)]
pub(crate) struct Coalesced<IO> {
    io: IO,
    buf: Vec<u8>,
    /// How much of `buf` was already written to `io`.
    written: usize,
    /// The pending flush has already let the runtime run once.
    yielded: bool,
}

impl<IO> Coalesced<IO> {
    pub(crate) fn new(io: IO) -> Self {
        Self {
            io,
            buf: Vec::new(),
            written: 0,
            yielded: false,
        }
    }
}

impl<IO: AsyncWrite + Unpin> Coalesced<IO> {
    /// Writes everything buffered to the connection.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room before a write when the buffer is full.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.len() >= WRITE_THROUGH {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesced<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        this.buf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        let mut total = 0;
        for buf in bufs {
            this.buf.extend_from_slice(buf);
            total += buf.len();
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() && !this.yielded {
            // Once to the back of the runtime's queue (`yield_now` wakes this task only after
            // the tasks already queued have run): other streams' frames join this write.
            this.yielded = true;
            let yielding = std::pin::pin!(tokio::task::yield_now());
            if yielding.poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection that counts the writes reaching it.
    #[derive(Default)]
    struct Counting {
        writes: usize,
        data: Vec<u8>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            this.data.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes reach the connection in order, gathered into one write per flush; past the
    /// bound they go through before more is taken; shutdown sends what is left.
    #[tokio::test]
    async fn writes_are_gathered_until_a_flush_and_kept_in_order() {
        let mut conn = Coalesced::new(Counting::default());
        for i in 0..10u8 {
            conn.write_all(&[i; 100]).await.unwrap();
        }
        assert_eq!(conn.io.writes, 0);
        conn.flush().await.unwrap();
        assert_eq!(conn.io.writes, 1);
        let expected: Vec<u8> = (0..10u8).flat_map(|i| [i; 100]).collect();
        assert_eq!(conn.io.data, expected);

        let big = vec![7u8; WRITE_THROUGH];
        conn.write_all(&big).await.unwrap();
        conn.write_all(&[8u8; 10]).await.unwrap();
        assert_eq!(conn.io.writes, 2, "a full buffer drains before taking more");
        conn.shutdown().await.unwrap();
        assert_eq!(conn.io.writes, 3);
        assert_eq!(conn.io.data.len(), 1_000 + WRITE_THROUGH + 10);
        assert!(
            conn.buf.capacity() <= KEEP_CAPACITY,
            "a large buffer is freed"
        );
    }

    /// Reads pass straight through.
    #[tokio::test]
    async fn reads_pass_through() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = Coalesced::new(server);
        let mut client = client;
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}
