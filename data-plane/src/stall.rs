//! The send timeout: a write to a peer that makes no progress for this
//! long fails with `TimedOut`, so a client that stops reading (or a
//! backend at the far end of a tunnel) cannot hold a connection, and the
//! backend connection behind it, forever. Progress is any byte taken: the
//! clock starts at the first write that has to wait and stops at the next
//! that goes through (as nginx's `send_timeout`, between two successive
//! writes).
//!
//! [`SendTimeoutIo`] puts it in the write path of any IO (the connections
//! hyper's server serves, and so their upgraded tunnels); the inline
//! server, which writes to its socket itself, and tunnels' backend side
//! use [`WriteStall`] directly.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::lazy_timer::LazyTimer;

/// How long the writes to one peer have been waiting.
#[derive(Debug)]
pub struct WriteStall {
    timeout: Duration,
    /// When the current wait began; `None` while writes go through.
    since: Option<Instant>,
    timer: LazyTimer,
}

impl WriteStall {
    pub fn new(timeout: Duration) -> Self {
        WriteStall {
            timeout,
            since: None,
            timer: LazyTimer::new(),
        }
    }

    /// A write took bytes (or finished): the wait, if any, is over.
    #[inline]
    pub fn progressed(&mut self) {
        self.since = None;
    }

    /// A write has to wait: `Ready` with the error once it has waited for
    /// the timeout since the first write that had to.
    pub fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let since = *self.since.get_or_insert_with(Instant::now);
        let deadline = since + self.timeout;
        self.timer.arm(deadline);
        self.timer.poll_expired(deadline, cx).map(|()| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer took nothing for {:?} (send timeout)",
                    self.timeout
                ),
            )
        })
    }

    /// `polled`, a write's result, with the stall noted or turned into an
    /// error.
    pub fn check<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.poll_stalled(cx).map(Err),
            done => {
                self.progressed();
                done
            }
        }
    }
}

/// An IO whose writes fail after the send timeout without progress.
#[derive(Debug)]
pub struct SendTimeoutIo<I> {
    inner: I,
    stall: WriteStall,
}

impl<I> SendTimeoutIo<I> {
    pub fn new(inner: I, timeout: Duration) -> Self {
        SendTimeoutIo {
            inner,
            stall: WriteStall::new(timeout),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendTimeoutIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendTimeoutIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.stall.check(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.stall.check(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.stall.check(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that reads nothing: the writer fails after the timeout,
    /// not before; one that reads keeps it going.
    #[tokio::test]
    async fn a_write_without_progress_fails_after_the_timeout() {
        let (near, far) = tokio::io::duplex(1024);
        let mut io = SendTimeoutIo::new(near, Duration::from_millis(200));
        let started = Instant::now();
        let chunk = [7u8; 512];
        let failed = loop {
            if let Err(e) = io.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(failed.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        // A reader that keeps taking bytes, slower than the timeout in all
        // but never still for as long: no failure.
        let (near, mut far2) = tokio::io::duplex(64);
        let mut io = SendTimeoutIo::new(near, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let mut total = 0;
            while total < 640 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                total += far2.read(&mut buf).await.unwrap();
            }
        });
        io.write_all(&[1u8; 640]).await.unwrap();
        reader.await.unwrap();
        drop(far);
    }
}
