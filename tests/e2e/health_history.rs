//! Health history: each backend's last 20 state transitions in
//! `/admin/upstreams/{name}/health`, with their reasons, kept across config
//! changes, and counted in `switchyard_backend_transitions_total`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestGateway, eventually, sample};

/// The transitions of the backend with `url`, oldest first.
async fn transitions(gw: &TestGateway, url: &str) -> Vec<Value> {
    let b = gw.backend_health("u", url).await;
    b["transitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transitions in {b}"))
        .clone()
}

/// Wait until the last transition of `url` goes to `to`; return them all.
async fn until_last_is(gw: &TestGateway, url: &str, to: &str) -> Vec<Value> {
    eventually(Duration::from_secs(10), || async {
        let t = transitions(gw, url).await;
        (t.last().is_some_and(|l| l["to"] == to)).then_some(t)
    })
    .await
    .unwrap_or_else(|| panic!("{url} never moved to {to}"))
}

fn transitions_metric(metrics: &str, url: &str, to: &str) -> Option<f64> {
    sample(
        metrics,
        "switchyard_backend_transitions_total",
        &[("upstream", "u"), ("backend", url), ("to", to)],
    )
}

#[tokio::test]
async fn a_probe_flip_and_its_reason_are_kept_across_a_config_change_and_counted() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    let up = gw
        .create_upstream(json!({"name": "u",
            "health_check": {"interval_ms": 100, "timeout_ms": 100, "healthy_threshold": 1, "unhealthy_threshold": 1},
            "backends": [{"url": a.url}, {"url": b.url}]}))
        .await;
    let t = until_last_is(&gw, &a.url, "healthy").await;
    assert_eq!(t.len(), 2, "{t:?}");
    // The admin change first, with the state it found.
    assert_eq!(
        (&t[0]["from"], &t[0]["to"], &t[0]["reason"]),
        (
            &json!("unknown"),
            &json!("unknown"),
            &json!("backend added")
        )
    );
    assert_eq!(t[1]["from"], "unknown");
    assert_eq!(t[1]["reason"], "probe: ok 200");
    assert!(t[1]["at_unix_ms"].as_u64().unwrap() > 0);

    // It stops answering probes: the probe's error is the reason.
    a.kill();
    let t = until_last_is(&gw, &a.url, "unhealthy").await;
    let down = t.last().unwrap().clone();
    assert_eq!(down["from"], "healthy");
    let reason = down["reason"].as_str().unwrap();
    assert!(reason.starts_with("probe: error"), "{reason}");

    // Another backend's weight changes: a's history is untouched.
    let b_id = up["backends"][1]["id"].as_u64().unwrap();
    let path = format!("/admin/upstreams/u/backends/{b_id}");
    let (status, v) = gw
        .admin_json(Method::PATCH, &path, Some(json!({"weight": 4})))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(gw.backend_health("u", &b.url).await["weight"], 4);
    assert_eq!(transitions(&gw, &a.url).await, t, "kept by the patch");
    let tb = transitions(&gw, &b.url).await;
    let last = tb.last().unwrap();
    assert_eq!(last["reason"], "weight set to 4 (was 1)", "{tb:?}");
    assert_eq!(last["from"], last["to"]);

    // Back: a probe passes again.
    let a = a.restart().await;
    let t = until_last_is(&gw, &a.url, "healthy").await;
    let up_again = t.last().unwrap();
    assert_eq!(
        (&up_again["from"], &up_again["reason"]),
        (&json!("unhealthy"), &json!("probe: ok 200"))
    );
    assert!(up_again["at_unix_ms"].as_u64() >= down["at_unix_ms"].as_u64());
    assert_eq!(t.len(), 4, "{t:?}");

    // The metric counts the same transitions.
    let m = gw.metrics().await;
    assert_eq!(transitions_metric(&m, &a.url, "healthy"), Some(2.0), "{m}");
    assert_eq!(transitions_metric(&m, &a.url, "unhealthy"), Some(1.0));
    assert_eq!(transitions_metric(&m, &a.url, "ejected"), Some(0.0));

    // The whole status does not carry histories.
    let (_, status) = gw.admin_json(Method::GET, "/admin/status", None).await;
    assert!(
        status["upstreams"][0]["backends"][0]
            .get("transitions")
            .is_none()
    );

    // A removed backend's series go with it.
    let a_id = up["backends"][0]["id"].as_u64().unwrap();
    let path = format!("/admin/upstreams/u/backends/{a_id}");
    assert_eq!(
        gw.admin(Method::DELETE, &path, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let m = gw.metrics().await;
    assert_eq!(transitions_metric(&m, &a.url, "healthy"), None);
    assert!(transitions_metric(&m, &b.url, "healthy").is_some());
}

#[tokio::test]
async fn at_most_twenty_transitions_are_kept_and_all_are_counted() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_upstream(json!({"name": "u",
        "health_check": {"interval_ms": 100, "timeout_ms": 100, "healthy_threshold": 1, "unhealthy_threshold": 1},
        "backends": [{"url": a.url}]}))
        .await;
    until_last_is(&gw, &a.url, "healthy").await;
    // Added, then 1 + 2 × 12 = 25 transitions.
    for _ in 0..12 {
        a.set_healthy(false);
        until_last_is(&gw, &a.url, "unhealthy").await;
        a.set_healthy(true);
        until_last_is(&gw, &a.url, "healthy").await;
    }
    let t = transitions(&gw, &a.url).await;
    assert_eq!(t.len(), 20, "{t:?}");
    assert_eq!(t[0]["from"], "healthy", "the oldest six are gone");
    assert!(t.iter().all(|x| x["reason"] != "backend added"));
    for w in t.windows(2) {
        assert_eq!(w[0]["to"], w[1]["from"], "a chain: {t:?}");
        assert!(w[0]["at_unix_ms"].as_u64() <= w[1]["at_unix_ms"].as_u64());
    }
    let down = t.iter().find(|x| x["to"] == "unhealthy").unwrap();
    assert_eq!(down["reason"], "probe: status 503");
    let m = gw.metrics().await;
    assert_eq!(transitions_metric(&m, &a.url, "healthy"), Some(13.0));
    assert_eq!(transitions_metric(&m, &a.url, "unhealthy"), Some(12.0));
}

