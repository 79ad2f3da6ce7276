//! A backend's response fields on their way to the client: one policy,
//! [`forward_fields`], for both places a response head lives — hyper's
//! [`HeaderMap`] (edited in place through [`MapEdits`]) and the bytes the
//! inline server writes for the client ([`HeadBytes`]) — so the two paths
//! cannot diverge (README.md, "Proxy behaviour"):
//!
//! - hop-by-hop fields go, and so do the fields `Connection` names;
//! - the backend's identity (`Server`, `X-Powered-By`) goes;
//! - `Via`: every line of the backend's joined, this hop's entry last;
//! - `X-Request-ID`: the request's own replaces the backend's.
//!
//! The policy reads the fields once and tells a [`ResponseOut`] what
//! becomes of each; most responses need nothing but the two fields the
//! gateway adds.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::headers::{self, VIA_ENTRY, X_POWERED_BY, X_REQUEST_ID, is_hop_by_hop, is_name};

/// What becomes of a backend's response field on its way to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseField {
    /// Passed on as sent.
    Keep,
    /// Hop-by-hop (`Connection` among them): never passed on, nor is what
    /// `Connection` names.
    HopByHop,
    /// The backend's identity (`Server`, `X-Powered-By`): removed.
    Identifying,
    /// `Via`: every line joined, this hop's entry last.
    Via,
    /// `X-Request-ID`: the request's own replaces the backend's.
    RequestId,
}

/// [`ResponseField`] of the field `name`, in any case.
pub fn response_field(name: &[u8]) -> ResponseField {
    // Most names have a length none of these has.
    if !matches!(name.len(), 2 | 3 | 6 | 7 | 10 | 12 | 16..=19) {
        return ResponseField::Keep;
    }
    let is = |n: &HeaderName| is_name(name, n.as_str().as_bytes());
    if is_hop_by_hop(name) {
        ResponseField::HopByHop
    } else if is(&header::SERVER) || is(&X_POWERED_BY) {
        ResponseField::Identifying
    } else if is(&header::VIA) {
        ResponseField::Via
    } else if is(&X_REQUEST_ID) {
        ResponseField::RequestId
    } else {
        ResponseField::Keep
    }
}

/// Where [`forward_fields`] writes the client's fields. It calls `keep` or
/// `omit` once for each of the backend's fields, in order (starting over
/// after `restart`), then `add` for each field of the gateway's own.
pub trait ResponseOut {
    /// The field reaches the client as the backend sent it.
    fn keep(&mut self, name: &[u8], value: &[u8]);
    /// The field does not reach the client.
    fn omit(&mut self, name: &[u8]);
    /// Forget every `keep` and `omit` so far: the policy goes over the
    /// fields again (a `Connection` line was found, which may name fields
    /// already kept).
    fn restart(&mut self);
    /// The gateway's own field, after the backend's.
    fn add(&mut self, name: &'static HeaderName, value: &HeaderValue);
}

/// How many fields [`forward_fields`] adds: `Via` and `X-Request-ID`.
const GATEWAY_FIELDS: usize = 2;

/// Apply the response-field policy (see the module docs) to the backend's
/// fields, writing to `out`. `fields` goes over them in order (names in
/// any case), from the first each time it is called.
pub fn forward_fields<'a, I>(
    fields: impl Fn() -> I,
    out: &mut impl ResponseOut,
    request_id: &HeaderValue,
) where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    // Optimistic: most heads have no `Connection`, and are gone over once.
    let via = match one_pass(&fields, out, false) {
        Pass::Done { via } => via,
        Pass::Connection => {
            out.restart();
            match one_pass(&fields, out, true) {
                Pass::Done { via } => via,
                Pass::Connection => unreachable!("a second pass looks for no Connection"),
            }
        }
    };
    let prior = if via { joined_via(fields()) } else { None };
    out.add(&header::VIA, &headers::appended(prior, &VIA_ENTRY));
    out.add(&X_REQUEST_ID, request_id);
}

/// Every `Via` line among `fields`, joined.
fn joined_via<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Option<String> {
    headers::join_lines(fields.filter(|(n, _)| is_name(n, b"via")).map(|(_, v)| v))
}

/// What one pass over the fields found.
enum Pass {
    /// Every field kept or omitted; whether the backend's `Via` is to be
    /// extended (it has one `Connection` does not name).
    Done { via: bool },
    /// A `Connection` line, on a pass that did not look for what it names.
    Connection,
}

