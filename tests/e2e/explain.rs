//! `GET /admin/explain`: the live router's answer for one request, with
//! what it passed over and why, checked against what the proxy does.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::problem;
use crate::common::{Backend, TestGateway};

async fn explain(gw: &TestGateway, query: &str) -> Value {
    let (status, v) = gw
        .admin_json(Method::GET, &format!("/admin/explain?{query}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn explain_names_the_winner_the_losers_and_the_backend_a_key_goes_to() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    gw.create_upstream(
        json!({"name": "users", "strategy": "consistent_hash", "hash_on": "header:x-user",
        "backends": [{"url": a.url, "weight": 3}, {"url": b.url, "weight": 1}]}),
    )
    .await;
    gw.create_route(
        json!({"name": "api", "path": "/api", "strip_prefix": true, "upstream": "users"}),
    )
    .await;
    gw.create_route(
        json!({"name": "api-posts", "path": "/api", "hosts": ["shop.example"],
        "methods": ["POST"], "upstream": "users"}),
    )
    .await;
    gw.create_route(json!({"name": "root", "path": "/", "upstream": "users"}))
        .await;
    gw.create_route(json!({"name": "ap", "path": "/ap", "upstream": "users"}))
        .await;

    let e = explain(
        &gw,
        "method=GET&url=http://Shop.example:8080/api/./cart?id=7",
    )
    .await;
    assert_eq!(e["normalized_path"], "/api/cart");
    assert_eq!(e["host"], "shop.example");
    let by_name = |name: &str| {
        e["considered"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["route"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not considered: {e}"))
    };
    let posts = by_name("api-posts");
    assert_eq!(
        (
            posts["host_match"].as_str(),
            posts["method_match"].as_bool()
        ),
        (Some("host"), Some(false))
    );
    assert_eq!(posts["reason"], "GET is not one of its methods");
    let root = by_name("root");
    assert_eq!(root["wins"], false);
    assert_eq!(root["reason"], "route \"api\" matches a longer prefix");
    assert_eq!(by_name("api")["wins"], true);
    let near = by_name("ap");
    assert_eq!(near["segment_match"], false);
    assert_eq!(
        near["reason"],
        "\"/ap\" ends inside the path segment \"api\": prefixes match whole segments"
    );
    let w = &e["winner"];
    assert_eq!(
        (w["route"].as_str(), w["upstream"].as_str()),
        (Some("api"), Some("users"))
    );
    assert_eq!(w["upstream_path"], "/cart?id=7");
    let shares: Vec<f64> = w["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["expected_share"].as_f64().unwrap())
        .collect();
    assert_eq!(shares, [0.75, 0.25]);

    // POST on the host goes to the route that lists it.
    let e = explain(&gw, "method=POST&path=/api/cart&host=shop.example").await;
    assert_eq!(e["winner"]["route"], "api-posts");
    assert_eq!(e["winner"]["upstream_path"], "/api/cart");

    // The key's backend is the one the proxy uses, and asking moves no
    // counter.
    let requests = |h: &Value| -> u64 {
        h["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["requests"].as_u64().unwrap())
            .sum()
    };
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let before = requests(&gw.health("users").await);
        let e = explain(
            &gw,
            &format!("url=http://localhost/api/x&header=X-User:%20{user}"),
        )
        .await;
        assert_eq!(
            requests(&gw.health("users").await),
            before,
            "explain sent nothing"
        );
        let expected = e["winner"]["hash_backend"].as_str().unwrap().to_string();
        let r = gw
            .http
            .get(gw.proxy_url("/api/x"))
            .header("x-user", user)
            .send()
            .await
            .unwrap();
        let answered: Value = r.json().await.unwrap();
        let url = if answered["backend"] == "a" {
            &a.url
        } else {
            &b.url
        };
        assert_eq!(&expected, url, "{user}");
    }

    // No route, a path the proxy refuses, bad parameters.
    let gw2 = TestGateway::start().await;
    let e = explain(&gw2, "url=http://h/x").await;
    assert_eq!(e["winner"], Value::Null);
    let e = explain(&gw, "path=relative/x").await;
    assert!(e["path_error"].is_string(), "{e}");
    for (query, name) in [
        ("", "url"),
        ("url=http://h/&method=G%20T", "method"),
        ("url=x&bogus=1", "bogus"),
    ] {
        let r = gw
            .admin(Method::GET, &format!("/admin/explain?{query}"), None)
            .await;
        problem(r, StatusCode::BAD_REQUEST, Some(name)).await;
    }
}
