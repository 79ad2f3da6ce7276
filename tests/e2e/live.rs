//! Config changes while traffic flows; persistence; graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Backend, TestGateway, eventually};

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    non_2xx: AtomicUsize,
    errors: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_200_changes_are_made() {
    const CLIENTS: usize = 8;
    const CHANGES: usize = 200;
    let gw = Arc::new(TestGateway::start().await);
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    let c = Backend::named("c").start().await;
    gw.create_route(
        json!({"name": "live", "path": "/live", "backends": [{"url": a.url}, {"url": b.url}]}),
    )
    .await;
    let (_, up) = gw
        .admin_json(Method::GET, "/admin/upstreams/live", None)
        .await;
    let a_id = up["backends"][0]["id"].as_u64().unwrap();
    let start_version = up["version"].as_u64().unwrap();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (gw, tally, stop) = (Arc::clone(&gw), Arc::clone(&tally), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = gw.proxy_url("/live/x");
            // Bounded: stops when told, or after 60 s whatever happens.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => tally.errors.fetch_add(1, Ordering::Relaxed),
                    },
                    Ok(_) => tally.non_2xx.fetch_add(1, Ordering::Relaxed),
                    Err(_) => tally.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Traffic is flowing before the first change.
    let flowing = eventually(Duration::from_secs(10), || async {
        (tally.ok.load(Ordering::Relaxed) >= CLIENTS).then_some(())
    })
    .await;
    assert!(flowing.is_some(), "clients never got going");

    let mut c_backend: Option<u64> = None;
    for i in 0..CHANGES {
        let (status, body) = match i % 5 {
            // A new weight each time (the same one would be a no-op).
            0 => {
                let path = format!("/admin/upstreams/live/backends/{a_id}");
                gw.admin_json(Method::PATCH, &path, Some(json!({"weight": 2 + i % 4})))
                    .await
            }
            1 => {
                let body = json!({"name": format!("other-{i}"), "path": format!("/other/{i}"), "backends": [{"url": c.url}]});
                gw.admin_json(Method::POST, "/admin/routes", Some(body))
                    .await
            }
            2 => {
                gw.admin_json(
                    Method::DELETE,
                    &format!("/admin/routes/other-{}", i - 1),
                    None,
                )
                .await
            }
            3 => {
                let r = gw
                    .admin_json(
                        Method::POST,
                        "/admin/upstreams/live/backends",
                        Some(json!({"url": c.url})),
                    )
                    .await;
                c_backend = r.1["id"].as_u64();
                r
            }
            _ => {
                let path = format!(
                    "/admin/upstreams/live/backends/{}",
                    c_backend.take().unwrap()
                );
                gw.admin_json(Method::DELETE, &path, None).await
            }
        };
        assert!(status.is_success(), "change {i}: {status} {body}");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let (_, status) = gw.admin_json(Method::GET, "/admin/status", None).await;
    assert_eq!(
        status["config_version"].as_u64().unwrap(),
        start_version + CHANGES as u64
    );
    let (ok, non_2xx, errors) = (
        tally.ok.load(Ordering::Relaxed),
        tally.non_2xx.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    eprintln!("{ok} requests succeeded during {CHANGES} changes");
    assert_eq!((non_2xx, errors), (0, 0), "{ok} ok");
    assert!(
        ok > CLIENTS * 10,
        "too little traffic to mean anything: {ok}"
    );
    assert!(c.hits() > 0, "the backend added live received traffic");
}

#[tokio::test]
async fn config_survives_a_restart_on_the_same_database() {
    let a = Backend::named("a").start().await;
    let gw = TestGateway::start().await;
    let (status, _) = gw
        .admin_json(
            Method::POST,
            "/admin/upstreams",
            Some(json!({"name": "pool", "backends": [{"url": a.url, "weight": 4}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    gw.create_route(
        json!({"name": "kept", "path": "/kept", "strip_prefix": true, "upstream": "pool"}),
    )
    .await;
    let (_, before_routes) = gw.admin_json(Method::GET, "/admin/routes", None).await;
    let (_, before_upstreams) = gw.admin_json(Method::GET, "/admin/upstreams", None).await;
    let dir = gw.stop().await;

    let gw = TestGateway::start_in(dir, None).await;
    let (_, after_routes) = gw.admin_json(Method::GET, "/admin/routes", None).await;
    let (_, after_upstreams) = gw.admin_json(Method::GET, "/admin/upstreams", None).await;
    assert_eq!(before_routes, after_routes);
    assert_eq!(before_upstreams, after_upstreams);
    // Live in the proxy straight after start, with no admin call.
    let (status, echo) = gw.get_json("/kept/there").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["path"], "/there");
    let (_, st) = gw.admin_json(Method::GET, "/admin/status", None).await;
    assert_eq!(st["config_version"], 2);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let gw = TestGateway::start().await;
    let slow = Backend::named("slow")
        .delay(Duration::from_millis(500))
        .start()
        .await;
    gw.create_route(json!({"name": "s", "path": "/", "backends": [{"url": slow.url}]}))
        .await;
    let url = gw.proxy_url("/drain");
    let proxy_addr = gw.gateway().proxy_addr;
    let in_flight = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    assert!(
        eventually(Duration::from_secs(5), || async {
            (slow.hits() == 1).then_some(())
        })
        .await
        .is_some()
    );
    let drained = gw.stop().await;
    drop(drained);
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);
    // The listener is closed: new connections are refused.
    assert!(tokio::net::TcpStream::connect(proxy_addr).await.is_err());
}