fn one_pass<'a, I>(fields: &impl Fn() -> I, out: &mut impl ResponseOut, named: bool) -> Pass
where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut via = false;
    for (name, value) in fields() {
        if named && connection_names(fields(), name) {
            out.omit(name);
            continue;
        }
        match response_field(name) {
            ResponseField::Keep => {
                out.keep(name, value);
                continue;
            }
            ResponseField::HopByHop if !named && is_name(name, b"connection") => {
                return Pass::Connection;
            }
            ResponseField::Via => via = true,
            ResponseField::HopByHop | ResponseField::Identifying | ResponseField::RequestId => {}
        }
        out.omit(name);
    }
    Pass::Done { via }
}

/// Whether a `Connection` line among `fields` names the field `name`.
fn connection_names<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>, name: &[u8]) -> bool {
    fields
        .filter(|(n, _)| is_name(n, b"connection"))
        .flat_map(|(_, v)| headers::list_items(v))
        .any(|token| name.eq_ignore_ascii_case(token.as_bytes()))
}

/// Rewrite hyper's response fields for the client, in place.
pub fn forward_response(headers: &mut HeaderMap, request_id: &HeaderValue) {
    let mut edits = MapEdits::default();
    forward_fields(|| map_fields(headers), &mut edits, request_id);
    edits.apply(headers);
}

/// A header map's fields as the policy reads them.
fn map_fields(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
}

/// [`ResponseOut`] for a header map: the edits the policy asks for, made
/// by [`MapEdits::apply`] once it is done reading the map. Kept fields
/// need nothing; most responses omit none, and nothing is allocated.
#[derive(Debug, Default)]
pub struct MapEdits {
    omitted: Vec<HeaderName>,
    added: [Option<(&'static HeaderName, HeaderValue)>; GATEWAY_FIELDS],
}

impl MapEdits {
    pub fn apply(self, headers: &mut HeaderMap) {
        for name in &self.omitted {
            headers.remove(name);
        }
        for (name, value) in self.added.into_iter().flatten() {
            headers.insert(name, value);
        }
    }
}

impl ResponseOut for MapEdits {
    #[inline]
    fn keep(&mut self, _: &[u8], _: &[u8]) {}

    fn omit(&mut self, name: &[u8]) {
        // A name from a header map is a valid one.
        if let Ok(name) = HeaderName::from_bytes(name)
            && !self.omitted.contains(&name)
        {
            self.omitted.push(name);
        }
    }

    fn restart(&mut self) {
        self.omitted.clear();
    }

    fn add(&mut self, name: &'static HeaderName, value: &HeaderValue) {
        let slot = self.added.iter_mut().find(|s| s.is_none());
        *slot.expect("the policy adds GATEWAY_FIELDS fields") = Some((name, value.clone()));
    }
}

/// [`ResponseOut`] for a head being written as bytes: `name: value` lines
/// appended to `out`, kept fields as the backend sent them.
#[derive(Debug)]
pub struct HeadBytes<'a> {
    pub out: &'a mut Vec<u8>,
    /// Where the fields begin (what `restart` goes back to).
    start: usize,
}

impl<'a> HeadBytes<'a> {
    /// Fields written after what `out` holds.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        HeadBytes { out, start }
    }

    /// One `name: value` line.
    #[inline]
    pub fn put(&mut self, name: &[u8], value: &[u8]) {
        put(self.out, name, value);
    }
}

/// One `name: value` line appended to `out`.
#[inline]
pub fn put(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

impl ResponseOut for HeadBytes<'_> {
    #[inline]
    fn keep(&mut self, name: &[u8], value: &[u8]) {
        self.put(name, value);
    }

    #[inline]
    fn omit(&mut self, _: &[u8]) {}

    fn restart(&mut self) {
        self.out.truncate(self.start);
    }

    #[inline]
    fn add(&mut self, name: &'static HeaderName, value: &HeaderValue) {
        self.put(name.as_str().as_bytes(), value.as_bytes());
    }
}

/// A route's changes to its responses' fields, after the policy above:
/// its `response_headers` (fields removed, set, added) and, per request,
/// the CORS fields. Fields the gateway writes itself are never among them
/// (the config refuses them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseEdits {
    /// Removed: the `remove` list, the names of `set`, and (with CORS) the
    /// backend's own CORS fields.
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl ResponseEdits {
    fn drops(&self, name: &[u8]) -> bool {
        self.remove
            .iter()
            .any(|n| is_name(name, n.as_str().as_bytes()))
    }
}

/// What one response of a route with response policies gets: the route's
/// edits and the request's CORS fields (each optional).
#[derive(Debug, Clone, Default)]
pub struct Decoration {
    pub edits: Option<std::sync::Arc<ResponseEdits>>,
    /// Fields added (after `edits`), and fields of the backend's they
    /// replace.
    pub extra: Vec<(HeaderName, HeaderValue)>,
    pub extra_replaces: &'static [HeaderName],
}

