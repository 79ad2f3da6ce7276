//! The proxy's side of the inline HTTP/1.1 server (`server/inline.rs`):
//! requests it parsed in place, served without hyper's server, header maps
//! or a boxed future.
//!
//! [`Proxy::begin_inline`] takes a head as received and decides, without
//! waiting: served here ([`Begun::Ready`]), answered at once by the gateway
//! (no route, a bad `Host`, …: [`Begun::Answered`]), or not a request for
//! this path ([`Begun::HandOff`]: a body, an upgrade, `Expect`, trailers, a
//! backend that needs hyper's client) — the server then hands the whole
//! connection to hyper, which parses the head again. The checks, routing
//! and edits are [`Proxy::route_head`]'s, the same as for hyper's requests.
//! [`InlineRequest::send`] then runs the attempts (the loop both paths share,
//! `upstream::attempts`) through the inline client,
//! the response heads going to the server's [`HeadSink`], which writes the
//! client's head from the backend's bytes.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Response, Version};

use super::prepare::{EncodedHead, Head, Prepared, RequestHead, Routed};
use super::upstream::{Answered, Attempter, Noting, Tried, Try, attempts, route_timeout};
use super::{ConnInfo, Outcome, Proxy, ProxyBody, ProxyError, Received, Upstream};
use crate::http1::HeadSink;
use crate::http1::headers::{self, Seen};
pub use crate::http1::request_head::InlineHead;
use crate::http1::response::Decoration;
use crate::recover::Panic;
use crate::snapshot::{CompiledUpstream, Snapshot};
use crate::transport::h1;

/// What became of a head offered to [`Proxy::begin_inline`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Begun {
    /// Ready for its attempts. (Not boxed: an allocation per request
    /// counts more instructions than the moves it saves, by
    /// `bench/callgrind.sh`.)
    Ready(InlineRequest),
    /// Answered by the gateway at once (an error), counted and logged.
    Answered {
        resp: Response<ProxyBody>,
        /// The client asked to close the connection after it.
        close: bool,
    },
    /// Not for the inline path: hand the connection to hyper's server.
    HandOff,
}

/// A request checked, routed and rewritten by [`Proxy::begin_inline`].
#[derive(Debug)]
pub struct InlineRequest {
    snapshot: Arc<Snapshot>,
    prepared: Prepared,
    received: Received,
    outcome: Outcome,
    close: bool,
}

/// The answer to an inline request, counted and logged.
#[derive(Debug)]
pub enum Answer<T> {
    /// The backend's: what the sink made of its head, and the body.
    Upstream { head: T, body: ProxyBody },
    /// The gateway's own (an error: 502, 503, 504).
    Gateway(Response<ProxyBody>),
}

impl InlineRequest {
    pub fn request_id(&self) -> &HeaderValue {
        &self.received.request_id
    }

    pub fn method(&self) -> &Method {
        &self.received.method
    }

    /// When the request began (on [`crate::clock::now_ns`]'s clock).
    pub fn started(&self) -> u64 {
        self.received.started
    }

    /// The client asked to close the connection after this request.
    pub fn close(&self) -> bool {
        self.close
    }

    /// What the route's policies do to the response's fields, if anything
    /// (for the server's head writer).
    pub fn decoration(&mut self) -> Option<Box<Decoration>> {
        self.prepared.decoration.take()
    }

    /// Send the request to the upstream's backends (retrying on another
    /// when that is safe, by [`attempts`]); heads go to `sink`.
    pub async fn send<S: HeadSink>(self, proxy: &Proxy, sink: &mut S) -> Answer<S::Final> {
        let InlineRequest {
            snapshot,
            mut prepared,
            received,
            mut outcome,
            ..
        } = self;
        let upstream = snapshot.upstream(prepared.upstream);
        let metrics = proxy.settings.metrics;
        let mut inline = Inline { sink };
        let timeout = route_timeout(&snapshot, &outcome, upstream);
        match attempts(
            upstream,
            timeout,
            &mut prepared,
            &mut outcome,
            metrics,
            &mut inline,
        )
        .await
        {
            Ok(Answered {
                answer: (head, body),
                status,
                in_flight,
                ..
            }) => {
                let mut body = ProxyBody::upstream(
                    Upstream::Inline(Some(body)),
                    in_flight,
                    upstream.body_idle_timeout,
                );
                proxy.record(status, &mut body, &snapshot, received, outcome);
                Answer::Upstream { head, body }
            }
            Err(failure) => Answer::Gateway(proxy.refuse(failure, &snapshot, received, outcome)),
        }
    }
}

