//! Header handling shared by both directions (README.md, "Proxy behaviour"):
//! hop-by-hop fields, list values, request IDs. The request's rewrite for
//! the backend is [`super::forward`]; the response's for the client,
//! [`super::response`].

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::fields::Fields;
// Request fields whose meaning the gateway or the message's framing decides
// (the list a route's edits may not name, too): a field named like one of
// them but for `_` in place of `-` is never passed on (see `is_alias`).
use crate::config::policies::REQUEST_OWNED as DECIDED;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(super) static X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");
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

/// Which of the request fields the proxy asks about a head carries, found
/// in one pass over its names. Most requests carry few of them, and a
/// lookup in the header map costs a hash and a probe even for a field that
/// is not there; the proxy looks up only what it has seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    pub host: bool,
    /// More than one `Host` line.
    pub hosts: bool,
    pub request_id: bool,
    pub content_length: bool,
    pub connection: bool,
    pub upgrade: bool,
    pub te: bool,
    pub via: bool,
    pub transfer_encoding: bool,
    pub expect: bool,
}

impl Seen {
    pub fn of(headers: &impl Fields) -> Self {
        let mut seen = Seen::default();
        for (name, _) in headers.each() {
            let slot = match name {
                b"host" => {
                    seen.hosts |= seen.host;
                    &mut seen.host
                }
                b"x-request-id" => &mut seen.request_id,
                b"content-length" => &mut seen.content_length,
                b"connection" => &mut seen.connection,
                b"upgrade" => &mut seen.upgrade,
                b"te" => &mut seen.te,
                b"via" => &mut seen.via,
                b"transfer-encoding" => &mut seen.transfer_encoding,
                b"expect" => &mut seen.expect,
                _ => continue,
            };
            *slot = true;
        }
        seen
    }
}

/// A field value as text: visible ASCII and tabs only (what
/// [`HeaderValue::to_str`] accepts), else none.
pub fn text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| (b' '..0x7f).contains(&b) || b == b'\t')
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// The items of one line of a comma-separated list field, trimmed; none if
/// the line is not text.
pub fn list_items(value: &[u8]) -> impl DoubleEndedIterator<Item = &str> {
    text(value)
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether a `Transfer-Encoding` line names no coding but `chunked`
/// (empty list items aside): the only coding the gateway decodes, in a
/// request or a response.
pub fn only_chunked(value: &[u8]) -> bool {
    text(value).is_some()
        && list_items(value)
            .filter(|coding| !coding.is_empty())
            .all(|coding| coding.eq_ignore_ascii_case("chunked"))
}

/// Whether the comma-separated list header `name` (all its lines) holds
/// `token`, compared without regard to case.
pub fn lists_token(headers: &impl Fields, name: &HeaderName, token: &str) -> bool {
    headers
        .all(name)
        .flat_map(list_items)
        .any(|t| t.eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    remove_hop_by_hop(headers, &named);
}

/// The fields a message's `Connection` names (hop-by-hop by its say-so).
pub fn connection_named(headers: &impl Fields) -> Vec<HeaderName> {
    headers
        .all(&header::CONNECTION)
        .flat_map(list_items)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect()
}

/// Remove the hop-by-hop headers and `named` (what [`connection_named`]
/// found in the same map). Most messages carry none: one pass over the
/// names finds out (a `Connection` naming any is itself hop-by-hop).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, named: &[HeaderName]) {
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k)) {
        return;
    }
    for name in named.iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// What the gateway adds to `Via` in both directions (RFC 9110 §7.6.3).
pub static VIA_ENTRY: HeaderValue = HeaderValue::from_static("1.1 switchyard");

/// All lines of the list field `name`, joined, if any is non-empty text.
pub fn joined(headers: &impl Fields, name: &HeaderName) -> Option<String> {
    join_lines(headers.all(name))
}

/// The lines of one list field, joined with `, `, if any is non-empty
/// text.
pub fn join_lines<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut parts = lines
        .filter_map(text)
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let first = parts.next()?;
    let mut out = first.to_string();
    for part in parts {
        out.push_str(", ");
        out.push_str(part);
    }
    Some(out)
}

