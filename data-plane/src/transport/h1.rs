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
//! `Transfer-Encoding` (chunked, with trailers; any other coding is an
//! error), `Content-Length` (conflicting values are an error), or else
//! until close. A connection goes back to its pool only when its
//! response ended exactly where the next one may start and neither side
//! asked to close.

pub(crate) mod body;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use http::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::lazy_timer::LazyTimer;

use crate::http1::head::{self, Parsed};
use crate::http1::{BodyFraming, H1Error, HeadSink, MAX_HEAD};
pub use body::ResponseBody;

/// Read buffer room asked for before a read: starts small, doubles while
/// reads fill it (large bodies), back to the start once idle.
const READ_RESERVE: usize = 8 * 1024;
const MAX_READ_RESERVE: usize = 64 * 1024;
/// An idle connection's buffer larger than this is freed, not kept.
const MAX_IDLE_BUFFER: usize = 16 * 1024;

/// One keep-alive connection to a backend and what was read ahead on it.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// Room to ask for before the next read.
    reserve: usize,
    /// The response-head deadline of this connection's exchanges: one
    /// timer for all of them, not moved for each (see [`LazyTimer`]). A
    /// timer made and dropped per request would take tokio's timer wheel
    /// twice per request. Between exchanges it may fire unwatched, waking
    /// the task that last waited on it for nothing: at most once per
    /// timeout period.
    timer: LazyTimer,
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            reserve: READ_RESERVE,
            timer: LazyTimer::new(),
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
    /// runtime already knows it is not readable, and `try_read` says
    /// "would block" without reading (nor registering a waker, which takes
    /// a lock). Readable, it reads: the end of the stream or stray bytes
    /// (unusable either way), or nothing (the readiness was stale).
    pub fn is_usable(&self) -> bool {
        self.buf.is_empty()
            && matches!(
                self.io.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            )
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

/// A request head in up to three pieces, written with one system call:
/// the request line, the backend's `Host` line (or nothing) and the rest.
pub type HeadBytes<'a> = [&'a [u8]; 3];

/// Send `head` on `conn` and read the response head, by `deadline`: 1xx
/// heads (except `101`, which is an error: nothing asked to switch) and
/// then the final head go to `sink`. The response's body owns the
/// connection.
pub async fn exchange<S: HeadSink>(
    mut conn: Conn,
    head: HeadBytes<'_>,
    method: &Method,
    deadline: Instant,
    sink: &mut S,
) -> Result<(S::Final, ResponseBody), Failed> {
    let mut timer = std::mem::take(&mut conn.timer);
    timer.arm(deadline);
    let mut received = false;
    // The sink's final head is made in the same poll that completes this
    // branch: a deadline cannot cut in after it.
    let result = {
        let mut exchange = std::pin::pin!(head_of_response(
            &mut conn,
            head,
            method,
            &mut received,
            sink
        ));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            timer
                .poll_expired(deadline, cx)
                .map(|()| Err(H1Error::TimedOut))
        })
        .await
    };
    conn.timer = timer;
    match result {
        Ok((head, body, reusable)) => Ok((head, ResponseBody::new(conn, body, reusable))),
        Err(error) => Err(Failed {
            error,
            nothing_received: !received,
        }),
    }
}

/// The write and read half of [`exchange`]; `received` tells whether any
/// of the response arrived.
async fn head_of_response<S: HeadSink>(
    conn: &mut Conn,
    head: HeadBytes<'_>,
    method: &Method,
    received: &mut bool,
    sink: &mut S,
) -> Result<(S::Final, BodyFraming, bool), H1Error> {
    let mut pieces = head.map(io::IoSlice::new);
    let mut unwritten = &mut pieces[..];
    io::IoSlice::advance_slices(&mut unwritten, 0);
    while !unwritten.is_empty() {
        match conn.io.write_vectored(unwritten).await? {
            0 => return Err(H1Error::Io(io::ErrorKind::WriteZero.into())),
            n => io::IoSlice::advance_slices(&mut unwritten, n),
        }
    }
    loop {
        if !conn.buf.is_empty() {
            *received = true;
            match head::parse(&mut conn.buf, method, sink)? {
                Parsed::Partial if conn.buf.len() >= MAX_HEAD => return Err(H1Error::HeadTooLarge),
                Parsed::Partial => {}
                Parsed::Interim => continue,
                Parsed::Final {
                    head,
                    body,
                    reusable,
                } => return Ok((head, body, reusable)),
            }
        }
        if conn.fill().await? == 0 {
            return Err(H1Error::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::body::find;
    use crate::http1::encode_request;
    use crate::http1::head::ToResponse;
    use http::{HeaderMap, HeaderValue, Response, StatusCode};
    use http_body::Body;

    /// [`exchange`] into hyper's `Response`, 1xx heads handed to `interim`
    /// as status and map.
    async fn exchange_response(
        conn: Conn,
        head: &[u8],
        method: &Method,
        deadline: Instant,
        interim: &mut (dyn FnMut(StatusCode, &HeaderMap) + Send),
    ) -> Result<Response<ResponseBody>, Failed> {
        let mut sink = ToResponse { interim };
        let (resp, body) = exchange(conn, [head, &[], &[]], method, deadline, &mut sink).await?;
        Ok(resp.map(|()| body))
    }
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
            let got = exchange_response(
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
            exchange_response(
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
        encode_request(&mut head, &method, "/x", Some("y=1"), false, |out| {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(b"\r\n");
        });
        let mut seen = Vec::new();
        let resp = exchange_response(conn, &head, &method, soon(), &mut |s, _| seen.push(s)).await;
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
        let fields = |out: &mut Vec<u8>| {
            for (n, v) in &h {
                out.extend_from_slice(format!("{n}: {}\r\n", v.to_str().unwrap()).as_bytes());
            }
        };
        encode_request(&mut out, &Method::POST, "/p", None, false, |out| {
            out.extend_from_slice(b"host: h:1\r\n");
            fields(out);
        });
        assert_eq!(
            out,
            b"POST /p HTTP/1.1\r\nhost: h:1\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"
        );
        out.clear();
        encode_request(&mut out, &Method::GET, "/", None, false, fields);
        assert_eq!(out, b"GET / HTTP/1.1\r\nx-a: 1\r\n\r\n");
        // A length the client gave is not repeated.
        out.clear();
        encode_request(&mut out, &Method::PUT, "/", None, true, |out| {
            out.extend_from_slice(b"content-length: 0\r\n")
        });
        assert_eq!(out, b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
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
            let mut resp = exchange_response(
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
        let failed = exchange_response(
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
