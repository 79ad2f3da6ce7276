//! Response heads as a backend sent them: parsed in place by `httparse`
//! (as in hyper), their body's framing and the connection's reuse decided
//! from one pass over the fields ([`Framing`]), and handed to a
//! [`HeadSink`] as a [`RawHead`]. One sink builds hyper's `Response` from
//! it (requests hyper's server took); the inline server's writes the
//! client's head straight from the received bytes, with no header map.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use super::{H1Error, MAX_HEADERS};
use crate::http1::fields::{Span, field_span, span_in};
use crate::http1::headers;

/// What an exchange does with the heads it reads.
pub trait HeadSink {
    /// What the final head becomes.
    type Final;
    /// The sink keeps parts of heads ([`RawHead::to_response`]): the head
    /// is split off the connection's buffer as shared bytes first. Else it
    /// is only looked at there, and the buffer moves past it.
    const SHARES_BYTES: bool = false;
    /// A 1xx head (never `101`), as it arrives.
    fn interim(&mut self, head: &RawHead<'_>);
    /// The final head. Called only when nothing can fail after it: the
    /// exchange then succeeds with what this returns.
    fn head(&mut self, head: &RawHead<'_>) -> Result<Self::Final, H1Error>;
}

/// How the body after a final head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: an answer to `HEAD`, a `204` or a `304` (whatever its
    /// fields say).
    None,
    Length(u64),
    Chunked,
    /// Until the backend closes.
    Eof,
}

/// One response head as received: the bytes, where its fields sit, and
/// what its framing was found to be.
#[derive(Debug)]
pub struct RawHead<'a> {
    pub status: StatusCode,
    pub version: Version,
    bytes: &'a [u8],
    /// The same bytes, shared (for a sink that [`HeadSink::SHARES_BYTES`]).
    shared: Option<&'a Bytes>,
    spans: &'a [Span],
    /// The reason phrase, when it is not the status code's usual one.
    reason: Option<(u32, u32)>,
    /// The body's framing (of a final head).
    pub body: BodyFraming,
    /// `Transfer-Encoding` frames the body although `Content-Length` is
    /// there too: the length is dropped (RFC 9112 §6.3).
    pub drop_length: bool,
}

impl<'a> RawHead<'a> {
    /// The fields in order: name as sent (any case), value.
    pub fn fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        let bytes: &'a [u8] = self.bytes;
        self.spans.iter().map(move |s| {
            let [a, b, c, d] = s.map(|i| i as usize);
            (&bytes[a..b], &bytes[c..d])
        })
    }

    /// A reason phrase other than the status code's usual one.
    pub fn reason(&self) -> Option<&'a [u8]> {
        let bytes: &'a [u8] = self.bytes;
        self.reason.map(|(a, b)| &bytes[a as usize..b as usize])
    }

    /// hyper's form of the head: fields in a map, their values sharing the
    /// received bytes, an unusual reason phrase as an extension.
    pub fn to_response(&self) -> Result<Response<()>, H1Error> {
        // The client gets the gateway's own version (RFC 9110 §6.2), not
        // the backend's: a backend's HTTP/1.0 answer goes on as HTTP/1.1.
        let mut resp = Response::new(());
        *resp.status_mut() = self.status;
        let copied;
        let shared = match self.shared {
            Some(shared) => shared,
            None => {
                copied = Bytes::copy_from_slice(self.bytes);
                &copied
            }
        };
        let headers = resp.headers_mut();
        // Room for what the gateway adds (`Via`, `X-Request-ID`).
        headers.reserve(self.spans.len() + 2);
        for span in self.spans {
            let [name_start, name_end, start, end] = span.map(|i| i as usize);
            let name = &self.bytes[name_start..name_end];
            if self.drop_length && headers::is_name(name, b"content-length") {
                continue;
            }
            let (name, value) = header_field(name, shared.slice(start..end))?;
            headers.append(name, value);
        }
        if let Some(reason) = self.reason() {
            let reason = Bytes::copy_from_slice(reason);
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
                resp.extensions_mut().insert(reason);
            }
        }
        Ok(resp)
    }
}

