//! A minimal HTTP/1.1 client run inline in the request's own task, for the
//! hot path: a request without a body (nor upgrade) to a plain `http://`
//! backend on a pooled keep-alive connection.
//!
//! hyper's client runs every connection as a task of its own and passes
//! each request and each response frame through channels to it. Here the
//! request task writes the head and reads the response itself, and the
//! response body is decoded straight from the socket by whoever polls it
//! (the client connection's task): no extra task wake-up, no channel, no
//! copy of the head into a second encoder. Requests with a body, upgrades,
//! TLS and HTTP/2 upstreams keep using hyper's client.
//!
//! What it does, per RFC 9112: the response head is parsed by `httparse`
//! (as in hyper) with at most [`MAX_HEADERS`] fields in [`MAX_HEAD`]
//! bytes; `1xx` heads are handed to a callback and skipped; the body is
//! framed by the request method and status (`HEAD`, `204`, `304`: none),
//! `Transfer-Encoding` (chunked last: chunked, with trailers; otherwise
//! until close), `Content-Length` (conflicting values are an error), or
//! else until close. A connection goes back to its pool only when its
//! response ended exactly where the next one may start and neither side
//! asked to close.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Most header fields in a response head (or trailer section): hyper's
/// default, as before this client.
pub const MAX_HEADERS: usize = 100;
/// Largest response head (status line and fields), and trailer section:
/// hyper's default read buffer limit, as before this client.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// Read buffer room asked for before a read: starts small, doubles while
/// reads fill it (large bodies), back to the start once idle.
const READ_RESERVE: usize = 8 * 1024;
const MAX_READ_RESERVE: usize = 64 * 1024;
/// An idle connection's buffer larger than this is freed, not kept.
const MAX_IDLE_BUFFER: usize = 16 * 1024;

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("backend connection: {0}")]
    Io(#[from] io::Error),
    #[error("backend closed the connection before a complete response head")]
    Closed,
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid Content-Length in the response")]
    ContentLength,
    #[error("backend switched protocols without being asked")]
    Switching,
    #[error("HTTP/1.0 response with Transfer-Encoding (faulty framing, RFC 9112 §6.1)")]
    Http10TransferEncoding,
    #[error("invalid chunked response body")]
    Chunked,
    #[error("response body ended before its end")]
    Truncated,
    #[error("no response head before the deadline")]
    TimedOut,
}

/// One keep-alive connection to a backend and what was read ahead on it.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// Room to ask for before the next read.
    reserve: usize,
    /// The response-head deadline of this connection's exchanges: made on
    /// the first, then moved later for each next one, which costs one
    /// atomic update while it is still armed (tokio only touches its timer
    /// wheel when the timer is first armed and when it fires). A timer made
    /// and dropped per request would take the wheel twice per request.
    /// Between exchanges it may fire unwatched, waking the task that last
    /// waited on it for nothing: at most once per timeout period.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            reserve: READ_RESERVE,
            deadline: None,
        }
    }

    /// This connection's deadline timer, set to `deadline`.
    fn take_deadline(&mut self, deadline: Instant) -> Pin<Box<Sleep>> {
        match self.deadline.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Ready the connection to wait idle in a pool: the read room starts
    /// small again, and a large buffer is freed.
    pub fn idle(&mut self) {
        self.reserve = READ_RESERVE;
        if self.buf.capacity() > MAX_IDLE_BUFFER {
            self.buf = BytesMut::new();
        }
    }

    /// Whether an idle connection can carry a request: nothing has arrived
    /// on it since its last response (neither the backend's close nor
    /// stray bytes). Costs no system call while the socket is quiet: the
    /// runtime already knows whether it became readable.
    pub fn is_usable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: EOF or unexpected bytes, unless the readiness was
            // stale (then `try_read` clears it and says so).
            Poll::Ready(Ok(())) => matches!(
                self.io.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Read more into the buffer; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.reserve / 4 {
            self.buf.reserve(self.reserve);
        }
        let room = self.buf.capacity() - self.buf.len();
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ));
        if matches!(read, Ok(n) if n == room) {
            self.reserve = (self.reserve * 2).min(MAX_READ_RESERVE);
        }
        Poll::Ready(read)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// Serialise a request head without body: request line, the fields
