//! The dashboard's side of the admin listener: `GET /admin/events` (a
//! Server-Sent Events stream of config changes, health transitions and
//! traffic figures, bounded in subscribers, sampled only while somebody
//! listens, ended at shutdown) and the embedded page under `/ui/`. The
//! page itself is driven in Chromium by `tests/browser/` (`.ci/browser.sh`).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestGateway, eventually};

/// A client of the event stream.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(gw: &TestGateway) -> Events {
        let resp = gw.admin(Method::GET, "/admin/events", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        Events {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (name, data), or None when the stream ends.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).expect("data is JSON")));
            }
            let chunk = self.resp.chunk().await.ok()??;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The first event called `name` whose data satisfies `check`, within 10 s.
    async fn until(&mut self, name: &str, check: impl Fn(&Value) -> bool) -> Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (n, data) = self.next().await.expect("the stream goes on");
                if n == name && check(&data) {
                    return data;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {name} event as expected within 10 s"))
    }
}

#[tokio::test]
async fn the_event_stream_tells_config_changes_health_transitions_and_traffic() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    gw.create_upstream(json!({"name": "u", "strategy": "weighted_round_robin",
        "health_check": {"interval_ms": 100, "timeout_ms": 100, "healthy_threshold": 1, "unhealthy_threshold": 1},
        "backends": [{"url": a.url, "weight": 3}, {"url": b.url, "weight": 1}]}))
        .await;
    gw.create_route(json!({"name": "r", "path": "/", "upstream": "u"}))
        .await;
    let (_, status) = gw.admin_json(Method::GET, "/admin/status", None).await;
    let version = status["config_version"].as_u64().unwrap();
    let mut events = Events::open(&gw).await;
    let (name, hello) = events.next().await.unwrap();
    assert_eq!(
        (name.as_str(), &hello["config_version"]),
        ("hello", &json!(version))
    );
    assert_eq!(hello["traffic_interval_ms"], 1000);

    // Traffic: 40 requests, 3:1; the figures of the second they fell in.
    for _ in 0..40 {
        assert_eq!(gw.get("/x").await.0, StatusCode::OK);
    }
    let traffic = events
        .until("traffic", |t| {
            t["routes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "r" && r["rps"].as_f64().unwrap() > 0.0)
        })
        .await;
    let route = &traffic["routes"][0];
    assert_eq!(
        (&route["upstream"], &route["error_ratio"]),
        (&json!("u"), &json!(0.0))
    );
    assert!(route["p99_ms"].as_f64().unwrap() > 0.0, "{route}");
    assert!(traffic["total"]["rps"].as_f64().unwrap() > 0.0);
    let share = |url: &str| {
        traffic["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["url"] == url)
            .unwrap_or_else(|| panic!("{url} in {traffic}"))["share"]
            .as_f64()
            .unwrap()
    };
    // All 40 may not fall in one second; each second is 3:1 within a few.
    assert!(share(&a.url) > share(&b.url), "{traffic}");
    assert!((share(&a.url) + share(&b.url) - 1.0).abs() < 1e-9);

    // A config change.
    let resp = gw
        .admin(
            Method::POST,
            "/admin/routes",
            Some(json!({"name": "s", "path": "/s", "upstream": "u"})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let config = events.until("config", |_| true).await;
    assert_eq!(config["config_version"], json!(version + 1));
    assert_eq!(config["previous"], json!(version));

    // A health transition, with its reason.
    b.set_healthy(false);
    let health = events
        .until("health", |h| {
            h["url"] == b.url.as_str() && h["state"] == "unhealthy"
        })
        .await;
    assert_eq!(health["upstream"], "u");
    let last = health["transitions"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        (&last["from"], &last["to"]),
        (&json!("healthy"), &json!("unhealthy"))
    );
    assert!(last["reason"].as_str().unwrap().contains("503"), "{last}");
}

#[tokio::test]
async fn subscribers_are_bounded_and_nothing_samples_when_nobody_listens() {
    let gw = TestGateway::start().await;
    let hub = gw.gateway().events();
    assert!(!hub.sampling(), "nobody listens yet");
    let max = control_plane::api::events::MAX_SUBSCRIBERS;
    let mut open = Vec::new();
    for _ in 0..max {
        open.push(Events::open(&gw).await);
    }
    assert!(hub.sampling());
    assert_eq!(hub.subscribers(), max);
    let refused = gw.admin(Method::GET, "/admin/events", None).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "urn:switchyard:problem:too-many-subscribers"
    );
    // One gone: one more may come.
    open.pop();
    eventually(Duration::from_secs(5), || async {
        (hub.subscribers() < max).then_some(())
    })
    .await
    .expect("a closed stream is no subscriber");
    open.push(Events::open(&gw).await);
    // All gone: the sampler stops at its next look.
    open.clear();
    eventually(Duration::from_secs(5), || async {
        (!hub.sampling()).then_some(())
    })
    .await
    .expect("the sampler stops when nobody listens");
    assert_eq!(hub.subscribers(), 0);
}

#[tokio::test]
async fn shutdown_ends_the_streams() {
    let gw = TestGateway::start().await;
    let mut events = Events::open(&gw).await;
    assert_eq!(events.next().await.unwrap().0, "hello");
    tokio::time::timeout(Duration::from_secs(10), gw.shutdown())
        .await
        .expect("the admin listener closes with a stream open");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while events.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the stream ended");
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_policy_and_without_the_token() {
    let gw = TestGateway::start_in(tempfile::tempdir().unwrap(), Some("s3cret")).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for from in ["/", "/ui"] {
        let r = plain.get(gw.admin_url(from)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "{from}");
        assert_eq!(r.headers()["location"], "/ui/");
    }
    let page = plain.get(gw.admin_url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/ui/app.js") && !html.contains("<script>"),
        "no inline script"
    );
    for (asset, kind) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let r = plain
            .get(gw.admin_url(&format!("/ui/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                r.status(),
                &r.headers()["content-type"].to_str().unwrap().to_string()
            ),
            (StatusCode::OK, &kind.to_string())
        );
    }
    let missing = plain
        .get(gw.admin_url("/ui/secrets.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // The data is behind the token, the stream included.
    for path in ["/admin/events", "/admin/status"] {
        let r = plain.get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn adding_a_backend_to_an_upstream_that_changed_since_is_refused() {
    let gw = TestGateway::start().await;
    let up = gw
        .create_upstream(json!({"name": "u", "backends": [{"url": "http://127.0.0.1:9"}]}))
        .await;
    let seen = up["version"].as_u64().unwrap();
    let resp = gw
        .admin(
            Method::PATCH,
            "/admin/upstreams/u",
            Some(json!({"retries": 0})),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let add = |tag: String| {
        let req = gw
            .http
            .post(gw.admin_url("/admin/upstreams/u/backends"))
            .header("if-match", tag)
            .json(&json!({"url": "http://127.0.0.1:10"}));
        async move { req.send().await.unwrap() }
    };
    let stale = add(format!("\"{seen}\"")).await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let (_, u) = gw.admin_json(Method::GET, "/admin/upstreams/u", None).await;
    assert_eq!(u["backends"].as_array().unwrap().len(), 1, "nothing added");
    let fresh = add(format!("\"{}\"", u["version"])).await;
    assert_eq!(fresh.status(), StatusCode::CREATED);
}
