//! Balancing strategies through the real proxy.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{Backend, TestGateway, eventually};

async fn names(gw: &TestGateway, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(gw.backend_of("/").await);
    }
    out
}

#[tokio::test]
async fn smooth_weighted_round_robin_interleaves_5_1_1() {
    let gw = TestGateway::start().await;
    let (a, b, c) = (
        Backend::named("a").start().await,
        Backend::named("b").start().await,
        Backend::named("c").start().await,
    );
    gw.create_upstream(json!({"name": "w", "strategy": "weighted_round_robin",
        "backends": [{"url": a.url, "weight": 5}, {"url": b.url, "weight": 1}, {"url": c.url, "weight": 1}]}))
        .await;
    gw.create_route(json!({"name": "w", "path": "/", "upstream": "w"}))
        .await;
    let seen = names(&gw, 14).await;
    assert_eq!(
        seen,
        [
            "a", "a", "b", "a", "c", "a", "a", "a", "a", "b", "a", "c", "a", "a"
        ]
    );
}

/// Send `total` GETs from `clients` concurrent clients; count per backend.
async fn spread(
    gw: &Arc<TestGateway>,
    clients: usize,
    total: usize,
    path: &str,
) -> std::collections::HashMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (gw, path) = (Arc::clone(gw), path.to_string());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..total / clients {
                seen.push(gw.backend_of(&path).await);
            }
            seen
        }));
    }
    let mut counts = std::collections::HashMap::new();
    for t in tasks {
        for name in t.await.unwrap() {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_slow_backend() {
    let gw = Arc::new(TestGateway::start().await);
    let fast = Backend::named("fast").start().await;
    let slow = Backend::named("slow")
        .delay(Duration::from_millis(200))
        .start()
        .await;
    gw.create_upstream(json!({"name": "lc", "strategy": "least_connections",
        "backends": [{"url": fast.url}, {"url": slow.url}]}))
        .await;
    gw.create_route(json!({"name": "lc", "path": "/", "upstream": "lc"}))
        .await;
    let counts = spread(&gw, 4, 80, "/").await;
    let (f, s) = (
        counts.get("fast").copied().unwrap_or(0),
        counts.get("slow").copied().unwrap_or(0),
    );
    // Round robin would give 40/40; the slow one holds its connections.
    assert!(f >= 60, "fast {f}, slow {s}");
    assert!(
        s >= 1,
        "the slow backend still gets some: fast {f}, slow {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_prefers_the_fast_backend_under_load() {
    let gw = Arc::new(TestGateway::start().await);
    let fast = Backend::named("fast").start().await;
    let slow = Backend::named("slow")
        .delay(Duration::from_millis(50))
        .start()
        .await;
    gw.create_upstream(json!({"name": "p", "strategy": "p2c_ewma",
        "backends": [{"url": fast.url}, {"url": slow.url}]}))
        .await;
    gw.create_route(json!({"name": "p", "path": "/", "upstream": "p"}))
        .await;
    let counts = spread(&gw, 4, 200, "/").await;
    let (f, s) = (
        counts.get("fast").copied().unwrap_or(0),
        counts.get("slow").copied().unwrap_or(0),
    );
    assert!(f as f64 >= 0.8 * (f + s) as f64, "fast {f}, slow {s}");
}

#[tokio::test]
async fn consistent_hash_keeps_keys_on_their_backend() {
    let gw = TestGateway::start().await;
    let backends = [
        Backend::named("a").start().await,
        Backend::named("b").start().await,
        Backend::named("c").start().await,
        Backend::named("d").start().await,
    ];
    let list: Vec<_> = backends.iter().map(|b| json!({"url": b.url})).collect();
    let up = gw
        .create_upstream(json!({"name": "h", "strategy": "consistent_hash", "hash_on": "header:x-user", "backends": list}))
        .await;
    gw.create_route(json!({"name": "h", "path": "/", "upstream": "h"}))
        .await;
    let who = |user: String| {
        let req = gw.http.get(gw.proxy_url("/")).header("x-user", user);
        async move {
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()["backend"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let mut before = Vec::new();
    for u in 0..60 {
        let first = who(format!("user-{u}")).await;
        assert_eq!(
            who(format!("user-{u}")).await,
            first,
            "a key sticks to its backend"
        );
        before.push(first);
    }
    let used: std::collections::HashSet<_> = before.iter().collect();
    assert!(used.len() >= 3, "keys spread: {used:?}");

    // Remove backend "c": its keys move, and about 1/N of all keys in all
    // (Maglev may move a few others).
    let c_id = up["backends"][2]["id"].as_u64().unwrap();
    let r = gw
        .admin(
            Method::DELETE,
            &format!("/admin/upstreams/h/backends/{c_id}"),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let mut moved = 0;
    for (u, was) in before.iter().enumerate() {
        let now = who(format!("user-{u}")).await;
        assert_ne!(now, "c");
        if &now != was {
            moved += 1;
        }
    }
    let had_c = before.iter().filter(|b| *b == "c").count();
    assert!(moved >= had_c);
    assert!(moved <= had_c + 6, "moved {moved} of 60, c had {had_c}");
}

#[tokio::test]
async fn weight_zero_drains_while_in_flight_requests_finish() {
    let gw = Arc::new(TestGateway::start().await);
    let slow = Backend::named("slow")
        .delay(Duration::from_millis(400))
        .start()
        .await;
    let other = Backend::named("other").start().await;
    let up = gw
        .create_upstream(json!({"name": "d", "backends": [{"url": slow.url}, {"url": other.url}]}))
        .await;
    gw.create_route(json!({"name": "d", "path": "/", "upstream": "d"}))
        .await;
    // Round robin: the first request goes to "slow".
    let in_flight = {
        let gw = Arc::clone(&gw);
        tokio::spawn(async move { gw.get_json("/").await })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            (slow.hits() == 1).then_some(())
        })
        .await
        .is_some()
    );
    let id = up["backends"][0]["id"].as_u64().unwrap();
    let (status, _) = gw
        .admin_json(
            Method::PATCH,
            &format!("/admin/upstreams/d/backends/{id}"),
            Some(json!({"weight": 0})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, echo) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        echo["backend"], "slow",
        "the in-flight request finished on the drained backend"
    );
    assert_eq!(names(&gw, 5).await, ["other"; 5]);
    assert_eq!(slow.hits(), 1);
}

#[tokio::test]
async fn weights_hold_when_a_backend_is_unhealthy() {
    let gw = TestGateway::start().await;
    let (a, b, c) = (
        Backend::named("a").start().await,
        Backend::named("b").start().await,
        Backend::named("c").start().await,
    );
    c.set_healthy(false);
    for strategy in ["weighted_round_robin", "least_connections"] {
        gw.create_upstream(json!({"name": strategy, "strategy": strategy,
            "health_check": {"interval_ms": 100, "timeout_ms": 100},
            "backends": [{"url": a.url, "weight": 3}, {"url": b.url, "weight": 1}, {"url": c.url, "weight": 1}]}))
            .await;
        let path = format!("/{strategy}");
        gw.create_route(json!({"name": strategy, "path": path, "upstream": strategy}))
            .await;
        let out = eventually(Duration::from_secs(5), || async {
            let h = gw.backend_health(strategy, &c.url).await;
            (h["state"] == "unhealthy").then_some(())
        })
        .await;
        assert!(out.is_some(), "{strategy}: c never became unhealthy");
        let mut counts = std::collections::HashMap::new();
        for _ in 0..1000 {
            *counts.entry(gw.backend_of(&path).await).or_insert(0) += 1;
        }
        let share = |name: &str| counts.get(name).copied().unwrap_or(0) as f64 / 1000.0;
        // 3:1 of what is left, not 80/20 (c's turn falling to a).
        assert!(
            (share("a") - 0.75).abs() <= 0.02 && (share("b") - 0.25).abs() <= 0.02,
            "{strategy}: {counts:?}"
        );
        assert_eq!(share("c"), 0.0, "{strategy}: {counts:?}");
    }
}