/// `fields` puts, and `content-length: 0` for the methods whose bodies a
/// backend may insist on being told the length of. Returns the length of
/// the request line (where a backend's `host` goes, see `upstream.rs`).
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    fields: impl FnOnce(&mut dyn FnMut(&HeaderName, &HeaderValue)),
) -> usize {
    let start = out.len();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let line_len = out.len() - start;
    let mut has_length = false;
    fields(&mut |name, value| {
        has_length |= name == header::CONTENT_LENGTH;
        put_field(out, name.as_str(), value);
    });
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) && !has_length {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    line_len
}

fn put_field(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A failed exchange, and whether the backend sent nothing at all.
#[derive(Debug)]
pub struct Failed {
    pub error: H1Error,
    pub nothing_received: bool,
}

impl Failed {
    /// The connection, reused, was most likely closed by the backend while
    /// idle: it failed before anything of the response came. Silence until
    /// the deadline is not that, but a slow backend.
    pub fn closed_while_idle(&self) -> bool {
        self.nothing_received && !matches!(self.error, H1Error::TimedOut)
    }
}

/// Send `head` on `conn` and read the response head, by `deadline`; 1xx
/// heads go to `interim` (except `101`, which is an error: nothing asked
/// to switch). The response's body owns the connection.
pub async fn exchange(
    mut conn: Conn,
    head: &[u8],
    method: &Method,
    deadline: Instant,
    interim: &mut (dyn FnMut(StatusCode, &HeaderMap) + Send),
) -> Result<Response<ResponseBody>, Failed> {
    let mut timer = conn.take_deadline(deadline);
    let mut received = false;
    let result = tokio::select! {
        biased;
        r = head_of_response(&mut conn, head, &mut received, interim) => r,
        () = timer.as_mut() => Err(H1Error::TimedOut),
    };
    conn.deadline = Some(timer);
    let fail = |error| Failed {
        error,
        nothing_received: !received,
    };
    let resp = result.map_err(fail)?;
    start_body(conn, resp, method).map_err(fail)
}

/// The write and read half of [`exchange`]; `received` tells whether any
/// of the response arrived.
async fn head_of_response(
    conn: &mut Conn,
    head: &[u8],
    received: &mut bool,
    interim: &mut (dyn FnMut(StatusCode, &HeaderMap) + Send),
) -> Result<Response<()>, H1Error> {
    conn.io.write_all(head).await?;
    loop {
        if !conn.buf.is_empty() {
            *received = true;
            match parse_head(&mut conn.buf)? {
                None if conn.buf.len() >= MAX_HEAD => return Err(H1Error::HeadTooLarge),
                None => {}
                Some(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(H1Error::Switching);
                }
                Some(resp) if resp.status().is_informational() => {
                    interim(resp.status(), resp.headers());
                    continue;
                }
                Some(resp) => return Ok(resp),
            }
        }
        if conn.fill().await? == 0 {
            return Err(H1Error::Closed);
        }
    }
}

/// Header slots tried first: most response heads have fewer fields, and
/// slots are set up before parsing. Up to [`MAX_HEADERS`] on a retry.
const FEW_HEADERS: usize = 16;

/// Parse one response head off the front of `buf`, if it is all there.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Response<()>>, H1Error> {
    match parse_head_with::<FEW_HEADERS>(buf) {
        Err(H1Error::Parse(httparse::Error::TooManyHeaders)) => parse_head_with::<MAX_HEADERS>(buf),
        parsed => parsed,
    }
}

/// [`parse_head`] with room for `N` fields.
fn parse_head_with<const N: usize>(buf: &mut BytesMut) -> Result<Option<Response<()>>, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; N];
    let mut spans = [[0u32; 4]; N];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::Parse(e)),
    };
    // Where each field's name and value sit, so that the values can share
    // the frozen head.
    let base = buf.as_ptr() as usize;
    let count = parsed.headers.len();
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        *span = [
            name,
            name + field.name.len(),
            value,
            value + field.value.len(),
        ]
        .map(|i| i as u32);
    }
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
        .map_err(|_| H1Error::Parse(httparse::Error::Status))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let reason = parsed
        .reason
        .filter(|r| Some(*r) != status.canonical_reason())
        .map(|r| Bytes::copy_from_slice(r.as_bytes()));
    let head = buf.split_to(len).freeze();
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    let headers = resp.headers_mut();
    // Room for what the gateway adds (`Via`, `X-Request-ID`).
    headers.reserve(count + 2);
    for span in &spans[..count] {
        let [name_start, name_end, start, end] = span.map(|i| i as usize);
        let (name, value) = header_field(&head[name_start..name_end], head.slice(start..end))?;
        headers.append(name, value);
    }
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        resp.extensions_mut().insert(reason);
    }
    Ok(Some(resp))
}

