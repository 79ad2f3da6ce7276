//! Relaying a backend's 1xx informational responses (103 Early Hints, 102)
//! to HTTP/1.1 clients.
//!
//! hyper's server has no way to send a 1xx before the final response, so the
//! listener wraps every client connection in [`InterimIo`] and the proxy
//! hands the serialised 1xx heads to the connection's [`Interim`]; the
//! wrapper writes them to the socket between hyper's own writes, at a point
//! where nothing of another message can be cut in two:
//!
//! * hyper polls a request's service only once the previous response is
//!   wholly in its write buffer, and calls the socket's `poll_flush` only
//!   once that buffer is empty. So after the first flush that follows the
//!   moment a request was armed, every byte hyper writes belongs to this
//!   request's answer.
//! * an interim is written during such a flush, or just before hyper's
//!   first write after one (its first write after a flush starts a
//!   message). Anything else drops the interim rather than risk the stream:
//!   a hint is only a hint.
//!
//! Only requests over HTTP/1.1 are armed (HTTP/1.0 clients must not get a
//! 1xx; hyper's HTTP/2 server cannot send one), and `100 Continue` is
//! answered by hyper itself, never relayed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use atomic_waker::AtomicWaker;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http1::response;

/// Most bytes of 1xx heads queued for one client connection (on either
/// server), past which more are dropped.
pub const MAX_QUEUED: usize = 64 * 1024;

/// The 1xx channel of one client connection, shared by its socket wrapper
/// and the requests served on it.
#[derive(Debug, Default)]
pub struct Interim {
    /// How many times the connection flushed (hyper's buffer was empty).
    flushes: AtomicU64,
    /// `0`: no request wants 1xx relayed; else 1 + the flush count when
    /// the request in flight was armed.
    armed: AtomicU64,
    /// Something waits in `queued` (checked before taking the lock).
    has_queued: AtomicBool,
    queued: Mutex<Queued>,
    /// Wakes the connection task to write a queued interim.
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct Queued {
    bytes: Vec<u8>,
    /// Written only once the connection flushed more often than this.
    after_flush: u64,
}

impl Interim {
    pub fn new() -> Arc<Self> {
        Arc::new(Interim::default())
    }

    /// Let 1xx responses through for the request in flight until the guard
    /// is dropped (when its final response is known).
    pub fn arm(self: &Arc<Self>) -> Armed {
        let epoch = self.flushes.load(Ordering::Acquire);
        self.armed.store(epoch + 1, Ordering::Release);
        Armed(Arc::clone(self))
    }

    /// Queue one informational response for the client, if a request is
    /// armed. Called by the client connection as the 1xx arrives.
    fn relay(&self, status: StatusCode, upstream_headers: &HeaderMap, request_id: &HeaderValue) {
        let armed = self.armed.load(Ordering::Acquire);
        if armed == 0 {
            return;
        }
        let mut head = upstream_headers.clone();
        response::forward_response(&mut head, request_id);
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        // A client that does not read while a backend sends 1xx after 1xx:
        // past the bound they are dropped (a hint is only a hint).
        if queued.bytes.len() > MAX_QUEUED {
            tracing::debug!("informational response dropped: the client is not reading");
            return;
        }
        if queued.bytes.is_empty() {
            queued.after_flush = armed - 1;
        }
        write_head(&mut queued.bytes, status, &head);
        drop(queued);
        self.has_queued.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Take what is queued if the connection flushed since it was armed;
    /// drop it otherwise (`usable` false: not at a message boundary).
    fn take(&self, usable: bool) -> Option<Vec<u8>> {
        if !self.has_queued.load(Ordering::Acquire) {
            return None;
        }
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        self.has_queued.store(false, Ordering::Release);
        let bytes = std::mem::take(&mut queued.bytes);
        let flushed_since = self.flushes.load(Ordering::Acquire) > queued.after_flush;
        if usable && flushed_since && !bytes.is_empty() {
            Some(bytes)
        } else {
            if !bytes.is_empty() {
                tracing::debug!("informational response dropped: not at a message boundary");
            }
            None
        }
    }
}

/// While alive, the connection's 1xx relay is on (see [`Interim::arm`]).
#[derive(Debug)]
pub struct Armed(Arc<Interim>);

impl Armed {
    /// Ask hyper's client to hand every 1xx of `req`'s response to the
    /// client connection (`100` and `101` excepted: hyper answers
    /// `Expect: 100-continue` itself, and `101` is a final answer here).
    pub fn attach<B>(&self, req: &mut http::Request<B>, request_id: &HeaderValue) {
        let (interim, request_id) = (Arc::clone(&self.0), request_id.clone());
        hyper::ext::on_informational(req, move |res| {
            relay_informational(&interim, res.status(), res.headers(), &request_id);
        });
    }

