//! Keep-alive HTTP/1.1 connections to one plain `http://` backend.
//!
//! The hot path's alternative to hyper-util's pooled client for the common
//! case (no TLS, no HTTP/2 upstream): each backend's live state holds
//! lock-free queues of idle connections, so a request takes one from its
//! backend directly — no pool key to hash, no shared pool map under a
//! lock, no checkout/connect race — and the response body hands it back
//! when it ends. Profiled, hyper-util's pool machinery was ~14% of the
//! proxy's user-space instructions per request.
//!
//! Two kinds are kept: bare sockets for requests without a body, which the
//! request's own task drives ([`super::h1`]), and `hyper::client::conn::http1`
//! senders for requests with a body (hyper streams it while it reads the
//! answer) and upgrades.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::h1::{self, Conn, H1Error, HeadSink, ResponseBody};
use super::request_body::RequestBody;

/// Idle connections kept per backend; more are closed when returned.
const MAX_IDLE: usize = 256;
/// An idle connection unused for this long is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an exchange may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To connect, when a new connection is needed.
    pub connect_timeout: Duration,
    /// When the response head must have arrived (connecting included).
    pub deadline: tokio::time::Instant,
    /// When the exchange starts (one clock read serves the caller and the
    /// pool's idle check).
    pub now: Instant,
}

/// Why a request through the pool failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be made: nothing was sent.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    /// The request failed on a connection (it may have been sent).
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The same, on a connection driven inline.
    #[error(transparent)]
    H1(#[from] H1Error),
}

/// The idle connections of one backend, in two lock-free queues (the hot
/// path takes no lock; nothing is allocated until the first connection).
#[derive(Debug, Default)]
pub struct ConnPool {
    /// hyper senders, for requests with a body and upgrades.
    senders: IdleQueue<SendRequest<RequestBody>>,
    /// Bare connections, for requests without a body.
    bare: IdleQueue<Conn>,
}

/// A connection lent to one request; [`Lent::give_back`] returns it once
/// the response is complete.
#[derive(Debug)]
pub struct Lent {
    sender: SendRequest<RequestBody>,
}

/// Idle connections, oldest first, with when each went idle; at most
/// [`MAX_IDLE`].
#[derive(Debug)]
struct IdleQueue<T> {
    queue: SegQueue<(T, Instant)>,
    /// Roughly how many are queued (bounds the queue).
    count: AtomicUsize,
}

impl<T> Default for IdleQueue<T> {
    fn default() -> Self {
        IdleQueue {
            queue: SegQueue::new(),
            count: AtomicUsize::new(0),
        }
    }
}

impl<T> IdleQueue<T> {
    fn pop(&self) -> Option<(T, Instant)> {
        let popped = self.queue.pop()?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Some(popped)
    }

