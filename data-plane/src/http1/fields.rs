//! A request head's fields as the proxy reads them, from either of the two
//! places a head comes from: hyper's [`HeaderMap`] (requests hyper's server
//! parsed) or [`RawFields`], the head as received, parsed in place by the
//! inline server (`server/inline.rs`), which builds no map at all.
//!
//! Everything that looks at a request's fields on its way upstream (the
//! forwarding edits, request IDs, hashing, the request checks) takes
//! `impl Fields`, so both kinds of request get the same rules from the same
//! code. Names are lowercase in both (hyper lowercases them; the inline
//! server lowercases them in its read buffer before they are looked at).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The fields of one request head.
pub trait Fields {
    /// Every field in order: name (lowercase) and value.
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// Every value of `name`, in order.
    fn all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]>;

    /// The first value of `name` as a header value (a copy, for a head
    /// parsed in place).
    fn value(&self, name: &HeaderName) -> Option<HeaderValue>;

    /// Whether there is a field `name`.
    fn contains(&self, name: &HeaderName) -> bool {
        self.all(name).next().is_some()
    }
}

impl Fields for HeaderMap {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }

    fn all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }

    fn value(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.get(name).cloned()
    }

    fn contains(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }
}

/// Where one field sits in a head: name start and end, value start and
/// end (byte offsets into the head).
pub type Span = [u32; 4];

/// A table of the bytes in `allowed`: one look-up per byte for the
/// character classes of RFC 3986 the parsers check.
pub const fn byte_set(allowed: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    table
}

/// Where `part` lies within `whole`, as start and end offsets; `None` if
/// it does not lie there. A parser such as `httparse` hands back slices of
/// the buffer it parsed, but not always (a missing reason phrase is a
/// static `""`): offsets are never computed from pointers without this
/// check.
#[inline]
pub fn span_in(whole: &[u8], part: &[u8]) -> Option<(u32, u32)> {
    // Before `whole`, the subtraction wraps to far past its end.
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    let fits = start <= whole.len() && part.len() <= whole.len() - start;
    (fits && whole.len() <= u32::MAX as usize).then(|| (start as u32, (start + part.len()) as u32))
}

/// The [`Span`] of one field of `whole`, if both its name and value lie
/// within it.
#[inline]
pub fn field_span(whole: &[u8], name: &[u8], value: &[u8]) -> Option<Span> {
    let (name_start, name_end) = span_in(whole, name)?;
    let (value_start, value_end) = span_in(whole, value)?;
    Some([name_start, name_end, value_start, value_end])
}

/// The fields of a head as received, by their [`Span`]s in `head`; names
/// already lowercase.
#[derive(Debug, Clone, Copy)]
pub struct RawFields<'a> {
    head: &'a [u8],
    spans: &'a [Span],
}

impl<'a> RawFields<'a> {
    /// `spans` must lie within `head`.
    pub fn new(head: &'a [u8], spans: &'a [Span]) -> Self {
        RawFields { head, spans }
    }

    fn name(&self, span: &Span) -> &'a [u8] {
        &self.head[span[0] as usize..span[1] as usize]
    }

    fn field_value(&self, span: &Span) -> &'a [u8] {
        &self.head[span[2] as usize..span[3] as usize]
    }
}

impl Fields for RawFields<'_> {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|s| (self.name(s), self.field_value(s)))
    }

    fn all<'b>(&'b self, name: &'b HeaderName) -> impl Iterator<Item = &'b [u8]> {
        let name = name.as_str().as_bytes();
        self.spans
            .iter()
            .filter(move |s| self.name(s) == name)
            .map(|s| self.field_value(s))
    }

    fn value(&self, name: &HeaderName) -> Option<HeaderValue> {
        let name = name.as_str().as_bytes();
        let span = self.spans.iter().find(|s| self.name(s) == name)?;
        HeaderValue::from_bytes(self.field_value(span)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn spans_only_of_slices_within() {
        let whole = &b"HTTP/1.1 200 OK\r\n".to_vec()[..];
        assert_eq!(span_in(whole, &whole[9..12]), Some((9, 12)));
        assert_eq!(span_in(whole, &whole[17..]), Some((17, 17)));
        assert_eq!(span_in(whole, whole), Some((0, 17)));
        // An empty slice of no buffer, as httparse's missing reason.
        let nowhere: &[u8] = &[];
        assert_eq!(span_in(whole, nowhere), None);
        let other = whole.to_vec();
        assert_eq!(span_in(whole, &other[9..12]), None);
        assert_eq!(
            span_in(&whole[..10], &whole[9..12]),
            None,
            "runs past the end"
        );
        assert_eq!(span_in(&whole[10..], &whole[9..12]), None, "starts before");
    }

    /// Both kinds answer alike for the same head.
    #[test]
    fn raw_fields_read_like_a_map() {
        let head = b"host: a\r\nx-v: 1\r\nx-v: 2\r\n";
        let spans = [[0, 4, 6, 7], [9, 12, 14, 15], [17, 20, 22, 23]];
        let raw = RawFields::new(head, &spans);
        let mut map = HeaderMap::new();
        map.append(header::HOST, HeaderValue::from_static("a"));
        map.append("x-v", HeaderValue::from_static("1"));
        map.append("x-v", HeaderValue::from_static("2"));
        let x_v = HeaderName::from_static("x-v");
        assert_eq!(
            raw.each().collect::<Vec<_>>(),
            map.each().collect::<Vec<_>>()
        );
        assert_eq!(
            raw.all(&x_v).collect::<Vec<_>>(),
            Fields::all(&map, &x_v).collect::<Vec<_>>()
        );
        assert_eq!(raw.value(&header::HOST), map.value(&header::HOST));
        assert!(raw.contains(&x_v) && map.contains(&x_v));
        assert!(!raw.contains(&header::VIA) && !map.contains(&header::VIA));
        assert_eq!(raw.value(&header::VIA), None);
    }
}
