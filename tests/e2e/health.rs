//! Health: passive ejection, active checks, retries, state that survives
//! config changes, fail-open/closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Backend, TestGateway, eventually};

#[tokio::test]
async fn a_killed_backend_is_ejected_after_bounded_failures_and_readmitted() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    gw.create_upstream(json!({"name": "u", "retries": 0,
        "outlier_detection": {"consecutive_failures": 3, "base_ejection_ms": 300},
        "backends": [{"url": a.url}, {"url": b.url}]}))
        .await;
    gw.create_route(json!({"name": "u", "path": "/", "upstream": "u"}))
        .await;
    assert_eq!(gw.get("/").await.0, StatusCode::OK);
    a.kill();
    // Without retries a client sees the failures; they stop after 3.
    let mut failures = 0;
    for _ in 0..30 {
        if gw.get("/").await.0 != StatusCode::OK {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "exactly consecutive_failures requests failed");
    let h = gw.backend_health("u", &a.url).await;
    assert_eq!(h["ejections"], 1, "{h}");

    // It comes back once the ejection period is over and it answers again.
    let a = a.restart().await;
    let back = eventually(Duration::from_secs(10), || async {
        let _ = gw.get("/").await;
        (a.hits() > 0).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "the returned backend never got traffic again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_under_load_costs_clients_nothing() {
    let gw = Arc::new(TestGateway::start().await);
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    let c = Backend::named("c").start().await;
    gw.create_upstream(
        json!({"name": "u", "backends": [{"url": a.url}, {"url": b.url}, {"url": c.url}]}),
    )
    .await;
    gw.create_route(json!({"name": "u", "path": "/", "upstream": "u"}))
        .await;

    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (gw, ok, bad, stop) = (
            Arc::clone(&gw),
            Arc::clone(&ok),
            Arc::clone(&bad),
            Arc::clone(&stop),
        );
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                let good = match http.get(gw.proxy_url("/")).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            (ok.load(Ordering::Relaxed) > 200).then_some(())
        })
        .await
        .is_some()
    );
    b.kill();
    let before = ok.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(10), || async {
            (ok.load(Ordering::Relaxed) > before + 500).then_some(())
        })
        .await
        .is_some()
    );
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!("{ok} ok, {bad} failed with one of three backends killed");
    assert_eq!(bad, 0, "{ok} ok");
    assert!(a.hits() > 0 && c.hits() > 0);
}

