//! Concurrent writers: serialised, never lost, never doubled.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Backend, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_creates_of_one_name_make_exactly_one() {
    let gw = Arc::new(TestGateway::start().await);
    let a = Backend::named("a").start().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let gw = Arc::clone(&gw);
        let body = json!({"name": "same", "path": format!("/p{i}"), "backends": [{"url": a.url}]});
        tasks.push(tokio::spawn(async move {
            gw.admin(Method::POST, "/admin/routes", Some(body))
                .await
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 49), "{statuses:?}");
    let (_, status) = gw.admin_json(Method::GET, "/admin/status", None).await;
    assert_eq!(status["config_version"], 1, "refused writes bump nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_patches_with_one_if_match_let_exactly_one_through() {
    let gw = Arc::new(TestGateway::start().await);
    let a = Backend::named("a").start().await;
    let created = gw
        .create_route(json!({"name": "r", "path": "/r", "backends": [{"url": a.url}]}))
        .await;
    let etag = format!("\"{}\"", created["version"]);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (gw, etag) = (Arc::clone(&gw), etag.clone());
        tasks.push(tokio::spawn(async move {
            gw.http
                .patch(gw.admin_url("/admin/routes/r"))
                .header("if-match", etag)
                .json(&json!({"hosts": [format!("h{i}.example")]}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let stale = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((ok, stale), (1, 19), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_without_if_match_are_all_applied() {
    let gw = Arc::new(TestGateway::start().await);
    let mut backends = Vec::new();
    for i in 0..10 {
        backends.push(json!({"url": format!("http://127.0.0.1:{}", 20000 + i)}));
    }
    let (status, up) = gw
        .admin_json(
            Method::POST,
            "/admin/upstreams",
            Some(json!({"name": "u", "backends": backends})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Ten writers each set the weight of their own backend: no lost update.
    let mut tasks = Vec::new();
    for (i, b) in up["backends"].as_array().unwrap().iter().enumerate() {
        let gw = Arc::clone(&gw);
        let path = format!("/admin/upstreams/u/backends/{}", b["id"]);
        tasks.push(tokio::spawn(async move {
            gw.admin(Method::PATCH, &path, Some(json!({"weight": 10 + i})))
                .await
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let (_, up) = gw.admin_json(Method::GET, "/admin/upstreams/u", None).await;
    let weights: Vec<u64> = up["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, (10..20).collect::<Vec<u64>>());
}