/// One parsed header field, its value sharing the received bytes.
pub(super) fn header_field(
    name: &[u8],
    value: Bytes,
) -> Result<(HeaderName, HeaderValue), H1Error> {
    let name =
        HeaderName::from_bytes(name).map_err(|_| H1Error::Parse(httparse::Error::HeaderName))?;
    let value = HeaderValue::from_maybe_shared(value)
        .map_err(|_| H1Error::Parse(httparse::Error::HeaderValue))?;
    Ok((name, value))
}

/// The status of a response head: three digits, 100 to 599 (RFC 9110
/// §15); anything else is not a response a client can be given.
pub(crate) fn status_of(code: Option<u16>) -> Result<StatusCode, H1Error> {
    code.filter(|c| (100..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::Parse(httparse::Error::Status))
}

/// What [`parse`] found at the front of the buffer.
#[derive(Debug)]
pub(crate) enum Parsed<T> {
    /// Not a whole head yet.
    Partial,
    /// A 1xx head, handed to the sink and taken off the buffer.
    Interim,
    /// The final head, as the sink made it, and how its body is framed.
    Final {
        head: T,
        body: BodyFraming,
        /// The connection may carry another request after this response.
        reusable: bool,
    },
}

/// Header slots tried first: most response heads have fewer fields, and
/// slots are set up before parsing. Up to [`MAX_HEADERS`] on a retry.
pub(super) const FEW_HEADERS: usize = 16;

/// Parse one response head off the front of `buf`, if it is all there, and
/// hand it to `sink`. A `101` is an error: nothing asked to switch.
pub(crate) fn parse<S: HeadSink>(
    buf: &mut BytesMut,
    method: &Method,
    sink: &mut S,
) -> Result<Parsed<S::Final>, H1Error> {
    match parse_with::<FEW_HEADERS, S>(buf, method, sink) {
        Err(H1Error::Parse(httparse::Error::TooManyHeaders)) => {
            parse_with::<MAX_HEADERS, S>(buf, method, sink)
        }
        parsed => parsed,
    }
}

/// [`parse`] with room for `N` fields.
fn parse_with<const N: usize, S: HeadSink>(
    buf: &mut BytesMut,
    method: &Method,
    sink: &mut S,
) -> Result<Parsed<S::Final>, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; N];
    let mut spans: [Span; N] = [[0; 4]; N];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(H1Error::Parse(e)),
    };
    // Where each field's name and value sit, so that the values can share
    // the frozen head.
    let whole = &buf[..len];
    let count = parsed.headers.len();
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        *span = field_span(whole, field.name.as_bytes(), field.value)
            .ok_or(H1Error::Parse(httparse::Error::HeaderName))?;
    }
    let status = status_of(parsed.code)?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let reason = match parsed.reason {
        Some(r) if Some(r) == status.canonical_reason() => None,
        // No reason phrase (RFC 9112 §4 allows none, even without the
        // space), or one of obs-text that httparse leaves out: relayed
        // without one, as hyper's client does.
        None | Some("") => Some((0, 0)),
        Some(r) => {
            Some(span_in(whole, r.as_bytes()).ok_or(H1Error::Parse(httparse::Error::Status))?)
        }
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(H1Error::Switching);
    }
    let spans = &spans[..count];
    let shared = S::SHARES_BYTES.then(|| buf.split_to(len).freeze());
    let mut head = RawHead {
        status,
        version,
        bytes: match &shared {
            Some(shared) => shared,
            None => &buf[..len],
        },
        shared: shared.as_ref(),
        spans,
        reason,
        body: BodyFraming::None,
        drop_length: false,
    };
    let parsed = if status.is_informational() {
        sink.interim(&head);
        Parsed::Interim
    } else {
        let framing = Framing::of(head.fields());
        let reusable = framing.decide(&mut head, method)?;
        let body = head.body;
        Parsed::Final {
            head: sink.head(&head)?,
            body,
            reusable,
        }
    };
    if shared.is_none() {
        buf.advance(len);
    }
    Ok(parsed)
}

