//! Representations returned by the admin API (and read back for PATCH).
//! `version` is the config version of the resource's last change; it is
//! also its ETag. Field order here is the order clients see.

use data_plane::config::Timeouts;
use serde::Serialize;

use crate::model::Policy;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteView {
    pub name: String,
    pub path: String,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    pub upstream: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamView {
    pub name: String,
    pub strategy: String,
    pub backends: Vec<BackendView>,
    pub timeouts: Timeouts,
    /// `hash_on`, `health_check` (omitted when absent), `outlier_detection`,
    /// `retries`, `fail_open`.
    #[serde(flatten)]
    pub policy: Policy,
    /// The route that created this upstream from inline backends; it is
    /// deleted with that route unless other routes use it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_route: Option<String>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendView {
    pub id: u64,
    pub url: String,
    pub weight: u32,
    pub version: u64,
}

/// A list of resources at one config version.
#[derive(Debug, Clone, Serialize)]
pub struct ListView<T> {
    pub items: Vec<T>,
    pub config_version: u64,
}

/// The whole config (`GET /admin/config`): importable as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigView {
    pub version: u64,
    pub upstreams: Vec<ConfigUpstreamView>,
    pub routes: Vec<ConfigRouteView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigUpstreamView {
    pub name: String,
    pub strategy: String,
    pub backends: Vec<ConfigBackendView>,
    pub timeouts: Timeouts,
    #[serde(flatten)]
    pub policy: Policy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_route: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigBackendView {
    pub url: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigRouteView {
    pub name: String,
    pub path: String,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    pub upstream: String,
}

impl From<RouteView> for ConfigRouteView {
    fn from(v: RouteView) -> Self {
        ConfigRouteView {
            name: v.name,
            path: v.path,
            methods: v.methods,
            hosts: v.hosts,
            strip_prefix: v.strip_prefix,
            preserve_host: v.preserve_host,
            max_body_bytes: v.max_body_bytes,
            upstream: v.upstream,
        }
    }
}

impl From<RouteView> for data_plane::config::RouteConfig {
    fn from(v: RouteView) -> Self {
        data_plane::config::RouteConfig {
            name: v.name,
            path: v.path,
            methods: v.methods,
            hosts: v.hosts,
            strip_prefix: v.strip_prefix,
            preserve_host: v.preserve_host,
            max_body_bytes: v.max_body_bytes,
            upstream: v.upstream,
        }
    }
}
