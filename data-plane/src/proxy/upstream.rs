//! From a prepared request (see [`super::prepare`]) to the upstream's
//! answer: pick backends and send, retrying on another backend when that
//! is safe. [`attempts`] is the one loop over the attempts, for both server
//! paths; each path says how it makes one attempt (an [`Attempter`]):
//! hyper's requests here ([`Proxy::send`]: through the inline client when
//! the request has no body and the backend is plain `http://`, else
//! through hyper's), the inline server's in `super::inline`.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Uri;
use http::{Request, Response, StatusCode, Version};
use tokio::time::Instant;

use super::prepare::{EncodedHead, Head, Prepared, path_error};
use super::{Outcome, Proxy, ProxyBody, ProxyError, Upstream};
use crate::counters::ErrorKind;
use crate::http1::HeadSink;
use crate::http1::{self, headers, response};
use crate::lazy_timer::LazyTimer;
use crate::registry::InFlight;
use crate::snapshot::{CompiledBackend, CompiledUpstream, Snapshot};
use crate::transport::request_body::{BodyFault, BodySlot, RequestBody, Sending};
use crate::transport::{h1, pool};

/// How one attempt goes to its backend.
enum Attempt {
    /// Through the inline client (an encoded head is ready for the backend;
    /// a head kept as fields is written for it when sent).
    Inline,
    /// Through hyper's client, with this request (boxed: it is large, and
    /// the inline case is the hot one).
    Hyper(Box<Request<RequestBody>>),
}

impl Prepared {
    /// Ready an attempt on `backend`: the inline client for a plain HTTP/1.1
    /// backend when there is no body nor upgrade, else a request for
    /// hyper's client — the client's head cloned, or taken by the `last`
    /// attempt.
    fn attempt(
        &mut self,
        backend: &CompiledBackend,
        last: bool,
        request_id: &HeaderValue,
    ) -> Result<Attempt, ProxyError> {
        let direct = backend.pooled;
        let f = match &mut self.head {
            Head::Encoded(_) => return Ok(Attempt::Inline),
            Head::Fields(f) if direct && self.body.is_none() && f.fwd.upgrade.is_none() => {
                return Ok(Attempt::Inline);
            }
            Head::Fields(f) => f,
        };
        let mut r = Request::new(RequestBody::attempt(self.body.as_ref()));
        *r.method_mut() = self.method.clone();
        *r.version_mut() = Version::HTTP_11;
        // The backend's own pool wants the origin-form target and a Host.
        *r.uri_mut() = if direct {
            Uri::from(f.path_and_query.clone())
        } else {
            Uri::builder()
                .scheme(backend.scheme.clone())
                .authority(backend.authority.clone())
                .path_and_query(f.path_and_query.clone())
                .build()
                .map_err(|_| path_error())?
        };
        // Only a request that may be sent again keeps a copy of its head.
        *r.headers_mut() = if last {
            f.headers.take().unwrap_or_default()
        } else {
            f.headers.clone().unwrap_or_default()
        };
        f.fwd.apply(r.headers_mut());
        if let Some(edits) = &f.edits {
            edits.apply(r.headers_mut());
        }
        if let Some(h) = direct.then(|| f.fwd.host_for(&backend.host)).flatten() {
            r.headers_mut().insert(header::HOST, h.clone());
        }
        if let Some(armed) = &self.interim {
            armed.attach(&mut r, request_id);
        }
        Ok(Attempt::Hyper(Box::new(r)))
    }
}

/// What is wrong with an answer hyper's client accepted, by the rules the
/// inline client's parser applies (`h1::head`): a status outside 100–599,
/// a `101` to a request that asked for no upgrade (or that names no
/// protocol), a transfer coding other than chunked.
fn invalid_answer<B>(resp: &Response<B>, upgrade_asked: bool) -> Option<http1::H1Error> {
    let status = resp.status();
    if let Err(e) = http1::head::status_of(Some(status.as_u16())) {
        return Some(e);
    }
    if status == StatusCode::SWITCHING_PROTOCOLS
        && !(upgrade_asked && resp.headers().contains_key(header::UPGRADE))
    {
        return Some(http1::H1Error::Switching);
    }
    let codings = resp.headers().get_all(header::TRANSFER_ENCODING);
    if !codings.iter().all(|v| headers::only_chunked(v.as_bytes())) {
        return Some(http1::H1Error::TransferCoding);
    }
    None
}

