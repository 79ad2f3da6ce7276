//! Builder-style fake backends: `Backend::named("a").start().await`.
//! Each answers every request with a JSON echo of what it received and
//! counts the requests it saw. `GET /healthz` is counted apart and answers
//! 200 or 503 as set with [`Backend::set_healthy`]. [`Backend::kill`]
//! closes the listener and every open connection at once, like a crash.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone)]
pub struct BackendBuilder {
    name: String,
    delay: Duration,
    status: u16,
}

/// What the serving tasks share with the handle.
struct Shared {
    name: String,
    delay: Duration,
    status: u16,
    hits: AtomicUsize,
    health_hits: AtomicUsize,
    healthy: AtomicBool,
}

/// A running fake backend; stops when dropped or killed.
pub struct Backend {
    pub addr: SocketAddr,
    pub url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Backend {
    pub fn named(name: &str) -> BackendBuilder {
        BackendBuilder {
            name: name.to_string(),
            delay: Duration::ZERO,
            status: 200,
        }
    }

    /// Requests received so far (health probes not included).
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Health probes (`GET /healthz`) received so far.
    pub fn health_hits(&self) -> usize {
        self.shared.health_hits.load(Ordering::SeqCst)
    }

    /// Make `/healthz` answer 200 (true) or 503 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Close the listener and every open connection now.
    pub fn kill(&self) {
        let _ = self.stop.send(true);
    }

    /// Start a fresh backend with the same settings on the same address.
    pub async fn restart(&self) -> Backend {
        self.kill();
        let builder = BackendBuilder {
            name: self.shared.name.clone(),
            delay: self.shared.delay,
            status: self.shared.status,
        };
        // The old listener may take a moment to be released.
        for _ in 0..200 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                return builder.serve(listener);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("cannot bind {} again", self.addr);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A URL on 127.0.0.1 where nothing listens (bound, then released).
pub async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

async fn answer(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/healthz" {
        shared.health_hits.fetch_add(1, Ordering::SeqCst);
        let ok = shared.healthy.load(Ordering::SeqCst);
        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
        *resp.status_mut() = if ok {
            hyper::StatusCode::OK
        } else {
            hyper::StatusCode::SERVICE_UNAVAILABLE
        };
        return resp;
    }
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let echo = serde_json::json!({
        "backend": shared.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Full::new(Bytes::from(echo.to_string())));
    *resp.status_mut() = hyper::StatusCode::from_u16(shared.status).unwrap();
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("server", "fake/1.0".parse().unwrap());
    h.insert("x-powered-by", "tests".parse().unwrap());
    resp
}

impl BackendBuilder {
    /// Wait this long before answering (not for `/healthz`).
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }

    pub async fn start(self) -> Backend {
        self.serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn serve(self, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: self.name,
            delay: self.delay,
            status: self.status,
            hits: AtomicUsize::new(0),
            health_hits: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
        });
        let (stop, stopped) = watch::channel(false);
        let accept_shared = Arc::clone(&shared);
        let mut accept_stop = stopped.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                    _ = accept_stop.wait_for(|s| *s) => return,
                };
                let shared = Arc::clone(&accept_shared);
                let mut conn_stop = stopped.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(answer(shared, req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    // Dropping the connection on kill closes the socket.
                    tokio::select! {
                        _ = conn => {},
                        _ = conn_stop.wait_for(|s| *s) => {},
                    }
                });
            }
        });
        Backend {
            url: format!("http://{addr}"),
            addr,
            shared,
            stop,
        }
    }
}

/// A raw backend: for each connection, read the request head, then run
/// `script` on the socket. Returns its URL and a connection counter.
pub async fn raw_backend<F, Fut>(script: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                script(s, String::from_utf8_lossy(&head).into_owned()).await;
            });
        }
    });
    (url, count)
}
