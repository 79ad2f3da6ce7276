//! The pooled upstream HTTP client (hyper-util legacy client over a
//! rustls-capable connector): keep-alive connections to backends, reused
//! across requests and snapshots.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::request_body::RequestBody;

/// Client used to forward requests upstream (request bodies stream from the
/// downstream connection).
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// A new pooled client whose TCP connects give up after `connect_timeout`.
pub fn new(connect_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}
