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
pub mod request_body;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

pub use body::ProxyBody;
pub use error::ProxyError;

use crate::balance::{self, PickContext};
use crate::config::HashOn;
use crate::routing::path;
use crate::snapshot::Snapshot;
use crate::{DataPlane, registry};
use request_body::RequestBody;

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

/// Methods that may be sent twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Hash of the request's `hash_on` key, if the request carries it.
fn hash_key(hash_on: &HashOn, headers: &HeaderMap, peer: SocketAddr) -> Option<u64> {
    match hash_on {
        HashOn::Header(name) => headers
            .get(name)
            .map(|v| balance::ConsistentHash::hash(v.as_bytes())),
        HashOn::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| balance::ConsistentHash::hash(v.as_bytes())),
        HashOn::ClientIp => Some(match peer.ip() {
            IpAddr::V4(ip) => balance::ConsistentHash::hash(&ip.octets()),
            IpAddr::V6(ip) => balance::ConsistentHash::hash(&ip.octets()),
        }),
    }
}

/// Most attempts a request can make (1 + the largest `retries` allowed).
pub const MAX_ATTEMPTS: usize = 6;

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
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::forward_request(
        &mut parts.headers,
        peer.ip(),
        forwarded_host.as_ref(),
        request_id,
    );
    let ctx = PickContext {
        hash: upstream
            .hash_on
            .as_ref()
            .and_then(|h| hash_key(h, &parts.headers, peer)),
    };
    let body = request_body::share(body);
    let idempotent = is_idempotent(&parts.method);
    let attempts = (upstream.retries as usize + 1).min(MAX_ATTEMPTS);
    let mut tried = [usize::MAX; MAX_ATTEMPTS];
    let mut headers = Some(parts.headers);
    let mut last_failure = None;

    for attempt in 0..attempts {
        let Some(i) = upstream.pick(&ctx, &tried[..attempt]) else {
            break;
        };
        tried[attempt] = i;
        let backend = &upstream.backends[i];
        let last = attempt + 1 == attempts;
        let mut req = Request::new(RequestBody::attempt(body.as_ref()));
        *req.method_mut() = parts.method.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.uri_mut() = Uri::builder()
            .scheme(backend.scheme.clone())
            .authority(backend.authority.clone())
            .path_and_query(path_and_query.clone())
            .build()
            .map_err(|_| path_error())?;
        // Only a request that may be sent again keeps a copy of its head.
        *req.headers_mut() = if last {
            headers.take().unwrap_or_default()
        } else {
            headers.clone().unwrap_or_default()
        };

        let in_flight = backend.state.start();
        let started = registry::now_ns();
        let sent = upstream.client.request(req);
        let failure = match tokio::time::timeout(upstream.response_header_timeout, sent).await {
            Ok(Ok(resp)) => {
                backend.state.observe_latency(registry::now_ns() - started);
                if resp.status().is_server_error() {
                    upstream.report_failure(i);
                } else {
                    upstream.report_success(i);
                }
                let (mut head, body) = resp.into_parts();
                headers::forward_response(&mut head.headers, request_id);
                return Ok(Response::from_parts(
                    head,
                    ProxyBody::upstream(body, in_flight),
                ));
            }
            Ok(Err(e)) => ProxyError::from_client(&backend.url, e),
            Err(_elapsed) => ProxyError::Timeout {
                backend: Arc::clone(&backend.url),
            },
        };
        drop(in_flight);
        upstream.report_failure(i);
        // Retry on another backend only when nothing reached this one (a
        // refused connection), or for an idempotent request whose body has
        // not started streaming.
        let body_intact = body.as_ref().is_none_or(|slot| !slot.taken());
        let nothing_sent = matches!(failure, ProxyError::Connect { .. });
        let retryable = body_intact && (nothing_sent || idempotent);
        if last || !retryable {
            return Err(failure);
        }
        tracing::debug!(upstream = %upstream.name, backend = %backend.url, error = %failure, "retrying on another backend");
        last_failure = Some(failure);
    }
    // Every backend was tried (or none is available): the last failure
    // says more than "no backend".
    Err(last_failure.unwrap_or_else(|| ProxyError::NoBackend(Arc::clone(&upstream.name))))
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