/// What a response head says of its body's framing and its connection,
/// found in one pass over its fields.
#[derive(Debug)]
pub(super) struct Framing {
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive`.
    keep_alive: bool,
    /// Some `Transfer-Encoding` line is there.
    transfer_encoding: bool,
    /// One names a coding other than `chunked`.
    other_coding: bool,
    /// Some `Content-Length` line is there.
    has_length: bool,
    /// The one `Content-Length` (repeated equal values allowed), or why
    /// there is none usable (looked at only when it frames the body).
    length: Result<Option<u64>, ()>,
}

impl Framing {
    pub(super) fn of<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut f = Framing {
            close: false,
            keep_alive: false,
            transfer_encoding: false,
            other_coding: false,
            has_length: false,
            length: Ok(None),
        };
        for (name, value) in fields {
            if headers::is_name(name, b"connection") {
                for token in headers::list_items(value) {
                    f.close |= token.eq_ignore_ascii_case("close");
                    f.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            } else if headers::is_name(name, b"transfer-encoding") {
                f.transfer_encoding = true;
                f.other_coding |= !headers::only_chunked(value);
            } else if headers::is_name(name, b"content-length") {
                f.has_length = true;
                f.length = f.length.and_then(|length| add_length(length, value));
            }
        }
        f
    }

    /// Set `head`'s body framing (for a request with `method`); whether
    /// the connection may carry another request after it.
    fn decide(&self, head: &mut RawHead<'_>, method: &Method) -> Result<bool, H1Error> {
        let mut reusable = !self.close && (head.version == Version::HTTP_11 || self.keep_alive);
        let status = head.status;
        head.body = if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            BodyFraming::None
        } else if self.transfer_encoding {
            if head.version == Version::HTTP_10 {
                return Err(H1Error::Http10TransferEncoding);
            }
            // Another coding (`gzip, chunked`) would reach the client
            // without the field that names it (hop-by-hop): refused, as
            // nginx does, rather than passed on garbled.
            if self.other_coding {
                return Err(H1Error::TransferCoding);
            }
            if self.has_length {
                // Both framings: Transfer-Encoding wins, and the connection
                // is not trusted with another request (RFC 9112 §6.3).
                head.drop_length = true;
                reusable = false;
            }
            BodyFraming::Chunked
        } else {
            match self.length.map_err(|()| H1Error::ContentLength)? {
                Some(n) => BodyFraming::Length(n),
                None => {
                    reusable = false;
                    BodyFraming::Eof
                }
            }
        };
        Ok(reusable)
    }
}

/// `length` with one more `Content-Length` line: all values must agree.
fn add_length(mut length: Option<u64>, value: &[u8]) -> Result<Option<u64>, ()> {
    // The usual line: one number, digits only.
    if (1..=19).contains(&value.len()) && value.iter().all(u8::is_ascii_digit) {
        let n = value
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        return match length {
            Some(l) if l != n => Err(()),
            _ => Ok(Some(n)),
        };
    }
    for part in headers::text(value).ok_or(())?.split(',') {
        let part = part.trim();
        if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let n: u64 = part.parse().map_err(|_| ())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}

/// The sink of requests hyper's server took: hyper's `Response`, and 1xx
/// heads handed on as status and map.
pub(crate) struct ToResponse<'a> {
    pub interim: &'a mut (dyn FnMut(StatusCode, &http::HeaderMap) + Send),
}

impl HeadSink for ToResponse<'_> {
    type Final = Response<()>;
    const SHARES_BYTES: bool = true;

    fn interim(&mut self, head: &RawHead<'_>) {
        if let Ok(resp) = head.to_response() {
            (self.interim)(resp.status(), resp.headers());
        }
    }

    fn head(&mut self, head: &RawHead<'_>) -> Result<Response<()>, H1Error> {
        head.to_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_interim() -> impl FnMut(StatusCode, &http::HeaderMap) + Send {
        |_, _| {}
    }

    fn parse_response(buf: &mut BytesMut) -> Result<Option<Response<()>>, H1Error> {
        let mut ignore = no_interim();
        let mut sink = ToResponse {
            interim: &mut ignore,
        };
        match parse(buf, &Method::GET, &mut sink)? {
            Parsed::Partial => Ok(None),
            Parsed::Interim => panic!("no 1xx here"),
            Parsed::Final { head, .. } => Ok(Some(head)),
        }
    }

    /// Heads with more fields than the first try has slots for are parsed
    /// whole on the retry, up to [`MAX_HEADERS`]; past that, an error.
    #[test]
    fn heads_with_many_fields() {
        let head = |n: usize| {
            let mut h = String::from("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n");
            for i in 0..n.saturating_sub(1) {
                h.push_str(&format!("x-f{i}: {i}\r\n"));
            }
            h.push_str("\r\nrest");
            BytesMut::from(h.as_bytes())
        };
        for n in [
            1,
            FEW_HEADERS - 1,
            FEW_HEADERS,
            FEW_HEADERS + 1,
            MAX_HEADERS,
        ] {
            let mut buf = head(n);
            let resp = parse_response(&mut buf).unwrap().expect("complete");
            assert_eq!(resp.headers().len(), n);
            if n > 1 {
                assert_eq!(resp.headers()[format!("x-f{}", n - 2)], (n - 2).to_string());
            }
            assert_eq!(&buf[..], b"rest", "{n} fields");
        }
        // Partial, with more fields than the first try's slots.
        let mut buf = head(FEW_HEADERS + 4);
        buf.truncate(buf.len() - 10);
        assert!(parse_response(&mut buf).unwrap().is_none());
        assert!(matches!(
            parse_response(&mut head(MAX_HEADERS + 1)),
            Err(H1Error::Parse(httparse::Error::TooManyHeaders))
        ));
    }

    /// Framing and connection from one pass over the fields.
    #[test]
    fn framing_of_a_head() {
        let f = Framing::of(std::iter::empty());
        assert!(!f.close && !f.keep_alive && !f.transfer_encoding);
        assert_eq!(f.length, Ok(None));
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b"Connection", b"Keep-Alive, x"),
            (b"connection", b" close "),
            (b"transfer-encoding", b"gzip"),
            (b"Transfer-Encoding", b"chunked"),
            (b"content-length", b"5, 5"),
            (b"Content-Length", b"5"),
        ];
        let f = Framing::of(fields.iter().copied());
        assert!(f.close && f.keep_alive && f.has_length);
        assert!(
            f.transfer_encoding && f.other_coding,
            "gzip is another coding"
        );
        assert_eq!(f.length, Ok(Some(5)));
        for bad in ["6", "", "+5", "5x", "99999999999999999999"] {
            fields.push((b"content-length", bad.as_bytes()));
            assert_eq!(
                Framing::of(fields.iter().copied()).length,
                Err(()),
                "{bad:?}"
            );
            fields.pop();
        }
    }

    /// The reason phrase is kept only when it is not the usual one, and a
    /// length beside chunked framing is dropped from the map.
    #[test]
    fn reasons_and_dropped_lengths() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 Fine\r\ncontent-length: 0\r\n\r\n"[..]);
        let resp = parse_response(&mut buf).unwrap().unwrap();
        let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(reason.as_bytes(), b"Fine");
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..]);
        let resp = parse_response(&mut buf).unwrap().unwrap();
        assert!(
            resp.extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .is_none()
        );
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        );
        let resp = parse_response(&mut buf).unwrap().unwrap();
        assert!(!resp.headers().contains_key(http::header::CONTENT_LENGTH));
    }
}
