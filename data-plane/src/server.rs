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
//! requests, so slowloris and idle connections are closed: by the inline
//! server itself, and on hyper's connections by a watchdog per connection
//! ([`hyper_conn`]). Both wait on the data plane's one timer type
//! (`crate::lazy_timer`).
//!
//! Draining has one mechanism ([`stop`]): every connection registers with
//! the listener's `Stop` once, and keeps that registration when the inline
//! server hands it to hyper's; on shutdown each finishes the request in
//! flight and closes, and open tunnels get what is left of the drain time.

pub(crate) mod hyper_conn;
mod inline;
pub(crate) mod respond;
mod rewind;
pub(crate) mod stop;

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::proxy::interim::Interim;
use crate::proxy::{ConnInfo, Proxy};
use hyper_conn::{Http, serve_conn};

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

impl ServerConfig {
    /// The longest request head either HTTP/1 server reads: at least 8 KiB.
    fn head_limit(&self) -> usize {
        self.max_header_bytes.max(8192)
    }
}

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
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        CIPHER_PREFERENCE
            .iter()
            .position(|c| *c == suite.suite())
            .unwrap_or(usize::MAX)
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server's order of cipher suites (it chooses, not the client):
/// AES-128-GCM first, as Go's and BoringSSL's servers do. Its SHA-256 runs
/// on the CPU's SHA extensions, where the SHA-384 of AES-256-GCM (which
/// OpenSSL clients list first) has none: it was 12% of a full TLS 1.3
/// handshake's CPU here. ChaCha20 before AES-256, for clients that leave
/// out AES-128. Suites not named come last.
const CIPHER_PREFERENCE: [rustls::CipherSuite; 9] = {
    use rustls::CipherSuite as C;
    [
        C::TLS13_AES_128_GCM_SHA256,
        C::TLS13_CHACHA20_POLY1305_SHA256,
        C::TLS13_AES_256_GCM_SHA384,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ]
};

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
    let builders = Arc::new(hyper_conn::builders(&config));
    let permits = Arc::new(Semaphore::new(config.max_connections));
    // Every connection watches `stop` to finish gracefully, whichever
    // server drives it; `connections` tells when they all have.
    let stop = stop::Stop::new();
    let limits = inline::Limits {
        max_head: config.head_limit(),
        idle: config.header_read_timeout,
        send: proxy.settings().send_timeout,
    };
    let tls = config.tls.map(TlsAcceptor::from);
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
        let (proxy, builders, watch, tls) = (
            proxy.clone(),
            Arc::clone(&builders),
            stop.watch(),
            tls.clone(),
        );
        // The TLS handshake, like a request head, gets `header_read_timeout`.
        let idle = config.header_read_timeout;
        // One task per connection, sized for its own kind: a plain
        // connection's task does not carry room for TLS state.
        match tls {
            None => {
                let inline = config.inline;
                connections.spawn(async move {
                    let _permit = permit;
                    let _open = proxy.connection();
                    let info = ConnInfo::new(peer, false, Interim::new());
                    let (io, http) = match inline {
                        true => match inline::serve(stream, &proxy, &info, limits, &watch).await {
                            inline::Served::Closed => return,
                            inline::Served::HandOff { io, http1: true } => {
                                (io, Http::Http1(&builders.http1))
                            }
                            inline::Served::HandOff { io, http1: false } => {
                                (io, Http::Auto(&builders.auto))
                            }
                        },
                        false => (
                            rewind::Rewind::new(Bytes::new(), stream),
                            Http::Auto(&builders.auto),
                        ),
                    };
                    if let Err(e) = serve_conn(http, watch, io, proxy, info, idle).await {
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
                        let http = builders.for_alpn(tls_stream.get_ref().1.alpn_protocol());
                        // Boxed: the TLS session is large.
                        Box::pin(serve_conn(http, watch, tls_stream, proxy, info, idle)).await
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
    stop.stop();
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
