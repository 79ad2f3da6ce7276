//! Builder-style fake backends: `Backend::named("a").start().await`.
//! Each answers every request with a JSON echo of what it received and
//! counts the requests it saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct BackendBuilder {
    name: String,
    delay: Duration,
    status: u16,
}

/// A running fake backend; stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub url: String,
    hits: Arc<AtomicUsize>,
    _stop: watch::Sender<()>,
}

impl Backend {
    pub fn named(name: &str) -> BackendBuilder {
        BackendBuilder {
            name: name.to_string(),
            delay: Duration::ZERO,
            status: 200,
        }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A URL on 127.0.0.1 where nothing listens (bound, then released).
pub async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

impl BackendBuilder {
    /// Wait this long before answering.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }

    pub async fn start(self) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(());
        let name: Arc<str> = self.name.into();
        let (delay, status, counter) = (self.delay, self.status, Arc::clone(&hits));
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => r.unwrap().0,
                    _ = stopped.changed() => return,
                };
                let (name, counter) = (Arc::clone(&name), Arc::clone(&counter));
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (name, counter) = (Arc::clone(&name), Arc::clone(&counter));
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let headers: serde_json::Map<String, serde_json::Value> = parts
                                .headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                                .collect();
                            let echo = serde_json::json!({
                                "backend": &*name,
                                "method": parts.method.as_str(),
                                "path": parts.uri.path(),
                                "query": parts.uri.query(),
                                "headers": headers,
                                "body": String::from_utf8_lossy(&body),
                            });
                            let mut resp = Response::new(Full::new(Bytes::from(echo.to_string())));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            let h = resp.headers_mut();
                            h.insert("content-type", "application/json".parse().unwrap());
                            h.insert("server", "fake/1.0".parse().unwrap());
                            h.insert("x-powered-by", "tests".parse().unwrap());
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            url: format!("http://{addr}"),
            addr,
            hits,
            _stop: stop,
        }
    }
}
