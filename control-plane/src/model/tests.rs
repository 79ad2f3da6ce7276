//! Validation rules, one test per rule family.

use super::*;

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
    let RouteTarget::Inline { backends, .. } = r.target else {
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
