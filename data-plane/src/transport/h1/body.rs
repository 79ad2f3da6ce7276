//! A backend's response body, decoded straight from its connection by
//! whoever polls it (the client connection's task): `Content-Length`,
//! chunked (with trailers) or until close, as the head's framing decided
//! ([`super::head`]). The connection goes back to its pool only when the
//! body ended exactly where the next response may start.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::Conn;
use crate::http1::BodyFraming;
use crate::http1::H1Error;
use crate::http1::body::{Decode, Decoded, at_close, decode};

/// A response body decoded straight from the backend connection.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Conn>,
    decode: Decode,
    /// The connection may carry another request once the body is done.
    reusable: bool,
    /// An error held back for one poll (see [`ResponseBody::poll_frame`]).
    failed: Option<H1Error>,
}

impl ResponseBody {
    /// The body framed by `framing` on `conn`; `reusable`: the connection
    /// may carry another request once the body is done.
    pub(super) fn new(conn: Conn, framing: BodyFraming, reusable: bool) -> Self {
        ResponseBody {
            conn: Some(conn),
            decode: Decode::of(framing),
            reusable,
            failed: None,
        }
    }

    /// The connection, if the body was read to its end and the connection
    /// can carry the next request.
    pub fn into_reusable(mut self) -> Option<Conn> {
        let conn = self.conn.take()?;
        (self.decode.is_done() && self.reusable && conn.buf.is_empty()).then_some(conn)
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, H1Error>>>;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    /// A failure is reported one poll late: the first time, the body wakes
    /// itself and says `Pending`, so what was already produced (the head
    /// and the data before the failure) is flushed to the client before
    /// the error aborts the response — a client sees the status and a
    /// short body that fails, never a clean close.
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            this.decode = Decode::Done;
            this.conn = None;
            return Poll::Ready(Some(Err(e)));
        }
        match this.poll_decode(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.decode.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl ResponseBody {
    fn poll_decode(&mut self, cx: &mut Context<'_>) -> Polled {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match decode(&mut self.decode, &mut conn.buf) {
                Ok(Decoded::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(Decoded::NeedMore) => match ready!(conn.poll_fill(cx)) {
                    Ok(0) => return Poll::Ready(at_close(&mut self.decode)),
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                },
            }
        }
    }
}
