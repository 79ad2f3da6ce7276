//! What the gateway changes in a request head on its way upstream
//! (README.md, "Proxy behaviour"), worked out once per request as a
//! [`Forwarding`] and then either applied to a header map (requests that go
//! through hyper's client) or written out while the head is serialised (the
//! inline client: the client's map is never edited, so the hot path
//! inserts, removes and rehashes nothing).
//!
//! From an untrusted peer, incoming `X-Forwarded-*`, `X-Real-IP` and
//! `Forwarded` are replaced; from a trusted proxy they are kept and
//! extended. Hop-by-hop fields and those the client names in `Connection`
//! are never passed on, and a client cannot remove the gateway's own fields
//! by naming them in `Connection`.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::fields::Fields;
use super::headers::{self, FORWARDED, Seen, X_FORWARDED_FOR, X_FORWARDED_HOST};
use super::headers::{X_FORWARDED_PROTO, X_REAL_IP, X_REQUEST_ID, appended, joined};

/// What the gateway knows of a request's origin, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub client_ip: IpAddr,
    /// `client_ip` as a header value (made once per connection).
    pub client_ip_value: &'a HeaderValue,
    /// The `X-Forwarded-For`, `X-Real-IP` and `X-Forwarded-Proto` lines an
    /// untrusted peer's requests get, serialised once per connection (see
    /// [`untrusted_lines`]).
    pub untrusted_lines: &'a Bytes,
    /// The peer is a trusted proxy: its forwarding headers are extended,
    /// not replaced.
    pub trusted: bool,
    /// `http` or `https` (how the client reached the gateway).
    pub proto: &'static str,
    /// The host the client asked for: [`Field::ClientHost`] (its `Host`),
    /// [`Field::Set`] (the target's authority) or [`Field::Drop`] (none).
    pub host: &'a Field,
    pub request_id: &'a HeaderValue,
    /// Also send RFC 7239 `Forwarded`.
    pub forwarded: bool,
}

/// `X-Forwarded-For`, `X-Real-IP` and `X-Forwarded-Proto` as an untrusted
/// peer's requests get them: they depend on the connection alone.
pub fn untrusted_lines(ip: &HeaderValue, proto: &str) -> Bytes {
    let mut lines = Vec::with_capacity(64 + 2 * ip.len());
    for (name, value) in [
        (&X_FORWARDED_FOR, ip.as_bytes()),
        (&X_REAL_IP, ip.as_bytes()),
        (&X_FORWARDED_PROTO, proto.as_bytes()),
    ] {
        put_line(&mut lines, name.as_str().as_bytes(), value);
    }
    Bytes::from(lines)
}

/// What the upstream gets for one of the gateway's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// This value, whatever the client sent.
    Set(HeaderValue),
    /// The client's own field(s), as sent.
    Keep,
    /// Nothing.
    Drop,
    /// The value of the client's `Host` field, as sent.
    ClientHost,
}

/// The gateway's edits to one request head. Every field in [`Self::fields`]
/// that is not [`Field::Keep`] replaces the client's field of that name.
#[derive(Debug, Clone)]
pub struct Forwarding {
    forwarded_for: HeaderValue,
    real_ip: Field,
    proto: Field,
    /// The three above as one block of lines, when they are the untrusted
    /// peer's (see [`Origin::untrusted_lines`]).
    untrusted_lines: Option<Bytes>,
    forwarded_host: Field,
    forwarded: Field,
    via: HeaderValue,
    request_id: HeaderValue,
    /// `Host`: the client's (`preserve_host`), or `Drop` so that the
    /// client library (or [`Forwarding::host_for`]) sets the backend's.
    pub host: Field,
    /// `TE: trailers` (the client takes trailers).
    pub te_trailers: bool,
    /// `Connection: upgrade` with this `Upgrade`.
    pub upgrade: Option<HeaderValue>,
    /// Fields the client named in `Connection` (hop-by-hop by its say-so).
    connection_named: Vec<HeaderName>,
}

