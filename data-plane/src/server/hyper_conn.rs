//! Connections served by hyper's server: TLS ones, those the inline
//! server handed over, and all of them with the inline server off.
//!
//! The header-read and idle timeout is kept by one watchdog per connection
//! ([`Activity`]), not by hyper's own header-read timer: hyper boxes a new
//! timer for every request head and drops it again, an allocation and a
//! timer-wheel insert and removal per request. The watchdog counts
//! requests in flight and notes when the last one finished; its single
//! timer fires at most once per timeout period, and a request costs two
//! counter updates, a reference count and a clock read.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use super::ServerConfig;
use super::stop::StopWatch;
use crate::BoxError;
use crate::clock::now_ns;
use crate::http1::headers::X_REQUEST_ID;
use crate::lazy_timer::LazyTimer;
use crate::proxy::interim::InterimIo;
use crate::proxy::{ConnInfo, Proxy, ProxyBody};
use crate::recover;
use crate::stall::SendTimeoutIo;

/// How hyper serves a connection.
#[derive(Debug, Clone, Copy)]
pub enum Http<'a> {
    /// HTTP/1 or HTTP/2, as the client's first bytes say.
    Auto(&'a auto::Builder<TokioExecutor>),
    /// HTTP/1 only: a connection that carried HTTP/1.1 already, or that
    /// negotiated `http/1.1` by ALPN.
    Http1(&'a http1::Builder),
    /// HTTP/2 only: a TLS connection that negotiated `h2` by ALPN (HTTP/1
    /// bytes on it are a connection error, not a request).
    Http2(&'a http2::Builder<TokioExecutor>),
}

/// hyper's servers as the listener's settings want them.
#[derive(Debug)]
pub struct Builders {
    pub auto: auto::Builder<TokioExecutor>,
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    /// How to serve a TLS connection that negotiated `alpn`: as the
    /// protocol agreed, or as its first bytes say when none was.
    pub fn for_alpn(&self, alpn: Option<&[u8]>) -> Http<'_> {
        match alpn {
            Some(b"h2") => Http::Http2(&self.http2),
            Some(b"http/1.1") => Http::Http1(&self.http1),
            _ => Http::Auto(&self.auto),
        }
    }
}

/// hyper's servers as the listener's settings want them: both kinds, and
/// each alone (alike).
pub fn builders(config: &ServerConfig) -> Builders {
    let max_buf = config.head_limit();
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        // Kept by the connection's watchdog instead (see the module docs).
        .header_read_timeout(None)
        // A head that does not fit the read buffer is answered 431.
        .max_buf_size(max_buf);
    auto.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_bytes as u32);
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(max_buf);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_bytes as u32);
    Builders { auto, http1, http2 }
}

/// Serve one connection; once `stop` says so, finish the request in
/// flight (no new ones on this connection) and close. A connection with no
/// request in flight for `idle` (which covers a head that never completes)
/// is closed: at once, as hyper's own header timeout would, unless it has
/// carried an HTTP/2 request — then gracefully (GOAWAY), so that a request
/// crossing the close is refused cleanly rather than lost. (An upload
/// still streaming after its response ended does not count as in flight.)
pub async fn serve_conn<I>(
    http: Http<'_>,
    stop: StopWatch,
    io: I,
    proxy: Proxy,
    info: ConnInfo,
    idle: Duration,
) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // A client that stops reading fails hyper's writes after the send
    // timeout: the connection, and the backend connection behind its
    // answer, are let go (so are an upgraded tunnel's).
    let send_timeout = proxy.settings().send_timeout;
    let io = SendTimeoutIo::new(io, send_timeout);
    let io = InterimIo::new(io, Arc::clone(&info.interim));
    let activity = Arc::new(Activity::new());
    // hyper keeps one slot per connection, allocated up front and sized for
    // the service's future; the request's own future (over a KiB:
    // `size_of_val` of `proxy.handle(..)`'s future) is boxed
    // per request instead, so an idle keep-alive connection does not hold
    // that much memory.
    let service = service_fn({
        let activity = Arc::clone(&activity);
        move |req: http::Request<hyper::body::Incoming>| {
            let busy = activity.begin(req.version());
            // Called here, not in the future: the head is checked and
            // rewritten before hyper reads from the client again.
            let resp = Box::pin(proxy.clone().handle(req, info.clone()));
            async move {
                let resp = resp.await;
                // For a panic while the body streams (see `recover`).
                let request_id = resp.headers().get(&X_REQUEST_ID).cloned();
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    body,
                    request_id,
                    busy,
                }))
            }
        }
    });
    let io = TokioIo::new(io);
    let watch = Watch {
        stop: &stop,
        activity: &activity,
        idle,
        send_timeout,
    };
    match http {
        Http::Auto(builder) => {
            let conn = builder.serve_connection_with_upgrades(io, service);
            drive(conn, |c| c.graceful_shutdown(), watch).await
        }
        Http::Http1(builder) => {
            let conn = builder.serve_connection(io, service).with_upgrades();
            drive(conn, |c| c.graceful_shutdown(), watch).await
        }
        Http::Http2(builder) => {
            activity.h2.store(true, Ordering::Relaxed);
            let conn = builder.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), watch).await
        }
    }
}

