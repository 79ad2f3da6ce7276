//! The operator's time machine: revisions (who, why, what), their diffs,
//! one-call rollback, dry runs with their traffic effect, and changes that
//! change nothing.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{problem, version};
use crate::common::{Backend, TestGateway, eventually};

/// An admin request with extra headers.
async fn send(
    gw: &TestGateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = gw.http.request(method, gw.admin_url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn revisions(gw: &TestGateway, query: &str) -> Vec<Value> {
    let (status, v) = gw
        .admin_json(Method::GET, &format!("/admin/revisions{query}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

async fn weight(gw: &TestGateway, upstream: &str, id: u64, weight: u32) -> (StatusCode, Value) {
    gw.admin_json(
        Method::PATCH,
        &format!("/admin/upstreams/{upstream}/backends/{id}"),
        Some(json!({ "weight": weight })),
    )
    .await
}

#[tokio::test]
async fn every_change_leaves_a_revision_saying_who_why_and_what() {
    let gw = TestGateway::start().await;
    let r = send(
        &gw,
        Method::POST,
        "/admin/upstreams",
        &[("X-Change-Comment", "the api pool, ticket OPS-7")],
        Some(json!({"name": "api", "backends": [{"url": "http://127.0.0.1:9001"}, {"url": "http://127.0.0.1:9002"}]})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    gw.create_route(json!({"name": "api", "path": "/api", "upstream": "api"}))
        .await;
    assert_eq!(weight(&gw, "api", 2, 5).await.0, StatusCode::OK);

    let all = revisions(&gw, "").await;
    let versions: Vec<u64> = all.iter().map(|r| r["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [3, 2, 1], "newest first");
    let first = &all[2];
    assert_eq!(first["source"], "api");
    assert_eq!(first["endpoint"], "POST /admin/upstreams");
    assert_eq!(first["comment"], "the api pool, ticket OPS-7");
    assert!(
        first["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{first}"
    );
    assert!(first["at_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(first["summary"]["upstreams"]["added"], json!(["api"]));
    assert_eq!(all[1]["summary"]["routes"]["added"], json!(["api"]));
    assert_eq!(
        all[0]["endpoint"],
        "PATCH /admin/upstreams/{name}/backends/{id}"
    );
    assert_eq!(all[0]["summary"]["upstreams"]["changed"], json!(["api"]));
    assert_eq!(all[0]["comment"], Value::Null);

    // Pages: `limit`, then `before` the last one seen.
    let page = revisions(&gw, "?limit=2").await;
    assert_eq!(page.len(), 2);
    let rest = revisions(&gw, "?limit=2&before=2").await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["version"], 1);

    // A revision holds the whole config at its version.
    let (status, one) = gw.admin_json(Method::GET, "/admin/revisions/1", None).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["config"]["routes"], json!([]));
    assert_eq!(one["config"]["upstreams"][0]["backends"][1]["weight"], 1);
    let (_, three) = gw.admin_json(Method::GET, "/admin/revisions/3", None).await;
    let (_, live) = gw.admin_json(Method::GET, "/admin/config", None).await;
    assert_eq!(
        three["config"], live,
        "the newest revision is the live config"
    );

    // The diff from the revision before, as a JSON Patch.
    let (status, diff) = gw
        .admin_json(Method::GET, "/admin/revisions/3/diff", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(diff["from"], 2);
    assert_eq!(
        diff["patch"],
        json!([{"op": "replace", "path": "/upstreams/0/backends/1/weight", "value": 5}])
    );
    let (_, diff) = gw
        .admin_json(Method::GET, "/admin/revisions/3/diff?from=0", None)
        .await;
    assert_eq!(diff["summary"]["routes"]["added"], json!(["api"]));
    assert_eq!(diff["summary"]["upstreams"]["added"], json!(["api"]));

    // Bad parameters are named; a comment too long changes nothing.
    let before = version(&gw).await;
    let long = "x".repeat(257);
    let r = send(
        &gw,
        Method::PATCH,
        "/admin/upstreams/api/backends/1",
        &[("X-Change-Comment", &long)],
        Some(json!({"weight": 9})),
    )
    .await;
    problem(r, StatusCode::BAD_REQUEST, Some("X-Change-Comment")).await;
    let r = send(&gw, Method::GET, "/admin/revisions?limit=zero", &[], None).await;
    problem(r, StatusCode::BAD_REQUEST, Some("limit")).await;
    let r = send(&gw, Method::GET, "/admin/revisions/99", &[], None).await;
    problem(r, StatusCode::NOT_FOUND, None).await;
    assert_eq!(version(&gw).await, before);
}

#[tokio::test]
async fn a_change_that_changes_nothing_makes_no_revision() {
    let gw = TestGateway::start().await;
    gw.create_upstream(
        json!({"name": "u", "backends": [{"url": "http://127.0.0.1:9001", "weight": 2}]}),
    )
    .await;
    gw.create_route(json!({"name": "r", "path": "/", "upstream": "u"}))
        .await;
    let before = version(&gw).await;
    let (status, b) = weight(&gw, "u", 1, 2).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["version"], 1, "the backend as it was");
    let (_, export) = gw.admin_json(Method::GET, "/admin/config", None).await;
    let r = gw
        .admin(Method::PUT, "/admin/config", Some(export.clone()))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-config-version"], before.to_string().as_str());
    let (status, _) = gw
        .admin_json(
            Method::PUT,
            "/admin/routes/r",
            Some(json!({"path": "/", "upstream": "u"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        version(&gw).await,
        before,
        "no version bump, no new snapshot"
    );
    assert_eq!(revisions(&gw, "").await.len() as u64, before);
}

#[tokio::test]
async fn a_dry_run_says_what_would_change_and_changes_nothing() {
    let gw = TestGateway::start().await;
    gw.create_upstream(json!({"name": "api", "strategy": "weighted_round_robin",
        "backends": [{"url": "http://127.0.0.1:9001", "weight": 3}, {"url": "http://127.0.0.1:9002", "weight": 1}]}))
        .await;
    let before = version(&gw).await;
    let (status, dry) = gw
        .admin_json(
            Method::PATCH,
            "/admin/upstreams/api/backends/2?dry_run=true",
            Some(json!({"weight": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["no_op"], false);
    assert_eq!(dry["config_version"], before);
    assert_eq!(dry["summary"]["upstreams"]["changed"], json!(["api"]));
    assert_eq!(
        dry["patch"],
        json!([{"op": "replace", "path": "/upstreams/0/backends/1/weight", "value": 3}])
    );
    let shares: Vec<(f64, f64)> = dry["traffic"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["share_before"].as_f64().unwrap(),
                b["share_after"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shares, [(0.75, 0.5), (0.25, 0.5)]);
    assert_eq!(version(&gw).await, before);
    assert_eq!(revisions(&gw, "").await.len() as u64, before);
    let (_, b) = gw
        .admin_json(Method::GET, "/admin/upstreams/api/backends/2", None)
        .await;
    assert_eq!(b["weight"], 1, "nothing written");

    // A dry run of a bad change gets the real change's error.
    for dry in ["?dry_run=true", ""] {
        let r = gw
            .admin(
                Method::PATCH,
                &format!("/admin/upstreams/api/backends/2{dry}"),
                Some(json!({"weight": 5000})),
            )
            .await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("/weight")).await;
    }
    let r = gw
        .admin(Method::DELETE, "/admin/upstreams/nope?dry_run=true", None)
        .await;
    problem(r, StatusCode::NOT_FOUND, None).await;
    let r = gw
        .admin(Method::DELETE, "/admin/upstreams/api?dry_run=maybe", None)
        .await;
    problem(r, StatusCode::BAD_REQUEST, Some("dry_run")).await;

    // The whole config too: removing the upstream would send it nothing.
    let (status, dry) = gw
        .admin_json(
            Method::PUT,
            "/admin/config?dry_run=true",
            Some(json!({"upstreams": [], "routes": []})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["summary"]["upstreams"]["removed"], json!(["api"]));
    assert_eq!(dry["traffic"][0]["backends"][0]["share_after"], 0.0);
    assert_eq!(version(&gw).await, before);
    let (_, live) = gw
        .admin_json(Method::GET, "/admin/upstreams/api", None)
        .await;
    assert_eq!(live["name"], "api");
}

#[tokio::test]
async fn a_rollback_restores_a_revision_and_keeps_the_backends_live_state() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    gw.create_upstream(json!({"name": "api", "strategy": "weighted_round_robin",
        "backends": [{"url": a.url, "weight": 3}, {"url": b.url, "weight": 1}],
        "health_check": {"interval_ms": 100, "timeout_ms": 100}}))
        .await;
    gw.create_route(json!({"name": "api", "path": "/", "upstream": "api"}))
        .await;
    let good = version(&gw).await;
    eventually(Duration::from_secs(10), || async {
        (gw.backend_health("api", &a.url).await["state"] == "healthy").then_some(())
    })
    .await
    .expect("a healthy");
    for _ in 0..8 {
        gw.backend_of("/x").await;
    }
    let since = gw.backend_health("api", &a.url).await["since_unix_ms"].clone();
    let requests = gw.backend_health("api", &a.url).await["requests"]
        .as_u64()
        .unwrap();
    assert!(requests >= 6, "{requests}");

    // A bad change: everything to b.
    assert_eq!(weight(&gw, "api", 1, 0).await.0, StatusCode::OK);
    let bad = version(&gw).await;
    assert_eq!(gw.backend_of("/x").await, "b");

    // Rolling back with a stale If-Match is refused.
    let path = format!("/admin/revisions/{good}/rollback");
    let r = send(&gw, Method::POST, &path, &[("If-Match", "\"1\"")], None).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = send(
        &gw,
        Method::POST,
        &path,
        &[
            ("If-Match", &format!("\"{bad}\"")),
            ("X-Change-Comment", "undo the drain"),
        ],
        None,
    )
    .await;
    let (status, config) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["version"], bad + 1);
    assert_eq!(config["upstreams"][0]["backends"][0]["weight"], 3);
    let newest = &revisions(&gw, "?limit=1").await[0];
    assert_eq!(newest["source"], "rollback");
    assert_eq!(newest["comment"], "undo the drain");
    assert_eq!(
        newest["endpoint"],
        "POST /admin/revisions/{version}/rollback"
    );
    // Live at once, and the backends kept their health and counters.
    let mut seen = std::collections::HashMap::new();
    for _ in 0..8 {
        *seen.entry(gw.backend_of("/x").await).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&6), "{seen:?}");
    let after = gw.backend_health("api", &a.url).await;
    assert_eq!(after["state"], "healthy");
    assert_eq!(after["since_unix_ms"], since);
    assert!(
        after["requests"].as_u64().unwrap() >= requests + 6,
        "{after}"
    );

    // Rolling back to the live config changes nothing.
    let r = send(&gw, Method::POST, &path, &[], None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(version(&gw).await, bad + 1);
}

#[tokio::test]
async fn old_revisions_are_pruned_and_a_config_that_no_longer_holds_is_refused() {
    let gw = TestGateway::start_with(|s| s.revision_retention = 3).await;
    let ca = gw.dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    gw.create_upstream(
        json!({"name": "u", "backends": [{"url": "https://127.0.0.1:9443"}],
        "tls": {"ca_file": ca.to_str().unwrap()}}),
    )
    .await;
    let with_ca = version(&gw).await;
    let (status, v) = gw
        .admin_json(
            Method::PUT,
            "/admin/upstreams/u",
            Some(json!({"backends": [{"url": "https://127.0.0.1:9443"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for w in [2, 3, 4] {
        assert_eq!(weight(&gw, "u", 1, w).await.0, StatusCode::OK);
    }
    let kept: Vec<u64> = revisions(&gw, "")
        .await
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, [5, 4, 3]);
    let r = gw
        .admin(
            Method::POST,
            &format!("/admin/revisions/{with_ca}/rollback"),
            None,
        )
        .await;
    problem(r, StatusCode::NOT_FOUND, None).await;
    // What is kept is whole: the oldest kept revision rebuilds exactly.
    let (_, three) = gw.admin_json(Method::GET, "/admin/revisions/3", None).await;
    assert_eq!(three["config"]["upstreams"][0]["backends"][0]["weight"], 2);

    // A revision whose CA file is gone cannot come back.
    let gw2 = TestGateway::start().await;
    let ca2 = gw2.dir.path().join("ca.pem");
    std::fs::write(&ca2, cert.cert.pem()).unwrap();
    gw2.create_upstream(
        json!({"name": "u", "backends": [{"url": "https://127.0.0.1:9443"}],
        "tls": {"ca_file": ca2.to_str().unwrap()}}),
    )
    .await;
    let (status, _) = gw2
        .admin_json(
            Method::PUT,
            "/admin/upstreams/u",
            Some(json!({"backends": [{"url": "https://127.0.0.1:9443"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    std::fs::remove_file(&ca2).unwrap();
    let before = version(&gw2).await;
    let r = gw2
        .admin(Method::POST, "/admin/revisions/1/rollback", None)
        .await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert!(p.to_string().contains("ca_file"), "{p}");
    assert_eq!(version(&gw2).await, before, "nothing changed");
}

/// A CA file removed while an upstream uses it: another upstream with the
/// same TLS settings finds the client in use, and is refused because the
/// file is gone, as it would be at the next start; nothing changes.
#[tokio::test]
async fn a_ca_file_gone_while_in_use_is_refused_to_another_upstream() {
    let gw = TestGateway::start().await;
    let ca = gw.dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let upstream = |name: &str| {
        json!({"name": name, "backends": [{"url": "https://127.0.0.1:9443"}],
        "tls": {"ca_file": ca.to_str().unwrap()}})
    };
    gw.create_upstream(upstream("u")).await;
    std::fs::remove_file(&ca).unwrap();
    let before = version(&gw).await;
    let r = gw
        .admin(Method::POST, "/admin/upstreams", Some(upstream("v")))
        .await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    assert!(p.to_string().contains("ca_file"), "{p}");
    assert_eq!(version(&gw).await, before, "nothing changed");
}
