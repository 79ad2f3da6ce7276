//! The proxy service: one request in, one response out.
//!
//! Per request: load the snapshot once, check the request line, normalise
//! the path, route, pick a backend, rewrite the head, and hand the
//! streaming body to the pooled client; retry on another backend when that
//! is safe. No lock, no database, no buffering: bodies pass through frame
//! by frame. Upgrades (WebSocket) become tunnels once the backend says 101.
//!
//! Two ways in: [`Proxy::handle`] for requests hyper's server parsed, and
//! [`Proxy::begin_inline`] ([`inline`]) for heads the inline server parsed
//! in place; both check, route and rewrite with [`prepare`]'s code.
//!
//! - this file: [`Proxy`] and its settings, hyper's way in
//!   ([`Proxy::handle`]), and what both ways share at the end: counting a
//!   request and readying its access-log line (`record`), and turning a
//!   failure into the gateway's answer (`refuse`);
//! - [`inline`]: the inline server's way in and its attempts;
//! - `prepare`: check the request line and `Host`, normalise, route, work
//!   out the rewrite (both ways);
//! - `upstream`: the attempts on an upstream's backends and what each
//!   result means (retries, passive health, latency);
//! - [`body`]: the response body handed to the server, and the access-log
//!   line written when it ends;
//! - [`error`]: typed failures, turned into responses in one place;
//! - [`tunnel`]: upgraded connections, tracked for the drain;
//! - [`interim`]: 1xx responses relayed on hyper's HTTP/1.1 connections;
//! - `fault` (feature `fault-injection`): test builds' injected panics.
//!
//! Below it: `http1` (what HTTP/1 means), `transport` (talking to
//! backends), the snapshot and live state (see ARCHITECTURE.md).

pub mod body;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod inline;
pub mod interim;
mod prepare;
pub mod tunnel;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use ipnet::IpNet;

pub use body::{ProxyBody, Upstream};
pub use error::ProxyError;
pub use tunnel::Tunnels;
pub use upstream::MAX_ATTEMPTS;

use crate::access_log::{self, AccessLog, Field};
use crate::counters::Denied;
use crate::http1::{fields, forward, headers};
use crate::plane::DataPlane;
use crate::policy::Verdict;
use crate::snapshot::Snapshot;
use crate::{recover, transport::request_body};

/// Gateway-wide proxy settings (from the command line).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Peers whose `X-Forwarded-*`, `X-Real-IP` and `Forwarded` are kept
    /// and extended; from anyone else they are replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// Also send RFC 7239 `Forwarded` upstream.
    pub forwarded_header: bool,
    /// Longest request target (path and query) accepted: 414 past it.
    pub max_uri_bytes: usize,
    /// Request body limit of routes that set none: 413 past it.
    pub max_body_bytes: u64,
    /// Longest pause in a client's request body: 408 past it, the
    /// client's fault (never the backend's).
    pub client_body_timeout: Duration,
    /// An upgraded connection (WebSocket) with no traffic for this long is
    /// closed.
    pub tunnel_idle: Duration,
    /// A client (or a tunnel's backend) that takes no byte of what is
    /// written to it for this long is disconnected (see [`crate::stall`]).
    pub send_timeout: Duration,
    /// Count requests per route and backend for `/metrics`.
    pub metrics: bool,
}

pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(300);
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            trusted_proxies: Vec::new(),
            forwarded_header: false,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            client_body_timeout: DEFAULT_CLIENT_BODY_TIMEOUT,
            tunnel_idle: DEFAULT_TUNNEL_IDLE,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            metrics: true,
        }
    }
}

/// What the listener knows of a client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client came over TLS.
    pub tls: bool,
    /// The peer's IP as a header value, made once per connection.
    pub ip_value: HeaderValue,
    /// What an untrusted peer's requests get as `X-Forwarded-For`,
    /// `X-Real-IP` and `X-Forwarded-Proto`: the same for every request of
    /// the connection, so written once (see [`forward::untrusted_lines`]).
    pub untrusted_lines: bytes::Bytes,
    /// Where a backend's 1xx responses go (see [`interim`]).
    pub interim: Arc<interim::Interim>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool, interim: Arc<interim::Interim>) -> Self {
        let ip_value =
            HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a valid header value");
        let untrusted_lines =
            forward::untrusted_lines(&ip_value, if tls { "https" } else { "http" });
        ConnInfo {
            peer,
            tls,
            ip_value,
            untrusted_lines,
            interim,
        }
    }
}

