//! From a request head to what its attempts need: check the request line,
//! normalise the path, route, and work out the rewrite — everything that
//! needs no waiting, done before the request's future is made.
//!
//! [`Proxy::route_head`] is the part both kinds of request share: it reads
//! the head through [`Fields`], so a head hyper parsed into a map and one
//! the inline server parsed in place get the same checks, route and edits.
//! [`Proxy::prepare`] wraps it for hyper's requests (body, upgrade, the
//! head kept as fields for hyper's client); the inline server writes the
//! upstream head straight away ([`EncodedHead`]).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::{ConnInfo, Outcome, Proxy, ProxyError, ProxySettings, interim};
use crate::balance::{self, PickContext};
use crate::config::HashOn;
use crate::http1;
use crate::http1::fields::{Fields, byte_set};
use crate::http1::forward::RequestEdits;
use crate::http1::forward::{self, Forwarding};
use crate::http1::headers::{self, Seen};
use crate::http1::response::Decoration;
use crate::policy::{CompiledPolicies, PolicyRequest};
use crate::routing::path;
use crate::snapshot::{CompiledBackend, Snapshot};
use crate::transport::request_body;

/// A request head as routing sees it, whoever parsed it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a, F> {
    pub method: &'a Method,
    pub version: Version,
    /// The target's path as received (origin-form, or the path of an
    /// absolute-form target).
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The target's authority (absolute-form, or HTTP/2 `:authority`).
    pub authority: Option<&'a str>,
    pub fields: &'a F,
    pub seen: Seen,
}

impl<'a, F: Fields> RequestHead<'a, F> {
    /// Length of the request target's path and query.
    fn target_len(&self) -> usize {
        self.path.len() + self.query.map_or(0, |q| q.len() + 1)
    }
}

/// What checking, routing and rewriting a head decided.
#[derive(Debug)]
pub(super) struct Routed<'a> {
    /// Index of the route's upstream in the snapshot.
    pub upstream: usize,
    /// The path to send upstream: normalised, the route's prefix stripped
    /// if it says so; borrowed from the head when nothing changed it.
    pub path: Cow<'a, str>,
    pub fwd: Forwarding,
    pub ctx: PickContext,
    pub body_limit: u64,
    /// The protocol the client asks to switch to.
    pub upgrade: Option<HeaderValue>,
    /// May be sent again (to another backend).
    pub idempotent: bool,
    /// Every backend of the upstream takes the inline client.
    pub inline: bool,
    /// What the route's policies do to the request's and the response's
    /// fields, if anything.
    pub edits: RouteEdits,
}

/// A request checked, routed and rewritten, ready for its attempts.
#[derive(Debug)]
pub(super) struct Prepared {
    /// Index of the route's upstream in the snapshot.
    pub upstream: usize,
    pub method: Method,
    pub head: Head,
    pub client_upgrade: Option<OnUpgrade>,
    pub body: Option<Arc<request_body::BodySlot>>,
    pub body_limit: u64,
    pub ctx: PickContext,
    pub idempotent: bool,
    /// Relaying 1xx answers to the client through hyper's server, until
    /// the final one.
    pub interim: Option<interim::Armed>,
    /// What the route's policies do to the response, if anything.
    pub decoration: Option<Box<Decoration>>,
}

/// The request head the upstream gets.
#[derive(Debug)]
pub(super) enum Head {
    /// Written out before any attempt, when every backend of the upstream
    /// takes the inline client and there is no body nor upgrade. The
    /// client's head can then be dropped at once: its fields and target
    /// share the connection's read buffer, which is reused only once
    /// nothing else holds it.
    Encoded(EncodedHead),
    /// The client's head and the gateway's edits, applied per attempt
    /// (boxed: the edits are large, and the hot path does not use them).
    Fields(Box<KeptFields>),
}

#[derive(Debug)]
pub(super) struct KeptFields {
    pub path_and_query: PathAndQuery,
    /// The client's fields (without the gateway's edits); taken by the last
    /// attempt through hyper's client.
    pub headers: Option<HeaderMap>,
    pub fwd: Forwarding,
    /// The route's own edits to the fields, if any.
    pub edits: Option<Arc<RequestEdits>>,
}

/// A request head in bytes, but for each backend's `Host`.
#[derive(Debug)]
pub(super) struct EncodedHead {
    bytes: Vec<u8>,
    /// Where the `host` line goes: just after the request line.
    host_at: usize,
    /// Each backend gets its own `Host` (see [`Self::for_backend`]); else
    /// the client's is kept and written with the other fields.
    backend_host: bool,
}

