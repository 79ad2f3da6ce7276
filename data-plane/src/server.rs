//! The proxy listener: accepts connections (optionally TLS, with ALPN h2
//! and http/1.1), serves HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or
//! negotiated over TLS) with the [`Proxy`] service, and drains on shutdown.
//!
//! Plain connections start on the inline HTTP/1.1 server ([`inline`]),
//! which serves bodiless HTTP/1.1 requests without hyper's server and hands
//! the connection to hyper's for anything else; TLS connections, and all of
//! them with [`ServerConfig::inline`] off, are hyper's from the start.
//!
//! Limits: at most `max_connections` client connections (further ones
//! wait in the kernel backlog), request heads of at most
//! `max_header_bytes` (431), and `header_read_timeout` to receive a head,
//! which also bounds the idle time of a keep-alive connection between
//! requests, so slowloris and idle connections are closed.
//!
//! That timeout is kept by one watchdog per connection ([`Activity`]), not
//! by hyper's own header-read timer: hyper boxes a new timer for every
//! request head and drops it again, an allocation and a timer-wheel insert
//! and removal per request. The watchdog counts requests in flight and
//! notes when the last one finished; its single timer fires at most once
//! per timeout period, and a request costs two counter updates, a
//! reference count and a clock read.

mod inline;
mod respond;
mod rewind;
mod stop;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::proxy::body::BoxError as BodyError;
use crate::proxy::interim::{Interim, InterimIo};
use crate::proxy::{ConnInfo, Proxy, ProxyBody};
use crate::registry::now_ns;

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection and tunnel finished in time.
    Clean,
    /// The drain period ran out with connections still open.
    TimedOut,
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request head (431 past it; at least 8 KiB).
    pub max_header_bytes: usize,
    /// Time to receive a request head, and the longest idle time of a
    /// keep-alive connection.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Terminate TLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Serve plain connections' bodiless HTTP/1.1 requests with the inline
    /// server (see the module docs); off: hyper's server takes them all.
    pub inline: bool,
}

pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
            inline: true,
        }
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("certificate and key do not make a valid TLS config: {0}")]
    Config(#[from] rustls::Error),
}