/// A route's changes to its requests' fields: fields removed (and those
/// set, which replace the client's), then fields set and added after the
/// client's. Fields the gateway decides itself are never among them (the
/// config refuses them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestEdits {
    /// Removed: the `remove` list and the names of `set`.
    pub remove: Vec<HeaderName>,
    /// Also removed when spelt with `_` for `-` (the auth credential: a
    /// backend reading fields as CGI variables could not tell them apart).
    pub remove_aliases: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl RequestEdits {
    /// Whether the client's field `name` (lowercase) goes. (The edits'
    /// methods are never inlined: a route without edits keeps the
    /// forwarding code as small as before.)
    #[inline(never)]
    pub fn drops(&self, name: &[u8]) -> bool {
        self.remove.iter().any(|n| n.as_str().as_bytes() == name)
            || self.remove_aliases.iter().any(|n| {
                let n = n.as_str().as_bytes();
                n.len() == name.len()
                    && n.iter()
                        .zip(name)
                        .all(|(&a, &b)| a == b || (a == b'-' && b == b'_'))
            })
    }

    /// The route's own fields, as header lines.
    #[inline(never)]
    fn write(&self, out: &mut Vec<u8>) {
        for (name, value) in self.set.iter().chain(&self.add) {
            put_line(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }

    /// The same edits made to a map (after [`Forwarding::apply`]).
    #[inline(never)]
    pub fn apply(&self, headers: &mut HeaderMap) {
        let aliases: Vec<HeaderName> = if self.remove_aliases.is_empty() {
            Vec::new()
        } else {
            headers
                .keys()
                .filter(|k| self.drops(k.as_str().as_bytes()))
                .cloned()
                .collect()
        };
        for name in self.remove.iter().chain(&aliases) {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.append(name, value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name, value.clone());
        }
    }
}

static TRAILERS: HeaderValue = HeaderValue::from_static("trailers");
static UPGRADE: HeaderValue = HeaderValue::from_static("upgrade");

impl Forwarding {
    /// The edits for a request with client head `headers` from `origin`.
    /// `Host` is dropped (see [`Forwarding::host`]), no `TE` and no upgrade.
    pub fn new(headers: &impl Fields, seen: Seen, origin: &Origin<'_>) -> Self {
        let ip = origin.client_ip_value;
        let trusted = origin.trusted;
        let keep_or = |name: &HeaderName, value: Field| {
            if trusted && headers.contains(name) {
                Field::Keep
            } else {
                value
            }
        };
        let forwarded = if origin.forwarded {
            let host = match origin.host {
                Field::ClientHost => headers.all(&header::HOST).next(),
                Field::Set(v) => Some(v.as_bytes()),
                Field::Keep | Field::Drop => None,
            };
            let element = forwarded_element(origin, host.and_then(headers::text));
            let prior = if trusted {
                joined(headers, &FORWARDED)
            } else {
                None
            };
            Field::Set(appended(prior, &element))
        } else if trusted {
            Field::Keep
        } else {
            Field::Drop
        };
        Forwarding {
            forwarded_for: if trusted {
                appended(joined(headers, &X_FORWARDED_FOR), ip)
            } else {
                ip.clone()
            },
            real_ip: keep_or(&X_REAL_IP, Field::Set(ip.clone())),
            proto: keep_or(
                &X_FORWARDED_PROTO,
                Field::Set(HeaderValue::from_static(origin.proto)),
            ),
            untrusted_lines: (!trusted).then(|| origin.untrusted_lines.clone()),
            forwarded_host: keep_or(&X_FORWARDED_HOST, origin.host.clone()),
            forwarded,
            via: headers::via_with_ours(headers, seen.via),
            request_id: origin.request_id.clone(),
            host: Field::Drop,
            te_trailers: false,
            upgrade: None,
            connection_named: if seen.connection {
                headers::connection_named(headers)
            } else {
                Vec::new()
            },
        }
    }

    /// The gateway's fields, in the order they are written.
    pub fn fields(&self) -> [(&'static HeaderName, FieldRef<'_>); 11] {
        let set = FieldRef::Set;
        let hop = |on: bool, value: &'static HeaderValue| {
            if on { set(value) } else { FieldRef::Drop }
        };
        [
            (&header::HOST, (&self.host).into()),
            (&X_FORWARDED_FOR, set(&self.forwarded_for)),
            (&X_REAL_IP, (&self.real_ip).into()),
            (&X_FORWARDED_PROTO, (&self.proto).into()),
            (&X_FORWARDED_HOST, (&self.forwarded_host).into()),
            (&FORWARDED, (&self.forwarded).into()),
            (&header::VIA, set(&self.via)),
            (&X_REQUEST_ID, set(&self.request_id)),
            (&header::TE, hop(self.te_trailers, &TRAILERS)),
            (&header::CONNECTION, hop(self.upgrade.is_some(), &UPGRADE)),
            (
                &header::UPGRADE,
                self.upgrade.as_ref().map_or(FieldRef::Drop, FieldRef::Set),
            ),
        ]
    }

    /// What the upstream gets for the field `name` (lowercase): `Some` if
    /// the gateway decides it, `None` if the client's field goes as sent.
    pub fn decides(&self, name: &[u8]) -> Option<FieldRef<'_>> {
        let field = match name {
            b"host" => (&self.host).into(),
            b"x-forwarded-for" => FieldRef::Set(&self.forwarded_for),
            b"x-real-ip" => (&self.real_ip).into(),
            b"x-forwarded-proto" => (&self.proto).into(),
            b"x-forwarded-host" => (&self.forwarded_host).into(),
            b"forwarded" => (&self.forwarded).into(),
            b"via" => FieldRef::Set(&self.via),
            b"x-request-id" => FieldRef::Set(&self.request_id),
            b"te" if self.te_trailers => FieldRef::Set(&TRAILERS),
            b"connection" if self.upgrade.is_some() => FieldRef::Set(&UPGRADE),
            b"upgrade" => self.upgrade.as_ref().map_or(FieldRef::Drop, FieldRef::Set),
            _ => {
                let dropped = headers::is_hop_by_hop(name)
                    || headers::is_alias(name)
                    || self
                        .connection_named
                        .iter()
                        .any(|n| n.as_str().as_bytes() == name);
                return dropped.then_some(FieldRef::Drop);
            }
        };
        match field {
            FieldRef::Keep => None,
            decided => Some(decided),
        }
    }

    /// The value the upstream sees for `name` (for hashing on a header).
    pub fn value<'a>(&'a self, headers: &'a impl Fields, name: &'a HeaderName) -> Option<&'a [u8]> {
        match self.decides(name.as_str().as_bytes()) {
            Some(FieldRef::Set(v)) => Some(v.as_bytes()),
            Some(FieldRef::ClientHost) => headers.all(&header::HOST).next(),
            Some(_) => None,
            None => headers.all(name).next(),
        }
    }

    /// Whether each backend gets its own `Host` (the client's is not kept).
    pub fn backend_host(&self) -> bool {
        matches!(self.host, Field::Drop)
    }

    /// `Host` to send to a backend that needs one in the head (origin-form
    /// requests): the backend's own unless the client's is kept.
    pub fn host_for<'a>(&self, backend_host: &'a HeaderValue) -> Option<&'a HeaderValue> {
        self.backend_host().then_some(backend_host)
    }

    /// Write the client's fields the gateway leaves alone, then the
    /// gateway's own, as header lines into `out`: what [`Self::apply`]
    /// makes of a map, in the order of [`Self::fields`] (spelled out here,
    /// not looped over: this is the hot path's head).
    #[inline]
    pub fn write(&self, headers: &impl Fields, out: &mut Vec<u8>) {
        self.write_with(headers, out, |_| false, |_| {});
    }

    /// [`Self::write`] for a route with its own edits: the fields they
    /// remove left out, theirs after the client's. (Apart, and never
    /// inlined: the head of every other route is written as before.)
    #[inline(never)]
    pub fn write_edited(&self, headers: &impl Fields, out: &mut Vec<u8>, edits: &RequestEdits) {
        self.write_with(
            headers,
            out,
            |name| edits.drops(name),
            |out| edits.write(out),
        );
    }

    /// [`Self::write`], leaving out the client's fields `drop` names and
    /// writing `extra` after them.
    #[inline(always)]
    fn write_with(
        &self,
        headers: &impl Fields,
        out: &mut Vec<u8>,
        drop: impl Fn(&[u8]) -> bool,
        extra: impl FnOnce(&mut Vec<u8>),
    ) {
        let put = |out: &mut Vec<u8>, name: &[u8], field: FieldRef<'_>| match field {
            FieldRef::Set(value) => put_line(out, name, value.as_bytes()),
            FieldRef::ClientHost => {
                if let Some(host) = headers.all(&header::HOST).next() {
                    put_line(out, name, host);
                }
            }
            FieldRef::Keep | FieldRef::Drop => {}
        };
        // A kept `Host` goes first, where clients put it (RFC 9112 §3.2).
        put(out, b"host", (&self.host).into());
        for (name, value) in headers.each() {
            if self.decides(name).is_none() && !drop(name) {
                put_line(out, name, value);
            }
        }
        extra(out);
        match &self.untrusted_lines {
            Some(lines) => out.extend_from_slice(lines),
            None => {
                put_line(out, b"x-forwarded-for", self.forwarded_for.as_bytes());
                put(out, b"x-real-ip", (&self.real_ip).into());
                put(out, b"x-forwarded-proto", (&self.proto).into());
            }
        }
        put(out, b"x-forwarded-host", (&self.forwarded_host).into());
        put(out, b"forwarded", (&self.forwarded).into());
        put_line(out, b"via", self.via.as_bytes());
        put_line(out, b"x-request-id", self.request_id.as_bytes());
        if self.te_trailers {
            put_line(out, b"te", TRAILERS.as_bytes());
        }
        if let Some(upgrade) = &self.upgrade {
            put_line(out, b"connection", UPGRADE.as_bytes());
            put_line(out, b"upgrade", upgrade.as_bytes());
        }
    }

    /// Make `headers` what the upstream gets.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let client_host = headers.get(header::HOST).cloned();
        headers::remove_hop_by_hop(headers, &self.connection_named);
        let aliases: Vec<HeaderName> = headers
            .keys()
            .filter(|k| headers::is_alias(k.as_str().as_bytes()))
            .cloned()
            .collect();
        for alias in aliases {
            headers.remove(alias);
        }
        // Room for the gateway's fields: the map grows at most once.
        headers.reserve(self.fields().len());
        for (name, field) in self.fields() {
            let value = match field {
                FieldRef::Set(value) => Some(value.clone()),
                FieldRef::ClientHost => client_host.clone(),
                FieldRef::Keep => continue,
                FieldRef::Drop => None,
            };
            match value {
                Some(value) => {
                    headers.insert(name, value);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }
}

/// One header line.
#[inline]
fn put_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A borrowed [`Field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRef<'a> {
    Set(&'a HeaderValue),
    Keep,
    Drop,
    ClientHost,
}

impl<'a> From<&'a Field> for FieldRef<'a> {
    fn from(field: &'a Field) -> Self {
        match field {
            Field::Set(v) => FieldRef::Set(v),
            Field::Keep => FieldRef::Keep,
            Field::Drop => FieldRef::Drop,
            Field::ClientHost => FieldRef::ClientHost,
        }
    }
}

/// This hop's RFC 7239 element: `for=…;proto=…[;host=…]`.
fn forwarded_element(origin: &Origin<'_>, host: Option<&str>) -> HeaderValue {
    let for_value = match origin.client_ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut element = format!("for={for_value};proto={}", origin.proto);
    if let Some(host) = host {
        element.push_str(";host=");
        element.push_str(&forwarded_value(host));
    }
    HeaderValue::from_str(&element).expect("quoted text is a valid header value")
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

#[cfg(test)]
mod tests {
    use super::*;

    static LOCALHOST: HeaderValue = HeaderValue::from_static("127.0.0.1");
    static V6: HeaderValue = HeaderValue::from_static("::1");

    /// The client's host as the gateway passes it on.
    fn host_field(host: Option<&HeaderValue>) -> &'static Field {
        Box::leak(Box::new(
            host.map_or(Field::Drop, |h| Field::Set(h.clone())),
        ))
    }

    fn origin<'a>(trusted: bool, host: Option<&HeaderValue>, id: &'a HeaderValue) -> Origin<'a> {
        Origin {
            client_ip: "127.0.0.1".parse().unwrap(),
            client_ip_value: &LOCALHOST,
            untrusted_lines: Box::leak(Box::new(untrusted_lines(&LOCALHOST, "http"))),
            trusted,
            proto: "http",
            host: host_field(host),
            request_id: id,
            forwarded: false,
        }
    }

    /// The head the upstream gets, both ways: the map edited in place, and
    /// the fields written out; they must agree.
    fn forward(h: &HeaderMap, fwd: &Forwarding) -> HeaderMap {
        let mut out = Vec::new();
        fwd.write(h, &mut out);
        let mut written = HeaderMap::new();
        for line in String::from_utf8(out).unwrap().split_terminator("\r\n") {
            let (n, v) = line.split_once(": ").unwrap();
            written.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut applied = h.clone();
        fwd.apply(&mut applied);
        assert_eq!(written, applied);
        written
    }

    #[test]
    fn forwarded_headers_survive_connection_tricks() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-forwarded-for, x-request-id, x-secret"),
        );
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        let host = HeaderValue::from_static("example.com");
        let id = HeaderValue::from_static("abc");
        let h = forward(
            &h,
            &Forwarding::new(&h, Seen::of(&h), &origin(false, Some(&host), &id)),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_REQUEST_ID], "abc");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_REAL_IP], "127.0.0.1");
        assert_eq!(h[header::VIA], "1.1 switchyard");
        assert_eq!(h["x-keep"], "yes");
        for gone in ["x-secret", "keep-alive", "connection", "host"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn underscore_aliases_of_decided_fields_are_not_passed_on() {
        let mut h = HeaderMap::new();
        h.insert("content_length", HeaderValue::from_static("5"));
        h.insert("transfer_encoding", HeaderValue::from_static("chunked"));
        h.insert("x_forwarded_for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x_real_ip", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-custom_name", HeaderValue::from_static("kept"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let id = HeaderValue::from_static("id");
        let h = forward(
            &h,
            &Forwarding::new(&h, Seen::of(&h), &origin(true, None, &id)),
        );
        for gone in [
            "content_length",
            "transfer_encoding",
            "x_forwarded_for",
            "x_real_ip",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["x-custom_name"], "kept");
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
    }

    #[test]
    fn untrusted_peers_cannot_forge_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("evil"));
        h.insert(&FORWARDED, HeaderValue::from_static("for=203.0.113.9"));
        let id = headers::new_request_id();
        let h = forward(
            &h,
            &Forwarding::new(&h, Seen::of(&h), &origin(false, None, &id)),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_REAL_IP], "127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert!(!h.contains_key(&FORWARDED));
        assert!(!h.contains_key(&X_FORWARDED_HOST));
    }

    #[test]
    fn trusted_proxies_are_extended() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.1.1.1"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(
            &FORWARDED,
            HeaderValue::from_static("for=203.0.113.9;proto=https"),
        );
        h.insert(header::VIA, HeaderValue::from_static("1.1 edge"));
        let id = headers::new_request_id();
        let host = HeaderValue::from_static("shop.example:8443");
        let mut o = origin(true, Some(&host), &id);
        o.forwarded = true;
        let h = forward(&h, &Forwarding::new(&h, Seen::of(&h), &o));
        // Every line of a list field counts, not only the first.
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 10.1.1.1, 127.0.0.1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_REAL_IP], "203.0.113.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example:8443");
        assert_eq!(
            h[&FORWARDED],
            "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=\"shop.example:8443\""
        );
        assert_eq!(h[header::VIA], "1.1 edge, 1.1 switchyard");
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        let h = HeaderMap::new();
        let id = headers::new_request_id();
        let mut o = origin(false, None, &id);
        o.client_ip = "::1".parse().unwrap();
        o.client_ip_value = &V6;
        o.untrusted_lines = Box::leak(Box::new(untrusted_lines(&V6, "http")));
        o.forwarded = true;
        let h = forward(&h, &Forwarding::new(&h, Seen::of(&h), &o));
        assert_eq!(h[&FORWARDED], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn host_trailers_and_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("client.example"));
        h.insert(header::TE, HeaderValue::from_static("trailers, gzip"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let id = HeaderValue::from_static("id");
        let backend = HeaderValue::from_static("backend:80");

        let mut fwd = Forwarding::new(&h, Seen::of(&h), &origin(false, None, &id));
        assert_eq!(fwd.host_for(&backend), Some(&backend));
        let plain = forward(&h, &fwd);
        for gone in ["host", "te", "upgrade", "connection"] {
            assert!(!plain.contains_key(gone), "{gone}");
        }

        fwd.host = Field::Set(HeaderValue::from_static("client.example"));
        fwd.te_trailers = true;
        fwd.upgrade = Some(HeaderValue::from_static("websocket"));
        assert_eq!(fwd.host_for(&backend), None);
        let mut out = Vec::new();
        fwd.write(&h, &mut out);
        assert!(out.starts_with(b"host: client.example\r\n"));
        let kept = forward(&h, &fwd);
        assert_eq!(kept[header::HOST], "client.example");
        assert_eq!(kept[header::TE], "trailers");
        assert_eq!(kept[header::UPGRADE], "websocket");
        assert_eq!(kept[header::CONNECTION], "upgrade");
    }

    #[test]
    fn hashing_sees_what_the_upstream_gets() {
        let mut h = HeaderMap::new();
        h.insert(&X_REAL_IP, HeaderValue::from_static("203.0.113.9"));
        h.insert("x-user", HeaderValue::from_static("u1"));
        h.insert(header::CONNECTION, HeaderValue::from_static("x-user"));
        h.insert("x-tenant", HeaderValue::from_static("t1"));
        let id = HeaderValue::from_static("id");
        let fwd = Forwarding::new(&h, Seen::of(&h), &origin(false, None, &id));
        assert_eq!(fwd.value(&h, &X_REAL_IP).unwrap(), b"127.0.0.1");
        assert_eq!(fwd.value(&h, &"x-user".parse().unwrap()), None);
        assert_eq!(fwd.value(&h, &"x-tenant".parse().unwrap()).unwrap(), b"t1");
        assert_eq!(fwd.value(&h, &X_FORWARDED_HOST), None);
    }

    /// `decides` (a match, for speed) agrees with the table of `fields`.
    #[test]
    fn decides_agrees_with_the_fields_table() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-named"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("203.0.113.9"));
        let id = HeaderValue::from_static("id");
        let host = HeaderValue::from_static("h");
        for trusted in [false, true] {
            let mut fwd = Forwarding::new(&h, Seen::of(&h), &origin(trusted, Some(&host), &id));
            for (te, upgrade, kept_host) in [(false, false, false), (true, true, true)] {
                fwd.te_trailers = te;
                fwd.upgrade = upgrade.then(|| HeaderValue::from_static("websocket"));
                fwd.host = if kept_host {
                    Field::Set(host.clone())
                } else {
                    Field::Drop
                };
                for (name, field) in fwd.fields() {
                    let expected = match field {
                        FieldRef::Keep => None,
                        decided => Some(decided),
                    };
                    assert_eq!(fwd.decides(name.as_str().as_bytes()), expected, "{name}");
                }
                assert_eq!(fwd.decides(b"x-named"), Some(FieldRef::Drop));
                assert_eq!(fwd.decides(b"keep-alive"), Some(FieldRef::Drop));
                assert_eq!(fwd.decides(b"x-other"), None);
            }
        }
    }
}
