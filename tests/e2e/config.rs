//! Whole-config export/import and --bootstrap.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Process, TestGateway};

fn without_version(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("version");
    v
}

fn document(a: &str, b: &str) -> Value {
    json!({
        "upstreams": [
            {"name": "api", "strategy": "weighted_round_robin",
             "backends": [{"url": a, "weight": 3}, {"url": b, "weight": 1}],
             "timeouts": {"connect_ms": 1500, "response_header_ms": 20000, "body_idle_ms": 15000},
             "health_check": {"path": "/healthz", "interval_ms": 5000, "timeout_ms": 500,
                              "healthy_threshold": 2, "unhealthy_threshold": 3, "expected_statuses": [200]},
             "outlier_detection": {"enabled": false, "consecutive_failures": 5, "base_ejection_ms": 10000,
                                   "max_ejection_percent": 50},
             "retries": 2, "fail_open": true, "tls": {"insecure_skip_verify": false}, "http2": false},
            {"name": "web", "strategy": "consistent_hash", "backends": [{"url": b, "weight": 1}],
             "timeouts": {"connect_ms": 2000, "response_header_ms": 30000, "body_idle_ms": 60000}, "hash_on": "header:x-user",
             "outlier_detection": {"enabled": true, "consecutive_failures": 5, "base_ejection_ms": 10000,
                                   "max_ejection_percent": 50},
             "retries": 1, "fail_open": false, "tls": {"server_name": "web.internal", "insecure_skip_verify": false},
             "http2": true, "owner_route": "web"}
        ],
        "routes": [
            {"name": "api", "path": "/api", "methods": ["GET", "POST"], "hosts": [], "strip_prefix": true,
             "preserve_host": false, "max_body_bytes": 1048576, "upstream": "api"},
            {"name": "web", "path": "/", "methods": [], "hosts": ["www.example"], "strip_prefix": false,
             "preserve_host": true, "upstream": "web"}
        ]
    })
}