/// `send`'s answer, or `None` if its response head misses the deadline: at
/// first `deadline`; for a request with a `body`, `timeout` after the body
/// was sent whole (RFC-wise the request is not over until then, and a slow
/// upload is no slow backend) — or, while the backend takes none of the
/// body although the client has more, `timeout` after the last piece it
/// took. While the body is on its way the deadline is only looked at
/// again when it fires, not moved per piece.
async fn answered_within<T>(
    send: impl Future<Output = T>,
    deadline: Instant,
    timeout: std::time::Duration,
    body: Option<&BodySlot>,
) -> Option<T> {
    let mut send = std::pin::pin!(send);
    let mut timer = LazyTimer::new();
    let mut due = deadline;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = send.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(out));
        }
        loop {
            std::task::ready!(timer.poll_expired(due, cx));
            let Some(body) = body else {
                return std::task::Poll::Ready(None);
            };
            let now = crate::clock::now_ns();
            let due_ns = match body.sending() {
                Sending::Sent(at) | Sending::Backend(at) => at,
                // The client's to finish (its own stall is timed): a whole
                // timeout from now at the earliest.
                Sending::Client => now,
            }
            .saturating_add(timeout.as_nanos() as u64);
            if due_ns <= now {
                return std::task::Poll::Ready(None);
            }
            let left = std::time::Duration::from_nanos(due_ns - now);
            due = Instant::now() + left;
        }
    })
    .await
}

/// An attempt through hyper's client.
type SendFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<Upstream>, ProxyError>> + Send + 'a>>;

/// Most attempts a request can make (1 + the largest `retries` allowed).
pub const MAX_ATTEMPTS: usize = crate::config::MAX_RETRIES as usize + 1;

/// A sink that also notes the final status (for the attempts loop).
pub(super) struct Noting<'a, S> {
    sink: &'a mut S,
    pub status: StatusCode,
}

impl<'a, S> Noting<'a, S> {
    pub fn new(sink: &'a mut S) -> Self {
        Noting {
            sink,
            status: StatusCode::OK,
        }
    }
}

impl<S: HeadSink> HeadSink for Noting<'_, S> {
    type Final = S::Final;
    const SHARES_BYTES: bool = S::SHARES_BYTES;

    fn interim(&mut self, head: &http1::RawHead<'_>) {
        self.sink.interim(head);
    }

    fn head(&mut self, head: &http1::RawHead<'_>) -> Result<S::Final, http1::H1Error> {
        self.status = head.status;
        self.sink.head(head)
    }
}

/// The attempts of one request on its upstream: which backend next, and
/// what each result means for health, metrics and retrying ([`attempts`]
/// is the loop around them).
struct Tries<'u> {
    upstream: &'u CompiledUpstream,
    attempts: usize,
    made: usize,
    tried: [usize; MAX_ATTEMPTS],
    last_failure: Option<ProxyError>,
    /// The response-head timeout (the route's, or its upstream's).
    timeout: std::time::Duration,
}

/// One attempt under way.
pub(super) struct Try<'u> {
    pub backend: &'u CompiledBackend,
    index: usize,
    last: bool,
    /// When it started, and when the response head must have arrived.
    now: Instant,
    deadline: Instant,
    /// The response-head timeout (the route's, or its upstream's).
    timeout: std::time::Duration,
    in_flight: InFlight,
}

impl Try<'_> {
    /// This attempt through the inline client: `head` to the backend's
    /// pool, the answer's heads to `sink`. (The pool's future itself, not
    /// one around it: every async layer is a copy of its size per request.)
    pub fn exchange<'a, S: HeadSink>(
        &'a self,
        upstream: &CompiledUpstream,
        head: &'a EncodedHead,
        p: &'a Prepared,
        sink: &'a mut S,
    ) -> impl Future<Output = Result<(S::Final, h1::ResponseBody), pool::PoolError>> + 'a {
        let backend = self.backend;
        // The deadline is kept on the connection's own timer (see
        // `h1::Conn`); a missed one is its error.
        let limits = pool::Limits {
            connect_timeout: upstream.connect_timeout,
            deadline: self.deadline,
            now: self.now.into_std(),
        };
        backend.state.pool().exchange(
            &backend.authority,
            limits,
            head.for_backend(backend),
            &p.method,
            p.idempotent,
            sink,
        )
    }
}