/// Attempts through the inline client: the head the inline server's
/// request was encoded into, to the backend's pool, the answer's heads to
/// the server's sink.
struct Inline<'s, S> {
    sink: &'s mut S,
}

impl<S: HeadSink> Attempter for Inline<'_, S> {
    type Answer = (S::Final, h1::ResponseBody);

    async fn attempt(
        &mut self,
        upstream: &CompiledUpstream,
        t: &Try<'_>,
        p: &mut Prepared,
    ) -> Tried<Self::Answer> {
        let Head::Encoded(head) = &p.head else {
            unreachable!("the inline server encodes every head it sends")
        };
        let mut noting = Noting::new(self.sink);
        match t.exchange(upstream, head, p, &mut noting).await {
            Ok(answer) => Tried::Answered(answer, noting.status),
            Err(e) => Tried::Failed(ProxyError::from_pool(&t.backend.url, e)),
        }
    }
}

/// Whether the inline path takes a head with these fields: not with a body,
/// `Expect: 100-continue`, an upgrade or trailers (hyper's server does).
pub fn takes(seen: Seen) -> bool {
    !(seen.content_length || seen.transfer_encoding || seen.expect || seen.upgrade || seen.te)
}

impl Proxy {
    /// The answer to a head whose [`Proxy::begin_inline`] panicked (see
    /// [`Proxy::panicked`]).
    pub fn begin_panicked(&self, head: &InlineHead<'_>, panic: &Panic) -> Begun {
        let fields = &head.fields;
        let seen = Seen::of(fields);
        let request_id = headers::request_id(fields, seen);
        let close = seen.connection && headers::lists_token(fields, &header::CONNECTION, "close");
        let resp = self.panicked(panic, &request_id, head.method, crate::clock::now_ns());
        Begun::Answered { resp, close }
    }

    /// Check, route and rewrite a head the inline server parsed (see the
    /// module docs).
    pub fn begin_inline(&self, head: &InlineHead<'_>, conn: &ConnInfo) -> Begun {
        let fields = &head.fields;
        let seen = Seen::of(fields);
        if !takes(seen) {
            return Begun::HandOff;
        }
        let close = seen.connection && headers::lists_token(fields, &header::CONNECTION, "close");
        let received = self.received(fields, seen, head.method, None, head.path, conn);
        let snapshot = self.plane.snapshot();
        let mut outcome = Outcome::default();
        let request = RequestHead {
            method: head.method,
            version: Version::HTTP_11,
            path: head.path,
            query: head.query,
            authority: None,
            fields,
            seen,
        };
        let routed = self.route_head(
            &snapshot,
            &request,
            conn,
            &received.request_id,
            &mut outcome,
            true,
        );
        let routed = match routed {
            Ok(Some(routed)) => routed,
            Ok(None) => return Begun::HandOff,
            Err(err) => {
                let resp = self.refuse(err, &snapshot, received, outcome);
                return Begun::Answered { resp, close };
            }
        };
        let Routed {
            upstream,
            path,
            fwd,
            ctx,
            body_limit,
            idempotent,
            edits,
            ..
        } = routed;
        let encoded = EncodedHead::new(
            head.method,
            &path,
            head.query,
            fields,
            &fwd,
            edits.request.as_deref(),
        );
        Begun::Ready(InlineRequest {
            snapshot,
            prepared: Prepared {
                upstream,
                method: head.method.clone(),
                head: Head::Encoded(encoded),
                client_upgrade: None,
                body: None,
                body_limit,
                ctx,
                idempotent,
                interim: None,
                decoration: edits.response,
            },
            received,
            outcome,
            close,
        })
    }
}