    /// Queue `conn`, idle since `since`, unless the queue is full.
    fn push(&self, conn: T, since: Instant) {
        if self.count.fetch_add(1, Ordering::Relaxed) >= MAX_IDLE {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.queue.push((conn, since));
    }

    /// The oldest connection idle for less than [`IDLE_TIMEOUT`] at `now`
    /// that `usable` accepts; those before it are closed.
    fn take(&self, now: Instant, usable: impl Fn(&T) -> bool) -> Option<T> {
        while let Some((conn, since)) = self.pop() {
            if now.saturating_duration_since(since) < IDLE_TIMEOUT && usable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Look at each queued connection once: close the ones too long idle
    /// or not `usable`, queue the rest again in their order.
    fn sweep(&self, usable: impl Fn(&T) -> bool) {
        for _ in 0..self.count.load(Ordering::Relaxed).min(MAX_IDLE) {
            let Some((conn, since)) = self.pop() else {
                break;
            };
            if since.elapsed() < IDLE_TIMEOUT && usable(&conn) {
                self.push(conn, since);
            }
        }
    }
}

fn sender_open(sender: &SendRequest<RequestBody>) -> bool {
    !sender.is_closed()
}

impl ConnPool {
    /// Send `req` (origin-form target, `Host` set) to the backend at
    /// `authority` on an idle connection, or a new one.
    pub async fn send(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lent), PoolError> {
        while let Some(mut sender) = self.senders.take(Instant::now(), sender_open) {
            // Only a connection ready now is used: one still busy with its
            // last exchange (a request body the backend did not read) or
            // closing is dropped rather than waited for.
            let ready = poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await;
            if !matches!(ready, Poll::Ready(Ok(()))) {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lent { sender })),
                Err(mut e) => match e.take_message() {
                    // Not sent (the connection was closing): next one.
                    Some(back) => req = back,
                    None => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
        let mut sender = connect(authority, connect_timeout).await?;
        let resp = sender.send_request(req).await?;
        Ok((resp, Lent { sender }))
    }

    /// Send a request without body, serialised in `head`, to the backend at
    /// `authority` on an idle bare connection, or a new one, and read the
    /// response head within `limits`; the response body gives the
    /// connection back ([`ConnPool::give_back_bare`]). A reused connection
    /// that answers nothing at all (the backend closed it while idle) is
    /// replaced by a new one when `replayable`.
    pub async fn exchange<S: HeadSink>(
        &self,
        authority: &Authority,
        limits: Limits,
        head: h1::HeadBytes<'_>,
        method: &http::Method,
        replayable: bool,
        sink: &mut S,
    ) -> Result<(S::Final, ResponseBody), PoolError> {
        let Limits {
            connect_timeout,
            deadline,
            now,
        } = limits;
        if let Some(conn) = self.bare.take(now, Conn::is_usable) {
            match h1::exchange(conn, head, method, deadline, sink).await {
                Ok(resp) => return Ok(resp),
                Err(failed) if failed.closed_while_idle() && replayable => {
                    tracing::debug!(error = %failed.error, "idle backend connection was closed; using a new one");
                }
                Err(failed) => return Err(failed.error.into()),
            }
        }
        // Boxed: connecting is the rare case, and its room in this future
        // would be moved with it on every request.
        Box::pin(exchange_new(
            authority,
            connect_timeout,
            deadline,
            head,
            method,
            sink,
        ))
        .await
    }

    /// Return a bare connection whose response was read to its end.
    pub fn give_back_bare(&self, mut conn: Conn) {
        conn.idle();
        self.bare.push(conn, Instant::now());
    }

    /// Close the idle connections that can no longer be used: closed by the
    /// backend (a bare socket would otherwise sit in CLOSE_WAIT until a
    /// request found it) or idle for [`IDLE_TIMEOUT`]. Each idle
    /// connection is looked at once; the rest keep their order.
    pub fn sweep(&self) {
        self.bare.sweep(Conn::is_usable);
        self.senders.sweep(sender_open);
    }

    /// Idle connections held now (bare, hyper).
    pub fn idle_counts(&self) -> (usize, usize) {
        (self.bare.queue.len(), self.senders.queue.len())
    }
}

impl Lent {
    /// Return the connection to `pool` (the response was read to its end).
    pub fn give_back(self, pool: &ConnPool) {
        if sender_open(&self.sender) {
            pool.senders.push(self.sender, Instant::now());
        }
    }
}

/// [`ConnPool::exchange`] on a new connection.
async fn exchange_new<S: HeadSink>(
    authority: &Authority,
    connect_timeout: Duration,
    deadline: tokio::time::Instant,
    head: h1::HeadBytes<'_>,
    method: &http::Method,
    sink: &mut S,
) -> Result<(S::Final, ResponseBody), PoolError> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let stream = match connect_tcp(authority, connect_timeout.min(left)).await {
        Err(PoolError::ConnectTimeout) if left < connect_timeout => {
            return Err(H1Error::TimedOut.into());
        }
        connected => connected?,
    };
    h1::exchange(Conn::new(stream), head, method, deadline, sink)
        .await
        .map_err(|failed| failed.error.into())
}

async fn connect(
    authority: &Authority,
    timeout: Duration,
) -> Result<SendRequest<RequestBody>, PoolError> {
    let stream = connect_tcp(authority, timeout).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

async fn connect_tcp(authority: &Authority, timeout: Duration) -> Result<TcpStream, PoolError> {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(PoolError::Connect(e)),
        Err(_) => return Err(PoolError::ConnectTimeout),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A reused connection that stays silent until the deadline is a slow
    /// backend, not one that closed while idle: the exchange times out,
    /// and the request is not sent again on a new connection.
    #[tokio::test]
    async fn a_timed_out_request_is_not_sent_again() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let limits = |ms| Limits {
            connect_timeout: Duration::from_secs(5),
            deadline: tokio::time::Instant::now() + Duration::from_millis(ms),
            now: Instant::now(),
        };
        let pool = ConnPool::default();
        let get = b"GET / HTTP/1.1\r\nhost: b\r\n\r\n";
        let method = http::Method::GET;
        let mut buf = [0u8; 1024];
        // The first request is answered at once.
        let serve = async {
            let (mut s, _) = listener.accept().await.unwrap();
            let n = s.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], get);
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            s
        };
        let mut ignore = |_, _: &http::HeaderMap| {};
        let mut ignore = h1::head::ToResponse {
            interim: &mut ignore,
        };
        let (mut backend, resp) = tokio::join!(
            serve,
            pool.exchange(
                &authority,
                limits(5000),
                [get, &[], &[]],
                &method,
                true,
                &mut ignore
            )
        );
        let conn = resp.unwrap().1.into_reusable().unwrap();
        pool.give_back_bare(conn);
        // The second, on the same connection, never is.
        let failed = pool
            .exchange(
                &authority,
                limits(200),
                [get, &[], &[]],
                &method,
                true,
                &mut ignore,
            )
            .await;
        assert!(
            matches!(failed, Err(PoolError::H1(H1Error::TimedOut))),
            "{failed:?}"
        );
        let n = backend.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], get, "sent once on the reused connection");
        let again = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(again.is_err(), "sent again on a new connection");
    }

    #[tokio::test]
    async fn sweep_closes_idle_connections_the_backend_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (a, _) = listener.accept().await.unwrap();
            let (b, _) = listener.accept().await.unwrap();
            let _ = closed.await;
            drop(a);
            // `b` stays open.
            std::future::pending::<()>().await;
            drop(b);
        });
        let pool = ConnPool::default();
        for _ in 0..2 {
            pool.give_back_bare(Conn::new(TcpStream::connect(addr).await.unwrap()));
        }
        pool.sweep();
        assert_eq!(pool.idle_counts(), (2, 0), "both open: both kept");
        close.send(()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while pool.idle_counts().0 != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "closed connection never swept"
            );
            tokio::task::yield_now().await;
            pool.sweep();
        }
        assert_eq!(pool.bare.count.load(Ordering::Relaxed), 1);
    }
}
