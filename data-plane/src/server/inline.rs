//! The inline HTTP/1.1 server: plain-TCP client connections served in
//! their own task without hyper's server, for the requests that make up
//! most of a gateway's traffic — HTTP/1.1, no body, to backends the inline
//! client serves.
//!
//! hyper's server builds a header map for every request and every
//! response, runs its connection state machine and dispatcher around the
//! handler, and boxes the handler's future; that is about half of the
//! proxy's user-space instructions per request (compare
//! `bench/callgrind.sh` with `BENCH_GATEWAY_ARGS=--no-inline-server`
//! and without; figures in BENCHMARKS.md). Here a connection
//! reads a head into its buffer, parses it in place (`httparse`, as hyper
//! does), lowercases the names where they lie, and hands it to
//! [`Proxy::begin_inline`], which checks, routes and writes the upstream
//! head from it with the same code as for hyper's requests. The backend's
//! head is written back from its bytes ([`respond::ClientHead`]), with the
//! body's first bytes in the same system call.
//!
//! Anything else — a body, `Expect`, an upgrade, trailers, HTTP/1.0, a
//! target that is not origin-form, a head hyper would refuse, a backend
//! that needs hyper's client, an HTTP/2 preface — and the connection, with
//! what was read of it, goes to hyper's server for the rest of its life
//! ([`Served::HandOff`]): hyper parses the head again and answers it as it
//! answers every request. Behaviour is hyper's throughout: the client's
//! close cancels the request in flight, `Connection: close` is honoured, a
//! head must arrive within the header-read timeout, which also bounds the
//! idle time between requests, and a draining listener lets the request in
//! flight finish, then closes.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method, Response};
use http_body::{Body, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::ReadHalf;
use tokio::time::Instant;

use super::respond::{self, ClientHead, Framing};
use super::rewind::Rewind;
use super::stop::StopWatch;
use crate::http1::fields::Span;
use crate::http1::headers::X_REQUEST_ID;
use crate::http1::request_head::{self, FEW_FIELDS, MAX_FIELDS, Parsed};
use crate::lazy_timer::LazyTimer;
use crate::proxy::inline::{Answer, Begun};
use crate::proxy::{ConnInfo, Proxy, ProxyBody};
use crate::recover;
use crate::stall::WriteStall;

/// Read room asked for before a read.
const READ_RESERVE: usize = 4096;

/// How a connection ended here.
#[derive(Debug)]
pub enum Served {
    /// Closed: by either side, for idling, or for the drain.
    Closed,
    /// To be served by hyper's server from here on, starting with what
    /// was read and not served; `http1`: only as HTTP/1 (a request was
    /// served here already).
    HandOff { io: Rewind<TcpStream>, http1: bool },
}

fn hand_off(buf: BytesMut, socket: TcpStream, http1: bool) -> Served {
    Served::HandOff {
        io: Rewind::new(buf.freeze(), socket),
        http1,
    }
}

/// What the inline server needs of the listener's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head; hyper's server answers a longer one (431).
    pub max_head: usize,
    /// To receive a head, and the longest idle time between requests.
    pub idle: Duration,
    /// The send timeout (see [`crate::stall`]).
    pub send: Duration,
}

