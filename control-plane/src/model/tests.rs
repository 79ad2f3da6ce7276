//! Validation rules, one test per rule family.

use super::*;
use data_plane::config::UpstreamPolicy;

fn route(json: serde_json::Value) -> Result<Route, Vec<FieldError>> {
    serde_json::from_value::<RouteSpec>(json)
        .unwrap()
        .validate(None)
}

fn pointers(r: Result<impl std::fmt::Debug, Vec<FieldError>>) -> Vec<String> {
    r.unwrap_err().into_iter().map(|e| e.pointer).collect()
}

#[test]
fn inline_route_is_valid() {
    let r = route(serde_json::json!({
        "name": "api", "path": "/api", "strip_prefix": true,
        "backends": [{"url": "http://127.0.0.1:9001/"}, {"url": "http://127.0.0.1:9002", "weight": 3}]
    }))
    .unwrap();
    let Some(RouteTarget::Inline { backends, .. }) = r.target else {
        panic!("inline expected")
    };
    assert_eq!(
        backends[0],
        NewBackend {
            url: "http://127.0.0.1:9001".into(),
            weight: 1
        }
    );
    assert_eq!(backends[1].weight, 3);
}

#[test]
fn every_bad_field_is_named() {
    let errs = pointers(route(serde_json::json!({
        "name": "-bad name", "path": "api/../x", "methods": ["GET", "FETCH", "GET"],
        "hosts": ["Example.com:80", "ok.example"],
        "backends": [{"url": "ftp://x"}, {"url": "http://y", "weight": 1001}]
    })));
    assert_eq!(
        errs,
        [
            "/name",
            "/path",
            "/methods/1",
            "/methods/2",
            "/hosts/0",
            "/backends/0/url",
            "/backends/1/weight"
        ]
    );
}

#[test]
fn target_rules() {
    assert_eq!(
        pointers(route(serde_json::json!({"name": "a", "path": "/"}))),
        ["/upstream"]
    );
    assert_eq!(
        pointers(route(
            serde_json::json!({"name": "a", "path": "/", "upstream": "u", "backends": []})
        )),
        ["/backends"]
    );
    assert_eq!(
        pointers(route(
            serde_json::json!({"name": "a", "path": "/", "backends": []})
        )),
        ["/backends"]
    );
    assert_eq!(
        pointers(route(
            serde_json::json!({"name": "a", "path": "/", "upstream": "u", "strategy": "round_robin"})
        )),
        ["/strategy"]
    );
}

#[test]
fn paths() {
    for bad in [
        "x", "/a//b", "/a/./b", "/a/..", "/a b", "/a?b", "/a#b", "/a%2fb", "/a\\b", "/é",
    ] {
        assert_eq!(
            pointers(route(
                serde_json::json!({"name": "a", "path": bad, "upstream": "u"})
            )),
            ["/path"],
            "{bad}"
        );
    }
    for good in ["/", "/api", "/api/", "/a.b/c-d_e~f", "/v1;x"] {
        assert!(
            route(serde_json::json!({"name": "a", "path": good, "upstream": "u"})).is_ok(),
            "{good}"
        );
    }
}

#[test]
fn names() {
    assert!(check_name("api").is_ok());
    assert!(check_name("a.b_c-1").is_ok());
    assert!(check_name(&"a".repeat(63)).is_ok());
    assert!(check_name(&"a".repeat(64)).is_err());
    assert!(check_name("").is_err());
    assert!(check_name("_a").is_err());
    assert!(check_name("a/b").is_err());
    assert!(check_name("a b").is_err());
}

#[test]
fn put_name_must_match_url() {
    let spec: RouteSpec =
        serde_json::from_value(serde_json::json!({"name": "b", "path": "/", "upstream": "u"}))
            .unwrap();
    assert_eq!(pointers(spec.validate(Some("a"))), ["/name"]);
    let spec: RouteSpec =
        serde_json::from_value(serde_json::json!({"path": "/", "upstream": "u"})).unwrap();
    assert_eq!(spec.validate(Some("a")).unwrap().name, "a");
}

#[test]
fn upstream_timeouts_and_strategy() {
    let spec: UpstreamSpec = serde_json::from_value(serde_json::json!({
        "name": "u", "strategy": "random", "timeouts": {"connect_ms": 0, "response_header_ms": 3600001}
    }))
    .unwrap();
    assert_eq!(
        pointers(spec.validate(None)),
        [
            "/strategy",
            "/timeouts/connect_ms",
            "/timeouts/response_header_ms"
        ]
    );
}

