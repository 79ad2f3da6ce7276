//! `GatewayConfig`: the whole routing configuration the data plane runs on.
//!
//! These are plain, serde-serialisable values. The control plane maps its
//! rows onto them; a remote data plane would receive exactly this type. They
//! are trusted input here only after the control plane has validated them,
//! but [`crate::snapshot::Snapshot::build`] still refuses anything it cannot
//! compile (dangling upstream, bad URL), so a bad config can never go live.
//!
//! This module is the one vocabulary of the gateway's config: the control
//! plane stores, validates and shows these types rather than copies of
//! them. In particular every default (timeouts, retries, health check,
//! outlier detection) is written here once, as the `Default` of its type,
//! and serde's defaults, the admin API's and the compiled snapshot's all
//! come from it. An upstream's settings other than its name, strategy and
//! backends are one [`UpstreamPolicy`], embedded (flattened) wherever an
//! upstream is written.

pub mod policies;

use http::uri::{Authority, Scheme, Uri};
use serde::{Deserialize, Serialize};

pub use policies::RoutePolicies;

/// Default time allowed to establish an upstream TCP connection.
pub const DEFAULT_CONNECT_MS: u64 = 2_000;
/// Default time allowed between sending a request upstream and receiving the
/// response headers.
pub const DEFAULT_RESPONSE_HEADER_MS: u64 = 30_000;
/// Default longest pause between two pieces of an upstream response body.
pub const DEFAULT_BODY_IDLE_MS: u64 = 60_000;
/// Default extra attempts on another backend after a retryable failure.
pub const DEFAULT_RETRIES: u32 = 1;
/// Most extra attempts an upstream may make: the proxy keeps the backends a
/// request tried in a fixed array of `MAX_RETRIES + 1` slots.
pub const MAX_RETRIES: u32 = 5;
/// Longest per-route `timeout_ms` (the largest response-head timeout an
/// upstream may have).
pub const MAX_ROUTE_TIMEOUT_MS: u64 = 3_600_000;

/// One complete, versioned configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The global config version this was loaded at (monotonic).
    pub version: u64,
    pub routes: Vec<RouteConfig>,
    pub upstreams: Vec<UpstreamConfig>,
}

/// A route: which requests go to which upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Path prefix, matched on segment boundaries. Starts with `/`.
    pub path: String,
    /// Upper-case method names; empty means any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Host names (no port, lower case); empty means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Remove the matched prefix before forwarding (`/api/x` → `/x`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Send the client's `Host` upstream instead of the backend's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Largest request body accepted (413 past it, counted while
    /// streaming); `None` = the gateway-wide default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Longest wait for the response head on this route, overriding the
    /// upstream's `timeouts.response_header_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Name of the upstream this route forwards to; none only for a route
    /// that always redirects (`policies.redirect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// What the gateway checks and changes on this route's traffic.
    #[serde(default, skip_serializing_if = "RoutePolicies::is_empty")]
    pub policies: RoutePolicies,
}

/// A named pool of backends and how to use them.
///
/// `B` is how a backend is written: [`BackendConfig`] in the config the data
/// plane runs; the control plane's representations write them with their
/// version, or (in an exported document) without their id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig<B = BackendConfig> {
    pub name: String,
    #[serde(default)]
    pub strategy: Strategy,
    pub backends: Vec<B>,
    /// Timeouts, retries, health, TLS…: written beside `name`, not nested.
    #[serde(flatten)]
    pub policy: UpstreamPolicy,
}

/// How an upstream times out, hashes, checks, ejects and retries, and how
/// it talks to its backends: every setting of an upstream but its name,
/// strategy and backends. (The strategy stays beside the backends: a route
/// with inline backends sets both, and keeps the upstream's policy.)
///
/// Every member has a default, and `UpstreamPolicy::default()` is an
/// upstream that says nothing but its backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamPolicy {
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The request key `consistent_hash` hashes; required by that strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// Active health checking; `None` = no probes (passive detection only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    /// Extra attempts on a different backend after a retryable failure
    /// (at most [`MAX_RETRIES`]).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// When no backend is healthy: `true` sends traffic to all of them
    /// anyway (fail open), `false` answers 503 (fail closed, the default).
    #[serde(default)]
    pub fail_open: bool,
    /// TLS settings for `https://` backends.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// Speak HTTP/2 to the backends (over TLS by ALPN, or h2c by prior
    /// knowledge for `http://`).
    #[serde(default)]
    pub http2: bool,
}