impl Decoration {
    /// Whether the backend's field `name` (any case) gives way. (Never
    /// inlined, like the rest of a decoration's work: a route without one
    /// keeps the head writer as small as before.)
    #[inline(never)]
    pub fn drops(&self, name: &[u8]) -> bool {
        self.edits.as_ref().is_some_and(|e| e.drops(name))
            || self
                .extra_replaces
                .iter()
                .any(|n| is_name(name, n.as_str().as_bytes()))
    }

    /// The decoration's own fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        let edits = self.edits.as_deref();
        edits
            .into_iter()
            .flat_map(|e| e.set.iter().chain(&e.add))
            .chain(&self.extra)
    }

    /// Make a header map's fields what the decoration says (after
    /// [`forward_response`]).
    pub fn apply(&self, headers: &mut HeaderMap) {
        let gone: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.drops(k.as_str().as_bytes()))
            .cloned()
            .collect();
        for name in &gone {
            headers.remove(name);
        }
        for (name, value) in self.fields() {
            headers.append(name, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_headers_for_the_client() {
        let id = HeaderValue::from_static("id-1");
        // Nothing to remove: the gateway's Via and request ID are added.
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        forward_response(&mut h, &id);
        assert_eq!(h.len(), 3);
        assert_eq!(h[header::VIA], "1.1 switchyard");
        assert_eq!(h[&X_REQUEST_ID], "id-1");
        // Hop-by-hop fields, those Connection names, and the backend's
        // identity go; an earlier Via (every line) is extended; a backend's
        // X-Request-ID is replaced.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::SERVER, HeaderValue::from_static("backend/1.0"));
        h.insert(&X_POWERED_BY, HeaderValue::from_static("php"));
        h.append(header::VIA, HeaderValue::from_static("1.0 a"));
        h.append(header::VIA, HeaderValue::from_static("1.1 b"));
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("theirs"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        forward_response(&mut h, &id);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "via", "x-request-id"]);
        assert_eq!(h[header::VIA], "1.0 a, 1.1 b, 1.1 switchyard");
        assert_eq!(h.get_all(header::VIA).iter().count(), 1);
        assert_eq!(h[&X_REQUEST_ID], "id-1");
        // Server alone.
        let mut h = HeaderMap::new();
        h.insert(header::SERVER, HeaderValue::from_static("backend/1.0"));
        forward_response(&mut h, &id);
        assert!(!h.contains_key(header::SERVER));
    }

    /// The fields `HeadBytes` wrote, in order, as a header map.
    fn parsed(bytes: &[u8]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = line.strip_suffix(b"\r").expect("CRLF");
            let colon = line.iter().position(|&b| b == b':').expect("a field");
            let name = HeaderName::from_bytes(&line[..colon]).unwrap();
            let value = HeaderValue::from_bytes(&line[colon + 2..]).unwrap();
            map.append(name, value);
        }
        map
    }

    /// A header map from `name: value` pairs, in order.
    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(n, v) in fields {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn both_outputs_of_the_response_policy_agree() {
        let id = HeaderValue::from_static("req-7");
        let heads: &[&[(&str, &str)]] = &[
            &[],
            &[("content-type", "text/plain"), ("content-length", "3")],
            &[("connection", "close"), ("x-a", "1")],
            &[("x-secret", "1"), ("connection", "X-Secret, keep-alive")],
            &[("connection", "via, date"), ("via", "1.0 a"), ("date", "d")],
            &[
                ("via", "1.0 a"),
                ("x-b", "2"),
                ("via", " "),
                ("via", "1.1 b"),
            ],
            &[
                ("server", "s"),
                ("x-powered-by", "p"),
                ("x-request-id", "t"),
            ],
            &[
                ("transfer-encoding", "chunked"),
                ("upgrade", "h2c"),
                ("te", "x"),
            ],
            &[
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("trailer", "x"),
            ],
            &[("proxy-authenticate", "Basic"), ("keep-alive", "timeout=5")],
        ];
        for &fields in heads {
            let mut through_map = map(fields);
            forward_response(&mut through_map, &id);
            let mut bytes = b"already here".to_vec();
            let mut out = HeadBytes::new(&mut bytes);
            let source = map(fields);
            forward_fields(|| map_fields(&source), &mut out, &id);
            let through_bytes = parsed(&bytes[b"already here".len()..]);
            assert_eq!(through_map, through_bytes, "{fields:?}");
        }
    }
}