/// Serve `socket` until it closes or a request is not for this path.
pub async fn serve(
    mut socket: TcpStream,
    proxy: &Proxy,
    info: &ConnInfo,
    limits: Limits,
    stop: &StopWatch,
) -> Served {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    // The head deadline: one timer for the connection's life, not moved
    // for each head (see `LazyTimer`).
    let mut timer = LazyTimer::new();
    // A client that takes nothing of an answer for the send timeout is let
    // go, and the backend connection with it.
    let mut stall = WriteStall::new(limits.send);
    // Once a request is served here, the connection is HTTP/1 for good: a
    // later hand-off goes to hyper's HTTP/1 server (an HTTP/2 preface then
    // is an error, as it would be on a connection hyper took as HTTP/1).
    let mut served = false;
    loop {
        let mut deadline = None;
        let (begun, head_request) = loop {
            match take_head(&mut buf, proxy, info) {
                Taken::Begun(begun, head_request) => break (begun, head_request),
                Taken::HandOff => return hand_off(buf, socket, served),
                Taken::Partial if buf.len() >= limits.max_head => {
                    return hand_off(buf, socket, served);
                }
                Taken::Partial => {}
            }
            // The deadline runs from when the wait for this head began.
            let deadline = *deadline.get_or_insert_with(|| {
                let deadline = Instant::now() + limits.idle;
                timer.arm(deadline);
                deadline
            });
            let (mut rd, _) = socket.split();
            if !read_more(&mut rd, &mut buf, &mut timer, deadline, stop).await {
                return Served::Closed;
            }
        };
        let (mut rd, wr) = socket.split();
        // Whether the connection ends after this answer is decided as its
        // head is written (the client asked, or the listener is draining),
        // and the head then says so.
        let ((framing, close), mut body, request_id) = match begun {
            Begun::Answered { resp, close } => {
                let request_id = resp.headers().get(&X_REQUEST_ID).cloned();
                let (head, body) = gateway(&mut out, resp, head_request, close, stop);
                (head, body, request_id)
            }
            Begun::HandOff => unreachable!("handed off in take_head"),
            Begun::Ready(mut req) => {
                let request_id = req.request_id().clone();
                let decoration = req.decoration();
                // Kept apart for an answer if sending panics.
                let (method, started, close) = (req.method().clone(), req.started(), req.close());
                let mut sink = ClientHead {
                    out: &mut out,
                    committed: 0,
                    socket: Some(wr.as_ref()),
                    request_id: &request_id,
                    close,
                    stop,
                    decoration: decoration.as_deref(),
                };
                // Pinned where it is made: a `select!` would move the
                // request's (large) future into its own tuple first.
                let answer = {
                    let mut send = std::pin::pin!(req.send(proxy, &mut sink));
                    std::future::poll_fn(|cx| {
                        if let Poll::Ready(answer) = recover::poll(send.as_mut(), cx) {
                            return Poll::Ready(Some(answer));
                        }
                        poll_client_gone(&mut rd, &mut buf, cx).map(|()| None)
                    })
                    .await
                };
                // The client went away: the request is dropped (and with it
                // the backend exchange), as hyper does.
                let Some(answer) = answer else {
                    return Served::Closed;
                };
                let committed = sink.committed;
                let (head, body) = match answer {
                    Ok(Answer::Upstream { head, body }) => (head, body),
                    Ok(Answer::Gateway(resp)) => gateway(&mut out, resp, head_request, close, stop),
                    Err(panic) => {
                        // Whole 1xx heads stay queued ahead of the answer;
                        // whatever else the sink had begun goes.
                        out.truncate(committed);
                        let resp = proxy.panicked(&panic, &request_id, &method, started);
                        gateway(&mut out, resp, head_request, close, stop)
                    }
                };
                (head, body, Some(request_id))
            }
        };
        let client = Client {
            socket: wr.as_ref(),
            rd: &mut rd,
            buf: &mut buf,
            stall: &mut stall,
        };
        let written =
            write_response(client, &mut out, framing, &mut body, request_id.as_ref()).await;
        // Done with: the backend connection goes back to its pool (if the
        // body was read to its end) and the access log is written.
        drop(body);
        served = true;
        if !written || close || stop.is_stopped() {
            let _ = socket.shutdown().await;
            return Served::Closed;
        }
    }
}

/// The gateway's own answer, its head written to `out`: its framing and
/// whether it closes the connection (the client asked, or `stop`).
fn gateway(
    out: &mut Vec<u8>,
    resp: Response<ProxyBody>,
    head_request: bool,
    close: bool,
    stop: &StopWatch,
) -> ((Framing, bool), ProxyBody) {
    let close = close || stop.is_stopped();
    let framing = respond::gateway_head(out, &resp, head_request, close);
    ((framing, close), resp.into_body())
}

/// What [`take_head`] found at the front of the read buffer.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Boxing counts more instructions (see `Begun`).
enum Taken {
    /// No whole head yet.
    Partial,
    /// A head for this path, taken off the buffer; whether it was `HEAD`
    /// (the answer then has no body).
    Begun(Begun, bool),
    /// A head for hyper's server, left in the buffer.
    HandOff,
}

/// Parse a head off the front of `buf` and begin its request.
fn take_head(buf: &mut BytesMut, proxy: &Proxy, info: &ConnInfo) -> Taken {
    if buf.is_empty() {
        return Taken::Partial;
    }
    match take_head_with::<FEW_FIELDS>(buf, proxy, info) {
        Err(httparse::Error::TooManyHeaders) => {
            take_head_with::<MAX_FIELDS>(buf, proxy, info).unwrap_or(Taken::HandOff)
        }
        taken => taken.unwrap_or(Taken::HandOff),
    }
}

/// [`take_head`] with room for `N` fields; a head `httparse` refuses is an
/// error (hyper's server answers it).
fn take_head_with<const N: usize>(
    buf: &mut BytesMut,
    proxy: &Proxy,
    info: &ConnInfo,
) -> Result<Taken, httparse::Error> {
    let mut spans: [Span; N] = [[0; 4]; N];
    let (len, head) = match request_head::parse::<N>(buf, &mut spans)? {
        Parsed::Partial => return Ok(Taken::Partial),
        Parsed::HandOff => return Ok(Taken::HandOff),
        Parsed::Head { len, head } => (len, head),
    };
    let inline = head.inline();
    let begun = match recover::catch(|| proxy.begin_inline(&inline, info)) {
        Ok(begun) => begun,
        Err(panic) => proxy.begin_panicked(&inline, &panic),
    };
    if matches!(begun, Begun::HandOff) {
        return Ok(Taken::HandOff);
    }
    let head_request = head.method == Method::HEAD;
    buf.advance(len);
    Ok(Taken::Begun(begun, head_request))
}