impl<'u> Tries<'u> {
    pub fn new(upstream: &'u CompiledUpstream, timeout: std::time::Duration) -> Self {
        // A retry needs another backend: never more attempts than backends.
        let attempts = (upstream.retries as usize + 1)
            .min(MAX_ATTEMPTS)
            .min(upstream.backends.len().max(1));
        Tries {
            upstream,
            attempts,
            made: 0,
            tried: [usize::MAX; MAX_ATTEMPTS],
            last_failure: None,
            timeout,
        }
    }

    /// The next backend to try, if any is left.
    pub fn next(&mut self, p: &Prepared, outcome: &mut Outcome) -> Option<Try<'u>> {
        if self.made == self.attempts {
            return None;
        }
        let i = self.upstream.pick(&p.ctx, &self.tried[..self.made])?;
        self.tried[self.made] = i;
        self.made += 1;
        outcome.backend = Some(i);
        #[cfg(feature = "fault-injection")]
        if outcome.fault == Some(super::fault::Stage::Send) {
            super::fault::panic_at(super::fault::Stage::Send);
        }
        let backend = &self.upstream.backends[i];
        let now = Instant::now();
        Some(Try {
            backend,
            index: i,
            last: self.made == self.attempts,
            now,
            deadline: now + self.timeout,
            timeout: self.timeout,
            in_flight: backend.state.start(),
        })
    }

    /// `t` got an answer with `status`: its latency and health noted; the
    /// backend stays in flight until the body is done. When that was (on
    /// [`crate::clock::now_ns`]'s clock), and the backend's in-flight mark.
    pub fn answered(&self, t: Try<'u>, status: StatusCode, metrics: bool) -> (u64, InFlight) {
        let now = crate::clock::now_ns();
        let took = now.saturating_sub(crate::clock::ns_at(t.now.into_std()));
        let state = &t.backend.state;
        state.observe_latency(took, now);
        if metrics {
            state.stats().duration.observe_ns(took);
        }
        if status.is_server_error() {
            state.stats().error(ErrorKind::Status5xx);
            self.upstream.report_failure(t.index);
        } else {
            self.upstream.report_success(t.index);
        }
        (now, t.in_flight)
    }

    /// `t` failed: the error to give up with, or `Ok` to try the next.
    pub fn failed(
        &mut self,
        t: Try<'u>,
        failure: ProxyError,
        p: &Prepared,
        outcome: &mut Outcome,
    ) -> Result<(), ProxyError> {
        // The client's side of the body failed: its fault, whatever the
        // attempt saw of it (hyper's client fails the exchange when the
        // body it streams does); nothing is held against the backend.
        if let Some(fault) = p.body.as_ref().and_then(|b| b.fault()) {
            return Err(match fault {
                BodyFault::TooLarge => ProxyError::BodyTooLarge(p.body_limit),
                BodyFault::Failed => ProxyError::BadRequestBody,
                BodyFault::Stalled => ProxyError::ClientTimeout,
            });
        }
        drop(t.in_flight);
        t.backend.state.stats().error(match failure {
            ProxyError::Connect { .. } => ErrorKind::Connect,
            ProxyError::Timeout { .. } => ErrorKind::Timeout,
            _ => ErrorKind::Protocol,
        });
        self.upstream.report_failure(t.index);
        // Retry on another backend only when nothing reached this one (a
        // refused connection), or for an idempotent request whose body
        // has not started streaming.
        let body_intact = p.body.as_ref().is_none_or(|slot| !slot.taken());
        let nothing_sent = matches!(failure, ProxyError::Connect { .. });
        let retryable = body_intact && (nothing_sent || p.idempotent);
        if t.last || !retryable {
            return Err(failure);
        }
        tracing::debug!(upstream = %self.upstream.name, backend = %t.backend.url, error = %failure, "retrying on another backend");
        self.upstream.stats.retried();
        outcome.retries += 1;
        self.last_failure = Some(failure);
        Ok(())
    }

    /// Every backend was tried (or none is available): the last failure
    /// says more than "no backend".
    pub fn exhausted(self) -> ProxyError {
        self.last_failure
            .unwrap_or_else(|| ProxyError::NoBackend(Arc::clone(&self.upstream.name)))
    }
}

