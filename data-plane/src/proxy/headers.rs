//! Header rewriting between client and upstream (DESIGN: proxy semantics).

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, never forwarded (RFC 9110
/// §7.6.1), plus proxy credentials meant for this hop. `Trailer` is
/// end-to-end: it declares the trailer fields that follow the body.
static HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// Whether the comma-separated list header `name` (all its lines) holds
/// `token`, compared without regard to case.
pub fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers and every header named in `Connection`.
/// Most messages carry none: one pass over the names finds out, and only
/// headers actually present are removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the gateway knows of a request's origin, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub client_ip: IpAddr,
    /// `client_ip` as a header value (made once per connection).
    pub client_ip_value: &'a HeaderValue,
    /// The peer is a trusted proxy: its forwarding headers are extended,
    /// not replaced.
    pub trusted: bool,
    /// `http` or `https` (how the client reached the gateway).
    pub proto: &'static str,
    /// The host the client asked for (`Host` or `:authority`).
    pub host: Option<&'a HeaderValue>,
    pub request_id: &'a HeaderValue,
    /// Also send RFC 7239 `Forwarded`.
    pub forwarded: bool,
}

pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// What the gateway adds to `Via` in both directions (RFC 9110 §7.6.3).
static VIA_ENTRY: HeaderValue = HeaderValue::from_static("1.1 switchyard");

/// Append `entry` to a list header; with no prior value, `entry` itself
/// (given as a ready value, so the common case allocates nothing).
fn append(headers: &mut HeaderMap, name: &HeaderName, entry: &HeaderValue) {
    let prior = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match prior {
        Some(p) if !p.is_empty() => {
            let joined = format!("{p}, {}", entry.to_str().unwrap_or_default());
            if let Ok(v) = HeaderValue::from_str(&joined) {
                headers.insert(name, v);
            }
        }
        _ => {
            headers.insert(name, entry.clone());
        }
    }
}

/// A value for a `Forwarded` parameter: a token as is, anything else quoted.
fn forwarded_value(v: &str) -> String {
    let token = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Rewrite a request's headers for the upstream. Runs after
/// [`strip_hop_by_hop`], so a client cannot remove these with `Connection`.
/// From an untrusted peer, incoming `X-Forwarded-*`, `X-Real-IP` and
/// `Forwarded` are replaced; from a trusted proxy they are kept and
/// extended.
pub fn forward_request(headers: &mut HeaderMap, origin: &Origin<'_>) {
    let ip_value = origin.client_ip_value;
    if origin.trusted {
        append(headers, &X_FORWARDED_FOR, ip_value);
    } else {
        headers.insert(&X_FORWARDED_FOR, ip_value.clone());
    }
    let keep =
        |headers: &HeaderMap, name: &HeaderName| origin.trusted && headers.contains_key(name);
    if !keep(headers, &X_REAL_IP) {
        headers.insert(&X_REAL_IP, ip_value.clone());
    }
    if !keep(headers, &X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(origin.proto));
    }
    if !keep(headers, &X_FORWARDED_HOST) {
        match origin.host {
            Some(h) => headers.insert(&X_FORWARDED_HOST, h.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    if !origin.trusted {
        headers.remove(&FORWARDED);
    }
    if origin.forwarded {
        let for_value = match origin.client_ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let mut element = format!("for={for_value};proto={}", origin.proto);
        if let Some(host) = origin.host.and_then(|h| h.to_str().ok()) {
            element.push_str(";host=");
            element.push_str(&forwarded_value(host));
        }
        if let Ok(element) = HeaderValue::from_str(&element) {
            append(headers, &FORWARDED, &element);
        }
    }
    append(headers, &header::VIA, &VIA_ENTRY);
    headers.insert(&X_REQUEST_ID, origin.request_id.clone());
}

/// Rewrite an upstream response's headers for the client.
pub fn forward_response(headers: &mut HeaderMap, request_id: &HeaderValue) {
    strip_hop_by_hop(headers);
    if headers
        .keys()
        .any(|k| k == header::SERVER || k == X_POWERED_BY)
    {
        headers.remove(header::SERVER);
        headers.remove(&X_POWERED_BY);
    }
    append(headers, &header::VIA, &VIA_ENTRY);
    headers.insert(&X_REQUEST_ID, request_id.clone());
}

/// The client's request ID if it sent a usable one, otherwise a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if is_usable_id(v.as_bytes()) => v.clone(),
        _ => new_request_id(),
    }
}

/// Short (≤ 128 bytes) and printable ASCII, so it is safe to log and echo.
fn is_usable_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(|b| (0x21..0x7f).contains(b))
}