#[tokio::test]
async fn a_passive_ejection_and_its_end_are_in_the_history() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").status(503).start().await;
    let b = Backend::named("b").start().await;
    gw.create_upstream(json!({"name": "u", "retries": 0,
        "outlier_detection": {"consecutive_failures": 3, "base_ejection_ms": 200},
        "backends": [{"url": a.url}, {"url": b.url}]}))
        .await;
    gw.create_route(json!({"name": "u", "path": "/", "upstream": "u"}))
        .await;
    let ejected = eventually(Duration::from_secs(10), || async {
        let _ = gw.get("/").await;
        let t = transitions(&gw, &a.url).await;
        t.iter().any(|x| x["to"] == "ejected").then_some(t)
    })
    .await
    .expect("a is ejected");
    let ejection = ejected.iter().find(|x| x["to"] == "ejected").unwrap();
    assert_eq!(ejection["from"], "unknown");
    assert_eq!(
        ejection["reason"],
        "3 consecutive failures: ejected for 200 ms"
    );
    let t = until_last_is(&gw, &a.url, "unknown").await;
    let end = t.last().unwrap();
    assert_eq!(
        (&end["from"], &end["reason"]),
        (&json!("ejected"), &json!("ejection ended"))
    );
    let m = gw.metrics().await;
    assert!(transitions_metric(&m, &a.url, "ejected").unwrap() >= 1.0);
    assert!(transitions_metric(&m, &a.url, "unknown").unwrap() >= 1.0);
}