/// What one attempt came to.
pub(super) enum Tried<A> {
    /// The backend answered, with this status.
    Answered(A, StatusCode),
    /// The backend failed: held against it, and retried elsewhere when
    /// that is safe.
    Failed(ProxyError),
    /// The request cannot be sent to this backend (no backend's fault):
    /// the request ends at once.
    Ended(ProxyError),
}

/// How one of the server paths makes an attempt: through the inline client
/// (`inline::Inline`) or hyper's request (`ThroughHyper`). The loop around
/// the attempts, [`attempts`], is the same for both.
pub(super) trait Attempter {
    /// What an answered attempt gives its caller.
    type Answer;

    /// Send the request to `t.backend`.
    async fn attempt(
        &mut self,
        upstream: &CompiledUpstream,
        t: &Try<'_>,
        p: &mut Prepared,
    ) -> Tried<Self::Answer>;
}

/// An answered attempt: the answer, the backend that gave it (its index)
/// and its in-flight mark, held until the body is done.
pub(super) struct Answered<A> {
    pub answer: A,
    pub status: StatusCode,
    pub backend: usize,
    pub in_flight: InFlight,
}

/// The attempts of one request (both server paths): pick a backend, try,
/// and on a failure try the next while that is safe ([`Tries`] decides);
/// the answer is noted in `outcome` (when, and which backend), or the
/// failure to give up with is returned.
pub(super) async fn attempts<A: Attempter>(
    upstream: &CompiledUpstream,
    timeout: std::time::Duration,
    p: &mut Prepared,
    outcome: &mut Outcome,
    metrics: bool,
    attempter: &mut A,
) -> Result<Answered<A::Answer>, ProxyError> {
    let mut tries = Tries::new(upstream, timeout);
    loop {
        let Some(t) = tries.next(p, outcome) else {
            return Err(tries.exhausted());
        };
        match attempter.attempt(upstream, &t, p).await {
            Tried::Answered(answer, status) => {
                let backend = t.index;
                let (answered_at, in_flight) = tries.answered(t, status, metrics);
                outcome.answered_at = Some(answered_at);
                return Ok(Answered {
                    answer,
                    status,
                    backend,
                    in_flight,
                });
            }
            Tried::Failed(e) => tries.failed(t, e, p, outcome)?,
            Tried::Ended(e) => return Err(e),
        }
    }
}

impl Proxy {
    /// Send a prepared request to the upstream's backends (retrying on
    /// another when that is safe) and turn the answer into the client's.
    pub(super) async fn send(
        &self,
        snapshot: &Snapshot,
        p: &mut Prepared,
        request_id: &HeaderValue,
        outcome: &mut Outcome,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let upstream = snapshot.upstream(p.upstream);
        let mut through = ThroughHyper { request_id };
        let metrics = self.settings.metrics;
        let timeout = route_timeout(snapshot, outcome, upstream);
        let answered = attempts(upstream, timeout, p, outcome, metrics, &mut through).await?;
        let Answered {
            answer: mut resp,
            backend: i,
            in_flight,
            ..
        } = answered;
        p.interim = None;
        let backend = &upstream.backends[i];
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let backend_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
        let accepted = resp.headers().get(header::UPGRADE).cloned();
        let (mut head, resp_body) = resp.into_parts();
        response::forward_response(&mut head.headers, request_id);
        if let Some(decoration) = &p.decoration {
            decoration.apply(&mut head.headers);
        }
        if let (Some(client_side), Some(backend_side), Some(proto)) =
            (p.client_upgrade.take(), backend_upgrade, accepted)
        {
            head.headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            head.headers.insert(header::UPGRADE, proto);
            self.tunnels.spawn(
                client_side,
                backend_side,
                (self.settings.tunnel_idle, self.settings.send_timeout),
                in_flight,
                Arc::clone(&backend.url),
            );
            return Ok(Response::from_parts(head, ProxyBody::empty()));
        }
        let body = ProxyBody::upstream(resp_body, in_flight, upstream.body_idle_timeout);
        Ok(Response::from_parts(head, body))
    }
}