/// Run `conn` until it ends; once `stop` says so, or no request has
/// been in flight for `idle`, see [`serve_conn`].
async fn drive<C, E>(
    conn: C,
    graceful: impl FnOnce(Pin<&mut C>),
    watch: Watch<'_>,
) -> Result<(), BoxError>
where
    C: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    let Watch {
        stop,
        activity,
        idle,
        send_timeout,
    } = watch;
    tokio::pin!(conn);
    let stop = std::future::poll_fn(|cx| stop.poll_stopped(cx));
    tokio::select! {
        // A head that arrives as the time runs out still counts.
        biased;
        r = conn.as_mut() => return r.map_err(Into::into),
        () = stop => {}
        () = activity.idle_for(idle) => {
            if !activity.h2.load(Ordering::Relaxed) {
                tracing::debug!(?idle, "no complete request head in time; closing");
                return Ok(());
            }
        }
        () = activity.stalled_for(send_timeout) => return Ok(()),
    }
    // Stopping, or an idle HTTP/2 connection told GOAWAY: requests in
    // flight finish. One that then goes quiet for `idle` is dropped: a head
    // still coming in when the drain began, or an HTTP/2 client that never
    // answers the PING that GOAWAY waits for.
    graceful(conn.as_mut());
    tokio::select! {
        biased;
        r = conn.as_mut() => r.map_err(Into::into),
        () = activity.idle_for(idle) => Ok(()),
        () = activity.stalled_for(send_timeout) => Ok(()),
    }
}

/// What [`drive`] watches a connection for: the drain, idling, and a
/// client that takes nothing of its answers.
struct Watch<'a> {
    stop: &'a StopWatch,
    activity: &'a Activity,
    idle: Duration,
    send_timeout: Duration,
}

/// What a connection's watchdog knows: requests in flight, and when the
/// last one finished (nanoseconds on [`now_ns`]'s clock).
#[derive(Debug)]
struct Activity {
    in_flight: AtomicU32,
    idle_since: AtomicU64,
    /// A request came over HTTP/2.
    h2: AtomicBool,
    /// Answers that handed hyper a piece of body and have not been asked
    /// for the next: what waits for the client to take it.
    handed: AtomicU32,
    /// How often an answer was asked for its next piece after one it had
    /// handed over: the client taking what it is sent.
    took: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now_ns()),
            h2: AtomicBool::new(false),
            handed: AtomicU32::new(0),
            took: AtomicU64::new(0),
        }
    }

    /// Resolves once answers have waited for the client for the send
    /// timeout and it took none of them: a client that stopped reading
    /// without making a socket write wait (HTTP/2 flow control: it grants
    /// no more window; a write that waits fails by itself, see
    /// `SendTimeoutIo`). Looks twice per timeout; costs the requests two
    /// counter updates per body piece.
    async fn stalled_for(&self, timeout: Duration) {
        let step = timeout / 2;
        let mut seen = self.took.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        let mut timer = LazyTimer::new();
        loop {
            timer.expired(Instant::now() + step).await;
            let now = self.took.load(Ordering::Relaxed);
            if now != seen || self.handed.load(Ordering::Relaxed) == 0 {
                (seen, quiet) = (now, Duration::ZERO);
                continue;
            }
            quiet += step;
            if quiet >= timeout {
                tracing::debug!(
                    ?timeout,
                    "the client took nothing of its answers (send timeout); closing"
                );
                return;
            }
        }
    }

    /// A request head arrived; the connection is busy until the returned
    /// guard (carried by the response body) is dropped.
    fn begin(self: &Arc<Self>, version: Version) -> Busy {
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy {
            activity: Arc::clone(self),
            handed: false,
        }
    }

    /// Resolves once no request has been in flight for `idle`. Its one
    /// timer is re-armed only when it fires, never per request.
    async fn idle_for(&self, idle: Duration) {
        let idle_ns = idle.as_nanos() as u64;
        let mut wake = Instant::now() + idle;
        let mut timer = LazyTimer::new();
        loop {
            timer.expired(wake).await;
            let now = now_ns();
            let due = if self.in_flight.load(Ordering::Acquire) > 0 {
                now + idle_ns
            } else {
                self.idle_since.load(Ordering::Relaxed) + idle_ns
            };
            if due <= now {
                return;
            }
            wake = Instant::now() + Duration::from_nanos(due - now);
        }
    }
}

/// One request in flight on its connection.
#[derive(Debug)]
struct Busy {
    activity: Arc<Activity>,
    /// A piece of its answer is with hyper, not yet followed by a request
    /// for the next (counted in [`Activity::handed`]).
    handed: bool,
}

impl Busy {
    /// Whether a piece of the answer waits to be taken.
    fn set_handed(&mut self, handed: bool) {
        if handed != self.handed {
            self.handed = handed;
            if handed {
                self.activity.handed.fetch_add(1, Ordering::Relaxed);
            } else {
                self.activity.handed.fetch_sub(1, Ordering::Relaxed);
                self.activity.took.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set_handed(false);
        // The time first, released with the count: the watchdog (maybe on
        // another thread, under HTTP/2) reads the count, then the time.
        self.activity.idle_since.store(now_ns(), Ordering::Relaxed);
        self.activity.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// The response body with its request's [`Busy`] mark: hyper drops it once
/// the body is written (or abandoned).
#[derive(Debug)]
pub struct Tracked {
    body: ProxyBody,
    request_id: Option<HeaderValue>,
    busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // Asked for more: what was handed over has been taken.
        this.busy.set_handed(false);
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if frame.is_data() => this.busy.set_handed(true),
            Poll::Ready(Some(Err(e))) => {
                if let Some(id) = &this.request_id {
                    recover::report_body_error(&**e, id);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
