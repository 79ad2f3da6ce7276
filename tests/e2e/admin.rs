//! The admin API: CRUD, validation, conflicts, preconditions, auth.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestGateway};

/// Assert a problem+json answer naming `pointer`, and return it.
pub(crate) async fn problem(
    r: reqwest::Response,
    status: StatusCode,
    pointer: Option<&str>,
) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    for field in ["type", "title", "status", "detail", "errors"] {
        assert!(p.get(field).is_some(), "{field} missing in {p}");
    }
    assert_eq!(p["status"], status.as_u16());
    if let Some(ptr) = pointer {
        let pointers: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert!(pointers.contains(&ptr), "{ptr} not in {p}");
    }
    p
}

pub(crate) async fn version(gw: &TestGateway) -> u64 {
    gw.admin_json(Method::GET, "/admin/status", None).await.1["config_version"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn route_crud_with_etags() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let r = gw
        .admin(
            Method::POST,
            "/admin/routes",
            Some(json!({"name": "api", "path": "/api", "backends": [{"url": a.url}]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], "/admin/routes/api");
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(r.headers()["x-config-version"], "1");
    let created: Value = r.json().await.unwrap();
    assert_eq!(
        created,
        json!({"name": "api", "path": "/api", "methods": [], "hosts": [], "strip_prefix": false, "preserve_host": false, "upstream": "api", "version": 1})
    );

    let r = gw.admin(Method::GET, "/admin/routes/api", None).await;
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(r.json::<Value>().await.unwrap(), created);

    // Merge-patch changes only what it names.
    let (status, patched) = gw
        .admin_json(
            Method::PATCH,
            "/admin/routes/api",
            Some(json!({"strip_prefix": true, "methods": ["GET"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["strip_prefix"], true);
    assert_eq!(patched["methods"], json!(["GET"]));
    assert_eq!(patched["path"], "/api");
    assert_eq!(patched["version"], 2);

    // PUT replaces the whole route (unset fields take their defaults).
    let (status, put) = gw
        .admin_json(
            Method::PUT,
            "/admin/routes/api",
            Some(json!({"path": "/v2", "upstream": "api"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["methods"], json!([]));
    assert_eq!(put["strip_prefix"], false);
    assert_eq!(put["path"], "/v2");
    assert_eq!(gw.get("/v2/x").await.0, StatusCode::OK);
    assert_eq!(gw.get("/api/x").await.0, StatusCode::NOT_FOUND);

    let (_, list) = gw.admin_json(Method::GET, "/admin/routes", None).await;
    assert_eq!(list["config_version"], 3);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let r = gw.admin(Method::DELETE, "/admin/routes/api", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["x-config-version"], "4");
    problem(
        gw.admin(Method::GET, "/admin/routes/api", None).await,
        StatusCode::NOT_FOUND,
        None,
    )
    .await;
    problem(
        gw.admin(Method::DELETE, "/admin/routes/api", None).await,
        StatusCode::NOT_FOUND,
        None,
    )
    .await;
}

#[tokio::test]
async fn upstreams_and_backends() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    let (status, up) = gw
        .admin_json(
            Method::POST,
            "/admin/upstreams",
            Some(json!({"name": "pool", "backends": [{"url": a.url, "weight": 2}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(up["strategy"], "round_robin");
    assert_eq!(
        up["timeouts"],
        json!({"connect_ms": 2000, "response_header_ms": 30000, "body_idle_ms": 60000})
    );
    assert_eq!(up["backends"][0]["weight"], 2);

    let r = gw
        .admin(
            Method::POST,
            "/admin/upstreams/pool/backends",
            Some(json!({"url": format!("{}/", b.url)})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let added: Value = r.json().await.unwrap();
    assert_eq!(added["url"], b.url, "trailing slash normalised away");
    assert_eq!(added["weight"], 1);
    assert_eq!(
        loc,
        format!("/admin/upstreams/pool/backends/{}", added["id"])
    );

    // The same URL twice in one upstream is a conflict.
    let r = gw
        .admin(
            Method::POST,
            "/admin/upstreams/pool/backends",
            Some(json!({"url": b.url})),
        )
        .await;
    problem(r, StatusCode::CONFLICT, Some("/url")).await;

    let (status, got) = gw.admin_json(Method::GET, &loc, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, added);
    let (_, list) = gw
        .admin_json(Method::GET, "/admin/upstreams/pool/backends", None)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    let (status, patched) = gw
        .admin_json(Method::PATCH, &loc, Some(json!({"weight": 7})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["weight"], 7);
    assert_eq!(patched["url"], b.url);

    gw.create_route(json!({"name": "r", "path": "/", "upstream": "pool"}))
        .await;
    // In use: cannot delete.
    let p = problem(
        gw.admin(Method::DELETE, "/admin/upstreams/pool", None)
            .await,
        StatusCode::CONFLICT,
        None,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains('r'), "{p}");

    let r = gw.admin(Method::DELETE, &loc, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(
        gw.admin(Method::GET, &loc, None).await,
        StatusCode::NOT_FOUND,
        None,
    )
    .await;

    // PUT an upstream: backends kept by URL keep their id.
    let a_id = up["backends"][0]["id"].clone();
    let (status, put) = gw
        .admin_json(
            Method::PUT,
            "/admin/upstreams/pool",
            Some(json!({"backends": [{"url": a.url, "weight": 3}, {"url": b.url}], "timeouts": {"connect_ms": 500}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["backends"][0]["id"], a_id);
    assert_eq!(put["backends"][0]["weight"], 3);
    assert_eq!(put["timeouts"]["connect_ms"], 500);
    assert_eq!(put["timeouts"]["response_header_ms"], 30000);

    let r = gw.admin(Method::DELETE, "/admin/routes/r", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = gw
        .admin(Method::DELETE, "/admin/upstreams/pool", None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_input_is_refused_with_named_fields_and_writes_nothing() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "taken", "path": "/taken", "backends": [{"url": a.url}]}))
        .await;
    let before = version(&gw).await;

    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"name": "x", "path": "/x", "upstream": "pool", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/colour",
        ),
        (
            json!({"name": 7, "path": "/x", "upstream": "pool"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/name",
        ),
        (
            json!({"name": "", "path": "/x", "upstream": "pool"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/name",
        ),
        (
            json!({"name": "x", "path": "x", "upstream": "pool"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/path",
        ),
        (
            json!({"name": "x", "path": "/a/../b", "upstream": "pool"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/path",
        ),
        (
            json!({"name": "x", "path": "/x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/upstream",
        ),
        (
            json!({"name": "x", "path": "/x", "upstream": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/upstream",
        ),
        (
            json!({"name": "x", "path": "/x", "methods": ["YEET"], "upstream": "taken"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/methods/0",
        ),
        (
            json!({"name": "x", "path": "/x", "backends": [{"url": "ftp://h"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/backends/0/url",
        ),
        (
            json!({"name": "x", "path": "/x", "backends": [{"url": "http://h:70000"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/backends/0/url",
        ),
        (
            json!({"name": "x", "path": "/x", "backends": [{"url": "http://h", "weight": 5000}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/backends/0/weight",
        ),
        (
            json!({"name": "x", "path": "/x", "backends": [{"url": "http://h", "weight": "heavy"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/backends/0/weight",
        ),
        (
            json!({"name": "taken", "path": "/y", "upstream": "taken"}),
            StatusCode::CONFLICT,
            "/name",
        ),
        (
            json!({"name": "dup", "path": "/taken", "upstream": "taken"}),
            StatusCode::CONFLICT,
            "/path",
        ),
        (
            json!(["taken", "/taken"]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
    ];
    for (body, status, pointer) in cases {
        let r = gw
            .admin(Method::POST, "/admin/routes", Some(body.clone()))
            .await;
        let p = problem(r, status, Some(pointer)).await;
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{body}: {p}");
    }

    // Not JSON at all.
    let r = gw
        .http
        .post(gw.admin_url("/admin/routes"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST, None).await;
    // Wrong media type.
    let r = gw
        .http
        .post(gw.admin_url("/admin/routes"))
        .body("name=x")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, None).await;
    // Over 1 MiB.
    let big =
        json!({"name": "x", "path": "/x", "upstream": "taken", "hosts": ["a".repeat(1024 * 1024)]});
    let r = gw.admin(Method::POST, "/admin/routes", Some(big)).await;
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, None).await;

    assert_eq!(version(&gw).await, before, "nothing was written");
    let (_, routes) = gw.admin_json(Method::GET, "/admin/routes", None).await;
    assert_eq!(routes["items"].as_array().unwrap().len(), 1);
}

/// A whole config may be far larger than a single resource (100,000
/// routes are about 17 MB), up to 64 MiB.
#[tokio::test]
async fn a_whole_config_may_be_larger_than_one_resource_up_to_its_own_limit() {
    let gw = TestGateway::start().await;
    let before = version(&gw).await;
    let routes = |n: usize, pad: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"name": format!("r{i}-{}", "x".repeat(pad)), "path": format!("/r{i}/{}", "p".repeat(pad)), "upstream": "u"}))
            .collect()
    };
    let doc = |routes: Vec<Value>| json!({"upstreams": [{"name": "u", "backends": [{"url": "http://127.0.0.1:9"}]}], "routes": routes});
    // Over a resource's limit, well within a config's.
    let over_one_mib = doc(routes(8_000, 50));
    assert!(over_one_mib.to_string().len() > 1024 * 1024 + 100_000);
    let r = gw
        .admin(Method::PUT, "/admin/config", Some(over_one_mib))
        .await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", &text[..text.len().min(300)]);
    let (_, listed) = gw.admin_json(Method::GET, "/admin/routes", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 8_000);
    let after = version(&gw).await;
    assert_ne!(after, before);

    // Over 64 MiB: refused, nothing written.
    let huge = doc(vec![
        json!({"name": "x".repeat(64 * 1024 * 1024), "path": "/", "upstream": "u"}),
    ]);
    let r = gw.admin(Method::PUT, "/admin/config", Some(huge)).await;
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, None).await;
    assert_eq!(version(&gw).await, after, "nothing was written");
}

#[tokio::test]
async fn stale_if_match_is_refused() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/r", "backends": [{"url": a.url}]}))
        .await;
    let send = |etag: &'static str| {
        gw.http
            .patch(gw.admin_url("/admin/routes/r"))
            .header("if-match", etag)
            .json(&json!({"strip_prefix": true}))
            .send()
    };
    assert_eq!(send("\"1\"").await.unwrap().status(), StatusCode::OK);
    // The route is now at version 2: the old tag is stale.
    problem(
        send("\"1\"").await.unwrap(),
        StatusCode::PRECONDITION_FAILED,
        None,
    )
    .await;
    problem(
        send("garbage").await.unwrap(),
        StatusCode::PRECONDITION_FAILED,
        None,
    )
    .await;
    assert_eq!(version(&gw).await, 2);
    let r = gw
        .http
        .delete(gw.admin_url("/admin/routes/r"))
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::PRECONDITION_FAILED, None).await;
    let r = gw
        .http
        .delete(gw.admin_url("/admin/routes/r"))
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn unknown_endpoints_and_methods_are_problems() {
    let gw = TestGateway::start().await;
    problem(
        gw.admin(Method::GET, "/admin/nope", None).await,
        StatusCode::NOT_FOUND,
        None,
    )
    .await;
    problem(
        gw.admin(Method::DELETE, "/admin/routes", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        None,
    )
    .await;
}

#[tokio::test]
async fn admin_token_is_required_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start_in(dir, Some("s3cret")).await;
    // The harness sends the token.
    let (status, _) = gw.admin_json(Method::GET, "/admin/routes", None).await;
    assert_eq!(status, StatusCode::OK);
    let url = gw.admin_url("/admin/routes");
    let r = gw.http.get(&url).send().await.unwrap();
    problem(r, StatusCode::UNAUTHORIZED, None).await;
    let r = gw.http.get(&url).bearer_auth("wrong").send().await.unwrap();
    problem(r, StatusCode::UNAUTHORIZED, None).await;
    let r = gw
        .http
        .post(&url)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED, None).await;
    // The admin API is not reachable through the proxy listener.
    assert_eq!(gw.get("/admin/routes").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_inline_route_update_leaves_its_upstream_saveable() {
    let gw = TestGateway::start().await;
    gw.create_route(
        json!({"name": "shop", "path": "/shop", "backends": [{"url": "http://127.0.0.1:9"}]}),
    )
    .await;
    let (status, _) = gw
        .admin_json(
            Method::PATCH,
            "/admin/upstreams/shop",
            Some(json!({"strategy": "consistent_hash", "hash_on": "client_ip"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = gw
        .admin_json(
            Method::PUT,
            "/admin/routes/shop",
            Some(json!({"path": "/shop", "backends": [{"url": "http://127.0.0.1:9"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, up) = gw
        .admin_json(
            Method::PATCH,
            "/admin/upstreams/shop",
            Some(json!({"retries": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{up}");
    assert_eq!(up["strategy"], "round_robin");
    assert!(up.get("hash_on").is_none(), "{up}");
    let (_, doc) = gw.admin_json(Method::GET, "/admin/config", None).await;
    let (status, again) = gw.admin_json(Method::PUT, "/admin/config", Some(doc)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
}