/// How to verify `https://` backends. Verification is always on unless
/// `insecure_skip_verify` is set explicitly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of CA certificates trusted in addition to the webpki roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Name sent as SNI and checked against the certificate, instead of the
    /// backend URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any certificate. For tests and broken backends only.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        UpstreamPolicy {
            timeouts: Timeouts::default(),
            hash_on: None,
            health_check: None,
            outlier_detection: OutlierDetection::default(),
            retries: DEFAULT_RETRIES,
            fail_open: false,
            tls: UpstreamTls::default(),
            http2: false,
        }
    }
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

/// What `consistent_hash` hashes. Written `"header:NAME"`, `"cookie:NAME"`
/// or `"client_ip"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HashOn {
    Header(http::HeaderName),
    Cookie(String),
    ClientIp,
}

impl TryFrom<String> for HashOn {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s == "client_ip" {
            return Ok(HashOn::ClientIp);
        }
        if let Some(name) = s.strip_prefix("header:") {
            return http::HeaderName::from_bytes(name.as_bytes())
                .map(HashOn::Header)
                .map_err(|_| format!("{name:?} is not a valid header name"));
        }
        if let Some(name) = s.strip_prefix("cookie:")
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        {
            return Ok(HashOn::Cookie(name.to_string()));
        }
        Err("must be \"client_ip\", \"header:NAME\" or \"cookie:NAME\"".to_string())
    }
}

impl From<HashOn> for String {
    fn from(h: HashOn) -> String {
        match h {
            HashOn::Header(n) => format!("header:{n}"),
            HashOn::Cookie(n) => format!("cookie:{n}"),
            HashOn::ClientIp => "client_ip".to_string(),
        }
    }
}

/// Active health check of every backend of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path probed with `GET` (default `/healthz`).
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_probe_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passing probes that make an unhealthy backend healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failing probes that make a healthy backend unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses that pass; empty = any 200–399.
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
}

/// A health check that says nothing but that there is one.
impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/healthz".to_string(),
            interval_ms: 2_000,
            timeout_ms: 1_000,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            expected_statuses: Vec::new(),
        }
    }
}

fn default_health_path() -> String {
    HealthCheck::default().path
}
fn default_interval_ms() -> u64 {
    HealthCheck::default().interval_ms
}
fn default_probe_timeout_ms() -> u64 {
    HealthCheck::default().timeout_ms
}
fn default_healthy_threshold() -> u32 {
    HealthCheck::default().healthy_threshold
}
fn default_unhealthy_threshold() -> u32 {
    HealthCheck::default().unhealthy_threshold
}

impl HealthCheck {
    pub fn passes(&self, status: u16) -> bool {
        if self.expected_statuses.is_empty() {
            (200..400).contains(&status)
        } else {
            self.expected_statuses.contains(&status)
        }
    }
}

/// Passive outlier detection: eject a backend after consecutive failures
/// seen on real traffic. On by default with conservative values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Consecutive connect failures or 5xx answers that eject a backend.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection period; the n-th consecutive ejection lasts n times
    /// as long (capped at [`MAX_EJECTION_MS`]).
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u64,
    /// Never eject more than this share of an upstream's backends.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u8,
}

/// Longest ejection, however often a backend is ejected.
pub const MAX_EJECTION_MS: u64 = 300_000;

fn default_true() -> bool {
    true
}
fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection_ms() -> u64 {
    10_000
}
fn default_max_ejection_percent() -> u8 {
    50
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            enabled: true,
            consecutive_failures: default_consecutive_failures(),
            base_ejection_ms: default_base_ejection_ms(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

/// One backend of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Stable id assigned by the control plane (unique within the config).
    pub id: u64,
    /// Absolute `http://` or `https://` URL with a host and no path.
    pub url: String,
    /// Relative share of traffic; 0 drains the backend.
    pub weight: u32,
}

/// Backend selection algorithm of an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every backend in turn (weights other than 0 ignored).
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (nginx): 5:1:1 gives a a b a c a a.
    WeightedRoundRobin,
    /// Fewest in-flight requests relative to weight; ties in turn.
    LeastConnections,
    /// Power of two random choices on peak-EWMA latency × load.
    P2cEwma,
    /// Maglev consistent hashing on `hash_on`.
    ConsistentHash,
}

