//! From a request head to the upstream's answer: check the request line,
//! normalise the path, route, work out the rewrite ([`prepare`]), then pick
//! backends and send, retrying on another backend when that is safe
//! ([`send`]). A request without a body to a plain `http://` backend goes
//! through the inline client ([`super::h1`]); the rest through hyper's.
//!
//! [`prepare`]: Proxy::prepare
//! [`send`]: Proxy::send

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::forward::{self, Forwarding};
use super::headers::Seen;
use super::request_body::{self, RequestBody};
use super::{ConnInfo, Outcome, Proxy, ProxyBody, ProxyError, ProxySettings, Upstream};
use super::{h1, headers, interim, pool};
use crate::balance::{self, PickContext};
use crate::config::HashOn;
use crate::metrics::ErrorKind;
use crate::registry;
use crate::routing::path;
use crate::snapshot::{CompiledBackend, Snapshot};

/// A request checked, routed and rewritten, ready for its attempts.
#[derive(Debug)]
pub(super) struct Prepared {
    /// Index of the route's upstream in the snapshot.
    upstream: usize,
    method: Method,
    head: Head,
    client_upgrade: Option<OnUpgrade>,
    body: Option<Arc<request_body::BodySlot>>,
    body_limit: u64,
    ctx: PickContext,
    idempotent: bool,
    /// Relaying 1xx answers to the client, until the final one.
    interim: Option<interim::Armed>,
}

/// The request head the upstream gets.
#[derive(Debug)]
enum Head {
    /// Written out by [`Proxy::prepare`], when every backend of the
    /// upstream takes the inline client and there is no body nor upgrade.
    /// The client's head can then be dropped at once: its fields and target
    /// share hyper's read buffer, and hyper reads from the connection again
    /// (to notice a client going away) as soon as the request is handed
    /// over. With nothing left sharing it, that buffer is reused; otherwise
    /// hyper allocates a new one for every request.
    Encoded(EncodedHead),
    /// The client's head and the gateway's edits, applied per attempt
    /// (boxed: the edits are large, and the hot path does not use them).
    Fields(Box<Fields>),
}

#[derive(Debug)]
struct Fields {
    path_and_query: PathAndQuery,
    /// The client's fields (without the gateway's edits); taken by the last
    /// attempt through hyper's client.
    headers: Option<HeaderMap>,
    fwd: Forwarding,
}

/// A request head in bytes, with room for each backend's `Host`.
#[derive(Debug)]
struct EncodedHead {
    bytes: Vec<u8>,
    /// Where the `host` line goes: just after the request line.
    host_at: usize,
    /// Length of the `host` line there now (0: none yet).
    host_len: usize,
    /// Each backend gets its own `Host`, set per attempt (see
    /// [`Self::point_at`]); else the client's is kept and written with the
    /// other fields.
    backend_host: bool,
}

impl EncodedHead {
    fn new(method: &Method, target: &str, headers: &HeaderMap, fwd: &Forwarding) -> Self {
        let mut bytes = Vec::with_capacity(256);
        let host_at = h1::encode_request(&mut bytes, method, target, |put| {
            fwd.write(headers, put);
        });
        EncodedHead {
            bytes,
            host_at,
            host_len: 0,
            backend_host: fwd.backend_host(),
        }
    }

    /// Ready the head for `backend`: its own `Host`, unless the client's
    /// is kept.
    fn point_at(&mut self, backend: &CompiledBackend) {
        if self.backend_host {
            self.set_host(&backend.host);
        }
    }

