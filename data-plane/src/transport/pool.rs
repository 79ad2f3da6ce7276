//! Keep-alive HTTP/1.1 connections to one plain `http://` backend.
//!
//! The hot path's alternative to hyper-util's pooled client for the common
//! case (no TLS, no HTTP/2 upstream): each backend's live state holds
//! lock-free stores of idle connections (the most recently returned
//! reused first, see `IdleQueue`), so a request takes one from its
//! backend directly — no pool key to hash, no shared pool map under a
//! lock, no checkout/connect race — and the response body hands it back
//! when it ends. hyper-util's pool machinery was ~14% of the proxy's
//! user-space instructions per request when the hot path used it
//! (`bench/callgrind.sh`, whose output lists the top functions).
//!
//! Two kinds are kept: bare sockets for requests without a body, which the
//! request's own task drives ([`super::h1`]), and `hyper::client::conn::http1`
//! senders for requests with a body (hyper streams it while it reads the
//! answer) and upgrades.
//!
//! At most [`MAX_CONNECTING`] connection attempts to a backend are under
//! way at once; a request past that waits for a connection to come back
//! to the pool or for an attempt to end, within its connect timeout. A
//! burst of requests (10,000 HTTP/2 streams at once) would otherwise open
//! as many connections at once, overflow the backend's accept queue, and
//! wait out SYN retransmits (1 s, then 3 s) past the connect timeout: 504s
//! from a backend that answers in microseconds.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use crossbeam_utils::atomic::AtomicCell;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::task::AbortHandle;

use super::h1::{self, Conn, ResponseBody};
use super::request_body::RequestBody;
use crate::http1::{H1Error, HeadSink};

/// Idle connections kept per backend; more are closed when returned.
const MAX_IDLE: usize = 256;
/// Connection attempts to one backend under way at once (see the module
/// docs): below the accept queue of common servers (511 nginx, 1024
/// tokio, 4096 Linux's cap).
pub const MAX_CONNECTING: usize = 64;
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

/// The idle connections of one backend, in two lock-free stores (the hot
/// path takes no lock; nothing is allocated until the first connection).
#[derive(Debug)]
pub struct ConnPool {
    /// hyper senders, for requests with a body and upgrades.
    senders: IdleQueue<Sender>,
    /// Bare connections, for requests without a body.
    bare: IdleQueue<Conn>,
    /// Leave to start a connection attempt (see [`MAX_CONNECTING`]).
    connecting: Semaphore,
}

impl Default for ConnPool {
    fn default() -> Self {
        ConnPool {
            senders: IdleQueue::default(),
            bare: IdleQueue::default(),
            connecting: Semaphore::new(MAX_CONNECTING),
        }
    }
}

/// What a request waiting for a connection got.
enum Slot<'a, T> {
    /// One that came back to the pool.
    Idle(T),
    /// Leave to open a new one (given back when the attempt ends).
    New(SemaphorePermit<'a>),
}

/// A connection lent to one request; [`Lent::give_back`] returns it once
/// the response is complete.
#[derive(Debug)]
pub struct Lent {
    sender: Sender,
}

/// A hyper sender and its connection's task.
#[derive(Debug)]
struct Sender {
    send: SendRequest<RequestBody>,
    /// Aborted when an exchange on it is given up before its answer (see
    /// [`Abandon`]).
    conn: AbortHandle,
}

/// Aborts a connection's task unless the exchange on it got its answer: a
/// request given up while its body was still on its way (its deadline
/// passed, its client went) would leave the task holding the body, the
/// backend connection and, through the body, the client's connection, for
/// as long as the backend keeps it open.
struct Abandon(Option<AbortHandle>);

impl Abandon {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.abort();
        }
    }
}

/// Idle connections kept in hot slots, newest first, before the queue:
/// the ones a steady rate keeps using (a proxy at ~28k requests/s here
/// has 5–10 exchanges with a backend under way, more in bursts); the rest
/// wait in the queue until a burst needs them or they time out. Four
/// slots measured no better than the queue alone (BENCHMARKS.md); each
/// slot is 8 bytes per backend and kind.
const HOT: usize = 16;

