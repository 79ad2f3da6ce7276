//! The response body the proxy returns: either the upstream's body streamed
//! frame by frame (never collected), or a small body the gateway made.
//!
//! An upstream body that pauses longer than the upstream's `body_idle_ms`
//! fails with [`BodyIdle`], which aborts the client's response: a client
//! never gets a clean but short answer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::registry::InFlight;

/// Errors of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream stopped sending in the middle of a response body.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body idle for more than {0:?}")]
pub struct BodyIdle(pub Duration);

#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// The upstream response; the backend's in-flight count drops when the
    /// body is finished or abandoned.
    Upstream {
        body: Incoming,
        _in_flight: InFlight,
        idle: Duration,
        /// Created the first time the body has to wait.
        timer: Option<Pin<Box<Sleep>>>,
    },
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn upstream(body: Incoming, in_flight: InFlight, idle: Duration) -> Self {
        ProxyBody {
            kind: Kind::Upstream {
                body,
                _in_flight: in_flight,
                idle,
                timer: None,
            },
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    pub fn empty() -> Self {
        ProxyBody {
            kind: Kind::Full(None),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Upstream {
                body, idle, timer, ..
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(t) = timer {
                        t.as_mut().reset(Instant::now() + *idle);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => {
                    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*idle)));
                    match t.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(BodyIdle(*idle).into()))),
                        Poll::Pending => Poll::Pending,
                    }
                }
            },
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
