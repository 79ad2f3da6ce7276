//! The request body sent upstream, with just enough bookkeeping to retry
//! safely, to enforce the route's body limit while streaming, and to tell
//! a client's fault from a backend's.
//!
//! A body is never buffered. An empty body (most GETs) can be sent any
//! number of times. A non-empty body lives in a [`BodySlot`] shared by the
//! attempts: the first attempt that actually polls it takes it out, and
//! from then on the request can no longer be retried, because part of the
//! body may have reached a backend. An attempt that failed before polling
//! (a refused connection) leaves the body in the slot for the next one.
//!
//! When the client's side of the body fails — a malformed or truncated
//! body, a client that went away, one that stalls longer than the client
//! body timeout, more than the limit — the slot says so ([`BodySlot::fault`])
//! before the attempt sees the error: the request is then answered as the
//! client's fault (400, 408, 413) and nothing is held against the backend.
//! The slot also says whose turn it is while the body is sent
//! ([`BodySlot::sending`]): the response-header timeout runs from when the
//! body was sent whole, or from the last piece a backend took while the
//! client had more.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::BoxError;
use crate::clock::now_ns;
use crate::lazy_timer::LazyTimer;

/// The client sent more body than the route allows.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client's body failed: malformed, cut short, or abandoned.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyFailed(#[source] pub hyper::Error);

/// The client sent no more of its body for this long.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of its request body for {0:?}")]
pub struct ClientBodyStalled(pub Duration);

/// How the client's side of a body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// More than the route's limit.
    TooLarge = 1,
    /// Malformed or truncated, or the client went away.
    Failed = 2,
    /// Nothing more for the client body timeout.
    Stalled = 3,
}

/// A request body, shared by its attempts: the first that polls it takes
/// it. Its lock is taken per poll of a request that has a body, never
/// across requests.
#[derive(Debug)]
pub struct BodySlot {
    /// The client's body; polled under the lock (uncontended but for an
    /// [`BodySlot::abandon`]), so that it can be let go whoever streams it.
    body: Mutex<Option<Incoming>>,
    /// An attempt has started streaming it.
    taken: AtomicBool,
    hint: SizeHint,
    limit: u64,
    /// Longest pause between two pieces of the client's body.
    idle: Duration,
    /// A [`BodyFault`], or 0.
    fault: AtomicU8,
    /// Bytes streamed upstream (for the access log).
    sent: AtomicU64,
    /// When the whole body had been handed on ([`now_ns`]), or 0.
    sent_at: AtomicU64,
    /// When a piece of it was last handed on (or the request came).
    progress_at: AtomicU64,
    /// Whether the client owes the next piece (see [`ClientNotice`]).
    notice: Arc<ClientNotice>,
    /// `notice` as the waker the client's body is polled with.
    waker: Waker,
}

/// Whose turn it is while a body is sent: the client's (the last poll
/// found no piece: its stall is timed by the client body timeout) until
/// the client's body wakes its poller — a piece (or the end) is there,
/// and it is the backend's turn to take it. The client's body is polled
/// with this as its waker, so the turn passes at the wake-up even when
/// the backend's side, stuck writing, does not poll again.
#[derive(Debug, Default)]
struct ClientNotice {
    owes: AtomicBool,
    /// Who polls the body (hyper's client connection).
    poller: AtomicWaker,
}

impl Wake for ClientNotice {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.owes.store(false, Ordering::Release);
        self.poller.wake();
    }
}

impl BodySlot {
    /// Whether an attempt has taken (started streaming) the body.
    pub fn taken(&self) -> bool {
        self.taken.load(Ordering::Acquire)
    }

    /// The request is over without the body sent whole (the gateway
    /// answered it with an error): the client's body is let go, so its
    /// connection is not held for the rest of it, whatever the attempt
    /// that took it (hyper's client, holding it while a backend reads
    /// nothing) does next.
    pub fn abandon(&self) {
        drop(self.lock().take());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        self.body.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of body streamed upstream so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Why streaming stopped on the client's side, if it did.
    pub fn fault(&self) -> Option<BodyFault> {
        match self.fault.load(Ordering::Acquire) {
            1 => Some(BodyFault::TooLarge),
            2 => Some(BodyFault::Failed),
            3 => Some(BodyFault::Stalled),
            _ => None,
        }
    }

    /// When the whole body had been handed on (on [`now_ns`]'s clock).
    fn sent_at_ns(&self) -> Option<u64> {
        match self.sent_at.load(Ordering::Acquire) {
            0 => None,
            at => Some(at),
        }
    }

    /// Where sending the body stands: `Sent(at)` once whole; else whether
    /// it waits on the client (`Client`) or on the backend to take it
    /// (`Backend(since)`: nothing handed on since then).
    pub fn sending(&self) -> Sending {
        if let Some(at) = self.sent_at_ns() {
            Sending::Sent(at)
        } else if self.notice.owes.load(Ordering::Acquire) {
            Sending::Client
        } else {
            Sending::Backend(self.progress_at.load(Ordering::Acquire))
        }
    }

    fn set_fault(&self, fault: BodyFault) {
        self.fault.store(fault as u8, Ordering::Release);
    }

    /// Take the body for an attempt: only the first gets it.
    fn take(&self) -> bool {
        !self.taken.swap(true, Ordering::AcqRel)
    }
}

/// Where sending a body stands (see [`BodySlot::sending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// Sent whole at this time ([`now_ns`]).
    Sent(u64),
    /// Waiting for the client's next piece.
    Client,
    /// Waiting for the backend to take more; the last piece went at this
    /// time.
    Backend(u64),
}

