//! Upgraded connections (WebSocket and any other `Upgrade`): once the
//! backend answers 101, bytes are copied both ways until either side
//! closes (a half-close is passed on), nothing moves for the idle
//! timeout, or a side takes nothing of what is written to it for the send
//! timeout ([`crate::stall`]). Tunnels are tracked so shutdown can drain
//! them.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ns;
use crate::lazy_timer::LazyTimer;
use crate::registry::InFlight;
use crate::stall::WriteStall;

/// The set of open tunnels.
#[derive(Debug, Clone, Default)]
pub struct Tunnels {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tunnels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wait up to `period` for open tunnels to end by themselves, then
    /// close the rest. Returns whether all ended in time.
    pub async fn drain(&self, period: Duration) -> bool {
        self.tracker.close();
        let clean = tokio::time::timeout(period, self.tracker.wait())
            .await
            .is_ok();
        self.cancel.cancel();
        clean
    }

    /// Start the tunnel between the client's and the backend's upgraded
    /// connections; `(idle, send)`: its idle and send timeouts.
    pub fn spawn(
        &self,
        client: OnUpgrade,
        backend: OnUpgrade,
        (idle, send): (Duration, Duration),
        in_flight: InFlight,
        label: Arc<str>,
    ) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let _in_flight = in_flight;
            let (client, backend) = match tokio::try_join!(client, backend) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(backend = %label, error = %e, "upgrade failed");
                    return;
                }
            };
            let last = Arc::new(AtomicU64::new(now_ns()));
            let mut client = Activity::new(TokioIo::new(client), &last, send);
            let mut backend = Activity::new(TokioIo::new(backend), &last, send);
            let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
            tokio::pin!(copy);
            let tick = (idle / 4).max(Duration::from_millis(10));
            let mut timer = LazyTimer::new();
            loop {
                tokio::select! {
                    r = &mut copy => {
                        if let Err(e) = r {
                            tracing::debug!(backend = %label, error = %e, "tunnel closed with an error");
                        }
                        return;
                    }
                    () = cancel.cancelled() => return,
                    () = timer.expired(tokio::time::Instant::now() + tick) => {
                        let quiet = now_ns().saturating_sub(last.load(Ordering::Relaxed));
                        if quiet >= idle.as_nanos() as u64 {
                            tracing::debug!(backend = %label, "tunnel idle: closed");
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// An IO that records the time of its last successful read or write, and
/// fails a write that waits longer than the send timeout.
struct Activity<T> {
    io: T,
    last: Arc<AtomicU64>,
    stall: WriteStall,
}

impl<T> Activity<T> {
    fn new(io: T, last: &Arc<AtomicU64>, send: Duration) -> Self {
        Activity {
            io,
            last: Arc::clone(last),
            stall: WriteStall::new(send),
        }
    }

    fn touch(&self) {
        self.last.store(now_ns(), Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        this.stall.check(r, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.stall.check(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
