//! Response heads and body framing on the inline server's connections.
//!
//! A backend's head goes to the client through [`ClientHead`], the
//! [`HeadSink`] the inline client hands it to: the status line and fields
//! are written from the bytes the backend sent by the same policy as
//! hyper's responses get ([`response::forward_fields`]: hop-by-hop fields
//! and those `Connection` names, `Server` and `X-Powered-By` go; `Via` is
//! extended; `X-Request-ID` is the request's), with the framing the client
//! needs: the body's length, or chunked when the backend's body
//! has none. 1xx heads are written to the socket as they come. The
//! gateway's own answers (errors) are written from their `Response` by
//! [`gateway_head`]. Like hyper, a head without `Date` gets one.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;
use tokio::net::TcpStream;

use super::stop::StopWatch;
use crate::http1::headers;
use crate::http1::response::{self, Decoration, HeadBytes, ResponseOut, put};
use crate::http1::{BodyFraming, H1Error, HeadSink, RawHead};
use crate::proxy::{ProxyBody, interim};
use crate::stall::WriteStall;

/// How a response's body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: an answer to `HEAD`, a `204` or a `304`.
    Empty,
    /// The body's bytes as they are (the head says how many).
    Length,
    /// Each piece as a chunk.
    Chunked,
}

/// The sink of the inline server's requests (see the module docs).
#[derive(Debug)]
pub struct ClientHead<'a> {
    /// Bytes for the client not yet written: the final head goes here,
    /// after any 1xx the socket would not take at once.
    pub out: &'a mut Vec<u8>,
    /// How much of `out` is whole 1xx heads (what stays if the request
    /// fails before its final head is written).
    pub committed: usize,
    /// Where 1xx heads go as they come (none: they queue in `out`).
    pub socket: Option<&'a TcpStream>,
    pub request_id: &'a HeaderValue,
    /// The client asked to close the connection after this response.
    pub close: bool,
    /// The listener is draining: then too the connection closes after
    /// this response (looked at as the head is written).
    pub stop: &'a StopWatch,
    /// The route's changes to the final head's fields, if any.
    pub decoration: Option<&'a Decoration>,
}

impl HeadSink for ClientHead<'_> {
    /// The body's framing, and whether the connection closes after it
    /// (the head says `Connection: close` then).
    type Final = (Framing, bool);

    fn interim(&mut self, head: &RawHead<'_>) {
        // `100 Continue` answers a question this path never asks.
        if head.status == StatusCode::CONTINUE {
            return;
        }
        let queued = !self.out.is_empty();
        // A client that does not read while a backend sends 1xx after 1xx
        // would otherwise have them pile up here: past the bound they are
        // dropped (a hint is only a hint).
        if self.out.len() > interim::MAX_QUEUED {
            tracing::debug!("informational response dropped: the client is not reading");
            return;
        }
        // As hyper's server writes a relayed 1xx: the usual reason phrase,
        // the fields as they are (a length included).
        status_line(self.out, head.status, None);
        fields(self.out, head, self.request_id, Omit::default(), None);
        self.out.extend_from_slice(b"\r\n");
        if !queued {
            // Sent now if the socket takes it (it is idle while the request
            // is in flight); what it does not take goes ahead of the final
            // head.
            if let Some(Ok(n)) = self.socket.map(|s| s.try_write(self.out)) {
                self.out.drain(..n);
            }
        }
        self.committed = self.out.len();
    }

    fn head(&mut self, head: &RawHead<'_>) -> Result<(Framing, bool), H1Error> {
        let out = &mut *self.out;
        status_line(out, head.status, head.reason());
        // An answer to HEAD keeps the length it declares (that of the body
        // a GET would get); a 204 or 304 sends none, as hyper's server. A
        // body's length is the gateway's to write, and with no body to
        // come, trailers will not either.
        let bodiless = head.body == BodyFraming::None;
        let omit = Omit {
            length: !bodiless
                || head.status == StatusCode::NO_CONTENT
                || head.status == StatusCode::NOT_MODIFIED,
            trailer: bodiless,
        };
        let dated = fields(out, head, self.request_id, omit, self.decoration);
        if !dated {
            put_date(out);
        }
        let framing = match head.body {
            BodyFraming::None => Framing::Empty,
            BodyFraming::Length(n) => {
                put_length(out, n);
                Framing::Length
            }
            BodyFraming::Chunked | BodyFraming::Eof => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        };
        let close = self.close || self.stop.is_stopped();
        end_head(out, close);
        Ok((framing, close))
    }
}