impl EncodedHead {
    pub fn new(
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &impl Fields,
        fwd: &Forwarding,
        edits: Option<&RequestEdits>,
    ) -> Self {
        let mut bytes = Vec::with_capacity(256);
        let has_length = headers.contains(&header::CONTENT_LENGTH)
            && fwd
                .decides(header::CONTENT_LENGTH.as_str().as_bytes())
                .is_none();
        let host_at =
            http1::encode_request(
                &mut bytes,
                method,
                path,
                query,
                has_length,
                |out| match edits {
                    None => fwd.write(headers, out),
                    Some(edits) => fwd.write_edited(headers, out, edits),
                },
            );
        EncodedHead {
            bytes,
            host_at,
            backend_host: fwd.backend_host(),
        }
    }

    /// The head as `backend` gets it: its own `Host` line goes after the
    /// request line, unless the client's is kept (no copy: the pieces go
    /// out with one vectored write).
    pub fn for_backend<'a>(
        &'a self,
        backend: &'a CompiledBackend,
    ) -> crate::transport::h1::HeadBytes<'a> {
        let (line, fields) = self.bytes.split_at(self.host_at);
        let host: &[u8] = if self.backend_host {
            &backend.host_line
        } else {
            &[]
        };
        [line, host, fields]
    }
}

/// The authority a request is for, decided once and used for routing,
/// `X-Forwarded-Host`, `Forwarded`, `preserve_host` and the access log:
/// the target's (absolute-form, or HTTP/2's `:authority`) when it has one,
/// which wins over `Host` (RFC 9112 §3.2.2), else the `Host` field.
#[derive(Debug, Clone, Copy)]
enum Authority<'a> {
    Target(&'a str),
    HostField(&'a [u8]),
}

impl<'a> Authority<'a> {
    /// The request's authority, checked: at most one `Host`, which an
    /// HTTP/1.1 request without an authority in its target must have;
    /// over HTTP/2, a `Host` beside `:authority` names the same (RFC 9113
    /// §8.3.1); and the one used is a `uri-host [":" port]`, no userinfo.
    fn of<F: Fields>(head: &RequestHead<'a, F>) -> Result<Option<Self>, ProxyError> {
        if head.seen.hosts {
            return Err(ProxyError::BadHost("more than one Host header"));
        }
        let host = head
            .seen
            .host
            .then(|| head.fields.all(&header::HOST).next())
            .flatten();
        let authority = match (head.authority, host) {
            (Some(target), host) => {
                if head.version == Version::HTTP_2
                    && host.is_some_and(|h| !h.eq_ignore_ascii_case(target.as_bytes()))
                {
                    return Err(ProxyError::BadHost("Host differs from :authority"));
                }
                Authority::Target(target)
            }
            (None, Some(host)) => Authority::HostField(host),
            (None, None) if head.version == Version::HTTP_11 => {
                return Err(ProxyError::BadHost("HTTP/1.1 request without Host"));
            }
            (None, None) => return Ok(None),
        };
        if !is_authority(authority.bytes()) {
            return Err(ProxyError::BadHost("not a host and optional port"));
        }
        Ok(Some(authority))
    }

    fn bytes(&self) -> &'a [u8] {
        match self {
            Authority::Target(a) => a.as_bytes(),
            Authority::HostField(h) => h,
        }
    }

    /// The host without port, for routing.
    fn host(&self) -> &'a str {
        // Checked ASCII (see `is_authority`).
        strip_port(std::str::from_utf8(self.bytes()).unwrap_or_default())
    }

    /// What the upstream is told of it: the client's own `Host` field as
    /// sent (no copy), or the target's authority.
    fn field(&self) -> forward::Field {
        match self {
            Authority::HostField(_) => forward::Field::ClientHost,
            Authority::Target(a) => {
                HeaderValue::from_str(a).map_or(forward::Field::Drop, forward::Field::Set)
            }
        }
    }
}

/// Whether `a` is `uri-host [ ":" port ]` (RFC 3986 §3.2.2, RFC 9110
/// §7.2): an IPv6 literal in brackets, or a name of unreserved
/// characters, sub-delims and percent-escapes (an IPv4 address is one);
/// then digits after a colon. No userinfo, path, space or control. One
/// table look-up per byte: it runs for every request.
fn is_authority(a: &[u8]) -> bool {
    let port = if a.first() == Some(&b'[') {
        let Some(end) = a.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = std::str::from_utf8(&a[1..end]).ok();
        if literal
            .and_then(|l| l.parse::<std::net::Ipv6Addr>().ok())
            .is_none()
        {
            return false;
        }
        &a[end + 1..]
    } else {
        match reg_name_len(a) {
            Some(n) => &a[n..],
            None => return false,
        }
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// How long the `reg-name` (`*( unreserved / pct-encoded / sub-delims )`)
/// at the front of `a` is; `None` for a bad escape.
fn reg_name_len(a: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        i += a[i..]
            .iter()
            .position(|&b| !REG_NAME[usize::from(b)])
            .unwrap_or(a.len() - i);
        if a.get(i) != Some(&b'%') {
            return Some(i);
        }
        let hex = |j: usize| a.get(j).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(i + 1) && hex(i + 2)) {
            return None;
        }
        i += 3;
    }
}