    /// Make the `host` line say `host` (the backend's own).
    fn set_host(&mut self, host: &HeaderValue) {
        const NAME: &[u8] = b"host: ";
        let len = NAME.len() + host.len() + 2;
        let (at, old_end, new_end) = (
            self.host_at,
            self.host_at + self.host_len,
            self.host_at + len,
        );
        // Move what follows the line to where the new line ends, then write
        // the line (no per-byte iterator: this runs once per attempt).
        let tail = self.bytes.len() - old_end;
        if new_end > old_end {
            self.bytes.resize(new_end + tail, 0);
        }
        self.bytes.copy_within(old_end..old_end + tail, new_end);
        self.bytes.truncate(new_end + tail);
        let line = &mut self.bytes[at..new_end];
        line[..NAME.len()].copy_from_slice(NAME);
        line[NAME.len()..len - 2].copy_from_slice(host.as_bytes());
        line[len - 2..].copy_from_slice(b"\r\n");
        self.host_len = len;
    }
}

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
    /// backend when there is no body nor upgrade (an encoded head gets the
    /// backend's `Host` here), else a request for hyper's client — the
    /// client's head cloned, or taken by the `last` attempt.
    fn attempt(
        &mut self,
        backend: &CompiledBackend,
        last: bool,
        request_id: &HeaderValue,
    ) -> Result<Attempt, ProxyError> {
        let direct = backend.pooled;
        let f = match &mut self.head {
            Head::Encoded(head) => {
                head.point_at(backend);
                return Ok(Attempt::Inline);
            }
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
        if let Some(h) = direct.then(|| f.fwd.host_for(&backend.host)).flatten() {
            r.headers_mut().insert(header::HOST, h.clone());
        }
        if let Some(armed) = &self.interim {
            armed.attach(&mut r, request_id);
        }
        Ok(Attempt::Hyper(Box::new(r)))
    }
}

/// An attempt through hyper's client.
type SendFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<Upstream>, ProxyError>> + Send + 'a>>;

/// The request's host name without port: the URI authority (absolute-form
/// or HTTP/2 `:authority`) or else the `Host` header.
fn request_host<'a>(uri: &'a Uri, host_header: Option<&'a HeaderValue>) -> Option<&'a str> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => host_header?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port → v6 literal with brackets kept, as configured.
        return rest.find(']').map_or(host, |end| &host[..end + 2]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Hash of the request's `hash_on` key, if the request carries it: as
/// the upstream gets it (a forwarding header hashes the gateway's value).
fn hash_key(
    hash_on: &HashOn,
    headers: &HeaderMap,
    fwd: &Forwarding,
    peer: SocketAddr,
) -> Option<u64> {
    match hash_on {
        HashOn::Header(name) => fwd
            .value(headers, name)
            .map(|v| balance::ConsistentHash::hash(v.as_bytes())),
        HashOn::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| balance::ConsistentHash::hash(v.as_bytes())),
        HashOn::ClientIp => Some(match peer.ip() {
            IpAddr::V4(ip) => balance::ConsistentHash::hash(&ip.octets()),
            IpAddr::V6(ip) => balance::ConsistentHash::hash(&ip.octets()),
        }),
    }
}

/// The protocol a client asks to switch to (`Connection: upgrade` plus
/// `Upgrade`), unless it is `h2c`, which a proxy must not pass on.
fn requested_upgrade(headers: &HeaderMap, seen: Seen) -> Option<HeaderValue> {
    if !(seen.connection && seen.upgrade) {
        return None;
    }
    let wants = headers::lists_token(headers, &header::CONNECTION, "upgrade");
    let upgrade = headers.get(header::UPGRADE)?;
    let h2c = upgrade
        .to_str()
        .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c")))
        .unwrap_or(true);
    (wants && !h2c).then(|| upgrade.clone())
}

/// Whether the client said `TE: trailers`.
fn accepts_trailers(headers: &HeaderMap, seen: Seen) -> bool {
    seen.te && headers::lists_token(headers, &header::TE, "trailers")
}

/// Refuse request lines and heads a gateway must not pass on.
fn check_request(
    parts: &http::request::Parts,
    seen: Seen,
    settings: &ProxySettings,
) -> Result<(), ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let target_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > settings.max_uri_bytes {
        return Err(ProxyError::UriTooLong(settings.max_uri_bytes));
    }
    let hosts = if seen.host {
        parts.headers.get_all(header::HOST).iter().count()
    } else {
        0
    };
    if hosts > 1 {
        return Err(ProxyError::BadHost("more than one Host header"));
    }
    if hosts == 0 && parts.version == Version::HTTP_11 && parts.uri.authority().is_none() {
        return Err(ProxyError::BadHost("HTTP/1.1 request without Host"));
    }
    Ok(())
}

