//! Passive health without active checks: a backend that fails on real
//! traffic shows it (`ejected`, or `failing` where it cannot be ejected)
//! in the status views and metrics, and is logged once, not per request.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::common::backend::dead_url;
use crate::common::{Backend, Process, TestGateway, eventually, sample};

#[tokio::test]
async fn a_backend_refusing_every_connection_shows_without_active_checks() {
    let gw = TestGateway::start().await;
    let live = Backend::named("live").start().await;
    let dead = dead_url().await;
    let cases = [
        // One of two may be ejected (50%).
        ("ejectable", json!({}), "ejected"),
        // None may: it is failing, still tried, and retries cover it.
        ("capped", json!({"max_ejection_percent": 0}), "failing"),
    ];
    for (name, od, want) in cases {
        gw.create_upstream(json!({"name": name, "outlier_detection": od,
            "backends": [{"url": dead}, {"url": live.url}]}))
            .await;
        let path = format!("/{name}");
        gw.create_route(json!({"name": name, "path": path, "upstream": name}))
            .await;
        // Round robin tries the dead one first each time; a streak of 5
        // passes the threshold.
        let mut sent = 0;
        let seen = eventually(Duration::from_secs(10), || {
            sent += 1;
            let (gw, path, dead) = (&gw, &path, &dead);
            async move {
                assert!(sent <= 100, "{name}: 100 requests and not {want}");
                assert_eq!(gw.get(path).await.0, StatusCode::OK);
                let h = gw.backend_health(name, dead).await;
                (h["state"] == want).then_some(h)
            }
        })
        .await;
        let h = seen.unwrap_or_else(|| panic!("{name}: the dead backend never became {want}"));
        assert_eq!(h["health"], "unknown", "{name}: no active check: {h}");

        let m = gw.metrics().await;
        let healthy = |url: &str| {
            sample(
                &m,
                "switchyard_backend_healthy",
                &[("upstream", name), ("backend", url)],
            )
        };
        assert_eq!(healthy(&dead), Some(0.0), "{name}");
        assert_eq!(healthy(&live.url), Some(1.0), "{name}");
        let flips = sample(
            &m,
            "switchyard_backend_state_changes_total",
            &[("upstream", name), ("backend", &dead), ("to", want)],
        );
        assert_eq!(flips, Some(1.0), "{name}");
    }
}

#[tokio::test]
async fn a_backend_that_keeps_failing_is_logged_once_not_per_request() {
    let live = Backend::named("live").start().await;
    let dead = dead_url().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("gw.db").display());
    let gw = Process::start(&db, &["--log-format", "json", "--no-access-log"]);
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("http://{}{path}", gw.admin_addr);
    let r = http
        .post(admin("/admin/upstreams"))
        .json(
            &json!({"name": "u", "outlier_detection": {"max_ejection_percent": 0},
            "backends": [{"url": dead}, {"url": live.url}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(admin("/admin/routes"))
        .json(&json!({"name": "u", "path": "/", "upstream": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let started = Instant::now();
    // 40 requests, each tried on the dead backend first: 40 failures.
    for _ in 0..40 {
        let r = http
            .get(format!("http://{}/", gw.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let elapsed = started.elapsed();
    let warnings = || {
        gw.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "WARN" && v.to_string().contains(&dead))
            .collect::<Vec<_>>()
    };
    // The first line proves the log is being read.
    let first = eventually(Duration::from_secs(5), || {
        let w = warnings();
        async move { w.into_iter().next() }
    })
    .await;
    assert!(first.is_some(), "no WARN line about {dead}");
    // One line for the change, and at most one more per 10 s of failures.
    let allowed = 1 + elapsed.as_secs() as usize / 10;
    let w = warnings();
    assert!(
        w.len() <= allowed,
        "{} WARN lines for 40 failures in {elapsed:?}: {w:?}",
        w.len()
    );
    let f = &w[0]["fields"];
    assert_eq!(f["to"], "failing", "{f}");
    assert_eq!(f["reason"], "max_ejection_percent reached", "{f}");
}