#[test]
fn unknown_fields_are_refused() {
    assert!(
        serde_json::from_value::<RouteSpec>(serde_json::json!({"name": "a", "pth": "/"})).is_err()
    );
    assert!(
        serde_json::from_value::<BackendSpec>(serde_json::json!({"url": "http://x", "wieght": 1}))
            .is_err()
    );
}

fn upstream(json: serde_json::Value) -> Result<Upstream, Vec<FieldError>> {
    serde_json::from_value::<UpstreamSpec>(json)
        .unwrap()
        .validate(None)
}

#[test]
fn policy_defaults() {
    let u = upstream(serde_json::json!({"name": "u"})).unwrap();
    assert_eq!(u.policy, UpstreamPolicy::default());
    assert_eq!(u.policy.retries, 1);
    assert!(u.policy.outlier_detection.enabled);
    assert!(!u.policy.fail_open);
    let u = upstream(serde_json::json!({"name": "u", "health_check": {}})).unwrap();
    let h = u.policy.health_check.unwrap();
    assert_eq!(
        (h.path.as_str(), h.interval_ms, h.timeout_ms),
        ("/healthz", 2000, 1000)
    );
    assert!(h.passes(204) && h.passes(302) && !h.passes(404));
}

#[test]
fn hash_on_goes_with_consistent_hash() {
    assert_eq!(
        pointers(upstream(
            serde_json::json!({"name": "u", "strategy": "consistent_hash"})
        )),
        ["/hash_on"]
    );
    assert_eq!(
        pointers(upstream(
            serde_json::json!({"name": "u", "strategy": "round_robin", "hash_on": "client_ip"})
        )),
        ["/hash_on"]
    );
    for bad in ["ip", "header:", "header:bad name", "cookie:", "cookie:a;b"] {
        assert_eq!(
            pointers(upstream(
                serde_json::json!({"name": "u", "strategy": "consistent_hash", "hash_on": bad})
            )),
            ["/hash_on"],
            "{bad}"
        );
    }
    for good in ["client_ip", "header:x-user-id", "cookie:session"] {
        assert!(
            upstream(
                serde_json::json!({"name": "u", "strategy": "consistent_hash", "hash_on": good})
            )
            .is_ok()
        );
    }
    // Inline route backends cannot say what to hash.
    assert_eq!(
        pointers(route(
            serde_json::json!({"name": "a", "path": "/", "strategy": "consistent_hash", "backends": [{"url": "http://h"}]})
        )),
        ["/strategy"]
    );
}

#[test]
fn policy_limits_name_their_fields() {
    let errs = pointers(upstream(serde_json::json!({
        "name": "u", "retries": 6, "fail_open": true,
        "health_check": {"path": "healthz", "interval_ms": 50, "timeout_ms": 100000, "healthy_threshold": 0,
                         "unhealthy_threshold": 101, "expected_statuses": [200, 99, 600]},
        "outlier_detection": {"consecutive_failures": 0, "base_ejection_ms": 300001, "max_ejection_percent": 101}
    })));
    assert_eq!(
        errs,
        [
            "/health_check/path",
            "/health_check/interval_ms",
            "/health_check/timeout_ms",
            "/health_check/timeout_ms",
            "/health_check/healthy_threshold",
            "/health_check/unhealthy_threshold",
            "/health_check/expected_statuses/1",
            "/health_check/expected_statuses/2",
            "/outlier_detection/consecutive_failures",
            "/outlier_detection/base_ejection_ms",
            "/outlier_detection/max_ejection_percent",
            "/retries",
        ]
    );
}

#[test]
fn backend_urls_have_one_spelling() {
    let url = |raw: &str| {
        serde_json::from_value::<BackendSpec>(serde_json::json!({"url": raw}))
            .unwrap()
            .validate()
            .unwrap()
            .url
    };
    assert_eq!(url("http://A.Example:80/"), "http://a.example");
    assert_eq!(url("https://x:443"), "https://x");
    assert_eq!(url("http://x:8080"), "http://x:8080");
    assert_eq!(url("https://x:80"), "https://x:80");
    assert_eq!(url("http://[::1]:9000"), "http://[::1]:9000");
}

#[test]
fn tls_settings() {
    let ok = upstream(serde_json::json!({"name": "u", "http2": true,
        "tls": {"ca_file": "/etc/ca.pem", "server_name": "Backend.Internal", "insecure_skip_verify": false}}))
    .unwrap();
    assert_eq!(
        ok.policy.tls.server_name.as_deref(),
        Some("backend.internal")
    );
    assert!(ok.policy.http2);
    assert_eq!(
        pointers(upstream(
            serde_json::json!({"name": "u", "tls": {"ca_file": "relative.pem", "server_name": "bad name"}})
        )),
        ["/tls/ca_file", "/tls/server_name"]
    );
}