/// A fresh 32-hex-digit ID: a random per-process prefix and a counter,
/// unique without a syscall or lock per request.
pub fn new_request_id() -> HeaderValue {
    static PREFIX: LazyLock<u64> =
        LazyLock::new(|| RandomState::new().hash_one(std::process::id()));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    hex(*PREFIX, &mut buf[..16]);
    hex(n, &mut buf[16..]);
    HeaderValue::from_bytes(&buf).expect("hex is a valid header value")
}

fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_tokens_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-keep"], "yes");
    }

    static LOCALHOST: HeaderValue = HeaderValue::from_static("127.0.0.1");
    static V6: HeaderValue = HeaderValue::from_static("::1");

    fn origin<'a>(trusted: bool, host: Option<&'a HeaderValue>, id: &'a HeaderValue) -> Origin<'a> {
        Origin {
            client_ip: "127.0.0.1".parse().unwrap(),
            client_ip_value: &LOCALHOST,
            trusted,
            proto: "http",
            host,
            request_id: id,
            forwarded: false,
        }
    }

    #[test]
    fn forwarded_headers_survive_connection_tricks() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-forwarded-for, x-request-id"),
        );
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        strip_hop_by_hop(&mut h);
        let host = HeaderValue::from_static("example.com");
        let id = HeaderValue::from_static("abc");
        forward_request(&mut h, &origin(false, Some(&host), &id));
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_REQUEST_ID], "abc");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_REAL_IP], "127.0.0.1");
        assert_eq!(h[header::VIA], "1.1 switchyard");
    }

    #[test]
    fn untrusted_peers_cannot_forge_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(&FORWARDED, HeaderValue::from_static("for=203.0.113.9"));
        let id = new_request_id();
        forward_request(&mut h, &origin(false, None, &id));
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_REAL_IP], "127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert!(!h.contains_key(&FORWARDED));
        assert!(!h.contains_key(&X_FORWARDED_HOST));
    }

    #[test]
    fn trusted_proxies_are_extended() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(
            &FORWARDED,
            HeaderValue::from_static("for=203.0.113.9;proto=https"),
        );
        h.insert(header::VIA, HeaderValue::from_static("1.1 edge"));
        let id = new_request_id();
        let host = HeaderValue::from_static("shop.example:8443");
        let mut o = origin(true, Some(&host), &id);
        o.forwarded = true;
        forward_request(&mut h, &o);
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 127.0.0.1");
        assert_eq!(h[&X_REAL_IP], "203.0.113.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(
            h[&FORWARDED],
            "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=\"shop.example:8443\""
        );
        assert_eq!(h[header::VIA], "1.1 edge, 1.1 switchyard");
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        let mut h = HeaderMap::new();
        let id = new_request_id();
        let mut o = origin(false, None, &id);
        o.client_ip = "::1".parse().unwrap();
        o.client_ip_value = &V6;
        o.forwarded = true;
        forward_request(&mut h, &o);
        assert_eq!(h[&FORWARDED], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn request_ids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("client-id-1"));
        assert_eq!(request_id(&h), "client-id-1");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&h).len(), 32);
    }
}