/// The body of one upstream attempt.
#[derive(Debug)]
pub struct RequestBody {
    state: State,
}

#[derive(Debug)]
enum State {
    Empty,
    Waiting(Arc<BodySlot>),
    Streaming {
        slot: Arc<BodySlot>,
        seen: u64,
        /// The client body timeout: when it runs out (set the first time
        /// the body waits, moved on by each piece), and its timer, moved
        /// only when it fires early (see [`LazyTimer`]).
        due: Option<Instant>,
        idle: LazyTimer,
    },
    Gone,
}

/// Split a downstream body into what attempts share: `None` if it is
/// empty (freely repeatable), otherwise the slot. `limit` is the most
/// bytes the body may have, `idle` the longest pause in it.
pub fn share(body: Incoming, limit: u64, idle: Duration) -> Option<Arc<BodySlot>> {
    if body.is_end_stream() {
        return None;
    }
    let notice = Arc::new(ClientNotice::default());
    Some(Arc::new(BodySlot {
        hint: body.size_hint(),
        body: Mutex::new(Some(body)),
        taken: AtomicBool::new(false),
        limit,
        idle,
        fault: AtomicU8::new(0),
        sent: AtomicU64::new(0),
        sent_at: AtomicU64::new(0),
        progress_at: AtomicU64::new(now_ns()),
        waker: Waker::from(Arc::clone(&notice)),
        notice,
    }))
}

impl RequestBody {
    /// The body for one attempt.
    pub fn attempt(slot: Option<&Arc<BodySlot>>) -> Self {
        RequestBody {
            state: match slot {
                None => State::Empty,
                Some(s) => State::Waiting(Arc::clone(s)),
            },
        }
    }
}

/// The client let go of: the request is over (see [`BodySlot::abandon`]).
#[derive(Debug, thiserror::Error)]
#[error("the request ended before its body was sent")]
pub struct Abandoned;

/// One poll of the client's body, with the slot kept up to date.
fn poll_client(
    slot: &BodySlot,
    seen: &mut u64,
    due: &mut Option<Instant>,
    idle: &mut LazyTimer,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    let mut body = slot.lock();
    let Some(body) = body.as_mut() else {
        return Poll::Ready(Some(Err(Abandoned.into())));
    };
    // Owed until the body wakes its poller (through `slot.waker`).
    slot.notice.poller.register(cx.waker());
    slot.notice.owes.store(true, Ordering::Release);
    let polled = Pin::new(&mut *body).poll_frame(&mut Context::from_waker(&slot.waker));
    if polled.is_ready() {
        slot.notice.owes.store(false, Ordering::Release);
    }
    match polled {
        Poll::Ready(Some(Ok(frame))) => {
            slot.progress_at.store(now_ns(), Ordering::Release);
            let n = frame.data_ref().map_or(0, |d| d.remaining() as u64);
            *seen += n;
            slot.sent.fetch_add(n, Ordering::Relaxed);
            if *seen > slot.limit {
                slot.set_fault(BodyFault::TooLarge);
                return Poll::Ready(Some(Err(BodyTooLarge(slot.limit).into())));
            }
            if due.is_some() {
                *due = Some(Instant::now() + slot.idle);
            }
            if body.is_end_stream() {
                slot.sent_at.store(now_ns(), Ordering::Release);
            }
            Poll::Ready(Some(Ok(frame)))
        }
        Poll::Ready(Some(Err(e))) => {
            slot.set_fault(BodyFault::Failed);
            Poll::Ready(Some(Err(ClientBodyFailed(e).into())))
        }
        Poll::Ready(None) => {
            slot.sent_at.store(now_ns(), Ordering::Release);
            Poll::Ready(None)
        }
        Poll::Pending => {
            let deadline = *due.get_or_insert_with(|| Instant::now() + slot.idle);
            match idle.poll_expired(deadline, cx) {
                Poll::Ready(()) => {
                    slot.set_fault(BodyFault::Stalled);
                    Poll::Ready(Some(Err(ClientBodyStalled(slot.idle).into())))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Empty | State::Gone => return Poll::Ready(None),
                State::Streaming {
                    slot,
                    seen,
                    due,
                    idle,
                } => return poll_client(slot, seen, due, idle, cx),
                State::Waiting(slot) => {
                    // Another attempt already took it: nothing to send (that
                    // attempt's request is the one that counts).
                    let slot = Arc::clone(slot);
                    this.state = if slot.take() {
                        State::Streaming {
                            slot,
                            seen: 0,
                            due: None,
                            idle: LazyTimer::new(),
                        }
                    } else {
                        State::Gone
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Empty | State::Gone => true,
            State::Waiting(_) => false,
            // Let go of: not an end (the next poll fails the attempt, so
            // that a backend never takes a cut body for a whole one).
            State::Streaming { slot, .. } => slot.lock().as_ref().is_some_and(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Empty | State::Gone => SizeHint::with_exact(0),
            State::Waiting(slot) => slot.hint,
            State::Streaming { slot, .. } => slot
                .lock()
                .as_ref()
                .map_or(SizeHint::with_exact(0), Body::size_hint),
        }
    }
}