/// A server TLS config from PEM files, offering h2 and http/1.1 by ALPN.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `listener` until `shutdown` resolves; then stop accepting, let
/// in-flight requests and open tunnels finish for at most `drain`, and
/// return.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Drained {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Kept by the connection's watchdog instead (see the module docs).
        .header_read_timeout(None)
        // A head that does not fit the read buffer is answered 431.
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_bytes as u32);
    let builder = Arc::new(builder);
    let tls = config.tls.map(TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    // Connection tasks watch `stopping` to finish gracefully; `connections`
    // tells when they all have.
    let (stop, stopping) = watch::channel(false);
    let stop_inline = stop::Stop::new();
    let limits = inline::Limits {
        max_head: config.max_header_bytes.max(8192),
        idle: config.header_read_timeout,
    };
    let connections = TaskTracker::new();
    let sweeper = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.sweep_idle_connections().await }
    });
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept:
                    // back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (proxy, builder, stopping, tls) = (
            proxy.clone(),
            Arc::clone(&builder),
            stopping.clone(),
            tls.clone(),
        );
        // The TLS handshake, like a request head, gets `header_read_timeout`.
        let idle = config.header_read_timeout;
        // One task per connection, sized for its own kind: a plain
        // connection's task does not carry room for TLS state.
        match tls {
            None => {
                let watch = config.inline.then(|| stop_inline.watch());
                connections.spawn(async move {
                    let _permit = permit;
                    let _open = proxy.connection();
                    let info = ConnInfo::new(peer, false, Interim::new());
                    let io = match watch {
                        Some(watch) => {
                            match inline::serve(stream, &proxy, &info, limits, watch).await {
                                inline::Served::Closed => return,
                                inline::Served::HandOff(io) => io,
                            }
                        }
                        None => rewind::Rewind::new(Bytes::new(), stream),
                    };
                    if let Err(e) = serve_conn(&builder, stopping, io, proxy, info, idle).await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                })
            }
            Some(acceptor) => connections.spawn(async move {
                let _permit = permit;
                let _open = proxy.connection();
                let result = match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let info = ConnInfo::new(peer, true, Interim::new());
                        // Boxed: the TLS session is large.
                        Box::pin(serve_conn(
                            &builder, stopping, tls_stream, proxy, info, idle,
                        ))
                        .await
                    }
                    Ok(Err(e)) => Err(Box::new(e) as _),
                    Err(_) => Err(Box::new(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    )) as _),
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
            }),
        };
    }
    drop(listener);
    sweeper.abort();
    let _ = stop.send(true);
    stop_inline.stop();
    connections.close();
    let started = tokio::time::Instant::now();
    let conns_done = tokio::time::timeout(drain, connections.wait())
        .await
        .is_ok();
    let tunnels = proxy.tunnels().clone();
    let left = drain.saturating_sub(started.elapsed());
    let tunnels_done = tunnels.drain(left).await;
    if conns_done && tunnels_done {
        Drained::Clean
    } else {
        Drained::TimedOut
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serve one connection; when `stopping` turns true, finish the request in
/// flight (no new ones on this connection) and close. A connection with no
/// request in flight for `idle` (which covers a head that never completes)
/// is closed: at once, as hyper's own header timeout would, unless it has
/// carried an HTTP/2 request — then gracefully (GOAWAY), so that a request
/// crossing the close is refused cleanly rather than lost. (An upload
/// still streaming after its response ended does not count as in flight.)
async fn serve_conn<I>(
    builder: &auto::Builder<TokioExecutor>,
    mut stopping: watch::Receiver<bool>,
    io: I,
    proxy: Proxy,
    info: ConnInfo,
    idle: Duration,
) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = InterimIo::new(io, Arc::clone(&info.interim));
    let activity = Arc::new(Activity::new());
    // hyper keeps one slot per connection, allocated up front and sized for
    // the service's future; the request's own future (1.3 KiB) is boxed
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
                Ok::<_, Infallible>(resp.map(|body| Tracked { body, _busy: busy }))
            }
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    // Drop the watch guard at once: it must not live across an await.
    let stop = async move {
        let _ = stopping.wait_for(|s| *s).await.map(|_| ());
    };
    tokio::select! {
        // A head that arrives as the time runs out still counts.
        biased;
        r = conn.as_mut() => return r,
        () = stop => {}
        () = activity.idle_for(idle) => {
            if !activity.h2.load(Ordering::Relaxed) {
                tracing::debug!(?idle, "no complete request head in time; closing");
                return Ok(());
            }
        }
    }
    // Stopping, or an idle HTTP/2 connection told GOAWAY: requests in
    // flight finish. One that then goes quiet for `idle` is dropped: a head
    // still coming in when the drain began, or an HTTP/2 client that never
    // answers the PING that GOAWAY waits for.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        biased;
        r = conn.as_mut() => r,
        () = activity.idle_for(idle) => Ok(()),
    }
}

/// What a connection's watchdog knows: requests in flight, and when the
/// last one finished (nanoseconds on [`now_ns`]'s clock).
#[derive(Debug)]
struct Activity {
    in_flight: AtomicU32,
    idle_since: AtomicU64,
    /// A request came over HTTP/2.
    h2: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now_ns()),
            h2: AtomicBool::new(false),
        }
    }

    /// A request head arrived; the connection is busy until the returned
    /// guard (carried by the response body) is dropped.
    fn begin(self: &Arc<Self>, version: Version) -> Busy {
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// Resolves once no request has been in flight for `idle`. Its one
    /// timer is re-armed only when it fires, never per request.
    async fn idle_for(&self, idle: Duration) {
        let idle_ns = idle.as_nanos() as u64;
        let mut wake = tokio::time::Instant::now() + idle;
        loop {
            tokio::time::sleep_until(wake).await;
            let now = now_ns();
            let due = if self.in_flight.load(Ordering::Acquire) > 0 {
                now + idle_ns
            } else {
                self.idle_since.load(Ordering::Relaxed) + idle_ns
            };
            if due <= now {
                return;
            }
            wake = tokio::time::Instant::now() + Duration::from_nanos(due - now);
        }
    }
}

/// One request in flight on its connection.
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The time first, released with the count: the watchdog (maybe on
        // another thread, under HTTP/2) reads the count, then the time.
        self.0.idle_since.store(now_ns(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// The response body with its request's [`Busy`] mark: hyper drops it once
/// the body is written (or abandoned).
#[derive(Debug)]
struct Tracked {
    body: ProxyBody,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