/// One parsed header field, its value sharing the received bytes.
fn header_field(name: &[u8], value: Bytes) -> Result<(HeaderName, HeaderValue), H1Error> {
    let name =
        HeaderName::from_bytes(name).map_err(|_| H1Error::Parse(httparse::Error::HeaderName))?;
    let value = HeaderValue::from_maybe_shared(value)
        .map_err(|_| H1Error::Parse(httparse::Error::HeaderValue))?;
    Ok((name, value))
}

/// What a response head says of its body's framing and its connection,
/// found in one pass over its fields.
#[derive(Debug)]
struct Framing<'a> {
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive`.
    keep_alive: bool,
    /// The last `Transfer-Encoding` line.
    transfer_encoding: Option<&'a HeaderValue>,
    /// The one `Content-Length` (repeated equal values allowed), or why
    /// there is none usable (looked at only when it frames the body).
    length: Result<Option<u64>, ()>,
}

impl<'a> Framing<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let mut f = Framing {
            close: false,
            keep_alive: false,
            transfer_encoding: None,
            length: Ok(None),
        };
        for (name, value) in headers {
            if name == header::CONNECTION {
                for token in super::headers::list_items(value) {
                    f.close |= token.eq_ignore_ascii_case("close");
                    f.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            } else if name == header::TRANSFER_ENCODING {
                f.transfer_encoding = Some(value);
            } else if name == header::CONTENT_LENGTH {
                f.length = f.length.and_then(|length| add_length(length, value));
            }
        }
        f
    }
}

/// `length` with one more `Content-Length` line: all values must agree.
fn add_length(mut length: Option<u64>, value: &HeaderValue) -> Result<Option<u64>, ()> {
    for part in value.to_str().map_err(|_| ())?.split(',') {
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

/// Decide the body's framing from the final head and hand it the
/// connection.
fn start_body(
    conn: Conn,
    resp: Response<()>,
    method: &Method,
) -> Result<Response<ResponseBody>, H1Error> {
    let (mut parts, ()) = resp.into_parts();
    let framing = Framing::of(&parts.headers);
    let mut reusable = !framing.close && (parts.version == Version::HTTP_11 || framing.keep_alive);
    let status = parts.status;
    let decode = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Decode::Length(0)
    } else if let Some(te) = framing.transfer_encoding {
        if parts.version == Version::HTTP_10 {
            return Err(H1Error::Http10TransferEncoding);
        }
        let chunked_last = super::headers::list_items(te)
            .next_back()
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        if parts.headers.remove(header::CONTENT_LENGTH).is_some() {
            // Both framings: Transfer-Encoding wins, and the connection is
            // not trusted with another request (RFC 9112 §6.3).
            reusable = false;
        }
        if chunked_last {
            Decode::Chunked(Chunk::Size)
        } else {
            reusable = false;
            Decode::Eof
        }
    } else {
        match framing.length.map_err(|()| H1Error::ContentLength)? {
            Some(n) => Decode::Length(n),
            None => {
                reusable = false;
                Decode::Eof
            }
        }
    };
    let body = ResponseBody {
        conn: Some(conn),
        decode,
        reusable,
        failed: None,
    };
    Ok(Response::from_parts(parts, body))
}

/// A response body decoded straight from the backend connection.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Conn>,
    decode: Decode,
    /// The connection may carry another request once the body is done.
    reusable: bool,
    /// An error held back for one poll (see [`ResponseBody::poll_frame`]).
    failed: Option<H1Error>,
}

#[derive(Debug)]
enum Decode {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the backend closes.
    Eof,
    Done,
}

impl Decode {
    /// Nothing of the body is left to read.
    fn is_done(&self) -> bool {
        matches!(self, Decode::Done | Decode::Length(0))
    }
}

#[derive(Debug)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

impl ResponseBody {
    /// The connection, if the body was read to its end and the connection
    /// can carry the next request.
    pub fn into_reusable(mut self) -> Option<Conn> {
        let conn = self.conn.take()?;
        (self.decode.is_done() && self.reusable && conn.buf.is_empty()).then_some(conn)
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, H1Error>>>;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    /// A failure is reported one poll late: the first time, the body wakes
    /// itself and says `Pending`, so what was already produced (the head
    /// and the data before the failure) is flushed to the client before
    /// the error aborts the response — a client sees the status and a
    /// short body that fails, never a clean close.
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            this.decode = Decode::Done;
            this.conn = None;
            return Poll::Ready(Some(Err(e)));
        }
        match this.poll_decode(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.decode.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl ResponseBody {
    fn poll_decode(&mut self, cx: &mut Context<'_>) -> Polled {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            // Each arm either answers or has more in the buffer to go on.
            let need_more = match &mut self.decode {
                Decode::Done => return Poll::Ready(None),
                Decode::Length(0) => {
                    self.decode = Decode::Done;
                    return Poll::Ready(None);
                }
                Decode::Length(left) | Decode::Chunked(Chunk::Data(left)) => {
                    if conn.buf.is_empty() {
                        true
                    } else {
                        let n = (*left).min(conn.buf.len() as u64);
                        *left -= n;
                        if *left == 0
                            && let Decode::Chunked(chunk) = &mut self.decode
                        {
                            *chunk = Chunk::DataEnd;
                        }
                        let data = conn.buf.split_to(n as usize).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Decode::Eof => {
                    if conn.buf.is_empty() {
                        match ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                self.decode = Decode::Done;
                                return Poll::Ready(None);
                            }
                            Ok(_) => continue,
                            Err(e) => return Poll::Ready(Some(Err(e.into()))),
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                }
                Decode::Chunked(chunk) => match step_chunked(chunk, &mut conn.buf) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Step::More) => true,
                    Ok(Step::Next) => false,
                    Ok(Step::End(trailers)) => {
                        self.decode = Decode::Done;
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                },
            };
            if need_more {
                match ready!(conn.poll_fill(cx)) {
                    Ok(0) => return Poll::Ready(Some(Err(H1Error::Truncated))),
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                }
            }
        }
    }
}

/// What one step of the chunked decoder found.
#[derive(Debug)]
enum Step {
    /// Needs more bytes.
    More,
    /// Moved on; go again.
    Next,
    /// The last chunk and the trailer section (if it had fields) are read.
    End(Option<HeaderMap>),
}

/// Advance the chunked decoder over what `buf` holds (data itself is taken
/// by the caller in `Chunk::Data`).
fn step_chunked(chunk: &mut Chunk, buf: &mut BytesMut) -> Result<Step, H1Error> {
    match chunk {
        Chunk::Data(_) => unreachable!("chunk data is taken by the caller"),
        Chunk::Size => {
            let Some(end) = find(buf, b"\r\n") else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err(H1Error::Chunked)
                } else {
                    Ok(Step::More)
                };
            };
            let size = chunk_size(&buf[..end])?;
            buf.advance(end + 2);
            *chunk = if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            };
            Ok(Step::Next)
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(H1Error::Chunked);
            }
            buf.advance(2);
            *chunk = Chunk::Size;
            Ok(Step::Next)
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(Step::End(None));
            }
            let Some(end) = find(buf, b"\r\n\r\n") else {
                return if buf.len() > MAX_HEAD {
                    Err(H1Error::HeadTooLarge)
                } else {
                    Ok(Step::More)
                };
            };
            let section = buf.split_to(end + 4).freeze();
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let fields = match httparse::parse_headers(&section, &mut fields) {
                Ok(httparse::Status::Complete((_, fields))) => fields,
                Ok(httparse::Status::Partial) => return Err(H1Error::Chunked),
                Err(e) => return Err(H1Error::Parse(e)),
            };
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for field in fields.iter() {
                let (name, value) =
                    header_field(field.name.as_bytes(), section.slice_ref(field.value))?;
                trailers.append(name, value);
            }
            Ok(Step::End(Some(trailers)))
        }
    }
}

/// `1*HEXDIG [ BWS ";" extensions ]` → the size (leading zeros allowed;
/// extensions may hold any byte but controls other than HTAB).
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(H1Error::Chunked);
    }
    let rest = &line[digits..];
    let rest_ok = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .is_none_or(|i| {
            rest[i] == b';'
                && rest[i..]
                    .iter()
                    .all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
        });
    if !rest_ok {
        return Err(H1Error::Chunked);
    }
    line[..digits].iter().try_fold(0u64, |size, &b| {
        let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
        size.checked_mul(16)
            .and_then(|s| s.checked_add(digit))
            .ok_or(H1Error::Chunked)
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A backend that reads one request head and answers `answer` (split
    /// into the given pieces, each written separately), then keeps the
    /// connection open until the client closes it.
    async fn backend(
        pieces: Vec<&'static [u8]>,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while find(&seen, b"\r\n\r\n").is_none() {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed before its head");
                seen.extend_from_slice(&buf[..n]);
            }
            for piece in pieces {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            let _ = s.read(&mut buf).await;
            seen
        });
        (addr, task)
    }

    /// A deadline no test here should meet.
    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    /// One connection's deadline timer is reused: moved later while armed,
    /// moved earlier, and armed again after it fired unwatched. Each
    /// exchange keeps its own deadline.
    #[tokio::test]
    async fn each_exchange_keeps_its_own_deadline_on_a_reused_timer() {
        use std::time::Duration;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers each request head after the delay its target names.
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                while let Some(end) = find(&seen, b"\r\n\r\n") {
                    let head = String::from_utf8(seen.drain(..end + 4).collect()).unwrap();
                    let ms: u64 = head[5..].split(' ').next().unwrap().parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        });
        let ms = Duration::from_millis;
        let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let send = async |conn: Conn, delay: u64, within: Duration| {
            let head = format!("GET /{delay} HTTP/1.1\r\n\r\n");
            let started = Instant::now();
            let got = exchange(
                conn,
                head.as_bytes(),
                &Method::GET,
                started + within,
                &mut |_, _| {},
            )
            .await;
            (got, started.elapsed())
        };
        // First deadline: 200 ms, met.
        let (resp, _) = send(conn, 0, ms(200)).await;
        conn = resp.unwrap().into_body().into_reusable().unwrap();
        // Moved later while still armed (tokio updates it in place): the
        // old 200 ms does not cut short an answer that takes 300 ms. From
        // another task, which the timer then wakes.
        let resp = tokio::spawn(async move {
            let head = b"GET /300 HTTP/1.1\r\n\r\n";
            exchange(
                conn,
                head,
                &Method::GET,
                Instant::now() + ms(1000),
                &mut |_, _| {},
            )
            .await
        })
        .await
        .unwrap();
        conn = resp.unwrap().into_body().into_reusable().unwrap();
        // The timer fires unwatched; a later exchange with time enough is
        // not cut short by it.
        let (resp, _) = send(conn, 0, ms(100)).await;
        conn = resp.unwrap().into_body().into_reusable().unwrap();
        tokio::time::sleep(ms(300)).await;
        let (resp, _) = send(conn, 300, ms(5000)).await;
        conn = resp.unwrap().into_body().into_reusable().unwrap();
        // Moved earlier (5 s → 150 ms) while still armed: kept.
        let (got, took) = send(conn, 2000, ms(150)).await;
        assert!(
            matches!(
                got,
                Err(Failed {
                    error: H1Error::TimedOut,
                    ..
                })
            ),
            "{got:?}"
        );
        assert!(took >= ms(140) && took < ms(1500), "{took:?}");
    }

    async fn get(
        pieces: Vec<&'static [u8]>,
        method: Method,
    ) -> (Result<Response<ResponseBody>, Failed>, Vec<StatusCode>) {
        let (addr, _task) = backend(pieces).await;
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let mut head = Vec::new();
        let host = HeaderValue::from_static("b");
        encode_request(&mut head, &method, "/x?y=1", |put| {
            put(&header::HOST, &host)
        });
        let mut seen = Vec::new();
        let resp = exchange(conn, &head, &method, soon(), &mut |s, _| seen.push(s)).await;
        (resp, seen)
    }

    async fn collect(body: &mut ResponseBody) -> Result<(Vec<u8>, Option<HeaderMap>), H1Error> {
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        Ok((data, trailers))
    }

    #[test]
    fn request_head() {
        let mut out = Vec::new();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        let fields =
            |put: &mut dyn FnMut(&HeaderName, &HeaderValue)| h.iter().for_each(|(n, v)| put(n, v));
        let host = HeaderValue::from_static("h:1");
        encode_request(&mut out, &Method::POST, "/p", |put| {
            put(&header::HOST, &host);
            fields(put);
        });
        assert_eq!(
            out,
            b"POST /p HTTP/1.1\r\nhost: h:1\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"
        );
        out.clear();
        encode_request(&mut out, &Method::GET, "/", fields);
        assert_eq!(out, b"GET / HTTP/1.1\r\nx-a: 1\r\n\r\n");
        // A length the client gave is not repeated.
        out.clear();
        let zero = HeaderValue::from_static("0");
        encode_request(&mut out, &Method::PUT, "/", |put| {
            put(&header::CONTENT_LENGTH, &zero)
        });
        assert_eq!(out, b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    /// Heads with more fields than the first try has slots for are parsed
    /// whole on the retry, up to [`MAX_HEADERS`]; past that, an error.
    #[test]
    fn heads_with_many_fields() {
        let head = |n: usize| {
            let mut h = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..n {
                h.push_str(&format!("x-f{i}: {i}\r\n"));
            }
            h.push_str("\r\nrest");
            BytesMut::from(h.as_bytes())
        };
        for n in [
            0,
            FEW_HEADERS - 1,
            FEW_HEADERS,
            FEW_HEADERS + 1,
            MAX_HEADERS,
        ] {
            let mut buf = head(n);
            let resp = parse_head(&mut buf).unwrap().expect("complete");
            assert_eq!(resp.headers().len(), n);
            if n > 0 {
                assert_eq!(resp.headers()[format!("x-f{}", n - 1)], (n - 1).to_string());
            }
            assert_eq!(&buf[..], b"rest", "{n} fields");
        }
        // Partial, with more fields than the first try's slots.
        let mut buf = head(FEW_HEADERS + 4);
        buf.truncate(buf.len() - 10);
        assert!(parse_head(&mut buf).unwrap().is_none());
        assert!(matches!(
            parse_head(&mut head(MAX_HEADERS + 1)),
            Err(H1Error::Parse(httparse::Error::TooManyHeaders))
        ));
    }

    /// Framing and connection from one pass over the fields.
    #[test]
    fn framing_of_a_head() {
        let mut h = HeaderMap::new();
        let f = Framing::of(&h);
        assert!(!f.close && !f.keep_alive && f.transfer_encoding.is_none());
        assert_eq!(f.length, Ok(None));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, x"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static(" close "));
        h.append(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5, 5"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let f = Framing::of(&h);
        assert!(f.close && f.keep_alive);
        assert_eq!(f.transfer_encoding.unwrap(), "chunked");
        assert_eq!(f.length, Ok(Some(5)));
        for bad in ["6", "", "+5", "5x", "99999999999999999999"] {
            h.append(header::CONTENT_LENGTH, HeaderValue::from_static(bad));
            assert_eq!(Framing::of(&h).length, Err(()), "{bad:?}");
            h.remove(header::CONTENT_LENGTH);
            h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        }
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"A ; ext=1").unwrap(), 10);
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"00000000000000000010").unwrap(), 16);
        assert_eq!(chunk_size(b"5;name=\"caf\xc3\xa9\"").unwrap(), 5);
        for bad in [
            &b""[..],
            b"x",
            b"1 2",
            b"-1",
            b"1\x00",
            b"1;a\x01",
            b"10000000000000000",
        ] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn content_length_body_split_across_reads_and_reused() {
        let (resp, _) = get(
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nx-b: v\r\n\r\n01234",
                b"56789",
            ],
            Method::GET,
        )
        .await;
        let mut resp = resp.unwrap();
        assert_eq!(resp.headers()["x-b"], "v");
        assert_eq!(resp.body().size_hint().exact(), Some(10));
        let (data, _) = collect(resp.body_mut()).await.unwrap();
        assert_eq!(data, b"0123456789");
        assert!(resp.into_body().into_reusable().is_some());
    }

    #[tokio::test]
    async fn chunked_body_with_trailers_and_interim_heads() {
        let (resp, interim) = get(
            vec![
                b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhel",
                b"lo\r\n6\r\n world\r\n0\r\nx-sum: 9\r\n\r\n",
            ],
            Method::GET,
        )
        .await;
        assert_eq!(interim, [StatusCode::EARLY_HINTS]);
        let mut resp = resp.unwrap();
        let (data, trailers) = collect(resp.body_mut()).await.unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-sum"], "9");
        assert!(resp.into_body().into_reusable().is_some());
    }

    #[tokio::test]
    async fn close_delimited_and_connection_close_are_not_reused() {
        let (resp, _) = get(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it"], Method::GET).await;
        let mut resp = resp.unwrap();
        // The backend keeps the connection open: the body is not over yet.
        let first = resp.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "all of it");
        assert!(resp.into_body().into_reusable().is_none());

        for close in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx"[..],
            b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 1\r\n\r\nx",
        ] {
            let (resp, _) = get(vec![close.to_vec().leak()], Method::GET).await;
            let mut resp = resp.unwrap();
            collect(resp.body_mut()).await.unwrap();
            assert!(resp.into_body().into_reusable().is_none(), "{close:?}");
        }
        let (resp, _) = get(
            vec![b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\nx"],
            Method::GET,
        )
        .await;
        let mut resp = resp.unwrap();
        collect(resp.body_mut()).await.unwrap();
        assert!(resp.into_body().into_reusable().is_some());
    }

    #[tokio::test]
    async fn reads_grow_for_large_bodies_and_shrink_when_idle() {
        let size = 512 * 1024;
        let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").into_bytes();
        answer.extend(std::iter::repeat_n(b'x', size));
        let (resp, _) = get(vec![answer.leak()], Method::GET).await;
        let mut resp = resp.unwrap();
        let (data, _) = collect(resp.body_mut()).await.unwrap();
        assert_eq!(data.len(), size);
        let mut conn = resp.into_body().into_reusable().unwrap();
        assert_eq!(conn.reserve, MAX_READ_RESERVE, "full reads double the room");
        conn.idle();
        assert_eq!(conn.reserve, READ_RESERVE);
        assert!(conn.buf.capacity() <= MAX_IDLE_BUFFER);
    }

    #[tokio::test]
    async fn head_and_no_content_have_no_body() {
        let (resp, _) = get(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n"],
            Method::HEAD,
        )
        .await;
        let resp = resp.unwrap();
        assert!(resp.body().is_end_stream());
        assert!(resp.into_body().into_reusable().is_some());
        let (resp, _) = get(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], Method::GET).await;
        assert!(resp.unwrap().body().is_end_stream());
    }

    #[tokio::test]
    async fn bad_responses_are_errors() {
        let cases: [&'static [u8]; 6] = [
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ];
        for case in cases {
            let (resp, _) = get(vec![case], Method::GET).await;
            let failed = resp.expect_err(&String::from_utf8_lossy(case));
            assert!(!failed.nothing_received);
        }
        for body in [&b"zz\r\n"[..], b"5\r\nhello\r\nX\r\n", b"5\r\nhelloXX"] {
            let (addr, _task) = backend(vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                body.to_vec().leak(),
            ])
            .await;
            let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
            let mut resp = exchange(
                conn,
                b"GET / HTTP/1.1\r\n\r\n",
                &Method::GET,
                soon(),
                &mut |_, _| {},
            )
            .await
            .unwrap();
            let got =
                tokio::time::timeout(std::time::Duration::from_secs(5), collect(resp.body_mut()))
                    .await
                    .expect("a bad chunk is an error, not a wait");
            assert!(got.is_err(), "{body:?}");
        }
    }

    #[tokio::test]
    async fn early_close_is_reported_as_nothing_received() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let failed = exchange(
            conn,
            b"GET / HTTP/1.1\r\n\r\n",
            &Method::GET,
            soon(),
            &mut |_, _| {},
        )
        .await
        .unwrap_err();
        assert!(failed.nothing_received);
    }

    #[tokio::test]
    async fn idle_connection_closed_by_the_backend_is_not_usable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let _ = rx.await;
            drop(s);
        });
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        assert!(conn.is_usable());
        tx.send(()).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while conn.is_usable() {
            assert!(tokio::time::Instant::now() < deadline, "close never seen");
            tokio::task::yield_now().await;
        }
    }
}