    /// Hand one 1xx head to the client connection (the inline client's
    /// counterpart of [`Armed::attach`]).
    pub fn relay(&self, status: StatusCode, headers: &HeaderMap, request_id: &HeaderValue) {
        relay_informational(&self.0, status, headers, request_id);
    }
}

fn relay_informational(
    interim: &Interim,
    status: StatusCode,
    headers: &HeaderMap,
    request_id: &HeaderValue,
) {
    if status != StatusCode::CONTINUE && status != StatusCode::SWITCHING_PROTOCOLS {
        interim.relay(status, headers, request_id);
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.0.armed.store(0, Ordering::Release);
    }
}

/// `HTTP/1.1 103 Early Hints` and its header lines.
fn write_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A client connection's socket with the 1xx relay of [`Interim`] in its
/// write path. Reads pass straight through.
#[derive(Debug)]
pub struct InterimIo<I> {
    inner: I,
    interim: Arc<Interim>,
    /// Nothing was written since the last flush: hyper's next write starts
    /// a message.
    clean: bool,
    /// An interim being written (bytes, how far).
    out: Option<(Vec<u8>, usize)>,
}

impl<I> InterimIo<I> {
    pub fn new(inner: I, interim: Arc<Interim>) -> Self {
        InterimIo {
            inner,
            interim,
            clean: true,
            out: None,
        }
    }
}

impl<I: AsyncWrite + Unpin> InterimIo<I> {
    /// Write out the queued interim, if it may go out now.
    fn poll_interim(&mut self, cx: &mut Context<'_>, usable: bool) -> Poll<io::Result<()>> {
        if self.out.is_none() {
            match self.interim.take(usable) {
                Some(bytes) => self.out = Some((bytes, 0)),
                None => return Poll::Ready(Ok(())),
            }
        }
        while let Some((bytes, done)) = &mut self.out {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
            if *done == bytes.len() {
                self.out = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for InterimIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for InterimIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let usable = this.clean;
        ready!(this.poll_interim(cx, usable))?;
        this.clean = false;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let usable = this.clean;
        ready!(this.poll_interim(cx, usable))?;
        this.clean = false;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper flushes the socket only with its own buffer empty.
        this.clean = true;
        this.interim.flushes.fetch_add(1, Ordering::AcqRel);
        if this.interim.armed.load(Ordering::Acquire) != 0 {
            this.interim.waker.register(cx.waker());
        }
        ready!(this.poll_interim(cx, true))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("link", HeaderValue::from_static("</app.css>; rel=preload"));
        h.insert("connection", HeaderValue::from_static("x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h
    }

    #[test]
    fn nothing_is_queued_unless_armed() {
        let interim = Interim::new();
        interim.relay(
            StatusCode::EARLY_HINTS,
            &hints(),
            &HeaderValue::from_static("r"),
        );
        assert!(interim.take(true).is_none());
    }

    #[test]
    fn an_armed_hint_waits_for_a_flush_and_is_cleaned() {
        let interim = Interim::new();
        let armed = interim.arm();
        interim.relay(
            StatusCode::EARLY_HINTS,
            &hints(),
            &HeaderValue::from_static("r"),
        );
        // Not flushed since arming: hyper might still hold another message.
        assert!(interim.take(true).is_none());

        interim.relay(
            StatusCode::EARLY_HINTS,
            &hints(),
            &HeaderValue::from_static("r"),
        );
        interim.flushes.fetch_add(1, Ordering::AcqRel);
        let bytes = String::from_utf8(interim.take(true).expect("queued")).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{bytes}");
        assert!(
            bytes.contains("link: </app.css>; rel=preload\r\n"),
            "{bytes}"
        );
        assert!(!bytes.contains("x-secret"), "{bytes}");
        assert!(bytes.ends_with("\r\n\r\n"), "{bytes}");

        drop(armed);
        interim.relay(
            StatusCode::EARLY_HINTS,
            &hints(),
            &HeaderValue::from_static("r"),
        );
        assert!(interim.take(true).is_none(), "disarmed");
    }

    #[test]
    fn a_hint_not_at_a_boundary_is_dropped() {
        let interim = Interim::new();
        let _armed = interim.arm();
        interim.flushes.fetch_add(1, Ordering::AcqRel);
        interim.relay(
            StatusCode::EARLY_HINTS,
            &hints(),
            &HeaderValue::from_static("r"),
        );
        assert!(interim.take(false).is_none());
        assert!(interim.take(true).is_none(), "dropped, not kept");
    }
}
