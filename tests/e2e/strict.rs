//! Admin bodies and the `--bootstrap` file are read strictly: a member
//! given twice is a 400 naming it (never "the last one wins"), every
//! nested object must be an object, and integer members take `210.0` as
//! 210 but refuse `210.5`. Nothing is written by a refused request.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use std::time::Duration;

use crate::common::{TestGateway, output_within};

/// Send `body` exactly as written (a client library would never produce a
/// duplicate member) and return the status and the JSON answer.
async fn send_raw(gw: &TestGateway, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let content_type = if method == Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let r = gw
        .http
        .request(method, gw.admin_url(path))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The one field error of a problem answer: (pointer, detail).
fn field_error(problem: &Value) -> (String, String) {
    let errors = problem["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{problem}");
    (
        errors[0]["pointer"].as_str().unwrap().to_string(),
        errors[0]["detail"].as_str().unwrap().to_string(),
    )
}

async fn config_version(gw: &TestGateway) -> u64 {
    gw.admin_json(Method::GET, "/admin/status", None).await.1["config_version"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_member_given_twice_is_a_400_naming_it_in_every_body() {
    let gw = TestGateway::start().await;
    gw.create_upstream(json!({"name": "u", "backends": [{"url": "http://127.0.0.1:1"}]}))
        .await;
    gw.create_route(json!({"name": "r", "path": "/r", "upstream": "u"}))
        .await;
    let before = gw.admin_json(Method::GET, "/admin/config", None).await.1;

    let cases: [(Method, &str, &str, &str); 9] = [
        (
            Method::POST,
            "/admin/routes",
            r#"{"name": "a", "name": "b", "path": "/a", "upstream": "u"}"#,
            "/name",
        ),
        (
            Method::PUT,
            "/admin/routes/r",
            r#"{"path": "/r", "upstream": "u", "upstream": "v"}"#,
            "/upstream",
        ),
        (
            Method::PATCH,
            "/admin/routes/r",
            r#"{"strip_prefix": true, "strip_prefix": false}"#,
            "/strip_prefix",
        ),
        (
            Method::POST,
            "/admin/upstreams",
            r#"{"name": "w", "backends": [{"url": "http://127.0.0.1:2", "url": "http://127.0.0.1:3"}]}"#,
            "/backends/0/url",
        ),
        (
            Method::PUT,
            "/admin/upstreams/u",
            r#"{"health_check": {"path": "/a", "path": "/b"}}"#,
            "/health_check/path",
        ),
        (
            Method::PATCH,
            "/admin/upstreams/u",
            r#"{"timeouts": {"connect_ms": 5, "connect_ms": 6}}"#,
            "/timeouts/connect_ms",
        ),
        (
            Method::POST,
            "/admin/upstreams/u/backends",
            r#"{"url": "http://127.0.0.1:4", "weight": 1, "weight": 0}"#,
            "/weight",
        ),
        (
            Method::PATCH,
            "/admin/upstreams/u/backends/1",
            r#"{"weight": 2, "weight": 3}"#,
            "/weight",
        ),
        (
            Method::PUT,
            "/admin/config",
            r#"{"upstreams": [{"name": "u", "tls": {"server_name": "a", "server_name": "b"}}], "routes": []}"#,
            "/upstreams/0/tls/server_name",
        ),
    ];
    for (method, path, body, pointer) in cases {
        let (status, p) = send_raw(&gw, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {p}");
        assert_eq!(p["type"], "urn:switchyard:problem:malformed-json", "{p}");
        let (at, detail) = field_error(&p);
        assert_eq!(at, pointer, "{method} {path}: {p}");
        assert!(detail.contains("more than once"), "{p}");
    }
    let after = gw.admin_json(Method::GET, "/admin/config", None).await.1;
    assert_eq!(after, before, "nothing was written");
}

#[tokio::test]
async fn an_upstreams_tls_must_be_an_object_as_in_a_config_document() {
    let gw = TestGateway::start().await;
    let tls_array = json!({"name": "u", "tls": ["/etc/ca.pem", "api.internal"]});
    for (method, path) in [
        (Method::POST, "/admin/upstreams"),
        (Method::PUT, "/admin/upstreams/u"),
    ] {
        let (status, p) = gw.admin_json(method, path, Some(tls_array.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(
            field_error(&p),
            ("/tls".into(), "must be a JSON object".into())
        );
    }
    let (status, p) = gw
        .admin_json(
            Method::PUT,
            "/admin/config",
            Some(json!({"upstreams": [tls_array]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(field_error(&p).0, "/upstreams/0/tls");
    // A route's inline backends too, and a merge patch that would put an
    // array where an object stands.
    let (status, p) = gw
        .admin_json(
            Method::POST,
            "/admin/routes",
            Some(json!({"name": "r", "path": "/r", "backends": [["http://127.0.0.1:1", 1]]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(field_error(&p).0, "/backends/0");
    gw.create_upstream(json!({"name": "v"})).await;
    let (status, p) = send_raw(
        &gw,
        Method::PATCH,
        "/admin/upstreams/v",
        r#"{"tls": [true]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(field_error(&p).0, "/tls");
    let (status, p) = send_raw(
        &gw,
        Method::PATCH,
        "/admin/upstreams/v",
        r#"[{"retries": 2}]"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(field_error(&p), ("".into(), "must be a JSON object".into()));
    assert_eq!(config_version(&gw).await, 1, "only v was created");
}

#[tokio::test]
async fn integer_members_take_a_zero_fraction_and_refuse_any_other() {
    let gw = TestGateway::start().await;
    let (status, u) = send_raw(
        &gw,
        Method::POST,
        "/admin/upstreams",
        r#"{"name": "u", "retries": 2.0, "timeouts": {"connect_ms": 1.5e3},
            "backends": [{"url": "http://127.0.0.1:1", "weight": 210.0}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{u}");
    assert_eq!(u["retries"], 2);
    assert_eq!(u["timeouts"]["connect_ms"], 1500);
    assert_eq!(u["backends"][0]["weight"], 210);

    for (body, pointer) in [
        (
            r#"{"name": "w", "backends": [{"url": "http://127.0.0.1:1", "weight": 210.5}]}"#,
            "/backends/0/weight",
        ),
        (r#"{"name": "w", "retries": 0.5}"#, "/retries"),
        (
            r#"{"name": "w", "health_check": {"expected_statuses": [200, 204.5]}}"#,
            "/health_check/expected_statuses/1",
        ),
    ] {
        let (status, p) = send_raw(&gw, Method::POST, "/admin/upstreams", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(
            field_error(&p),
            (pointer.into(), "must be an integer".into())
        );
    }
    let (status, p) = send_raw(
        &gw,
        Method::PATCH,
        "/admin/upstreams/u/backends/1",
        r#"{"weight": 7.25}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(field_error(&p).0, "/weight");
    assert_eq!(config_version(&gw).await, 1);
}

#[test]
fn a_bootstrap_file_with_a_member_given_twice_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twice.json");
    std::fs::write(
        &file,
        r#"{"upstreams": [{"name": "u", "backends": [{"url": "http://127.0.0.1:1", "weight": 1, "weight": 5}]}],
            "routes": [{"name": "r", "path": "/", "upstream": "u"}]}"#,
    )
    .unwrap();
    let out = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "--proxy-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--database-url")
            .arg(format!("sqlite://{}", dir.path().join("gw.db").display()))
            .arg("--bootstrap")
            .arg(&file)
            .env("SWITCHYARD_LOG", "error"),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("twice.json") && err.contains("/upstreams/0/backends/0/weight"),
        "{err}"
    );
}
