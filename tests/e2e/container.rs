//! What a container needs of the gateway: the metrics listener (`/metrics`,
//! `/healthz`, `/readyz`, nothing else) and a health-check client in the
//! binary itself.

use std::time::Duration;

use serde_json::json;

use crate::common::{Backend, TestGateway, eventually};

async fn get(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn the_metrics_listener_serves_metrics_and_health_and_nothing_else() {
    let gw =
        TestGateway::start_with(|s| s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    assert_eq!(gw.get("/").await.0, 200);
    let base = format!(
        "http://{}",
        gw.gateway().metrics_addr.expect("a metrics listener")
    );
    assert_eq!(get(format!("{base}/healthz")).await, (200, "ok\n".into()));
    assert_eq!(get(format!("{base}/readyz")).await, (200, "ready\n".into()));
    let (status, metrics) = get(format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    for family in [
        "switchyard_config_version",
        "switchyard_requests_total",
        "switchyard_config_publish_duration_seconds",
    ] {
        assert!(metrics.contains(family), "{family} missing");
    }
    // No admin API behind it, token or not.
    for path in ["/admin/routes", "/admin/status", "/admin/config", "/"] {
        assert_eq!(get(format!("{base}{path}")).await.0, 404, "{path}");
    }
    let posted = reqwest::Client::new()
        .post(format!("{base}/admin/routes"))
        .json(&json!({"name": "x", "path": "/x", "backends": [{"url": a.url}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 404);
    // The admin listener keeps /metrics too.
    assert!(gw.metrics().await.contains("switchyard_config_version"));
}

/// Once a shutdown drains, /readyz says so (a load balancer stops sending)
/// while /healthz still says the process is up.
#[tokio::test]
async fn readyz_turns_503_while_draining() {
    let slow = Backend::named("slow")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let gw =
        TestGateway::start_with(|s| s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": slow.url}]}))
        .await;
    let base = format!("http://{}", gw.gateway().metrics_addr.unwrap());
    let in_flight = tokio::spawn(reqwest::get(gw.proxy_url("/slow")));
    let started = eventually(Duration::from_secs(5), || async {
        (slow.hits() == 1).then_some(())
    })
    .await;
    assert!(started.is_some());
    let stopping = tokio::spawn(gw.shutdown());
    let draining = eventually(Duration::from_secs(5), || {
        let url = format!("{base}/readyz");
        async move {
            let (status, body) = get(url).await;
            (status == 503 && body == "draining\n").then_some(())
        }
    })
    .await;
    assert!(draining.is_some(), "/readyz never said draining");
    assert_eq!(get(format!("{base}/healthz")).await.0, 200);
    assert_eq!(in_flight.await.unwrap().unwrap().status(), 200);
    stopping.await.unwrap();
}

#[tokio::test]
async fn the_binary_checks_health_itself() {
    let gw =
        TestGateway::start_with(|s| s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let url = format!("http://{}/healthz", gw.gateway().metrics_addr.unwrap());
    let run = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["healthcheck", &url, "--timeout-ms", "2000"])
            .output()
            .unwrap()
    };
    let ok = tokio::task::spawn_blocking(move || run(url)).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dead = crate::common::backend::dead_url().await;
    let failed = tokio::task::spawn_blocking(move || run(format!("{dead}/healthz")))
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    let not_ok = format!("http://{}/nope", gw.gateway().metrics_addr.unwrap());
    let failed = tokio::task::spawn_blocking(move || run(not_ok))
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("404"));
}