// A hot slot holds one pointer: swapped by one atomic instruction, never
// behind crossbeam's fallback lock.
const _: () = assert!(AtomicCell::<Option<Box<Idle<Conn>>>>::is_lock_free());
const _: () = assert!(AtomicCell::<Option<Box<Idle<Sender>>>>::is_lock_free());

/// An idle connection and when it went idle; boxed once when it is
/// returned, so moving it between the hot slots and the queue moves one
/// pointer.
#[derive(Debug)]
struct Idle<T> {
    conn: T,
    since: Instant,
}

impl<T> Idle<T> {
    /// Whether it may still be used at `now`: idle for less than
    /// [`IDLE_TIMEOUT`], and `usable`.
    fn usable_at(&self, now: Instant, usable: impl Fn(&T) -> bool) -> bool {
        now.saturating_duration_since(self.since) < IDLE_TIMEOUT && usable(&self.conn)
    }
}

/// The idle connections of one kind, at most [`MAX_IDLE`]: the newest in
/// [`HOT`] slots, taken last in, first out; the older in a queue, taken
/// oldest first when the slots are empty (a burst).
///
/// Last in, first out because a request then gets the connection used
/// most recently, whose socket buffers, kernel state and backend worker
/// are still warm in the caches, and the connections it does not need sit
/// idle and are closed when they time out; nginx's `keepalive` cache works
/// the same way. A queue alone hands out every connection in turn, each
/// one cold, and keeps all of them open however few are needed; and it
/// hands out the connection idle longest, the likeliest to be closed by
/// the backend's own idle timeout. Measured in the interleaved
/// steady-rate bench (BENCHMARKS.md, "Idle upstream connections reused
/// last in, first out").
///
/// Each slot is an `AtomicCell` of one pointer, which crossbeam swaps
/// atomically (lock-free: its fallback lock is never used for a
/// pointer-sized value, asserted at compile time above); a lock-free stack
/// of owned values would need `unsafe`, which this crate forbids. An
/// `AtomicCell` of a non-`Copy` value cannot be read without taking it,
/// so looking at an empty slot costs a swap: a take passes the empty
/// slots before the first full one, and a return moves the slots' contents
/// down to the first empty one. At a steady rate the first slots are the
/// full ones; a burst past [`HOT`] connections pays up to [`HOT`] swaps
/// a request (saturated, paired against the queue alone: no difference
/// measured, BENCHMARKS.md).
struct IdleQueue<T> {
    hot: [AtomicCell<Option<Box<Idle<T>>>>; HOT],
    queue: SegQueue<Box<Idle<T>>>,
    /// Roughly how many are held, in the slots and the queue (bounds them).
    count: AtomicUsize,
    /// Requests waiting for a connection of this kind ([`ConnPool::slot`]).
    waiting: AtomicUsize,
    /// Wakes one of them when a connection comes back.
    returned: Notify,
}

impl<T> std::fmt::Debug for IdleQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleQueue")
            .field("held", &self.len())
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T> Default for IdleQueue<T> {
    fn default() -> Self {
        IdleQueue {
            hot: Default::default(),
            queue: SegQueue::new(),
            count: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            returned: Notify::new(),
        }
    }
}

