//! The request body sent upstream, with just enough bookkeeping to retry
//! safely and to enforce the route's body limit while streaming.
//!
//! A body is never buffered. An empty body (most GETs) can be sent any
//! number of times. A non-empty body lives in a [`BodySlot`] shared by the
//! attempts: the first attempt that actually polls it takes it out, and
//! from then on the request can no longer be retried, because part of the
//! body may have reached a backend. An attempt that failed before polling
//! (a refused connection) leaves the body in the slot for the next one.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::body::BoxError;

/// The client sent more body than the route allows.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Holds a request body until one attempt starts streaming it. Locked once
/// per attempt of a request that has a body, never across requests.
#[derive(Debug)]
pub struct BodySlot {
    body: Mutex<Option<Incoming>>,
    hint: SizeHint,
    limit: u64,
    too_large: AtomicBool,
    /// Bytes streamed upstream (for the access log).
    sent: AtomicU64,
}

impl BodySlot {
    /// Whether an attempt has taken (started streaming) the body.
    pub fn taken(&self) -> bool {
        self.body
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Bytes of body streamed upstream so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Whether streaming stopped because the body passed the limit.
    pub fn too_large(&self) -> bool {
        self.too_large.load(Ordering::Relaxed)
    }

    fn take(&self) -> Option<Incoming> {
        self.body.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
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
        body: Incoming,
        slot: Arc<BodySlot>,
        seen: u64,
    },
    Gone,
}

/// Split a downstream body into what attempts share: `None` if it is
/// empty (freely repeatable), otherwise the slot. `limit` is the most
/// bytes the body may have.
pub fn share(body: Incoming, limit: u64) -> Option<Arc<BodySlot>> {
    if body.is_end_stream() {
        return None;
    }
    Some(Arc::new(BodySlot {
        hint: body.size_hint(),
        body: Mutex::new(Some(body)),
        limit,
        too_large: AtomicBool::new(false),
        sent: AtomicU64::new(0),
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
                State::Streaming { body, slot, seen } => {
                    return match Pin::new(body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            let n = frame.data_ref().map_or(0, |d| d.remaining() as u64);
                            *seen += n;
                            slot.sent.fetch_add(n, Ordering::Relaxed);
                            if *seen > slot.limit {
                                slot.too_large.store(true, Ordering::Relaxed);
                                Poll::Ready(Some(Err(BodyTooLarge(slot.limit).into())))
                            } else {
                                Poll::Ready(Some(Ok(frame)))
                            }
                        }
                        Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                        other => other.map_err(Into::into),
                    };
                }
                State::Waiting(slot) => {
                    // Another attempt already took it: nothing to send (that
                    // attempt's request is the one that counts).
                    let slot = Arc::clone(slot);
                    this.state = match slot.take() {
                        Some(body) => State::Streaming {
                            body,
                            slot,
                            seen: 0,
                        },
                        None => State::Gone,
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Empty | State::Gone => true,
            State::Waiting(_) => false,
            State::Streaming { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Empty | State::Gone => SizeHint::with_exact(0),
            State::Waiting(slot) => slot.hint,
            State::Streaming { body, .. } => body.size_hint(),
        }
    }
}
