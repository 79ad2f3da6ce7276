use super::*;
use crate::model::{BackendSpec, ConfigSpec, HealthCheckSpec, RouteSpec, UpstreamSpec};
use serde_json::json;

fn errors<T: DeserializeOwned + std::fmt::Debug>(v: Value) -> Vec<(String, String)> {
    parse::<T>(v)
        .unwrap_err()
        .into_iter()
        .map(|e| (e.pointer, e.detail))
        .collect()
}

fn pointers<T: DeserializeOwned + std::fmt::Debug>(v: Value) -> Vec<String> {
    errors::<T>(v).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn type_errors_name_the_field() {
    assert_eq!(pointers::<RouteSpec>(json!({"name": 5})), ["/name"]);
    assert_eq!(
        pointers::<RouteSpec>(json!({"strip_prefix": "yes"})),
        ["/strip_prefix"]
    );
    assert_eq!(
        pointers::<UpstreamSpec>(json!({"backends": [{"url": "http://a"}, {"weight": -1}]})),
        ["/backends/1/weight"]
    );
    assert_eq!(
        pointers::<RouteSpec>(json!({"name": "a", "pth": "/"})),
        ["/pth"]
    );
}

#[test]
fn structs_written_as_arrays_are_refused() {
    assert_eq!(pointers::<RouteSpec>(json!(["a", "/a"])), [""]);
    assert_eq!(pointers::<RouteSpec>(json!("a")), [""]);
    assert_eq!(pointers::<RouteSpec>(json!(null)), [""]);
    assert_eq!(
        pointers::<UpstreamSpec>(
            json!({"name": "u", "backends": [{"url": "http://a"}, ["http://b", 1]]})
        ),
        ["/backends/1"]
    );
    assert_eq!(
        pointers::<UpstreamSpec>(json!({"name": "u", "timeouts": [1, 2]})),
        ["/timeouts"]
    );
    assert_eq!(
        pointers::<ConfigSpec>(json!({"upstreams": [{"name": "u", "backends": [[1]]}]})),
        ["/upstreams/0/backends/0"]
    );
    assert_eq!(
        pointers::<ConfigSpec>(json!({"routes": [["r"]]})),
        ["/routes/0"]
    );
    // null stands for "absent" in optional fields.
    assert!(parse::<UpstreamSpec>(json!({"name": "u", "timeouts": null})).is_ok());
}

/// Every nested object of an upstream, in an upstream body and in a
/// config document alike: `tls` was once refused as an array only in the
/// document, because each kept its own list of where objects stand.
#[test]
fn every_nested_object_of_an_upstream_must_be_an_object() {
    for member in ["tls", "timeouts", "health_check", "outlier_detection"] {
        let mut upstream = json!({"name": "u"});
        upstream[member] = json!(["/etc/ca.pem"]);
        assert_eq!(
            errors::<UpstreamSpec>(upstream.clone()),
            [(format!("/{member}"), "must be a JSON object".to_string())],
        );
        assert_eq!(
            pointers::<ConfigSpec>(json!({"upstreams": [upstream]})),
            [format!("/upstreams/0/{member}")]
        );
    }
    assert_eq!(
        pointers::<RouteSpec>(json!({"name": "r", "backends": [["http://a"]]})),
        ["/backends/0"]
    );
    assert_eq!(
        pointers::<ConfigSpec>(json!({"routes": [{"backends": [["http://a"]]}]})),
        ["/routes/0/backends/0"]
    );
    assert_eq!(pointers::<BackendSpec>(json!(["http://a", 1])), [""]);
}

#[test]
fn a_merge_patch_must_be_an_object() {
    assert_eq!(
        pointers::<serde_json::Map<String, Value>>(json!([{"weight": 2}])),
        [""]
    );
    let patch = parse::<serde_json::Map<String, Value>>(json!({"weight": 2, "x": [1]})).unwrap();
    assert_eq!(Value::Object(patch), json!({"weight": 2, "x": [1]}));
}

#[test]
fn an_integer_with_a_zero_fraction_is_that_integer() {
    let b: BackendSpec = parse(json!({"url": "http://a", "weight": 210.0})).unwrap();
    assert_eq!(b.weight, Some(210));
    let b: BackendSpec = parse(json!({"url": "http://a", "weight": 2.1e2})).unwrap();
    assert_eq!(b.weight, Some(210));
    let h: HealthCheckSpec =
        parse(json!({"interval_ms": 5e3, "expected_statuses": [200.0, 204]})).unwrap();
    assert_eq!(h.interval_ms, Some(5000));
    assert_eq!(h.expected_statuses, Some(vec![200, 204]));
    // -0.0 is zero; the range checks of the type still apply.
    let b: BackendSpec = parse(json!({"weight": -0.0})).unwrap();
    assert_eq!(b.weight, Some(0));
    assert_eq!(
        pointers::<BackendSpec>(json!({"weight": -1.0})),
        ["/weight"]
    );
    assert_eq!(pointers::<BackendSpec>(json!({"weight": 5e9})), ["/weight"]);
}

#[test]
fn a_fraction_where_an_integer_belongs_is_refused() {
    assert_eq!(
        errors::<BackendSpec>(json!({"url": "http://a", "weight": 210.5})),
        [("/weight".to_string(), "must be an integer".to_string())]
    );
    assert_eq!(
        errors::<UpstreamSpec>(json!({"name": "u", "timeouts": {"connect_ms": 0.5}})),
        [(
            "/timeouts/connect_ms".to_string(),
            "must be an integer".to_string()
        )]
    );
    // Past 2^53 a float may not be the integer that was written.
    assert_eq!(
        pointers::<RouteSpec>(json!({"max_body_bytes": 9007199254740994.0})),
        ["/max_body_bytes"]
    );
    let r: RouteSpec = parse(json!({"max_body_bytes": 9007199254740994u64})).unwrap();
    assert_eq!(r.max_body_bytes, Some(9007199254740994));
}
