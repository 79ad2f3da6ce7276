//! The inline server's request-head parser: a head parsed in place in the
//! connection's read buffer (`httparse`, as hyper's server does), its
//! field names lowercased where they lie, and its target split — or the
//! verdict that the head is not one the inline server takes
//! ([`Parsed::HandOff`]: hyper's server parses it again and answers it as
//! it answers every request). Pure: no I/O, no routing; fuzzed by
//! `fuzz/fuzz_targets/request_head.rs` and against hyper's server by
//! `inline_vs_hyper.rs`.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::Method;

use crate::http1::fields::{RawFields, Span, byte_set, field_span, span_in};

/// Most fields in a request head: hyper's limit (it answers 431 past it).
pub const MAX_FIELDS: usize = 100;
/// Field slots tried first; [`MAX_FIELDS`] on a retry.
pub const FEW_FIELDS: usize = 32;
/// Longest request target hyper's server takes.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// What [`parse`] found at the front of the buffer.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// Not a whole head yet.
    Partial,
    /// A whole head, not for the inline server.
    HandOff,
    /// A head of `len` bytes for the inline server.
    Head { len: usize, head: Head<'b> },
}

/// An HTTP/1.1 request head with an origin-form target, parsed in place;
/// field names already lowercase.
#[derive(Debug, Clone, Copy)]
pub struct InlineHead<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub fields: RawFields<'a>,
}

/// An HTTP/1.1 request head with an origin-form target, in the buffer.
#[derive(Debug)]
pub struct Head<'b> {
    pub method: Method,
    pub path: &'b str,
    pub query: Option<&'b str>,
    /// Names lowercase.
    pub fields: RawFields<'b>,
}

impl Head<'_> {
    /// The head as the proxy takes it.
    pub fn inline(&self) -> InlineHead<'_> {
        InlineHead {
            method: &self.method,
            path: self.path,
            query: self.query,
            fields: self.fields,
        }
    }
}

/// Parse the head at the front of `buf` with room for `N` fields (`spans`
/// keeps where they lie); a head `httparse` refuses is an error (hyper's
/// server answers it), `TooManyHeaders` among them (try more room).
pub fn parse<'b, const N: usize>(
    buf: &'b mut BytesMut,
    spans: &'b mut [Span; N],
) -> Result<Parsed<'b>, httparse::Error> {
    let mut slots = [const { MaybeUninit::uninit() }; N];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut slots)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(Parsed::Partial),
    };
    if parsed.version != Some(1) {
        return Ok(Parsed::HandOff);
    }
    // Where the parts lie in the head (none of them elsewhere, or the head
    // is hyper's to judge).
    let whole = &buf[..len];
    let (Some(method), Some(target)) = (
        parsed.method.and_then(|m| span_in(whole, m.as_bytes())),
        parsed.path.and_then(|p| span_in(whole, p.as_bytes())),
    ) else {
        return Ok(Parsed::HandOff);
    };
    let (method, target) = (range(method), range(target));
    let count = parsed.headers.len();
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        match field_span(whole, field.name.as_bytes(), field.value) {
            Some(s) => *span = s,
            None => return Ok(Parsed::HandOff),
        }
    }
    // Names in lowercase, where they lie: as hyper's map has them.
    for span in &spans[..count] {
        buf[span[0] as usize..span[1] as usize].make_ascii_lowercase();
    }
    let buf: &'b BytesMut = buf;
    let head = &buf[..len];
    // Longer targets get hyper's own answer (414).
    if target.len() > MAX_TARGET {
        return Ok(Parsed::HandOff);
    }
    let (Ok(method), Some((path, query))) = (
        Method::from_bytes(&head[method]),
        split_target(&head[target]),
    ) else {
        return Ok(Parsed::HandOff);
    };
    let fields = RawFields::new(head, &spans[..count]);
    Ok(Parsed::Head {
        len,
        head: Head {
            method,
            path,
            query,
            fields,
        },
    })
}

fn range((start, end): (u32, u32)) -> std::ops::Range<usize> {
    start as usize..end as usize
}

/// An origin-form target's path and query, if it holds only characters
/// RFC 3986 allows there (a subset of what hyper's server takes: anything
/// else goes to hyper, which parses it its own way).
fn split_target(target: &[u8]) -> Option<(&str, Option<&str>)> {
    if target.first() != Some(&b'/') || !target.iter().all(|&b| TARGET[usize::from(b)]) {
        return None;
    }
    let target = std::str::from_utf8(target).ok()?;
    Some(match target.bytes().position(|b| b == b'?') {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    })
}

/// Bytes of an origin-form target: unreserved, sub-delims, `%`, `:`,
/// `@`, `/` and `?`.
static TARGET: [bool; 256] =
    byte_set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:@/?");