/// Read more of a head into `buf`: false if the connection is to close
/// (the client closed, the socket failed, the deadline passed, or the
/// listener is draining and no head has begun).
async fn read_more(
    rd: &mut ReadHalf<'_>,
    buf: &mut BytesMut,
    timer: &mut LazyTimer,
    deadline: Instant,
    stop: &StopWatch,
) -> bool {
    if buf.capacity() - buf.len() < READ_RESERVE / 4 {
        buf.reserve(READ_RESERVE);
    }
    std::future::poll_fn(|cx| {
        if buf.is_empty() && stop.poll_stopped(cx).is_ready() {
            return Poll::Ready(false);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *rd), cx, buf) {
            Poll::Ready(Ok(n)) => return Poll::Ready(n > 0),
            Poll::Ready(Err(_)) => return Poll::Ready(false),
            Poll::Pending => {}
        }
        // A head that arrives as the time runs out still counts.
        timer.poll_expired(deadline, cx).map(|()| false)
    })
    .await
}

/// Watch the client while its request is in flight, as hyper does: ready
/// once it closed the connection (or the socket failed) with nothing more
/// sent. Once it sent more (a pipelined request, kept in `buf`), it is no
/// longer watched: a client may half-close after its last request and
/// still wait for the answers.
fn poll_client_gone(rd: &mut ReadHalf<'_>, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<()> {
    if !buf.is_empty() {
        return Poll::Pending;
    }
    if buf.capacity() < READ_RESERVE / 4 {
        buf.reserve(READ_RESERVE);
    }
    match tokio_util::io::poll_read_buf(Pin::new(&mut *rd), cx, buf) {
        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(()),
        Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
    }
}

/// The body's next piece if it is there now.
fn poll_now(body: &mut ProxyBody) -> Option<Polled> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => None,
    }
}

/// One poll of a body.
type Polled = Option<Result<Frame<Bytes>, crate::BoxError>>;

/// The client's side of a connection while an answer goes out to it.
struct Client<'a, 'r> {
    socket: &'a TcpStream,
    /// Watched for the client's close.
    rd: &'a mut ReadHalf<'r>,
    /// What the client sent next (a pipelined request), kept.
    buf: &'a mut BytesMut,
    /// The send timeout.
    stall: &'a mut WriteStall,
}

/// What waiting for the body's next piece gave.
enum Next {
    Frame(Polled),
    ClientGone,
}

/// Write the head in `out` and the body, framed as `framing`: the body's
/// first bytes go with the head when they are already there, later pieces
/// as they come (never collected). False if the connection cannot go on:
/// the body failed, or the client went away or stopped reading.
async fn write_response(
    client: Client<'_, '_>,
    out: &mut Vec<u8>,
    framing: Framing,
    body: &mut ProxyBody,
    request_id: Option<&HeaderValue>,
) -> bool {
    let Client {
        socket,
        rd,
        buf,
        stall,
    } = client;
    let mut ended = framing == Framing::Empty;
    // What the body has now, without waiting.
    let mut next = if ended { None } else { poll_now(body) };
    loop {
        let mut data = Bytes::new();
        match next.take() {
            None => {}
            Some(None) => ended = true,
            Some(Some(Err(e))) => {
                if let Some(id) = request_id {
                    recover::report_body_error(&*e, id);
                }
                return false;
            }
            // Trailers are not sent: the client did not ask for them.
            Some(Some(Ok(frame))) => data = frame.into_data().unwrap_or_default(),
        }
        ended |= body.is_end_stream();
        if !ended && !data.is_empty() {
            // A chunked body's end may be here already: then it goes in
            // the same write.
            match poll_now(body) {
                Some(None) => ended = true,
                other => next = other,
            }
        }
        let mut line = [0u8; 18];
        let mut parts = [
            IoSlice::new(out),
            IoSlice::new(&[]),
            IoSlice::new(&[]),
            IoSlice::new(&[]),
        ];
        match framing {
            Framing::Chunked => {
                if !data.is_empty() {
                    parts[1] = IoSlice::new(respond::chunk_line(data.len(), &mut line));
                    parts[2] = IoSlice::new(&data);
                }
                parts[3] = IoSlice::new(match (data.is_empty(), ended) {
                    (true, true) => b"0\r\n\r\n",
                    (false, true) => b"\r\n0\r\n\r\n",
                    (false, false) => b"\r\n",
                    (true, false) => b"",
                });
            }
            Framing::Length => parts[1] = IoSlice::new(&data),
            Framing::Empty => {}
        }
        if respond::write_all(socket, &mut parts, stall).await.is_err() {
            return false;
        }
        out.clear();
        if ended {
            return true;
        }
        if next.is_some() {
            continue;
        }
        let waited = std::future::poll_fn(|cx| {
            if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
                return Poll::Ready(Next::Frame(frame));
            }
            poll_client_gone(rd, buf, cx).map(|()| Next::ClientGone)
        })
        .await;
        match waited {
            Next::Frame(frame) => next = Some(frame),
            Next::ClientGone => return false,
        }
    }
}