/// `Via` with this hop's entry last: after every line of the message's own
/// `Via` when it has one (`present`, known without a lookup), else alone.
pub fn via_with_ours(headers: &impl Fields, present: bool) -> HeaderValue {
    let prior = if present {
        joined(headers, &header::VIA)
    } else {
        None
    };
    appended(prior, &VIA_ENTRY)
}

/// `entry` after `prior` in a list value; `entry` itself (no allocation)
/// when there is no prior.
pub fn appended(prior: Option<String>, entry: &HeaderValue) -> HeaderValue {
    let Some(mut joined) = prior else {
        return entry.clone();
    };
    joined.push_str(", ");
    joined.push_str(entry.to_str().unwrap_or_default());
    HeaderValue::from_str(&joined).unwrap_or_else(|_| entry.clone())
}

/// Whether the field name `name`, as received (in any case), is `lower`,
/// which holds lowercase letters and `-` only. One OR per byte: exact for
/// the names `httparse` admits (tokens: no byte of one is another's with
/// bit 5 set, but letters).
#[inline]
pub fn is_name(name: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'));
    name.len() == lower.len() && name.iter().zip(lower).all(|(&a, &b)| a | 0x20 == b)
}

/// Whether the field `name` (in any case) is hop-by-hop.
#[inline]
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // Most names have a length none of these has.
    matches!(name.len(), 2 | 7 | 10 | 16..=19)
        && HOP_BY_HOP
            .iter()
            .any(|n| is_name(name, n.as_str().as_bytes()))
}

/// Whether the request field `name` (lowercase) differs from one the
/// gateway decides (`DECIDED`) only by `_` in place of `-`: backends
/// that read fields as CGI variables (`HTTP_CONTENT_LENGTH`) cannot tell
/// the two apart, so the alias could frame a body or forge an address
/// behind the gateway's back.
pub fn is_alias(name: &[u8]) -> bool {
    // Names with no `_` (nearly all) are answered by the first test.
    name.contains(&b'_')
        && DECIDED.iter().any(|d| {
            d.len() == name.len()
                && d.bytes()
                    .zip(name)
                    .all(|(d, &n)| d == n || (d == b'-' && n == b'_'))
        })
}

/// The client's request ID if it sent a usable one, otherwise a new one.
///
/// The client's is copied: a clone would share the connection's read
/// buffer, which could then not be reused while the request is in flight.
pub fn request_id(headers: &impl Fields, seen: Seen) -> HeaderValue {
    if !seen.request_id {
        return new_request_id();
    }
    match headers.all(&X_REQUEST_ID).next() {
        Some(v) if is_usable_id(v) => {
            HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(v))
                .expect("a usable ID is a valid header value")
        }
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
    static PREFIX: LazyLock<[u8; 16]> = LazyLock::new(|| {
        let mut prefix = [0u8; 16];
        hex(RandomState::new().hash_one(std::process::id()), &mut prefix);
        prefix
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(&*PREFIX);
    hex(n, &mut buf[16..]);
    // Owned by one shared allocation from the start: a value made by
    // copying would allocate again the first time it is cloned (for the
    // upstream, the response and the access log).
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .expect("hex is a valid header value")
}

/// `v` as 16 hex digits.
fn hex(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
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

    #[test]
    fn seen_fields() {
        let mut h = HeaderMap::new();
        let none = Seen::of(&h);
        assert!(!none.host && !none.request_id && !none.content_length && !none.connection);
        assert!(!none.upgrade && !none.te && !none.via);
        assert!(!none.transfer_encoding && !none.expect);
        for name in [
            "host",
            "x-request-id",
            "content-length",
            "connection",
            "upgrade",
            "te",
            "via",
            "transfer-encoding",
            "expect",
        ] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        h.insert("x-other", HeaderValue::from_static("1"));
        let all = Seen::of(&h);
        assert!(all.host && all.request_id && all.content_length && all.connection);
        assert!(all.upgrade && all.te && all.via);
        assert!(all.transfer_encoding && all.expect);
    }

    #[test]
    fn request_ids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("client-id-1"));
        assert_eq!(request_id(&h, Seen::of(&h)), "client-id-1");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h, Seen::of(&h)), "has space");
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&h, Seen::of(&h)).len(), 32);
    }
}