/// `Content-Length` if the client declared one.
fn declared_length(headers: &HeaderMap, seen: Seen) -> Option<u64> {
    if !seen.content_length {
        return None;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Most attempts a request can make (1 + the largest `retries` allowed).
pub const MAX_ATTEMPTS: usize = 6;

impl Proxy {
    fn trusted(&self, ip: IpAddr) -> bool {
        let proxies = &self.settings.trusted_proxies;
        !proxies.is_empty() && proxies.iter().any(|net| net.contains(&ip))
    }

    /// Check, route and rewrite a request head: everything that needs no
    /// waiting, so that the future that then talks to backends carries
    /// only what lives across its awaits.
    pub(super) fn prepare(
        &self,
        snapshot: &Snapshot,
        req: Request<Incoming>,
        seen: Seen,
        conn: &ConnInfo,
        request_id: &HeaderValue,
        outcome: &mut Outcome,
    ) -> Result<Prepared, ProxyError> {
        let (mut parts, body) = req.into_parts();
        check_request(&parts, seen, &self.settings)?;
        let path = path::normalize(parts.uri.path())?;
        let host_header = seen.host.then(|| parts.headers.get(header::HOST)).flatten();
        let host = request_host(&parts.uri, host_header);
        let (matched, route) = snapshot
            .find(host, &parts.method, &path)
            .ok_or(ProxyError::NoRoute)?;
        outcome.route = Some(matched.route);
        let upstream = snapshot.upstream(route.upstream);
        let body_limit = route.max_body_bytes.unwrap_or(self.settings.max_body_bytes);
        if declared_length(&parts.headers, seen).is_some_and(|n| n > body_limit) {
            return Err(ProxyError::BodyTooLarge(body_limit));
        }

        let forward_path = if route.strip_prefix {
            matched.strip(&path)
        } else {
            &path
        };
        let path_and_query = match (forward_path == parts.uri.path(), parts.uri.query()) {
            (true, _) => parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            (false, None) => PathAndQuery::try_from(forward_path).map_err(|_| path_error())?,
            (false, Some(q)) => {
                PathAndQuery::try_from(format!("{forward_path}?{q}")).map_err(|_| path_error())?
            }
        };
        let client_host = host_header.cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let upgrade = requested_upgrade(&parts.headers, seen);
        let wants_trailers = accepts_trailers(&parts.headers, seen);
        let client_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<OnUpgrade>());
        let mut fwd = Forwarding::new(
            &parts.headers,
            seen,
            &forward::Origin {
                client_ip: conn.peer.ip(),
                client_ip_value: &conn.ip_value,
                trusted: self.trusted(conn.peer.ip()),
                proto: if conn.tls { "https" } else { "http" },
                host: client_host.as_ref(),
                request_id,
                forwarded: self.settings.forwarded_header,
            },
        );
        if route.preserve_host
            && let Some(h) = client_host
        {
            fwd.host = forward::Field::Set(h);
        }
        // TE is hop-by-hop, but a client that takes trailers gets them only
        // if the backend is told so too.
        fwd.te_trailers = wants_trailers;
        fwd.upgrade.clone_from(&upgrade);
        let ctx = PickContext {
            hash: upstream
                .hash_on
                .as_ref()
                .and_then(|h| hash_key(h, &parts.headers, &fwd, conn.peer)),
        };
        let body = request_body::share(body, body_limit);
        if self.settings.access_log {
            outcome.body.clone_from(&body);
        }
        // An upgrade is a conversation: once sent, never repeat it.
        let idempotent = is_idempotent(&parts.method) && upgrade.is_none();
        // 1xx answers (103 Early Hints) go on to HTTP/1.1 clients until the
        // final answer is known.
        let interim = (parts.version == Version::HTTP_11).then(|| conn.interim.arm());
        let head =
            if body.is_none() && upgrade.is_none() && upstream.backends.iter().all(|b| b.pooled) {
                Head::Encoded(EncodedHead::new(
                    &parts.method,
                    path_and_query.as_str(),
                    &parts.headers,
                    &fwd,
                ))
            } else {
                Head::Fields(Box::new(Fields {
                    path_and_query,
                    headers: Some(parts.headers),
                    fwd,
                }))
            };
        Ok(Prepared {
            upstream: route.upstream,
            method: parts.method,
            head,
            client_upgrade,
            body,
            body_limit,
            ctx,
            idempotent,
            interim,
        })
    }

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
        // A retry needs another backend: never more attempts than backends.
        let attempts = (upstream.retries as usize + 1)
            .min(MAX_ATTEMPTS)
            .min(upstream.backends.len().max(1));
        let mut tried = [usize::MAX; MAX_ATTEMPTS];
        let mut last_failure = None;

        for attempt in 0..attempts {
            let Some(i) = upstream.pick(&p.ctx, &tried[..attempt]) else {
                break;
            };
            tried[attempt] = i;
            outcome.backend = Some(i);
            let backend = &upstream.backends[i];
            let last = attempt + 1 == attempts;
            // Plain HTTP/1.1 goes through the backend's own pool; without a
            // body (nor upgrade), the request's task drives it itself (the
            // inline client), from the head `prepare` wrote or, when the
            // upstream also has other backends, from one written below.
            // Through hyper's client: boxed, as hyper's futures are large
            // and the hot path below should not carry (and move) their room.
            let mut via_hyper = None;
            match p.attempt(backend, last, request_id)? {
                Attempt::Inline => {}
                Attempt::Hyper(r) => {
                    let r = *r;
                    let pool = backend.state.pool();
                    let send: SendFuture<'_> = if backend.pooled {
                        Box::pin(async move {
                            match pool
                                .send(&backend.authority, upstream.connect_timeout, r)
                                .await
                            {
                                Ok((resp, lent)) => {
                                    Ok(resp.map(|b| Upstream::Hyper(b, Some(lent))))
                                }
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
                    via_hyper = Some(send);
                }
            }

            let in_flight = backend.state.start();
            let started = registry::now_ns();
            let deadline = tokio::time::Instant::now() + upstream.response_header_timeout;
            let sent = async {
                if let Some(send) = via_hyper {
                    return tokio::time::timeout_at(deadline, send).await;
                }
                let written;
                let head = match &p.head {
                    Head::Encoded(head) => &head.bytes,
                    Head::Fields(f) => {
                        let headers = f.headers.as_ref().expect("kept for inline requests");
                        let mut head =
                            EncodedHead::new(&p.method, f.path_and_query.as_str(), headers, &f.fwd);
                        head.point_at(backend);
                        written = head.bytes;
                        &written
                    }
                };
                let mut relay = |status, headers: &HeaderMap| {
                    if let Some(armed) = &p.interim {
                        armed.relay(status, headers, request_id);
                    }
                };
                // The inline client keeps the deadline on its connection's
                // own timer (see `h1::Conn`); a missed one is its error.
                let limits = pool::Limits {
                    connect_timeout: upstream.connect_timeout,
                    deadline,
                };
                match backend
                    .state
                    .pool()
                    .exchange(
                        &backend.authority,
                        limits,
                        head,
                        &p.method,
                        p.idempotent,
                        &mut relay,
                    )
                    .await
                {
                    Ok(resp) => Ok(Ok(resp.map(|b| Upstream::Inline(Some(b))))),
                    Err(e) => Ok(Err(ProxyError::from_pool(&backend.url, e))),
                }
            };
            let failure = match sent.await {
                Ok(Ok(mut resp)) => {
                    p.interim = None;
                    let now = registry::now_ns();
                    let took = now - started;
                    backend.state.observe_latency(took, now);
                    if self.settings.metrics {
                        backend.state.stats().duration.observe_ns(took);
                    }
                    if resp.status().is_server_error() {
                        backend.state.stats().error(ErrorKind::Status5xx);
                        upstream.report_failure(i);
                    } else {
                        upstream.report_success(i);
                    }
                    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                    let backend_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
                    let accepted = resp.headers().get(header::UPGRADE).cloned();
                    let (mut head, resp_body) = resp.into_parts();
                    headers::forward_response(&mut head.headers, request_id);
                    if let (Some(client_side), Some(backend_side), Some(proto)) =
                        (p.client_upgrade.take(), backend_upgrade, accepted)
                    {
                        head.headers
                            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                        head.headers.insert(header::UPGRADE, proto);
                        self.tunnels.spawn(
                            client_side,
                            backend_side,
                            self.settings.tunnel_idle,
                            in_flight,
                            Arc::clone(&backend.url),
                        );
                        return Ok(Response::from_parts(head, ProxyBody::empty()));
                    }
                    let body =
                        ProxyBody::upstream(resp_body, in_flight, upstream.body_idle_timeout);
                    return Ok(Response::from_parts(head, body));
                }
                Ok(Err(e)) if p.body.as_ref().is_some_and(|b| b.too_large()) => {
                    drop(e);
                    return Err(ProxyError::BodyTooLarge(p.body_limit));
                }
                Ok(Err(e)) => e,
                Err(_elapsed) => ProxyError::Timeout {
                    backend: Arc::clone(&backend.url),
                },
            };
            drop(in_flight);
            backend.state.stats().error(match failure {
                ProxyError::Connect { .. } => ErrorKind::Connect,
                ProxyError::Timeout { .. } => ErrorKind::Timeout,
                _ => ErrorKind::Protocol,
            });
            upstream.report_failure(i);
            // Retry on another backend only when nothing reached this one (a
            // refused connection), or for an idempotent request whose body
            // has not started streaming.
            let body_intact = p.body.as_ref().is_none_or(|slot| !slot.taken());
            let nothing_sent = matches!(failure, ProxyError::Connect { .. });
            let retryable = body_intact && (nothing_sent || p.idempotent);
            if last || !retryable {
                return Err(failure);
            }
            tracing::debug!(upstream = %upstream.name, backend = %backend.url, error = %failure, "retrying on another backend");
            upstream.stats.retried();
            outcome.retries += 1;
            last_failure = Some(failure);
        }
        // Every backend was tried (or none is available): the last failure
        // says more than "no backend".
        Err(last_failure.unwrap_or_else(|| ProxyError::NoBackend(Arc::clone(&upstream.name))))
    }
}

fn path_error() -> ProxyError {
    ProxyError::BadPath(path::PathError::BadCharacter)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head written once and given each backend's `Host` in turn is the
    /// head written for that backend from scratch.
    #[test]
    fn an_encoded_head_takes_each_backends_host() {
        static IP: HeaderValue = HeaderValue::from_static("127.0.0.1");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        let id = HeaderValue::from_static("id-1");
        let client_host = HeaderValue::from_static("shop.example");
        let origin = forward::Origin {
            client_ip: "127.0.0.1".parse().unwrap(),
            client_ip_value: &IP,
            trusted: false,
            proto: "http",
            host: Some(&client_host),
            request_id: &id,
            forwarded: false,
        };
        let from_scratch = |fwd: &Forwarding, host: Option<&HeaderValue>| {
            let mut out = Vec::new();
            h1::encode_request(&mut out, &Method::GET, "/cart?id=7", |put| {
                if let Some(host) = host {
                    put(&header::HOST, host);
                }
                fwd.write(&h, put)
            });
            String::from_utf8(out).unwrap()
        };
        let backends = [
            HeaderValue::from_static("10.0.0.1:8080"),
            HeaderValue::from_static("a-much-longer-backend-name.internal:9000"),
            HeaderValue::from_static("b:1"),
        ];
        // The backend's own Host, replaced per attempt.
        let fwd = Forwarding::new(&h, Seen::of(&h), &origin);
        let mut head = EncodedHead::new(&Method::GET, "/cart?id=7", &h, &fwd);
        assert!(head.backend_host);
        for backend in &backends {
            head.set_host(backend);
            let got = String::from_utf8(head.bytes.clone()).unwrap();
            assert_eq!(got, from_scratch(&fwd, Some(backend)));
            assert!(got.starts_with(&format!(
                "GET /cart?id=7 HTTP/1.1\r\nhost: {}\r\n",
                backend.to_str().unwrap()
            )));
        }
        // The client's Host kept (`preserve_host`): written once, first.
        let mut fwd = Forwarding::new(&h, Seen::of(&h), &origin);
        fwd.host = forward::Field::Set(client_host.clone());
        let head = EncodedHead::new(&Method::GET, "/cart?id=7", &h, &fwd);
        assert!(!head.backend_host);
        let got = String::from_utf8(head.bytes).unwrap();
        assert_eq!(got, from_scratch(&fwd, None));
        assert!(got.starts_with("GET /cart?id=7 HTTP/1.1\r\nhost: shop.example\r\n"));
    }

    #[test]
    fn host_without_port() {
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
    }
}
