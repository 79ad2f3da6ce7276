//! Representations returned by the admin API (and read back for PATCH):
//! the data plane's config types, with what the API adds to them.
//! `version` is the config version of the resource's last change; it is
//! also its ETag. Field order here (and in the flattened config types) is
//! the order clients see.

use data_plane::config::{RouteConfig, UpstreamConfig};
use serde::Serialize;

use crate::model::ConfigUpstream;

/// A route resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteView {
    #[serde(flatten)]
    pub route: RouteConfig,
    pub version: u64,
}

/// An upstream resource: its config (backends with their versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamView {
    /// `name`, `strategy`, `backends`, then the policy: `timeouts`,
    /// `hash_on` and `health_check` (omitted when absent),
    /// `outlier_detection`, `retries`, `fail_open`, `tls`, `http2`.
    #[serde(flatten)]
    pub upstream: UpstreamConfig<BackendView>,
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

/// The whole config (`GET /admin/config`): importable as it is (the
/// document `PUT /admin/config` takes, plus its version; backends without
/// ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigView {
    pub version: u64,
    pub upstreams: Vec<ConfigUpstream>,
    pub routes: Vec<RouteConfig>,
}

#[cfg(test)]
mod tests {
    use data_plane::config::{Strategy, UpstreamPolicy};

    use super::*;

    /// Clients see the members in this order (the config types' fields,
    /// flattened, then what the API adds); absent options are left out.
    #[test]
    fn representations_keep_their_member_order() {
        let route = RouteView {
            route: RouteConfig {
                name: "r".into(),
                path: "/".into(),
                methods: vec![],
                hosts: vec![],
                strip_prefix: false,
                preserve_host: false,
                max_body_bytes: None,
                timeout_ms: None,
                upstream: Some("u".into()),
                policies: Default::default(),
            },
            version: 3,
        };
        assert_eq!(
            serde_json::to_string(&route).unwrap(),
            r#"{"name":"r","path":"/","methods":[],"hosts":[],"strip_prefix":false,"preserve_host":false,"upstream":"u","version":3}"#
        );
        // Policies and a timeout come after the limits, before the version;
        // a route that only redirects shows no upstream.
        let policies: data_plane::config::RoutePolicies = serde_json::from_value(
            serde_json::json!({"redirect": {"status": 301, "location": "https://x{path}"}}),
        )
        .unwrap();
        let redirect = RouteView {
            route: RouteConfig {
                upstream: None,
                timeout_ms: Some(500),
                max_body_bytes: Some(10),
                policies,
                ..route.route.clone()
            },
            version: 4,
        };
        assert_eq!(
            serde_json::to_string(&redirect).unwrap(),
            concat!(
                r#"{"name":"r","path":"/","methods":[],"hosts":[],"strip_prefix":false,"preserve_host":false,"#,
                r#""max_body_bytes":10,"timeout_ms":500,"policies":{"redirect":{"status":301,"location":"https://x{path}"}},"version":4}"#
            )
        );
        let upstream = UpstreamView {
            upstream: UpstreamConfig {
                name: "u".into(),
                strategy: Strategy::RoundRobin,
                backends: vec![BackendView {
                    id: 1,
                    url: "http://h".into(),
                    weight: 1,
                    version: 2,
                }],
                policy: UpstreamPolicy::default(),
            },
            owner_route: None,
            version: 2,
        };
        assert_eq!(
            serde_json::to_string(&upstream).unwrap(),
            concat!(
                r#"{"name":"u","strategy":"round_robin","backends":[{"id":1,"url":"http://h","weight":1,"version":2}],"#,
                r#""timeouts":{"connect_ms":2000,"response_header_ms":30000,"body_idle_ms":60000},"#,
                r#""outlier_detection":{"enabled":true,"consecutive_failures":5,"base_ejection_ms":10000,"max_ejection_percent":50},"#,
                r#""retries":1,"fail_open":false,"tls":{"insecure_skip_verify":false},"http2":false,"version":2}"#
            )
        );
    }
}