/// The request handler of the proxy listener.
#[derive(Debug, Clone)]
pub struct Proxy {
    plane: Arc<DataPlane>,
    settings: Arc<ProxySettings>,
    /// Where each request's line goes (none: no access log).
    access_log: Option<AccessLog>,
    tunnels: Tunnels,
}

impl Proxy {
    pub fn new(
        plane: Arc<DataPlane>,
        settings: ProxySettings,
        access_log: Option<AccessLog>,
    ) -> Self {
        Proxy {
            plane,
            settings: Arc::new(settings),
            access_log,
            tunnels: Tunnels::new(),
        }
    }

    /// Every [`SWEEP_EVERY`], close the idle backend connections that can
    /// no longer be used (see [`pool::ConnPool::sweep`]). Runs until
    /// dropped.
    pub async fn sweep_idle_connections(&self) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let snapshot = self.plane.snapshot();
            for upstream in snapshot.upstreams() {
                for backend in upstream.backends.iter() {
                    backend.state.pool().sweep();
                }
            }
        }
    }

    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// Count an open client connection until the guard is dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.plane
            .stats()
            .open_connections
            .fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(&self.plane))
    }

    /// Proxy one request. Never fails: errors become JSON responses.
    ///
    /// The head is checked, routed and rewritten before the returned future
    /// is made: the future (which the listener boxes per request) then
    /// holds only what lives across its awaits, not the raw request too.
    /// Called as hyper hands over the request, this also lets go of the
    /// client's head before hyper next reads from the connection (see
    /// [`prepare`]'s `Head::Encoded`).
    pub fn handle(
        self,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        let seen = headers::Seen::of(req.headers());
        let uri = req.uri();
        let authority = uri.authority().map(|a| a.as_str());
        let received = self.received(
            req.headers(),
            seen,
            req.method(),
            authority,
            uri.path(),
            &conn,
        );
        // Kept apart for an answer if the handling below panics.
        let (request_id, method, started) = (
            received.request_id.clone(),
            received.method.clone(),
            received.started,
        );
        let snapshot = self.plane.snapshot();
        let mut outcome = Outcome::default();
        let prepared = recover::catch(|| {
            self.prepare(
                &snapshot,
                req,
                seen,
                &conn,
                &received.request_id,
                &mut outcome,
            )
        });
        async move {
            let handled = match prepared {
                Ok(mut prepared) => {
                    recover::catching(async {
                        let request_id = &received.request_id;
                        // Borrowed in place: moved out, it would take a
                        // second slot in this future.
                        let sent = match prepared {
                            Ok(ref mut p) => {
                                let sent = self.send(&snapshot, p, request_id, &mut outcome).await;
                                // Answered by the gateway: what is left of
                                // the client's body is not wanted.
                                if let (Err(_), Some(body)) = (&sent, &p.body) {
                                    body.abandon();
                                }
                                sent
                            }
                            Err(err) => Err(err),
                        };
                        match sent {
                            Ok(resp) => self.finish(resp, &snapshot, received, outcome),
                            Err(err) => self.refuse(err, &snapshot, received, outcome),
                        }
                    })
                    .await
                }
                Err(panic) => Err(panic),
            };
            handled.unwrap_or_else(|panic| self.panicked(&panic, &request_id, &method, started))
        }
    }

    /// The answer to a request whose handling panicked: reported once,
    /// counted as a 500 of no route, and answered as the gateway's own
    /// error (nothing of the response had gone out).
    pub fn panicked(
        &self,
        panic: &recover::Panic,
        request_id: &HeaderValue,
        method: &Method,
        started: u64,
    ) -> Response<ProxyBody> {
        panic.report(request_id);
        if self.settings.metrics {
            let took = crate::clock::now_ns().saturating_sub(started);
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            self.plane.stats().unrouted.record(method, status, took);
        }
        ProxyError::Internal.into_response(request_id)
    }

    /// What the access log and metrics keep of a request as it came in.
    fn received(
        &self,
        fields: &impl fields::Fields,
        seen: headers::Seen,
        method: &Method,
        authority: Option<&str>,
        path: &str,
        conn: &ConnInfo,
    ) -> Received {
        let logged = self.access_log.as_ref().map(|log| {
            // The authority routing uses (see `prepare`): the target's, or
            // else `Host`.
            let host = match authority {
                Some(a) => Some(a.as_bytes()),
                None if seen.host => fields.all(&http::header::HOST).next(),
                None => None,
            };
            log.record(host.unwrap_or_default(), path)
        });
        Received {
            started: crate::clock::now_ns(),
            request_id: headers::request_id(fields, seen),
            method: method.clone(),
            logged,
            client: conn.peer.ip(),
        }
    }

    /// A request's failure as the gateway's own answer, counted and logged.
    /// (Never inlined: the way of a request that is answered by its backend
    /// stays small.)
    #[inline(never)]
    fn refuse(
        &self,
        err: ProxyError,
        snapshot: &Snapshot,
        received: Received,
        mut outcome: Outcome,
    ) -> Response<ProxyBody> {
        tracing::debug!(
            request_id = received.request_id.to_str().unwrap_or(""),
            error = %err,
            "proxy error"
        );
        let answered_by_policy = match &err {
            ProxyError::Policy(v) => match &**v {
                Verdict::Denied(d) => {
                    outcome.denied = Some(d.by);
                    false
                }
                Verdict::Redirect { .. } | Verdict::Preflight(_) => true,
            },
            _ => false,
        };
        // The whole story (the backend, the OS error) for the operator's
        // log; the client's answer says only what kind of failure it was.
        if received.logged.is_some() && !answered_by_policy {
            outcome.error = Some(error_chain(&err));
        }
        let resp = err.into_response(&received.request_id);
        self.finish(resp, snapshot, received, outcome)
    }

    /// Count and log a request's response.
    fn finish(
        &self,
        mut resp: Response<ProxyBody>,
        snapshot: &Snapshot,
        received: Received,
        outcome: Outcome,
    ) -> Response<ProxyBody> {
        let status = resp.status();
        self.record(status, resp.body_mut(), snapshot, received, outcome);
        resp
    }

    /// Count a request's response with `status` in the metrics, and have
    /// its `body` write the access-log line when it is done.
    fn record(
        &self,
        status: StatusCode,
        body: &mut ProxyBody,
        snapshot: &Snapshot,
        received: Received,
        outcome: Outcome,
    ) {
        let Received {
            started,
            request_id,
            method,
            logged,
            client,
        } = received;
        let route = outcome.route.map(|i| snapshot.route(i));
        if self.settings.metrics {
            let stats = route.map_or(&self.plane.stats().unrouted, |r| &*r.stats);
            let done = outcome.answered_at.unwrap_or_else(crate::clock::now_ns);
            stats.record(&method, status, done.saturating_sub(started));
            if let Some(by) = outcome.denied {
                stats.denied(by);
            }
        }
        #[cfg(feature = "fault-injection")]
        if outcome.fault == Some(fault::Stage::Body) {
            body.fault_on_poll();
        }
        if let Some(mut record) = logged {
            let upstream = route.and_then(|r| r.upstream).map(|u| snapshot.upstream(u));
            let texts = &mut record.texts;
            texts.set(Field::RequestId, request_id.as_bytes());
            if let Some(r) = route {
                texts.set(Field::Route, r.name.as_bytes());
            }
            if let Some(u) = upstream {
                texts.set(Field::Upstream, u.name.as_bytes());
                if let Some(b) = outcome.backend {
                    texts.set(Field::Backend, u.backends[b].url.as_bytes());
                }
            }
            record.client = client;
            record.method = method;
            record.started_ns = started;
            record.status = status.as_u16();
            record.retries = outcome.retries;
            record.error = outcome.error;
            record.policy = outcome.denied.map(Denied::as_str);
            body.log_when_done(body::AccessEntry {
                record,
                request_body: outcome.body,
            });
        }
    }
}

/// Counts an open client connection (see [`Proxy::connection`]).
#[derive(Debug)]
pub struct ConnectionGuard(Arc<DataPlane>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .stats()
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the access log and metrics keep of a request as it came in.
#[derive(Debug)]
struct Received {
    started: u64,
    request_id: HeaderValue,
    method: Method,
    /// For the access log (none when it is off).
    logged: Option<Box<access_log::Record>>,
    client: IpAddr,
}

/// What routing and the attempts found out, for metrics and the access log.
#[derive(Debug, Default)]
struct Outcome {
    route: Option<usize>,
    backend: Option<usize>,
    retries: u32,
    body: Option<Arc<request_body::BodySlot>>,
    /// When the backend's answer arrived (on [`crate::clock::now_ns`]'s clock).
    answered_at: Option<u64>,
    /// Why the gateway answered itself, for the access log.
    error: Option<String>,
    /// The route's policy that denied the request.
    denied: Option<Denied>,
    /// Where the request asked to panic (test builds).
    #[cfg(feature = "fault-injection")]
    fault: Option<fault::Stage>,
}

/// An error and its sources, `: `-joined (each source's text once).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// How often idle backend connections are checked for a close.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