impl<T> IdleQueue<T> {
    /// The newest hot connection, else the oldest queued one. (An empty
    /// store is not searched: a saturated proxy often finds it so.)
    fn pop(&self) -> Option<Box<Idle<T>>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let popped = self
            .hot
            .iter()
            .find_map(AtomicCell::take)
            .or_else(|| self.queue.pop())?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Some(popped)
    }

    /// Put `idle` in the first hot slot; what the slots held moves one slot
    /// down, up to the first empty one, and the last slot's to the queue.
    fn put(&self, idle: Box<Idle<T>>) {
        let mut moving = Some(idle);
        for slot in &self.hot {
            moving = slot.swap(moving);
            if moving.is_none() {
                return;
            }
        }
        if let Some(oldest) = moving {
            self.queue.push(oldest);
        }
    }

    /// Keep `conn`, idle since `since`; with [`MAX_IDLE`] held, the one
    /// idle longest (the queue's first) is closed to make room, or, with
    /// none queued, `conn` is. Wake a request waiting for one. (Without a
    /// fence between the two, a waiter may miss the wake-up: it then takes
    /// the next connection attempt's leave instead, as attempts are under
    /// way while it waits.)
    fn push(&self, conn: T, since: Instant) {
        if self.count.fetch_add(1, Ordering::Relaxed) >= MAX_IDLE {
            self.count.fetch_sub(1, Ordering::Relaxed);
            if self.queue.pop().is_none() {
                return;
            }
        }
        self.put(Box::new(Idle { conn, since }));
        self.wake();
    }

    /// Wake a request waiting for a connection, if any.
    fn wake(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.returned.notify_one();
        }
    }

    /// The newest hot connection (else the oldest queued) idle for less
    /// than [`IDLE_TIMEOUT`] at `now` that `usable` accepts; those looked
    /// at before it are closed.
    fn take(&self, now: Instant, usable: impl Fn(&T) -> bool) -> Option<T> {
        while let Some(idle) = self.pop() {
            if idle.usable_at(now, &usable) {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Close the held connections too long idle at `now` or not `usable`.
    /// Each slot is looked at in place (out of service only while it is
    /// looked at), then each connection queued when the sweep began; the
    /// rest keep their places, but for connections returned meanwhile.
    fn sweep(&self, now: Instant, usable: impl Fn(&T) -> bool) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let keep = |idle: &Idle<T>| {
            let kept = idle.usable_at(now, &usable);
            if !kept {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            kept
        };
        let mut kept = false;
        for slot in &self.hot {
            let Some(idle) = slot.take() else {
                continue;
            };
            if keep(&idle) {
                kept = true;
                // Returned to this slot meanwhile: that one goes in front.
                if let Some(returned) = slot.swap(Some(idle)) {
                    self.put(returned);
                }
            }
        }
        for _ in 0..self.queue.len().min(MAX_IDLE) {
            let Some(idle) = self.queue.pop() else {
                break;
            };
            if keep(&idle) {
                kept = true;
                self.queue.push(idle);
            }
        }
        if kept {
            self.wake();
        }
    }

    /// How many are held (exact when none is being taken or returned).
    fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

fn sender_open(sender: &Sender) -> bool {
    !sender.send.is_closed()
}

impl ConnPool {
    /// A connection from `queue` (one that comes back while waiting), or
    /// leave to open a new one, whichever comes first; past `until`, a
    /// connect timeout.
    async fn slot<'a, T>(
        &'a self,
        queue: &IdleQueue<T>,
        usable: impl Fn(&T) -> bool,
        until: tokio::time::Instant,
    ) -> Result<Slot<'a, T>, PoolError> {
        if let Ok(permit) = self.connecting.try_acquire() {
            return Ok(Slot::New(permit));
        }
        queue.waiting.fetch_add(1, Ordering::Relaxed);
        let _waited = Waited(&queue.waiting);
        let out_of_time = tokio::time::sleep_until(until);
        tokio::pin!(out_of_time);
        loop {
            let returned = queue.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = queue.take(Instant::now(), &usable) {
                return Ok(Slot::Idle(conn));
            }
            tokio::select! {
                permit = self.connecting.acquire() => {
                    return Ok(Slot::New(permit.expect("the semaphore is never closed")));
                }
                () = &mut returned => {}
                () = &mut out_of_time => return Err(PoolError::ConnectTimeout),
            }
        }
    }

    /// Send `req` (origin-form target, `Host` set) to the backend at
    /// `authority` on an idle connection, or a new one.
    pub async fn send(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lent), PoolError> {
        let connect_by = tokio::time::Instant::now() + connect_timeout;
        loop {
            let mut sender = match self.senders.take(Instant::now(), sender_open) {
                Some(sender) => sender,
                None => match self.slot(&self.senders, sender_open, connect_by).await? {
                    Slot::Idle(sender) => sender,
                    Slot::New(permit) => {
                        let left =
                            connect_by.saturating_duration_since(tokio::time::Instant::now());
                        let connected = connect(authority, left).await;
                        drop(permit);
                        let mut sender = connected?;
                        let abandon = Abandon(Some(sender.conn.clone()));
                        let resp = sender.send.send_request(req).await?;
                        abandon.answered();
                        return Ok((resp, Lent { sender }));
                    }
                },
            };
            // Only a connection ready now is used: one still busy with its
            // last exchange (a request body the backend did not read) or
            // closing is dropped rather than waited for.
            let ready = poll_fn(|cx| Poll::Ready(sender.send.poll_ready(cx))).await;
            if !matches!(ready, Poll::Ready(Ok(()))) {
                continue;
            }
            let abandon = Abandon(Some(sender.conn.clone()));
            match sender.send.try_send_request(req).await {
                Ok(resp) => {
                    abandon.answered();
                    return Ok((resp, Lent { sender }));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent (the connection was closing): next one.
                    Some(back) => req = back,
                    None => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
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
        let Limits { deadline, now, .. } = limits;
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
        Box::pin(self.exchange_new(authority, limits, head, method, sink)).await
    }

    /// [`ConnPool::exchange`] on a new connection, or one that comes back
    /// while it waits for leave to connect.
    async fn exchange_new<S: HeadSink>(
        &self,
        authority: &Authority,
        limits: Limits,
        head: h1::HeadBytes<'_>,
        method: &http::Method,
        sink: &mut S,
    ) -> Result<(S::Final, ResponseBody), PoolError> {
        let Limits {
            connect_timeout,
            deadline,
            ..
        } = limits;
        let connect_by = (tokio::time::Instant::now() + connect_timeout).min(deadline);
        // Out of time before connected: the response deadline's, if it
        // came first, else the connect timeout's.
        let timed_out = |e| match e {
            PoolError::ConnectTimeout if connect_by == deadline => H1Error::TimedOut.into(),
            e => e,
        };
        let conn = match self.slot(&self.bare, Conn::is_usable, connect_by).await {
            Ok(Slot::Idle(conn)) => conn,
            Ok(Slot::New(permit)) => {
                let left = connect_by.saturating_duration_since(tokio::time::Instant::now());
                let connected = connect_tcp(authority, left).await;
                drop(permit);
                Conn::new(connected.map_err(timed_out)?)
            }
            Err(e) => return Err(timed_out(e)),
        };
        h1::exchange(conn, head, method, deadline, sink)
            .await
            .map_err(|failed| failed.error.into())
    }

    /// Return a bare connection whose response was read to its end.
    pub fn give_back_bare(&self, mut conn: Conn) {
        conn.idle();
        self.bare.push(conn, Instant::now());
    }

    /// Close the idle connections that can no longer be used: closed by the
    /// backend (a bare socket would otherwise sit in CLOSE_WAIT until a
    /// request found it) or idle for [`IDLE_TIMEOUT`]. The rest keep their
    /// places (see [`IdleQueue::sweep`]).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.bare.sweep(now, Conn::is_usable);
        self.senders.sweep(now, sender_open);
    }

    /// Idle connections held now (bare, hyper).
    pub fn idle_counts(&self) -> (usize, usize) {
        (self.bare.len(), self.senders.len())
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

/// Counts a request out of its queue's waiters when dropped.
struct Waited<'a>(&'a AtomicUsize);

impl Drop for Waited<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connect(authority: &Authority, timeout: Duration) -> Result<Sender, PoolError> {
    let stream = connect_tcp(authority, timeout).await?;
    let (send, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Sender {
        send,
        conn: task.abort_handle(),
    })
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
        let mut ignore = crate::http1::head::ToResponse {
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

    /// With every connection attempt's leave taken, a request waits: it
    /// takes a connection given back meanwhile (no new one is opened),
    /// and without one it fails at its connect deadline, not later.
    #[tokio::test]
    async fn past_the_attempts_in_flight_a_request_waits_for_a_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let pool = ConnPool::default();
        let held = pool
            .connecting
            .acquire_many(MAX_CONNECTING as u32)
            .await
            .unwrap();
        let get = b"GET / HTTP/1.1\r\nhost: b\r\n\r\n";
        let limits = |ms| Limits {
            connect_timeout: Duration::from_millis(ms),
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
            now: Instant::now(),
        };
        let mut ignore = |_, _: &http::HeaderMap| {};
        let mut sink = crate::http1::head::ToResponse {
            interim: &mut ignore,
        };
        // Nothing comes back: a connect timeout at the connect deadline.
        let started = Instant::now();
        let waited = pool
            .exchange(
                &authority,
                limits(150),
                [get, &[], &[]],
                &http::Method::GET,
                true,
                &mut sink,
            )
            .await;
        assert!(
            matches!(waited, Err(PoolError::ConnectTimeout)),
            "{waited:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // One comes back while it waits: it is used.
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let backend = async {
            let mut buf = [0u8; 256];
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], get);
            server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        };
        let give_back = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pool.give_back_bare(Conn::new(client));
        };
        let exchange = pool.exchange(
            &authority,
            limits(5000),
            [get, &[], &[]],
            &http::Method::GET,
            true,
            &mut sink,
        );
        let ((), (), answer) = tokio::join!(backend, give_back, exchange);
        assert_eq!(answer.unwrap().0.status(), 200);
        let another = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(another.is_err(), "a new connection was opened");
        drop(held);
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

    /// After a burst opened several connections, requests one at a time
    /// all go over the connection returned last: the others stay idle (and
    /// are closed at the idle timeout) instead of each taking its turn.
    #[tokio::test]
    async fn requests_one_at_a_time_reuse_the_warmest_connection() {
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        // Requests served on each connection, in the order accepted.
        let served = Arc::new(Mutex::new(Vec::<usize>::new()));
        let counts = served.clone();
        let backend = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let index = {
                    let mut served = counts.lock().unwrap();
                    served.push(0);
                    served.len() - 1
                };
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    // Each request arrives whole in one read (one small
                    // head, the next sent only after this answer).
                    while s.read(&mut buf).await.is_ok_and(|n| n > 0) {
                        counts.lock().unwrap()[index] += 1;
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await
                            .unwrap();
                    }
                });
            }
        });
        let pool = ConnPool::default();
        let get = async || {
            let limits = Limits {
                connect_timeout: Duration::from_secs(5),
                deadline: tokio::time::Instant::now() + Duration::from_secs(5),
                now: Instant::now(),
            };
            let mut ignore = |_, _: &http::HeaderMap| {};
            let mut ignore = crate::http1::head::ToResponse {
                interim: &mut ignore,
            };
            let get = b"GET / HTTP/1.1\r\nhost: b\r\n\r\n";
            let (_, body) = pool
                .exchange(
                    &authority,
                    limits,
                    [get, &[], &[]],
                    &http::Method::GET,
                    true,
                    &mut ignore,
                )
                .await
                .unwrap();
            body.into_reusable().unwrap()
        };
        let (a, b, c) = tokio::join!(get(), get(), get());
        for conn in [a, b, c] {
            pool.give_back_bare(conn);
        }
        assert_eq!(served.lock().unwrap().len(), 3, "the burst opened three");
        for _ in 0..10 {
            let conn = get().await;
            pool.give_back_bare(conn);
        }
        let mut served = served.lock().unwrap().clone();
        served.sort_unstable();
        assert_eq!(served, [1, 1, 11], "one connection served the ten");
        backend.abort();
    }

    /// Take connections from `queue` at `at` until none is left.
    fn taken_all(queue: &IdleQueue<u32>, at: Instant) -> Vec<u32> {
        std::iter::from_fn(|| queue.take(at, |_| true)).collect()
    }

    /// The newest connections are taken first (the hot slots), then the
    /// older ones oldest first; a sweep keeps that order; the one idle
    /// longest makes room when the store is full.
    #[test]
    fn idle_connections_are_taken_newest_first() {
        let queue = IdleQueue::default();
        let now = Instant::now();
        // Three more than the hot slots hold: 1, 2 and 3 go to the queue.
        let last = HOT as u32 + 3;
        let newest_first = |keep: fn(&u32) -> bool| {
            let hot = (4..=last).rev().filter(keep);
            hot.chain((1..=3).filter(keep)).collect::<Vec<_>>()
        };
        for n in 1..=last {
            queue.push(n, now);
        }
        assert_eq!(queue.len(), last as usize);
        assert_eq!(taken_all(&queue, now), newest_first(|_| true));
        assert_eq!(queue.len(), 0);

        for n in 1..=last {
            queue.push(n, now);
        }
        let odd = |n: &u32| n % 2 == 1;
        queue.sweep(now, odd);
        assert_eq!(queue.len(), newest_first(odd).len());
        assert_eq!(taken_all(&queue, now), newest_first(odd));

        // Too long idle: closed, not handed out, by a take or a sweep.
        let later = now + IDLE_TIMEOUT;
        for (n, since) in [(1, now), (2, later), (3, now)] {
            queue.push(n, since);
        }
        assert_eq!(taken_all(&queue, later), [2]);
        assert_eq!(queue.len(), 0);
        for (n, since) in [(1, now), (2, later), (3, now)] {
            queue.push(n, since);
        }
        queue.sweep(later, |_| true);
        assert_eq!(queue.len(), 1);
        assert_eq!(taken_all(&queue, later), [2]);

        let full = MAX_IDLE as u32;
        for n in 0..full + 5 {
            queue.push(n, now);
        }
        assert_eq!(queue.len(), MAX_IDLE, "at most MAX_IDLE held");
        let taken = taken_all(&queue, now);
        assert_eq!(taken.len(), MAX_IDLE);
        assert_eq!(taken[0], full + 4, "the newest kept");
        assert_eq!(taken.iter().min(), Some(&5), "the oldest closed");
    }

    /// Threads returning and taking at once, past the hot slots into the
    /// queue, with a sweep running all along, neither lose a connection
    /// nor hand one out twice: each one returned is taken once, or is
    /// still held at the end.
    #[test]
    fn idle_connections_survive_concurrent_use() {
        const THREADS: u32 = 4;
        const BATCHES: u32 = 1_000;
        const BATCH: u32 = 20;
        const FIRST: u32 = 40;
        let queue = IdleQueue::default();
        for n in 0..FIRST {
            queue.push(n, Instant::now());
        }
        let working = std::sync::atomic::AtomicUsize::new(THREADS as usize);
        let mut seen: Vec<u32> = std::thread::scope(|scope| {
            let (queue, working) = (&queue, &working);
            scope.spawn(move || {
                while working.load(Ordering::Relaxed) > 0 {
                    queue.sweep(Instant::now(), |_| true);
                }
            });
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    scope.spawn(move || {
                        let mut taken = Vec::new();
                        let mut next = FIRST + t * BATCHES * BATCH;
                        for _ in 0..BATCHES {
                            for _ in 0..BATCH {
                                queue.push(next, Instant::now());
                                next += 1;
                            }
                            for _ in 0..BATCH {
                                taken.extend(queue.take(Instant::now(), |_| true));
                            }
                        }
                        working.fetch_sub(1, Ordering::Relaxed);
                        taken
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        seen.extend(taken_all(&queue, Instant::now()));
        seen.sort_unstable();
        let returned = FIRST + THREADS * BATCHES * BATCH;
        assert_eq!(seen.len(), returned as usize, "lost or handed out twice");
        assert!(seen.iter().copied().eq(0..returned));
        assert_eq!(queue.len(), 0);
    }
}