#[tokio::test]
async fn active_checks_flip_health_and_state_survives_a_weight_patch() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    let up = gw
        .create_upstream(json!({"name": "u",
            "health_check": {"interval_ms": 100, "timeout_ms": 100, "healthy_threshold": 2, "unhealthy_threshold": 2},
            "backends": [{"url": a.url}, {"url": b.url}]}))
        .await;
    gw.create_route(json!({"name": "u", "path": "/", "upstream": "u"}))
        .await;
    // Probed at once: healthy after the first probe.
    let healthy = eventually(Duration::from_secs(5), || async {
        let h = gw.backend_health("u", &a.url).await;
        (h["state"] == "healthy").then_some(h)
    })
    .await
    .expect("a becomes healthy");
    assert_eq!(healthy["last_probe_result"], "ok 200");

    a.set_healthy(false);
    let sick = eventually(Duration::from_secs(5), || async {
        let h = gw.backend_health("u", &a.url).await;
        (h["state"] == "unhealthy").then_some(h)
    })
    .await
    .expect("a becomes unhealthy");
    assert_eq!(sick["last_probe_result"], "status 503");
    assert!(sick["consecutive_failures"].as_u64().unwrap() >= 2);
    // No traffic to an unhealthy backend.
    let hits = a.hits();
    for _ in 0..6 {
        assert_eq!(gw.backend_of("/").await, "b");
    }
    assert_eq!(a.hits(), hits);

    // A weight change, another route, a timeout change: health untouched.
    let a_id = up["backends"][0]["id"].as_u64().unwrap();
    let path = format!("/admin/upstreams/u/backends/{a_id}");
    assert_eq!(
        gw.admin_json(Method::PATCH, &path, Some(json!({"weight": 5})))
            .await
            .0,
        StatusCode::OK
    );
    gw.create_route(json!({"name": "other", "path": "/other", "upstream": "u"}))
        .await;
    let (status, _) = gw
        .admin_json(
            Method::PATCH,
            "/admin/upstreams/u",
            Some(json!({"timeouts": {"connect_ms": 900}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let after = gw.backend_health("u", &a.url).await;
    assert_eq!(after["state"], "unhealthy", "{after}");
    assert_eq!(
        after["since_unix_ms"], sick["since_unix_ms"],
        "the flip time is kept"
    );
    assert!(after["consecutive_failures"].as_u64() >= sick["consecutive_failures"].as_u64());
    assert_eq!(after["weight"], 5);

    // Recovery needs healthy_threshold passing probes.
    a.set_healthy(true);
    let back = eventually(Duration::from_secs(5), || async {
        let h = gw.backend_health("u", &a.url).await;
        (h["state"] == "healthy").then_some(h)
    })
    .await
    .expect("a recovers");
    assert!(back["consecutive_successes"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn health_checks_start_at_once_and_stop_for_a_removed_backend() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    let up = gw
        .create_upstream(
            json!({"name": "u", "health_check": {"interval_ms": 60000, "timeout_ms": 1000},
            "backends": [{"url": a.url}]}),
        )
        .await;
    assert_eq!(up["health_check"]["path"], "/healthz");
    // Added live with a 60 s interval: still probed right away.
    let (status, added) = gw
        .admin_json(
            Method::POST,
            "/admin/upstreams/u/backends",
            Some(json!({"url": b.url})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        eventually(Duration::from_secs(5), || async {
            (b.health_hits() >= 1).then_some(())
        })
        .await
        .is_some()
    );

    // Fast probes, then removal: probing stops.
    let (status, _) = gw
        .admin_json(
            Method::PATCH,
            "/admin/upstreams/u",
            Some(json!({"health_check": {"interval_ms": 100, "timeout_ms": 100}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = b.health_hits();
    assert!(
        eventually(Duration::from_secs(5), || async {
            (b.health_hits() >= seen + 3).then_some(())
        })
        .await
        .is_some()
    );
    let path = format!("/admin/upstreams/u/backends/{}", added["id"]);
    assert_eq!(
        gw.admin(Method::DELETE, &path, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let at_removal = b.health_hits();
    // Proving an absence takes waiting: 8 intervals.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        b.health_hits() <= at_removal + 1,
        "{} probes after removal",
        b.health_hits() - at_removal
    );
    assert!(
        a.health_hits() >= 3,
        "the remaining backend is still probed"
    );
}

#[tokio::test]
async fn no_healthy_backend_is_503_unless_the_upstream_fails_open() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    a.set_healthy(false);
    gw.create_upstream(
        json!({"name": "u", "health_check": {"interval_ms": 100, "timeout_ms": 100},
        "backends": [{"url": a.url}]}),
    )
    .await;
    gw.create_route(json!({"name": "u", "path": "/", "upstream": "u"}))
        .await;
    let closed = eventually(Duration::from_secs(5), || async {
        let (status, body) = gw.get_json("/").await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await
    .expect("503 once the only backend is unhealthy");
    assert_eq!(closed["error"], "no_backend");
    let (status, _) = gw
        .admin_json(
            Method::PATCH,
            "/admin/upstreams/u",
            Some(json!({"fail_open": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        gw.backend_of("/").await,
        "a",
        "failing open sends traffic anyway"
    );
}

/// A backend that reads whatever arrives and then closes the connection
/// without answering. Returns its URL and a count of connections.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Read the head and some body, then hang up.
                let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
            });
        }
    });
    (url, conns)
}

#[tokio::test]
async fn a_refused_post_is_retried_with_its_body_on_another_backend() {
    let gw = TestGateway::start().await;
    let live = Backend::named("live").start().await;
    let dead = crate::common::backend::dead_url().await;
    // Round robin starts with the dead one.
    gw.create_upstream(
        json!({"name": "u", "retries": 1, "backends": [{"url": dead}, {"url": live.url}]}),
    )
    .await;
    gw.create_route(json!({"name": "u", "path": "/", "upstream": "u"}))
        .await;
    let r = gw
        .http
        .post(gw.proxy_url("/submit"))
        .body("payload-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["backend"], "live");
    assert_eq!(
        echo["body"], "payload-123",
        "the body was not lost by the failed attempt"
    );
}

#[tokio::test]
async fn a_refused_get_is_retried_with_the_next_backends_host() {
    let gw = TestGateway::start().await;
    let live = Backend::named("live").start().await;
    let dead = crate::common::backend::dead_url().await;
    // Round robin starts with the dead one, in both upstreams.
    for (name, path, preserve) in [("moved", "/moved", false), ("kept", "/kept", true)] {
        gw.create_upstream(
            json!({"name": name, "retries": 1, "backends": [{"url": dead}, {"url": live.url}]}),
        )
        .await;
        gw.create_route(json!({"name": name, "path": path, "upstream": name,
            "preserve_host": preserve}))
            .await;
    }
    let get = |path: &str| {
        let url = gw.proxy_url(path);
        let http = gw.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    // The second attempt's head names the live backend, not the dead one.
    let echo = get("/moved/page?x=1").await;
    assert_eq!(echo["backend"], "live");
    assert_eq!(echo["headers"]["host"], live.addr.to_string(), "{echo}");
    assert_eq!(
        (echo["path"].as_str(), echo["query"].as_str()),
        (Some("/moved/page"), Some("x=1"))
    );
    // `preserve_host`: the client's Host on every attempt.
    let echo = get("/kept").await;
    assert_eq!(echo["backend"], "live");
    assert_eq!(
        echo["headers"]["host"],
        gw.gateway().proxy_addr.to_string(),
        "{echo}"
    );
    assert_eq!(live.hits(), 2);
}

#[tokio::test]
async fn a_request_whose_body_was_sent_is_never_retried() {
    let gw = TestGateway::start().await;
    let (hole, conns) = black_hole().await;
    let live = Backend::named("live").start().await;
    gw.create_upstream(
        json!({"name": "u", "retries": 1, "backends": [{"url": hole}, {"url": live.url}]}),
    )
    .await;
    gw.create_route(json!({"name": "u", "path": "/", "upstream": "u"}))
        .await;
    // PUT is idempotent, but its body went out: no second attempt.
    let r = gw
        .http
        .put(gw.proxy_url("/x"))
        .body("x".repeat(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    assert_eq!(live.hits(), 0, "not retried on the other backend");
    // GETs without a body: round robin sends one of these two to the black
    // hole, which fails the same way, and that one is retried on "live".
    let holes = conns.load(Ordering::SeqCst);
    for _ in 0..2 {
        let r = gw.http.get(gw.proxy_url("/y")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        holes + 1,
        "one GET reached the black hole"
    );
    assert_eq!(live.hits(), 2, "both GETs were answered by live");
    // And a POST (not idempotent) that reached a backend is not.
    let before = live.hits();
    let hole_first = conns.load(Ordering::SeqCst);
    let mut saw_502 = false;
    for _ in 0..2 {
        let r = gw
            .http
            .post(gw.proxy_url("/z"))
            .body("")
            .send()
            .await
            .unwrap();
        saw_502 |= r.status() == StatusCode::BAD_GATEWAY;
    }
    assert!(saw_502 && conns.load(Ordering::SeqCst) > hole_first);
    assert_eq!(
        live.hits(),
        before + 1,
        "only the POST that went to live itself"
    );
}