/// The gateway's own answer's head, from its `Response`: the body's length
/// from its size (it is whole), no body for `HEAD`.
pub fn gateway_head(
    out: &mut Vec<u8>,
    resp: &Response<ProxyBody>,
    head_request: bool,
    close: bool,
) -> Framing {
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes());
    status_line(out, resp.status(), reason);
    for (name, value) in resp.headers() {
        put(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !resp.headers().contains_key(header::DATE) {
        put_date(out);
    }
    let bodiless =
        resp.status() == StatusCode::NO_CONTENT || resp.status() == StatusCode::NOT_MODIFIED;
    let framing = match resp.body().size_hint().exact() {
        _ if bodiless => Framing::Empty,
        Some(n) => {
            if !resp.headers().contains_key(header::CONTENT_LENGTH) {
                put_length(out, n);
            }
            Framing::Length
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
    };
    end_head(out, close);
    if head_request {
        Framing::Empty
    } else {
        framing
    }
}

fn status_line(out: &mut Vec<u8>, status: StatusCode, reason: Option<&[u8]>) {
    if status == StatusCode::OK && reason.is_none() {
        // Most answers: one copy.
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    let reason = reason.or(status.canonical_reason().map(str::as_bytes));
    out.extend_from_slice(reason.unwrap_or_default());
    out.extend_from_slice(b"\r\n");
}

/// Fields of the backend's head the framing leaves out, besides those the
/// response policy does.
#[derive(Debug, Clone, Copy, Default)]
struct Omit {
    /// `Content-Length`.
    length: bool,
    /// `Trailer`.
    trailer: bool,
}

/// Write `head`'s fields as the client gets them ([`response::forward_fields`]
/// into [`ClientFields`]), then the route's own if it decorates its
/// responses. Whether the head has a `Date`.
fn fields(
    out: &mut Vec<u8>,
    head: &RawHead<'_>,
    request_id: &HeaderValue,
    omit: Omit,
    decoration: Option<&Decoration>,
) -> bool {
    match decoration {
        None => forward(out, head, request_id, omit, Undecorated),
        Some(decoration) => decorated(out, head, request_id, omit, decoration),
    }
}

/// [`fields`] for a route that decorates its responses. (Apart, and never
/// inlined: the head writer of the other routes stays as it was.)
#[inline(never)]
fn decorated(
    out: &mut Vec<u8>,
    head: &RawHead<'_>,
    request_id: &HeaderValue,
    omit: Omit,
    decoration: &Decoration,
) -> bool {
    let dated = forward(out, head, request_id, omit, decoration);
    for (name, value) in decoration.fields() {
        put(out, name.as_str().as_bytes(), value.as_bytes());
    }
    dated
}

#[inline]
fn forward<D: Drops>(
    out: &mut Vec<u8>,
    head: &RawHead<'_>,
    request_id: &HeaderValue,
    omit: Omit,
    drops: D,
) -> bool {
    let mut client = ClientFields {
        out: HeadBytes::new(out),
        omit,
        drop_length: head.drop_length,
        dated: false,
        drops,
    };
    response::forward_fields(|| head.fields(), &mut client, request_id);
    client.dated
}

/// Which of the backend's fields the route's decoration removes.
trait Drops {
    fn drops(&self, name: &[u8]) -> bool;
}

/// A route without a decoration: the check compiles away.
struct Undecorated;

impl Drops for Undecorated {
    #[inline(always)]
    fn drops(&self, _: &[u8]) -> bool {
        false
    }
}

impl Drops for &Decoration {
    #[inline]
    fn drops(&self, name: &[u8]) -> bool {
        Decoration::drops(self, name)
    }
}

/// The policy's output for the client's head as bytes ([`HeadBytes`]),
/// less what the framing decides: the body's length is the gateway's to
/// write, and a bodiless answer declares no trailers. Notes a `Date`.
struct ClientFields<'a, D> {
    out: HeadBytes<'a>,
    omit: Omit,
    /// The head's `Content-Length` gave way to its `Transfer-Encoding`.
    drop_length: bool,
    dated: bool,
    /// The backend's fields the route's changes remove are left out here
    /// (its own are written after the policy's).
    drops: D,
}

impl<D: Drops> ResponseOut for ClientFields<'_, D> {
    #[inline]
    fn keep(&mut self, name: &[u8], value: &[u8]) {
        if self.drops.drops(name) {
            return;
        }
        if headers::is_name(name, b"content-length") {
            if self.omit.length || self.drop_length {
                return;
            }
        } else if headers::is_name(name, b"date") {
            self.dated = true;
        } else if self.omit.trailer && headers::is_name(name, b"trailer") {
            return;
        }
        self.out.keep(name, value);
    }

    #[inline]
    fn omit(&mut self, _: &[u8]) {}

    fn restart(&mut self) {
        self.dated = false;
        self.out.restart();
    }

    #[inline]
    fn add(&mut self, name: &'static HeaderName, value: &HeaderValue) {
        self.out.add(name, value);
    }
}

fn put_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa_u64(n, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
}

fn end_head(out: &mut Vec<u8>, close: bool) {
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf`.
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// `date: <IMF-fixdate>`, formatted at most once a second per thread.
fn put_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *at = secs;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    });
}

/// The size line of a chunk of `len` bytes (`{len:x}\r\n`), written at
/// the end of `buf`.
pub fn chunk_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut at = buf.len() - 2;
    buf[at..].copy_from_slice(b"\r\n");
    let mut n = len;
    loop {
        at -= 1;
        buf[at] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Write all of `bufs` to `socket`, waiting for room as needed, but not
/// longer than `stall` allows without progress (the send timeout).
/// Through a shared reference: the connection's reader may watch the same
/// socket.
pub async fn write_all(
    socket: &TcpStream,
    mut bufs: &mut [IoSlice<'_>],
    stall: &mut WriteStall,
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match socket.try_write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                stall.progressed();
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Room again is not progress yet: only bytes taken are.
                std::future::poll_fn(|cx| match socket.poll_write_ready(cx) {
                    Poll::Pending => stall.poll_stalled(cx).map(Err),
                    ready => ready,
                })
                .await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(itoa_u64(0, &mut [0; 20]), b"0");
        assert_eq!(itoa_u64(100, &mut [0; 20]), b"100");
        assert_eq!(itoa_u64(u64::MAX, &mut [0; 20]), b"18446744073709551615");
        assert_eq!(chunk_line(0, &mut [0; 18]), b"0\r\n");
        assert_eq!(chunk_line(255, &mut [0; 18]), b"FF\r\n");
        assert_eq!(
            chunk_line(usize::MAX, &mut [0; 18]),
            b"FFFFFFFFFFFFFFFF\r\n"
        );
    }

    #[test]
    fn dates_are_imf_fixdates() {
        let mut out = Vec::new();
        put_date(&mut out);
        put_date(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 2);
        for line in lines {
            let date = line.strip_prefix("date: ").unwrap();
            assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        }
    }
}
