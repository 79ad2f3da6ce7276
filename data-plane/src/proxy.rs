//! The proxy service: one request in, one response out.
//!
//! Per request: load the snapshot once, normalise the path, route, pick a
//! backend, rewrite the head, and hand the streaming body to the pooled
//! client. No lock, no database, no buffering: the request and response
//! bodies are passed through frame by frame.

pub mod body;
pub mod client;
pub mod error;
pub mod headers;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;

pub use body::ProxyBody;
pub use error::ProxyError;

use crate::DataPlane;
use crate::routing::path;
use crate::snapshot::Snapshot;

/// The request handler of the proxy listener.
#[derive(Debug, Clone)]
pub struct Proxy {
    plane: Arc<DataPlane>,
}

impl Proxy {
    pub fn new(plane: Arc<DataPlane>) -> Self {
        Proxy { plane }
    }

    /// Proxy one request. Never fails: errors become JSON responses.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let request_id = headers::request_id(req.headers());
        let snapshot = self.plane.snapshot();
        match forward(&snapshot, req, peer, &request_id).await {
            Ok(resp) => resp,
            Err(err) => {
                tracing::debug!(request_id = ?request_id, error = %err, "proxy error");
                err.into_response(&request_id)
            }
        }
    }
}

/// The request's host name without port: the URI authority (absolute-form
/// or HTTP/2 `:authority`) or else the `Host` header.
fn request_host<'a>(uri: &'a Uri, host_header: Option<&'a HeaderValue>) -> Option<&'a str> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => host_header?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port → v6 literal with brackets kept, as configured.
        return rest.find(']').map_or(host, |end| &host[..end + 2]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

async fn forward(
    snapshot: &Snapshot,
    req: Request<Incoming>,
    peer: SocketAddr,
    request_id: &HeaderValue,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let path = path::normalize(parts.uri.path())?;
    let host_header = parts.headers.get(header::HOST);
    let host = request_host(&parts.uri, host_header);
    let (matched, route) = snapshot
        .find(host, &parts.method, &path)
        .ok_or(ProxyError::NoRoute)?;
    let upstream = &snapshot.upstreams()[route.upstream];
    let backend = upstream
        .pick()
        .ok_or_else(|| ProxyError::NoBackend(Arc::clone(&upstream.name)))?;

    let forward_path = if route.strip_prefix {
        matched.strip(&path)
    } else {
        &path
    };
    let path_and_query = match (forward_path == parts.uri.path(), parts.uri.query()) {
        (true, _) => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        (false, None) => PathAndQuery::try_from(forward_path).map_err(|_| path_error())?,
        (false, Some(q)) => {
            PathAndQuery::try_from(format!("{forward_path}?{q}")).map_err(|_| path_error())?
        }
    };
    let forwarded_host = host_header.cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    parts.uri = Uri::builder()
        .scheme(backend.scheme.clone())
        .authority(backend.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| path_error())?;
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::forward_request(
        &mut parts.headers,
        peer.ip(),
        forwarded_host.as_ref(),
        request_id,
    );

    let in_flight = backend.state.start();
    let sent = upstream.client.request(Request::from_parts(parts, body));
    let resp = match tokio::time::timeout(upstream.response_header_timeout, sent).await {
        Err(_elapsed) => {
            return Err(ProxyError::Timeout {
                backend: Arc::clone(&backend.url),
            });
        }
        Ok(Err(e)) => return Err(ProxyError::from_client(&backend.url, e)),
        Ok(Ok(resp)) => resp,
    };
    let (mut head, body) = resp.into_parts();
    headers::forward_response(&mut head.headers, request_id);
    Ok(Response::from_parts(
        head,
        ProxyBody::upstream(body, in_flight),
    ))
}

fn path_error() -> ProxyError {
    ProxyError::BadPath(path::PathError::BadCharacter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_without_port() {
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
    }
}
