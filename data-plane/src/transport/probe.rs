//! An active health probe's exchange: one `GET` to a backend through the
//! upstream's own client ([`UpstreamClient`], one per connection
//! settings): the connector that carries its traffic, with the upstream's
//! CA file, server name, `insecure_skip_verify`, connect timeout and
//! HTTP/2, so a backend is never probed over another TLS setup or protocol
//! than it is proxied to. Plain `http://` HTTP/1.1 backends send their
//! traffic through their own pool ([`super::pool`]) instead; their probes
//! still use that client (whose connector makes the same plain TCP
//! connections with the same connect timeout), so a probe neither takes a
//! pooled connection from requests nor leaves one behind for them: it
//! tests that the backend accepts connections and answers, not the state
//! of the pool. What a probe's result means is `crate::health`'s to say.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Uri, header};
use http_body_util::{BodyExt, Limited};

use super::client::UpstreamClient;
use super::request_body::RequestBody;

/// Bytes of a probe answer read (then the connection is reused).
const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// The backend answered with this status.
    Status(u16),
    /// No answer within the timeout.
    TimedOut,
    /// The exchange failed: the error and its sources.
    Failed(String),
}

/// Probes one backend at `uri` through `client`.
#[derive(Debug, Clone)]
pub struct Prober {
    pub client: Arc<UpstreamClient>,
    pub uri: Uri,
}

impl Prober {
    /// One probe, answered within `timeout`, and how long it took.
    pub async fn probe(&self, timeout: Duration) -> (Probed, Duration) {
        let started = Instant::now();
        let req = Request::get(self.uri.clone())
            .header(header::USER_AGENT, "switchyard-health-check")
            .body(RequestBody::attempt(None))
            .expect("a GET with a valid URI builds");
        let outcome = tokio::time::timeout(timeout, async {
            let resp = self.client.request(req).await?;
            let status = resp.status().as_u16();
            // Read (a bounded amount of) the body so the connection is reused.
            let _ = Limited::new(resp.into_body(), PROBE_BODY_LIMIT)
                .collect()
                .await;
            Ok::<u16, hyper_util::client::legacy::Error>(status)
        })
        .await;
        let probed = match outcome {
            Err(_) => Probed::TimedOut,
            Ok(Err(e)) => Probed::Failed(error_chain(&e)),
            Ok(Ok(status)) => Probed::Status(status),
        };
        (probed, started.elapsed())
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