/// Bytes of a `reg-name`: unreserved and sub-delims (RFC 3986 §3.2.2).
static REG_NAME: [bool; 256] =
    byte_set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=");

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
    headers: &impl Fields,
    fwd: &Forwarding,
    peer: SocketAddr,
) -> Option<u64> {
    match hash_on {
        HashOn::Header(name) => fwd.value(headers, name).map(balance::ConsistentHash::hash),
        HashOn::Cookie(name) => headers
            .all(&header::COOKIE)
            .filter_map(headers::text)
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
/// `Upgrade`), unless it is `h2c`, which a proxy must not pass on. Only
/// HTTP/1.1 has upgrades: an HTTP/1.0 request's `Upgrade` is ignored
/// (RFC 9110 §7.8), and the request served as any other.
#[inline]
fn requested_upgrade(head: &RequestHead<'_, impl Fields>) -> Option<HeaderValue> {
    if !(head.seen.connection && head.seen.upgrade) || head.version != Version::HTTP_11 {
        return None;
    }
    upgrade_named(head.fields)
}

/// [`requested_upgrade`] for a head with both fields. (Apart: the other
/// requests only test two flags.)
#[inline(never)]
fn upgrade_named(headers: &impl Fields) -> Option<HeaderValue> {
    let wants = headers::lists_token(headers, &header::CONNECTION, "upgrade");
    let upgrade = headers.value(&header::UPGRADE)?;
    let h2c = upgrade
        .to_str()
        .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c")))
        .unwrap_or(true);
    (wants && !h2c).then_some(upgrade)
}

/// Whether the client said `TE: trailers`.
fn accepts_trailers(headers: &impl Fields, seen: Seen) -> bool {
    seen.te && headers::lists_token(headers, &header::TE, "trailers")
}

/// Refuse request lines and heads a gateway must not pass on.
fn check_request<F: Fields>(
    head: &RequestHead<'_, F>,
    settings: &ProxySettings,
) -> Result<(), ProxyError> {
    if *head.method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    if head.target_len() > settings.max_uri_bytes {
        return Err(ProxyError::UriTooLong(settings.max_uri_bytes));
    }
    // A body coded other than `chunked` would be passed on re-framed,
    // its coding lost with the hop-by-hop field (RFC 9112 §6.1: 501).
    if head.seen.transfer_encoding
        && !head
            .fields
            .all(&header::TRANSFER_ENCODING)
            .all(headers::only_chunked)
    {
        return Err(ProxyError::UnsupportedCoding);
    }
    Ok(())
}

/// `Content-Length` if the client declared one.
fn declared_length(headers: &impl Fields, seen: Seen) -> Option<u64> {
    if !seen.content_length {
        return None;
    }
    headers
        .all(&header::CONTENT_LENGTH)
        .next()
        .and_then(headers::text)
        .and_then(|v| v.trim().parse().ok())
}

impl Proxy {
    fn trusted(&self, ip: IpAddr) -> bool {
        let proxies = &self.settings.trusted_proxies;
        !proxies.is_empty() && proxies.iter().any(|net| net.contains(&ip))
    }

    /// Run a route's policies on a request (see [`crate::policy`]): a
    /// denial, redirect or preflight ends it; a request that passes takes
    /// the request's field edits and the response's decoration. (Apart,
    /// and never inlined: the routes without policies keep `route_head` as
    /// small as before.)
    #[inline(never)]
    fn check_policies<F: Fields>(
        &self,
        policies: &CompiledPolicies,
        head: &RequestHead<'_, F>,
        conn: &ConnInfo,
        host: Option<&str>,
        path: &str,
    ) -> Result<RouteEdits, ProxyError> {
        let request = PolicyRequest {
            method: head.method,
            fields: head.fields,
            peer: conn.peer.ip(),
            trusted: &self.settings.trusted_proxies,
            tls: conn.tls,
            host,
            path,
            query: head.query,
            now_ns: crate::clock::now_ns(),
        };
        let passed = policies
            .check(&request)
            .map_err(|v| ProxyError::Policy(Box::new(v)))?;
        Ok(RouteEdits {
            request: policies.request.clone(),
            response: policies.decoration(passed).map(Box::new),
        })
    }

    /// Check and route a request head and work out the gateway's edits to
    /// it; the route goes in `outcome`. For the inline server (`inline`):
    /// `None` if the route's upstream needs hyper's client, found before
    /// the route's policies run (hyper's server then runs them, once).
    pub(super) fn route_head<'a, F: Fields>(
        &self,
        snapshot: &Snapshot,
        head: &RequestHead<'a, F>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
        outcome: &mut Outcome,
        inline: bool,
    ) -> Result<Option<Routed<'a>>, ProxyError> {
        check_request(head, &self.settings)?;
        let authority = Authority::of(head)?;
        let (fields, seen) = (head.fields, head.seen);
        #[cfg(feature = "fault-injection")]
        {
            outcome.fault = super::fault::requested(fields);
            if outcome.fault == Some(super::fault::Stage::Route) {
                super::fault::panic_at(super::fault::Stage::Route);
            }
        }
        let path = path::normalize(head.path)?;
        // The host matters to routing only when some route names hosts.
        let host = if snapshot.has_host_routes() {
            authority.map(|a| a.host())
        } else {
            None
        };
        // (Not `ok_or`: that makes an error, and drops it, per request.)
        let Some((matched, route)) = snapshot.find(host, head.method, &path) else {
            return Err(ProxyError::NoRoute);
        };
        outcome.route = Some(matched.route);
        let pooled = route
            .upstream
            .is_some_and(|u| snapshot.upstream(u).backends.iter().all(|b| b.pooled));
        if inline && route.upstream.is_some() && !pooled {
            return Ok(None);
        }
        // A route's policies (in their fixed order) may answer at once.
        let edits = match &route.policies {
            None => RouteEdits::default(),
            Some(policies) => {
                let host = authority.map(|a| a.host());
                self.check_policies(policies, head, conn, host, &path)?
            }
        };
        // Only a route that redirects has no upstream, and it has answered.
        let Some(slot) = route.upstream else {
            return Err(ProxyError::NoRoute);
        };
        let upstream = snapshot.upstream(slot);
        let body_limit = route.max_body_bytes.unwrap_or(self.settings.max_body_bytes);
        if declared_length(fields, seen).is_some_and(|n| n > body_limit) {
            return Err(ProxyError::BodyTooLarge(body_limit));
        }
        let path = match path {
            Cow::Borrowed(p) if route.strip_prefix => Cow::Borrowed(matched.strip(p)),
            Cow::Owned(p) if route.strip_prefix => Cow::Owned(matched.strip(&p).to_string()),
            unchanged => unchanged,
        };
        let client_host = match authority {
            Some(a) => a.field(),
            None => forward::Field::Drop,
        };
        let upgrade = requested_upgrade(head);
        let mut fwd = Forwarding::new(
            fields,
            seen,
            &forward::Origin {
                client_ip: conn.peer.ip(),
                client_ip_value: &conn.ip_value,
                untrusted_lines: &conn.untrusted_lines,
                trusted: self.trusted(conn.peer.ip()),
                proto: if conn.tls { "https" } else { "http" },
                host: &client_host,
                request_id,
                forwarded: self.settings.forwarded_header,
            },
        );
        if route.preserve_host && client_host != forward::Field::Drop {
            fwd.host = client_host;
        }
        // TE is hop-by-hop, but a client that takes trailers gets them only
        // if the backend is told so too.
        fwd.te_trailers = accepts_trailers(fields, seen);
        if upgrade.is_some() {
            fwd.upgrade.clone_from(&upgrade);
        }
        let ctx = PickContext {
            hash: upstream
                .hash_on
                .as_ref()
                .and_then(|h| hash_key(h, fields, &fwd, conn.peer)),
        };
        Ok(Some(Routed {
            upstream: slot,
            path,
            fwd,
            ctx,
            body_limit,
            // An upgrade is a conversation: once sent, never repeat it.
            idempotent: is_idempotent(head.method) && upgrade.is_none(),
            upgrade,
            inline: pooled,
            edits,
        }))
    }

    /// Check, route and rewrite a request hyper's server parsed: everything
    /// that needs no waiting, so that the future that then talks to
    /// backends carries only what lives across its awaits.
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
        let head = RequestHead {
            method: &parts.method,
            version: parts.version,
            path: parts.uri.path(),
            query: parts.uri.query(),
            authority: parts.uri.authority().map(|a| a.as_str()),
            fields: &parts.headers,
            seen,
        };
        let routed = self
            .route_head(snapshot, &head, conn, request_id, outcome, false)?
            .expect("routed for hyper's server");
        let path_and_query = match (routed.path == parts.uri.path(), parts.uri.query()) {
            (true, _) => parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            (false, None) => PathAndQuery::try_from(&*routed.path).map_err(|_| path_error())?,
            (false, Some(q)) => {
                PathAndQuery::try_from(format!("{}?{q}", routed.path)).map_err(|_| path_error())?
            }
        };
        let Routed {
            upstream,
            fwd,
            ctx,
            body_limit,
            upgrade,
            idempotent,
            inline,
            edits,
            ..
        } = routed;
        let client_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<OnUpgrade>());
        let body = request_body::share(body, body_limit, self.settings.client_body_timeout);
        if self.access_log.is_some() {
            outcome.body.clone_from(&body);
        }
        // 1xx answers (103 Early Hints) go on to HTTP/1.1 clients until the
        // final answer is known.
        let interim = (parts.version == Version::HTTP_11).then(|| conn.interim.arm());
        let head = if body.is_none() && upgrade.is_none() && inline {
            Head::Encoded(EncodedHead::new(
                &parts.method,
                path_and_query.path(),
                path_and_query.query(),
                &parts.headers,
                &fwd,
                edits.request.as_deref(),
            ))
        } else {
            Head::Fields(Box::new(KeptFields {
                path_and_query,
                headers: Some(parts.headers),
                fwd,
                edits: edits.request,
            }))
        };
        Ok(Prepared {
            upstream,
            method: parts.method,
            head,
            client_upgrade,
            body,
            body_limit,
            ctx,
            idempotent,
            interim,
            decoration: edits.response,
        })
    }
}

