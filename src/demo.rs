//! `switchyard demo-backend`: a small JSON echo server for the quick start,
//! the compose stack and tests. `GET /healthz` answers `{"status":"ok"}`;
//! every other request is answered with its name, method, path, query and
//! headers as JSON.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

fn echo(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let body = if req.uri().path() == "/healthz" {
        serde_json::json!({"status": "ok", "name": name})
    } else {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        serde_json::json!({
            "name": name,
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "headers": headers,
        })
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serve the echo on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, name: String, shutdown: impl Future<Output = ()>) {
    let name: Arc<str> = name.into();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = &mut shutdown => return,
        };
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = echo(&name, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