/// The response-head timeout of a routed request: its route's, or its
/// upstream's.
pub(super) fn route_timeout(
    snapshot: &Snapshot,
    outcome: &Outcome,
    upstream: &CompiledUpstream,
) -> std::time::Duration {
    outcome
        .route
        .and_then(|i| snapshot.route(i).timeout)
        .unwrap_or(upstream.response_header_timeout)
}

/// Attempts of a request hyper's server took.
struct ThroughHyper<'a> {
    request_id: &'a HeaderValue,
}

impl Attempter for ThroughHyper<'_> {
    type Answer = Response<Upstream>;

    /// One attempt of a request hyper's server took. Plain HTTP/1.1 goes
    /// through the backend's own pool; without a body (nor upgrade), the
    /// request's task drives it itself (the inline client). Through hyper's
    /// client: boxed, as hyper's futures are large and the hot path should
    /// not carry (and move) their room.
    async fn attempt(
        &mut self,
        upstream: &CompiledUpstream,
        t: &Try<'_>,
        p: &mut Prepared,
    ) -> Tried<Response<Upstream>> {
        let backend = t.backend;
        // A head that cannot be made for this backend is no backend's
        // failure: it ends the request at once.
        let r = match p.attempt(backend, t.last, self.request_id) {
            Ok(Attempt::Hyper(r)) => *r,
            Ok(Attempt::Inline) => return inline_attempt(upstream, t, p, self.request_id).await,
            Err(e) => return Tried::Ended(e),
        };
        let pool = backend.state.pool();
        let send: SendFuture<'_> = if backend.pooled {
            Box::pin(async move {
                match pool
                    .send(&backend.authority, upstream.connect_timeout, r)
                    .await
                {
                    Ok((resp, lent)) => Ok(resp.map(|b| Upstream::Hyper(b, Some(lent)))),
                    Err(e) => Err(ProxyError::from_pool(&backend.url, e)),
                }
            })
        } else {
            Box::pin(async move {
                match upstream.client.request(r).await {
                    Ok(resp) => Ok(resp.map(|b| Upstream::Hyper(b, None))),
                    Err(e) => Err(ProxyError::from_client(&backend.url, e)),
                }
            })
        };
        let timeout = t.timeout;
        match answered_within(send, t.deadline, timeout, p.body.as_deref()).await {
            Some(Ok(resp)) => match invalid_answer(&resp, p.client_upgrade.is_some()) {
                None => {
                    let status = resp.status();
                    Tried::Answered(resp, status)
                }
                Some(e) => Tried::Failed(ProxyError::Upstream {
                    backend: Arc::clone(&backend.url),
                    source: e.into(),
                }),
            },
            Some(Err(e)) => Tried::Failed(e),
            None => Tried::Failed(ProxyError::Timeout {
                backend: Arc::clone(&backend.url),
            }),
        }
    }
}

/// An inline-client attempt of a request hyper's server took: from the
/// head `prepare` wrote, or one written here from the kept fields; 1xx
/// heads relayed through the connection's [`super::interim`] channel.
async fn inline_attempt(
    upstream: &CompiledUpstream,
    t: &Try<'_>,
    p: &Prepared,
    request_id: &HeaderValue,
) -> Tried<Response<Upstream>> {
    let backend = t.backend;
    let written;
    let head = match &p.head {
        Head::Encoded(head) => head,
        Head::Fields(f) => {
            let headers = f.headers.as_ref().expect("kept for inline requests");
            let pq = &f.path_and_query;
            written = EncodedHead::new(
                &p.method,
                pq.path(),
                pq.query(),
                headers,
                &f.fwd,
                f.edits.as_deref(),
            );
            &written
        }
    };
    let mut relay = |status, headers: &HeaderMap| {
        if let Some(armed) = &p.interim {
            armed.relay(status, headers, request_id);
        }
    };
    let mut sink = http1::head::ToResponse {
        interim: &mut relay,
    };
    match t.exchange(upstream, head, p, &mut sink).await {
        Ok((resp, body)) => {
            let status = resp.status();
            Tried::Answered(resp.map(|()| Upstream::Inline(Some(body))), status)
        }
        Err(e) => Tried::Failed(ProxyError::from_pool(&backend.url, e)),
    }
}
