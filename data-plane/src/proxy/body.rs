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

use crate::BoxError;
use crate::access_log;
use crate::recover;
use crate::registry::InFlight;
use crate::transport::h1;
use crate::transport::pool::Lent;

/// The upstream stopped sending in the middle of a response body.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body idle for more than {0:?}")]
pub struct BodyIdle(pub Duration);

#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    /// Written when the body is done (only when access logging is on), so
    /// it carries the real byte counts and duration.
    access: Option<AccessEntry>,
    /// Panic when polled (test builds, see [`super::fault`]).
    #[cfg(feature = "fault-injection")]
    fault: bool,
}

/// A request's access-log record, and where its request body's bytes are
/// counted.
#[derive(Debug)]
pub struct AccessEntry {
    pub record: Box<access_log::Record>,
    pub request_body: Option<std::sync::Arc<crate::transport::request_body::BodySlot>>,
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Kind::Upstream {
            body,
            in_flight,
            ended,
            ..
        } = &mut self.kind
            && (*ended || body.is_end_stream())
        {
            // Read to its end: the connection can carry the next request.
            let pool = in_flight.state().pool();
            match body {
                Upstream::Hyper(_, lent) => {
                    if let Some(lent) = lent.take() {
                        lent.give_back(pool);
                    }
                }
                Upstream::Inline(body) => {
                    if let Some(conn) = body.take().and_then(h1::ResponseBody::into_reusable) {
                        pool.give_back_bare(conn);
                    }
                }
            }
        }
        let Some(AccessEntry {
            mut record,
            request_body,
        }) = self.access.take()
        else {
            return;
        };
        record.bytes_in = request_body.as_ref().map_or(0, |b| b.sent());
        record.complete = match self.kind {
            Kind::Failed(_) => false,
            Kind::Full(None) => true,
            _ => self.is_end_stream(),
        };
        record.submit();
    }
}

/// A backend's response body: from hyper's client (with the pooled
/// connection it came on, if any), or read inline from a pooled connection
/// ([`h1`]).
#[derive(Debug)]
pub enum Upstream {
    Hyper(Incoming, Option<Lent>),
    /// `None` once its connection went back to the pool.
    Inline(Option<h1::ResponseBody>),
}

impl Upstream {
    fn is_end_stream(&self) -> bool {
        match self {
            Upstream::Hyper(b, _) => b.is_end_stream(),
            Upstream::Inline(b) => b.as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Upstream::Hyper(b, _) => b.size_hint(),
            Upstream::Inline(b) => b.as_ref().map_or(SizeHint::with_exact(0), Body::size_hint),
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Upstream::Hyper(b, _) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Upstream::Inline(Some(b)) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Upstream::Inline(None) => Poll::Ready(None),
        }
    }
}

#[derive(Debug)]
enum Kind {
    /// The upstream response; the backend's in-flight count drops when the
    /// body is finished or abandoned.
    Upstream {
        body: Upstream,
        in_flight: InFlight,
        /// The body was read to its end (a chunked body never says so
        /// through `is_end_stream`).
        ended: bool,
        idle: Duration,
        /// Created the first time the body has to wait.
        timer: Option<Pin<Box<Sleep>>>,
    },
    Full(Option<Bytes>),
    /// Polling the body panicked: the error (until taken), then nothing.
    Failed(Option<BoxError>),
}

impl ProxyBody {
    pub fn upstream(body: Upstream, in_flight: InFlight, idle: Duration) -> Self {
        ProxyBody {
            kind: Kind::Upstream {
                body,
                in_flight,
                ended: false,
                idle,
                timer: None,
            },
            access: None,
            #[cfg(feature = "fault-injection")]
            fault: false,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            access: None,
            #[cfg(feature = "fault-injection")]
            fault: false,
        }
    }

    pub fn empty() -> Self {
        ProxyBody {
            kind: Kind::Full(None),
            access: None,
            #[cfg(feature = "fault-injection")]
            fault: false,
        }
    }

    /// Panic when next polled (test builds, see [`super::fault`]).
    #[cfg(feature = "fault-injection")]
    pub fn fault_on_poll(&mut self) {
        self.fault = true;
    }

    /// Write `entry`'s record to the access log when this body is done.
    pub fn log_when_done(&mut self, entry: AccessEntry) {
        self.access = Some(entry);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match recover::catch(|| {
            #[cfg(feature = "fault-injection")]
            if std::mem::take(&mut this.fault) {
                super::fault::panic_at(super::fault::Stage::Body);
            }
            poll_kind(&mut this.kind, cx)
        }) {
            Ok(polled) => polled,
            Err(panic) => {
                // The upstream body's state is half updated: dropped, its
                // connection with it (never back to a pool). The server
                // reports the panic with the request's ID. As the inline
                // client's bodies do, the error comes one poll late, so
                // that the head is sent first: the client sees the answer
                // break off, not an empty reply.
                this.kind = Kind::Failed(Some(Box::new(panic)));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        };
        if let (Some(entry), Poll::Ready(Some(Ok(frame)))) = (&mut this.access, &polled) {
            entry.record.bytes_out += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Failed(error) => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Failed(_) => SizeHint::default(),
        }
    }
}

fn poll_kind(
    kind: &mut Kind,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match kind {
        Kind::Upstream {
            body,
            idle,
            timer,
            ended,
            ..
        } => match body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = timer {
                    t.as_mut().reset(Instant::now() + *idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                *ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*idle)));
                match t.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyIdle(*idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        },
        Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        Kind::Failed(error) => Poll::Ready(error.take().map(Err)),
    }
}
