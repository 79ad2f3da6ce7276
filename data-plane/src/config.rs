//! `GatewayConfig`: the whole routing configuration the data plane runs on.
//!
//! These are plain, serde-serialisable values. The control plane maps its
//! rows onto them; a remote data plane would receive exactly this type. They
//! are trusted input here only after the control plane has validated them,
//! but [`crate::snapshot::Snapshot::build`] still refuses anything it cannot
//! compile (dangling upstream, bad URL), so a bad config can never go live.

use serde::{Deserialize, Serialize};

/// Default time allowed to establish an upstream TCP connection.
pub const DEFAULT_CONNECT_MS: u64 = 2_000;
/// Default time allowed between sending a request upstream and receiving the
/// response headers.
pub const DEFAULT_RESPONSE_HEADER_MS: u64 = 30_000;

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
    /// Name of the upstream this route forwards to.
    pub upstream: String,
}

/// A named pool of backends and how to use them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    #[serde(default)]
    pub strategy: Strategy,
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub timeouts: Timeouts,
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
    #[default]
    RoundRobin,
}

impl Strategy {
    /// Every strategy this build knows, as spelled in the API.
    pub const ALL: &'static [&'static str] = &["round_robin"];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "round_robin" => Some(Strategy::RoundRobin),
            _ => None,
        }
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
        }
    }
}