impl Strategy {
    /// Every strategy this build knows, as spelled in the API.
    pub const ALL: &'static [&'static str] = &[
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "p2c_ewma",
        "consistent_hash",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRoundRobin => "weighted_round_robin",
            Strategy::LeastConnections => "least_connections",
            Strategy::P2cEwma => "p2c_ewma",
            Strategy::ConsistentHash => "consistent_hash",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Strategy::ALL.iter().position(|name| *name == s).map(|i| {
            [
                Strategy::RoundRobin,
                Strategy::WeightedRoundRobin,
                Strategy::LeastConnections,
                Strategy::P2cEwma,
                Strategy::ConsistentHash,
            ][i]
        })
    }
}

/// Per-upstream timeouts in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    #[serde(default = "default_response_header_ms")]
    pub response_header_ms: u64,
    /// Longest pause while streaming the response body; past it the
    /// response is aborted.
    #[serde(default = "default_body_idle_ms")]
    pub body_idle_ms: u64,
}

fn default_body_idle_ms() -> u64 {
    DEFAULT_BODY_IDLE_MS
}

fn default_connect_ms() -> u64 {
    DEFAULT_CONNECT_MS
}

fn default_response_header_ms() -> u64 {
    DEFAULT_RESPONSE_HEADER_MS
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: DEFAULT_CONNECT_MS,
            response_header_ms: DEFAULT_RESPONSE_HEADER_MS,
            body_idle_ms: DEFAULT_BODY_IDLE_MS,
        }
    }
}

/// Parse a backend URL: absolute `http`/`https` with a host, no path beyond
/// `/`, no query, no user info. The control plane refuses what this
/// refuses, with its reason, before a snapshot would.
pub fn parse_backend_url(url: &str) -> Result<(Scheme, Authority), &'static str> {
    let uri: Uri = url.parse().map_err(|_| "not a valid URL")?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        Some(_) => return Err("scheme must be http or https"),
        None => return Err("must be an absolute http:// or https:// URL"),
    };
    let authority = uri.authority().ok_or("must have a host")?.clone();
    if authority.host().is_empty() {
        return Err("must have a host");
    }
    if authority.as_str().contains('@') {
        return Err("must not contain user info");
    }
    match authority.port_u16() {
        Some(0) => return Err("port must be between 1 and 65535"),
        None if authority.as_str() != authority.host() => {
            return Err("port must be between 1 and 65535");
        }
        _ => {}
    }
    if let Some(pq) = uri.path_and_query()
        && (pq.path() != "/" || pq.query().is_some())
    {
        return Err("must not have a path or query");
    }
    Ok((scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls() {
        assert!(parse_backend_url("http://127.0.0.1:9001").is_ok());
        assert!(parse_backend_url("https://example.com").is_ok());
        assert!(parse_backend_url("http://[::1]:80/").is_ok());
        assert!(parse_backend_url("ftp://x").is_err());
        assert!(parse_backend_url("127.0.0.1:9001").is_err());
        assert!(parse_backend_url("http://x:0").is_err());
        assert!(parse_backend_url("http://x:65536").is_err());
        assert!(parse_backend_url("http://x/base").is_err());
        assert!(parse_backend_url("http://x/?a=b").is_err());
        assert!(parse_backend_url("http://u:p@x").is_err());
    }

    /// The serde defaults of an upstream are the `Default`s of its types,
    /// and an upstream is written flat (policy beside name and backends);
    /// an unknown member is still refused.
    #[test]
    fn an_upstream_is_read_flat_with_the_defaults() {
        let u: UpstreamConfig = serde_json::from_value(serde_json::json!({
            "name": "u", "backends": [], "health_check": {}
        }))
        .unwrap();
        assert_eq!(
            u.policy,
            UpstreamPolicy {
                health_check: Some(HealthCheck::default()),
                ..UpstreamPolicy::default()
            }
        );
        assert_eq!(u.policy.retries, DEFAULT_RETRIES);
        let u: UpstreamConfig = serde_json::from_value(serde_json::json!({
            "name": "u", "backends": [], "retries": 3, "timeouts": {"connect_ms": 5}
        }))
        .unwrap();
        assert_eq!((u.policy.retries, u.policy.timeouts.connect_ms), (3, 5));
        let unknown = serde_json::from_value::<UpstreamConfig>(serde_json::json!({
            "name": "u", "backends": [], "retry": 3
        }));
        assert!(unknown.unwrap_err().to_string().contains("retry"));
    }
}