/// A route's edits to one request and its response.
#[derive(Debug, Default)]
pub(super) struct RouteEdits {
    pub request: Option<Arc<RequestEdits>>,
    pub response: Option<Box<Decoration>>,
}

pub(super) fn path_error() -> ProxyError {
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
        let lines = forward::untrusted_lines(&IP, "http");
        let host_field = forward::Field::ClientHost;
        let origin = forward::Origin {
            client_ip: "127.0.0.1".parse().unwrap(),
            client_ip_value: &IP,
            untrusted_lines: &lines,
            trusted: false,
            proto: "http",
            host: &host_field,
            request_id: &id,
            forwarded: false,
        };
        let from_scratch = |fwd: &Forwarding, host: Option<&HeaderValue>| {
            let mut out = Vec::new();
            http1::encode_request(
                &mut out,
                &Method::GET,
                "/cart",
                Some("id=7"),
                false,
                |out| {
                    if let Some(host) = host {
                        out.extend_from_slice(b"host: ");
                        out.extend_from_slice(host.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                    fwd.write(&h, out)
                },
            );
            String::from_utf8(out).unwrap()
        };
        let backends = [
            "10.0.0.1:8080",
            "a-much-longer-backend-name.internal:9000",
            "b:1",
        ];
        let registry = crate::Registry::new();
        let backend = |host: &str| CompiledBackend {
            id: 1,
            url: format!("http://{host}").into(),
            scheme: http::uri::Scheme::HTTP,
            authority: host.parse().unwrap(),
            host: HeaderValue::from_str(host).unwrap(),
            host_line: format!("host: {host}\r\n").into(),
            pooled: true,
            weight: 1,
            state: registry.backend(&crate::registry::BackendKey {
                upstream: "u".into(),
                url: host.into(),
            }),
        };
        // The backend's own Host, after the request line.
        let fwd = Forwarding::new(&h, Seen::of(&h), &origin);
        let head = EncodedHead::new(&Method::GET, "/cart", Some("id=7"), &h, &fwd, None);
        assert!(head.backend_host);
        for host in backends {
            let got = String::from_utf8(head.for_backend(&backend(host)).concat()).unwrap();
            let value = HeaderValue::from_str(host).unwrap();
            assert_eq!(got, from_scratch(&fwd, Some(&value)));
            assert!(got.starts_with(&format!("GET /cart?id=7 HTTP/1.1\r\nhost: {host}\r\n")));
        }
        // The client's Host kept (`preserve_host`): written once, first.
        let mut fwd = Forwarding::new(&h, Seen::of(&h), &origin);
        fwd.host = forward::Field::ClientHost;
        let head = EncodedHead::new(&Method::GET, "/cart", Some("id=7"), &h, &fwd, None);
        assert!(!head.backend_host);
        let got = String::from_utf8(head.for_backend(&backend("b:1")).concat()).unwrap();
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