#[tokio::test]
async fn export_of_an_import_is_identical() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    let doc = document(&a.url, &b.url);
    let r = gw
        .admin(Method::PUT, "/admin/config", Some(doc.clone()))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(r.headers()["x-config-version"], "1");
    let answered: Value = r.json().await.unwrap();
    assert_eq!(answered["version"], 1);
    assert_eq!(without_version(answered.clone()), doc);

    let r = gw.admin(Method::GET, "/admin/config", None).await;
    assert_eq!(r.headers()["etag"], "\"1\"");
    let exported: Value = r.json().await.unwrap();
    assert_eq!(exported, answered);

    // Re-importing the export changes nothing, not even the version.
    let (status, again) = gw
        .admin_json(Method::PUT, "/admin/config", Some(exported.clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, exported);

    // And it is live.
    assert_eq!(gw.get_json("/api/x").await.1["path"], "/x");
    let r = gw
        .http
        .get(gw.proxy_url("/"))
        .header("host", "www.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["backend"], "b");
    // The owned upstream goes with its route.
    let r = gw.admin(Method::DELETE, "/admin/routes/web", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, _) = gw
        .admin_json(Method::GET, "/admin/upstreams/web", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_bad_document_changes_nothing() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "keep", "path": "/keep", "backends": [{"url": a.url}]}))
        .await;
    let (_, before) = gw.admin_json(Method::GET, "/admin/config", None).await;

    let mut dangling = document(&a.url, "http://127.0.0.1:1");
    dangling["routes"][1]["upstream"] = json!("missing");
    let mut bad_url = document(&a.url, "http://127.0.0.1:1");
    bad_url["upstreams"][0]["backends"][1]["url"] = json!("gopher://x");
    let mut dup = document(&a.url, "http://127.0.0.1:1");
    dup["routes"][1]["name"] = json!("api");
    let mut bad_policy = document(&a.url, "http://127.0.0.1:1");
    bad_policy["routes"][0]["policies"] =
        json!({"cors": {"allow_origins": ["*"], "max_age_s": 86_401}});
    let mut clash = document(&a.url, "http://127.0.0.1:1");
    clash["routes"][1] =
        json!({"name": "clash", "path": "/api/", "methods": ["POST"], "upstream": "web"});
    clash["upstreams"][1]
        .as_object_mut()
        .unwrap()
        .remove("owner_route");
    let cases = [
        (
            dangling,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/routes/1/upstream",
        ),
        (
            bad_url,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/upstreams/0/backends/1/url",
        ),
        (
            bad_policy,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/routes/0/policies/cors/max_age_s",
        ),
        (dup, StatusCode::CONFLICT, "/routes/1/name"),
        (clash, StatusCode::CONFLICT, "/routes/1/path"),
        (
            json!({"routes": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/routes",
        ),
    ];
    for (doc, status, pointer) in cases {
        let (got, problem) = gw.admin_json(Method::PUT, "/admin/config", Some(doc)).await;
        assert_eq!(got, status, "{problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }
    // Stale If-Match.
    let r = gw
        .http
        .put(gw.admin_url("/admin/config"))
        .header("if-match", "\"0\"")
        .json(&document(&a.url, "http://127.0.0.1:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    let (_, after) = gw.admin_json(Method::GET, "/admin/config", None).await;
    assert_eq!(before, after);
    assert_eq!(gw.get("/keep").await.0, StatusCode::OK);
}

/// Route policies and timeouts go out in the export and come back in as
/// they were: a plain token is exported as its hash, which imports as the
/// same hash; a route that only redirects has no upstream.
#[tokio::test]
async fn policies_round_trip_through_export_and_import() {
    const TOKEN: &str = "letmein";
    const TOKEN_SHA256: &str = "1c8bfe8f801d79745c4631d09fff36c82aa37fc4cce4fc946683d7b336b63032";
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let mut doc = document(&a.url, "http://127.0.0.1:1");
    doc["routes"][0]["timeout_ms"] = json!(1500);
    doc["routes"][0]["policies"] = json!({
        "auth": {"header": "Authorization", "tokens": [TOKEN, {"sha256": "ab".repeat(32)}]},
        "ip_allow": ["127.0.0.0/8", "::1"],
        "rate_limit": {"key": "header:x-user", "requests_per_second": 5, "burst": 10},
        "cors": {"allow_origins": ["https://*.example.org"], "allow_credentials": true},
        "request_headers": {"remove": ["cookie"]},
        "response_headers": {"add": {"x-served-by": "switchyard"}}
    });
    doc["routes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "moved", "path": "/moved", "policies":
            {"redirect": {"status": 301, "location": "https://new.example{path}{query}"}}}));
    let (status, answered) = gw.admin_json(Method::PUT, "/admin/config", Some(doc)).await;
    assert_eq!(status, StatusCode::OK, "{answered}");
    let route = &answered["routes"][0];
    assert_eq!(route["timeout_ms"], 1500);
    assert_eq!(
        route["policies"]["auth"],
        json!({"header": "Authorization", "tokens": [{"sha256": TOKEN_SHA256}, {"sha256": "ab".repeat(32)}],
               "forward": false})
    );
    assert_eq!(route["policies"]["ip_allow"], json!(["127.0.0.0/8", "::1"]));
    assert_eq!(
        route["policies"]["cors"],
        json!({"allow_origins": ["https://*.example.org"], "allow_methods": [], "allow_headers": [],
               "expose_headers": [], "allow_credentials": true})
    );
    assert_eq!(
        answered["routes"][1],
        json!({"name": "moved", "path": "/moved", "methods": [], "hosts": [], "strip_prefix": false,
               "preserve_host": false, "policies":
               {"redirect": {"status": 301, "location": "https://new.example{path}{query}"}}})
    );
    // A route without policies shows none.
    assert!(answered["routes"][2].get("policies").is_none());
    assert!(!answered.to_string().contains(TOKEN));

    let exported: Value = gw
        .admin(Method::GET, "/admin/config", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(exported, answered);
    let r = gw
        .admin(Method::PUT, "/admin/config", Some(exported.clone()))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = format!("\"{}\"", exported["version"]);
    assert_eq!(
        r.headers()["etag"],
        etag.as_str(),
        "a no-op: the version stays"
    );
    let again: Value = r.json().await.unwrap();
    assert_eq!(again, exported, "a no-op: the version stays");
    let (_, read) = gw.admin_json(Method::GET, "/admin/config", None).await;
    assert_eq!(read, again);
}

#[tokio::test]
async fn bootstrap_applies_only_to_a_new_database() {
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bootstrap.json");
    std::fs::write(&file, document(&a.url, &b.url).to_string()).unwrap();
    let db = format!("sqlite://{}", dir.path().join("gw.db").display());
    let file_arg = file.to_str().unwrap();

    // One worker: the current-thread runtime serves admin, proxy and probes.
    let mut gw = Process::start(&db, &["--bootstrap", file_arg, "--workers", "1"]);
    let http = reqwest::Client::new();
    let first = gw.admin_json("/admin/config").await;
    assert_eq!(first["version"], 1);
    assert_eq!(without_version(first.clone()), document(&a.url, &b.url));
    // Its revision says where it came from.
    let revision = gw.admin_json("/admin/revisions/1").await;
    assert_eq!(revision["source"], "bootstrap");
    assert_eq!(revision["endpoint"], "--bootstrap");
    assert_eq!(revision["config"], first);
    let r = http
        .get(format!("http://{}/api/z", gw.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // An operator change, then a restart with the same flag: the file is ignored.
    let r = http
        .delete(format!("http://{}/admin/routes/api", gw.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    gw.signal("TERM");
    assert!(gw.wait(std::time::Duration::from_secs(15)).await.success());

    let gw = Process::start(&db, &["--bootstrap", file_arg]);
    let second = gw.admin_json("/admin/config").await;
    assert_eq!(second["version"], 2);
    assert_eq!(second["routes"].as_array().unwrap().len(), 1);
}

#[test]
fn an_invalid_bootstrap_file_stops_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"routes": [{"name": "r", "path": "nope", "upstream": "u"}]}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
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
        .env("SWITCHYARD_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.json") && err.contains("/routes/0/path"),
        "{err}"
    );
    // The file is checked before the database is opened.
    assert!(!dir.path().join("gw.db").exists());
}
