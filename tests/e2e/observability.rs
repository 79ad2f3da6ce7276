//! Metrics, access log, audit log.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{Backend, Process, TestGateway, backend::dead_url, eventually, sample};

#[tokio::test]
async fn metrics_count_known_traffic_exactly() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/r", "backends": [{"url": a.url}]}))
        .await;
    for _ in 0..7 {
        assert_eq!(gw.get("/r/x").await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(
            gw.http
                .post(gw.proxy_url("/r"))
                .body("b")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(gw.get("/nowhere").await.0, 404);
    }
    let m = gw.metrics().await;
    let route = [("route", "r"), ("upstream", "r")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        route.iter().copied().chain(extra.iter().copied()).collect()
    };
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total",
            &with(&[("method", "GET"), ("status", "200")])
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total",
            &with(&[("method", "POST"), ("status", "200")])
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total",
            &[("route", ""), ("method", "GET"), ("status", "404")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "switchyard_request_duration_seconds_count", &route),
        Some(9.0)
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_request_duration_seconds_bucket",
            &with(&[("le", "+Inf")])
        ),
        Some(9.0)
    );
    let backend = [("upstream", "r"), ("backend", a.url.as_str())];
    assert_eq!(
        sample(
            &m,
            "switchyard_upstream_request_duration_seconds_count",
            &backend
        ),
        Some(9.0)
    );
    assert_eq!(
        sample(&m, "switchyard_backend_in_flight", &backend),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "switchyard_backend_healthy", &backend),
        Some(1.0)
    );
    assert_eq!(sample(&m, "switchyard_config_routes", &[]), Some(1.0));
    assert_eq!(sample(&m, "switchyard_config_upstreams", &[]), Some(1.0));
    assert_eq!(sample(&m, "switchyard_config_version", &[]), Some(1.0));
    assert_eq!(
        sample(&m, "switchyard_config_publish_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "switchyard_config_publish_duration_seconds_count", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_admin_requests_total",
            &[
                ("method", "POST"),
                ("endpoint", "/admin/routes"),
                ("status", "201")
            ]
        ),
        Some(1.0)
    );
    assert!(sample(&m, "switchyard_open_connections", &[]).is_some());
    #[cfg(target_os = "linux")]
    assert!(sample(&m, "switchyard_process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
    // Labels never carry request data.
    assert!(
        !m.contains("/r/x") && !m.contains("nowhere"),
        "raw paths leaked into labels"
    );
}

#[tokio::test]
async fn errors_retries_and_health_gauges_follow_the_backends() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let dead = dead_url().await;
    gw.create_upstream(
        json!({"name": "u", "health_check": {"interval_ms": 100, "timeout_ms": 100},
        "backends": [{"url": dead}, {"url": a.url}]}),
    )
    .await;
    gw.create_route(json!({"name": "r", "path": "/", "upstream": "u"}))
        .await;
    // Before the first probe of the dead one finishes, a request may try it;
    // either way every request succeeds.
    for _ in 0..4 {
        assert_eq!(gw.get("/").await.0, 200);
    }
    let dead_labels = [("upstream", "u"), ("backend", dead.as_str())];
    let m = eventually(Duration::from_secs(5), || async {
        let m = gw.metrics().await;
        (sample(&m, "switchyard_backend_healthy", &dead_labels) == Some(0.0)).then_some(m)
    })
    .await
    .expect("the dead backend's gauge drops to 0");
    assert!(
        sample(
            &m,
            "switchyard_health_checks_total",
            &[("backend", dead.as_str()), ("result", "fail")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &m,
            "switchyard_health_checks_total",
            &[("backend", a.url.as_str()), ("result", "pass")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_backend_state_changes_total",
            &[("backend", dead.as_str()), ("to", "unhealthy")]
        ),
        Some(1.0)
    );
    let connect_errors = sample(
        &m,
        "switchyard_upstream_errors_total",
        &[("backend", dead.as_str()), ("kind", "connect")],
    )
    .unwrap();
    let retries = sample(&m, "switchyard_retries_total", &[("upstream", "u")]).unwrap();
    assert_eq!(connect_errors, retries, "each connect error was retried");

    a.set_healthy(false);
    let a_labels = [("upstream", "u"), ("backend", a.url.as_str())];
    let flipped = eventually(Duration::from_secs(5), || async {
        let m = gw.metrics().await;
        (sample(&m, "switchyard_backend_healthy", &a_labels) == Some(0.0)).then_some(())
    })
    .await;
    assert!(flipped.is_some(), "the gauge follows the health flip");
}

#[tokio::test]
async fn series_of_deleted_routes_go_and_renamed_routes_start_fresh() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "old", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    for _ in 0..3 {
        gw.get("/").await;
    }
    let m = gw.metrics().await;
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total",
            &[("route", "old"), ("status", "200")]
        ),
        Some(3.0)
    );
    assert_eq!(
        gw.admin(Method::DELETE, "/admin/routes/old", None)
            .await
            .status(),
        204
    );
    gw.create_route(json!({"name": "new", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    gw.get("/").await;
    let m = gw.metrics().await;
    assert_eq!(
        sample(&m, "switchyard_requests_total", &[("route", "old")]),
        None,
        "deleted route still exported"
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total",
            &[("route", "new"), ("status", "200")]
        ),
        Some(1.0)
    );
    assert!(
        !m.contains(&format!("backend=\"{}\",upstream=\"old\"", a.url))
            && !m.contains("upstream=\"old\"")
    );
}

#[tokio::test]
async fn a_weight_change_keeps_counting_on_the_same_series() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let up = gw
        .create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    assert_eq!(up["upstream"], "r");
    gw.get("/").await;
    let (_, u) = gw.admin_json(Method::GET, "/admin/upstreams/r", None).await;
    let path = format!("/admin/upstreams/r/backends/{}", u["backends"][0]["id"]);
    assert_eq!(
        gw.admin_json(Method::PATCH, &path, Some(json!({"weight": 3})))
            .await
            .0,
        200
    );
    gw.get("/").await;
    let m = gw.metrics().await;
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total",
            &[("route", "r"), ("status", "200")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn access_and_audit_logs_are_one_json_line_each() {
    let a = Backend::named("a").start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("gw.db").display());
    let gw = Process::start(&db, &["--log-format", "json"]);
    let http = reqwest::Client::new();
    gw.create_route(serde_json::json!({"name": "r", "path": "/r", "backends": [{"url": a.url}]}))
        .await;
    let r = http
        .post(format!("http://{}/r/upload?x=1", gw.proxy_addr))
        .header("x-request-id", "log-me")
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let find = |target: &'static str, needle: &'static str| {
        let log = std::sync::Arc::clone(&gw.log);
        async move {
            let lines = log.lock().unwrap().clone();
            lines
                .into_iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
                .find(|v| v["target"] == target && v.to_string().contains(needle))
        }
    };
    let access = eventually(Duration::from_secs(5), || {
        find("switchyard::access", "log-me")
    })
    .await
    .expect("an access line");
    let f = &access["fields"];
    assert_eq!(f["request_id"], "log-me");
    assert_eq!(f["method"], "POST");
    assert_eq!(f["path"], "/r/upload");
    assert_eq!(f["route"], "r");
    assert_eq!(f["upstream"], "r");
    assert_eq!(f["backend"], a.url.as_str());
    assert_eq!(f["status"], 200);
    assert_eq!(f["bytes_in"], 5);
    assert_eq!(f["bytes_out"], body.len());
    assert_eq!(f["retries"], 0);
    assert_eq!(f["client"], "127.0.0.1");
    assert!(f["duration_ms"].as_f64().unwrap() >= 0.0);
    let audit = eventually(Duration::from_secs(5), || {
        find("switchyard::audit", "/admin/routes")
    })
    .await
    .expect("an audit line");
    assert_eq!(audit["fields"]["method"], "POST");
    assert_eq!(audit["fields"]["status"], 201);
    assert_eq!(audit["fields"]["config_version"], "1");
    assert_eq!(audit["fields"]["result"], "applied");
    assert_eq!(audit["fields"]["revision"], "1");
    assert_eq!(audit["fields"]["resource"], "/admin/routes");
    assert!(
        audit["fields"]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{audit}"
    );

    // The operator's comment, and a change that changes nothing (no revision).
    for comment in ["first", "again"] {
        let r = http
            .patch(format!("http://{}/admin/routes/r", gw.admin_addr))
            .header("content-type", "application/merge-patch+json")
            .header("x-change-comment", comment)
            .body(r#"{"strip_prefix": true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let patched = eventually(Duration::from_secs(5), || {
        find("switchyard::audit", "first")
    })
    .await
    .expect("the first patch's audit line");
    assert_eq!(patched["fields"]["resource"], "/admin/routes/r");
    assert_eq!(patched["fields"]["revision"], "2");
    assert_eq!(patched["fields"]["comment"], "first");
    let unchanged = eventually(Duration::from_secs(5), || {
        find("switchyard::audit", "again")
    })
    .await
    .expect("the second patch's audit line");
    assert_eq!(unchanged["fields"]["result"], "unchanged");
    assert_eq!(unchanged["fields"]["revision"], "-");
    assert_eq!(unchanged["fields"]["config_version"], "2");
}

#[tokio::test]
async fn no_access_log_means_no_line() {
    let a = Backend::named("a").start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("gw.db").display());
    let gw = Process::start(&db, &["--log-format", "json", "--no-access-log"]);
    let http = reqwest::Client::new();
    gw.create_route(serde_json::json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    for _ in 0..3 {
        let r = http
            .get(format!("http://{}/", gw.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // The audit line of the POST proves the log is being read.
    let seen_audit = eventually(Duration::from_secs(5), || {
        let log = std::sync::Arc::clone(&gw.log);
        async move {
            log.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("switchyard::audit"))
                .then_some(())
        }
    })
    .await;
    assert!(seen_audit.is_some());
    assert!(
        !gw.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("switchyard::access"))
    );
}

/// The lines of the file at `path` once it has at least `n` (5 s at most).
async fn lines_of(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        async move {
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("each line is JSON"))
                .collect();
            (lines.len() >= n).then_some(lines)
        }
    })
    .await
    .unwrap_or_else(|| panic!("{} has fewer than {n} lines", path.display()))
}

