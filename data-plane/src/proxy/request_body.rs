//! The request body sent upstream, with just enough bookkeeping to retry
//! safely.
//!
//! A body is never buffered. An empty body (most GETs) can be sent any
//! number of times. A non-empty body lives in a [`BodySlot`] shared by the
//! attempts: the first attempt that actually polls it takes it out, and
//! from then on the request can no longer be retried, because part of the
//! body may have reached a backend. An attempt that failed before polling
//! (a refused connection) leaves the body in the slot for the next one.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Holds a request body until one attempt starts streaming it. Locked once
/// per attempt of a request that has a body, never across requests.
#[derive(Debug)]
pub struct BodySlot {
    body: Mutex<Option<Incoming>>,
    hint: SizeHint,
}

impl BodySlot {
    /// Whether an attempt has taken (started streaming) the body.
    pub fn taken(&self) -> bool {
        self.body
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
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
    Streaming(Incoming),
    Gone,
}

/// Split a downstream body into what attempts share: `None` if it is
/// empty (freely repeatable), otherwise the slot.
pub fn share(body: Incoming) -> Option<Arc<BodySlot>> {
    if body.is_end_stream() {
        return None;
    }
    Some(Arc::new(BodySlot {
        hint: body.size_hint(),
        body: Mutex::new(Some(body)),
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Empty | State::Gone => return Poll::Ready(None),
                State::Streaming(body) => return Pin::new(body).poll_frame(cx),
                State::Waiting(slot) => {
                    // Another attempt already took it: nothing to send (that
                    // attempt's request is the one that counts).
                    this.state = match slot.take() {
                        Some(body) => State::Streaming(body),
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
            State::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Empty | State::Gone => SizeHint::with_exact(0),
            State::Waiting(slot) => slot.hint,
            State::Streaming(body) => body.size_hint(),
        }
    }
}