#[tokio::test]
async fn access_log_file_is_reopened_on_sighup_for_logrotate() {
    let a = Backend::named("a").start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("gw.db").display());
    let file = dir.path().join("access.log");
    let gw = Process::start(
        &db,
        &[
            "--log-format",
            "json",
            "--access-log",
            file.to_str().unwrap(),
        ],
    );
    let http = reqwest::Client::new();
    gw.create_route(serde_json::json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let get = |id: &'static str| {
        let http = http.clone();
        let url = format!("http://{}/p", gw.proxy_addr);
        async move {
            let r = http
                .get(url)
                .header("x-request-id", id)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    };
    get("before-1").await;
    get("before-2").await;
    let before = lines_of(&file, 2).await;
    assert_eq!(before[0]["target"], "switchyard::access");
    assert_eq!(before[0]["fields"]["request_id"], "before-1");
    assert_eq!(before[1]["fields"]["request_id"], "before-2");
    assert_eq!(before[1]["fields"]["route"], "r");

    // logrotate: move the file away, then SIGHUP.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    gw.signal("HUP");
    let reopened = eventually(Duration::from_secs(5), || {
        let exists = file.exists();
        async move { exists.then_some(()) }
    })
    .await;
    assert!(reopened.is_some(), "no new file after SIGHUP");
    get("after").await;
    let after = lines_of(&file, 1).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["fields"]["request_id"], "after");
    assert_eq!(lines_of(&rotated, 2).await.len(), 2);

    // Nothing of it on stderr; nothing dropped; the gateway lives on.
    let log = gw.log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.contains("switchyard::access")));
    assert!(log.iter().any(|l| l.contains("access log reopened")));
    let metrics = http
        .get(format!("http://{}/metrics", gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["queue_full", "write_failed"] {
        assert_eq!(
            sample(
                &metrics,
                "switchyard_access_log_dropped_total",
                &[("reason", reason)]
            ),
            Some(0.0),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn sighup_without_an_access_log_file_leaves_the_gateway_running() {
    let a = Backend::named("a").start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("gw.db").display());
    let mut gw = Process::start(&db, &["--log-format", "json"]);
    gw.create_route(serde_json::json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    gw.signal("HUP");
    let noted = eventually(Duration::from_secs(5), || {
        let lines = gw.log.lock().unwrap().clone();
        async move {
            lines
                .iter()
                .any(|l| l.contains("no access log file to reopen"))
                .then_some(())
        }
    })
    .await;
    assert!(noted.is_some());
    let r = reqwest::get(format!("http://{}/", gw.proxy_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(gw.child.try_wait().unwrap().is_none());
    gw.signal("TERM");
    assert!(gw.wait(Duration::from_secs(10)).await.success());
}
