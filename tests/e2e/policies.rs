//! Route policies end to end (README.md, "Policies"): the token gate, IP
//! rules, rate limits, CORS, field edits and redirects, on the inline
//! server, hyper's HTTP/1.1 and HTTP/2 (h2c); their metric and log line.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::backend::raw_backend;
use crate::common::{Backend, Process, TestGateway, eventually, raw_request, sample};

const TOKEN: &str = "letmein";

/// A gateway on the inline server or hyper's, with `/admin` gated by
/// `X-Admin-Token` in front of `admin` and `/pub` open in front of `public`.
async fn gated(inline: bool) -> (TestGateway, Backend, Backend) {
    let gw = TestGateway::start_with(|s| s.server.inline = inline).await;
    let admin = Backend::named("admin").start().await;
    let public = Backend::named("public").start().await;
    gw.create_route(json!({
        "name": "admin", "path": "/admin", "backends": [{"url": admin.url}],
        "policies": {"auth": {"header": "X-Admin-Token", "tokens": [TOKEN]}}
    }))
    .await;
    gw.create_route(json!({"name": "pub", "path": "/pub", "backends": [{"url": public.url}]}))
        .await;
    (gw, admin, public)
}

/// A raw request to the proxy: status, head and body.
async fn raw(gw: &TestGateway, request: &str) -> (u16, String) {
    raw_request(gw.gateway().proxy_addr, request).await
}

#[tokio::test]
async fn the_token_gate_cannot_be_bypassed() {
    for inline in [true, false] {
        let (gw, admin, _public) = gated(inline).await;
        let get = |token: Option<&'static str>| {
            let mut r = gw.http.get(gw.proxy_url("/admin/users"));
            if let Some(t) = token {
                r = r.header("X-Admin-Token", t);
            }
            r.send()
        };
        // No token, a wrong one: 401, the gateway's error shape, and the
        // backend never asked.
        for token in [None, Some("nope"), Some("letmein2"), Some("")] {
            let r = get(token).await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{token:?}");
            assert!(
                r.headers().get("www-authenticate").is_none(),
                "not the Bearer scheme"
            );
            let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized");
            assert_eq!(body["request_id"], id.as_str());
        }
        assert_eq!(admin.hits(), 0);
        // The token: through, and the credential does not reach the backend.
        let r = get(Some(TOKEN)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let echo: Value = r.json().await.unwrap();
        assert!(echo["headers"].get("x-admin-token").is_none(), "{echo}");
        assert_eq!(admin.hits(), 1);
        // The name's case does not matter, to the gate nor to the removal;
        // a `_` spelling is no credential and is removed too.
        let (status, body) = raw(
            &gw,
            "GET /admin/x HTTP/1.1\r\nHost: t\r\nX-ADMIN-TOKEN: letmein\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.to_ascii_lowercase().contains("letmein"), "{body}");
        let (status, _) = raw(
            &gw,
            "GET /admin/x HTTP/1.1\r\nHost: t\r\nX_Admin_Token: letmein\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 401);
        let (status, body) = raw(
            &gw,
            "GET /admin/x HTTP/1.1\r\nHost: t\r\nX-Admin-Token: letmein\r\nx_admin_token: other\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200);
        assert!(!body.contains("other"), "the alias went: {body}");
        // Two copies: refused, whichever is right.
        for (a, b) in [
            ("letmein", "nope"),
            ("nope", "letmein"),
            ("letmein", "letmein"),
        ] {
            let (status, body) = raw(
                &gw,
                &format!(
                    "GET /admin HTTP/1.1\r\nHost: t\r\nX-Admin-Token: {a}\r\nx-admin-token: {b}\r\nConnection: close\r\n\r\n"
                ),
            )
            .await;
            assert_eq!(status, 400, "{a}/{b}: {body}");
            assert!(body.contains("ambiguous_credentials"), "{body}");
        }
        // Every spelling of the path reaches the gate or nothing.
        let before = admin.hits();
        for trick in [
            "//admin",
            "/./admin",
            "/pub/../admin",
            "/pub/%2e%2e/admin",
            "/pub/%2E%2e/admin",
            "/%61dmin",
            "/%41dmin",
            "/admin;x=1",
            "/admin/;x",
            "/admin/./users",
            "/ADMIN",
        ] {
            let (status, body) = raw(
                &gw,
                &format!("GET {trick} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert_ne!(status, 200, "{trick} got through: {body}");
        }
        assert_eq!(admin.hits(), before, "no trick reached the admin backend");
        // Over HTTP/2 too (hyper's server, h2c).
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let r = h2.get(gw.proxy_url("/admin")).send().await.unwrap();
        assert_eq!(
            (r.version(), r.status()),
            (reqwest::Version::HTTP_2, StatusCode::UNAUTHORIZED)
        );
        let r = h2
            .get(gw.proxy_url("/admin"))
            .header("x-admin-token", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // Counted by route and policy.
        let metrics = gw.metrics().await;
        let denied = sample(
            &metrics,
            "switchyard_policy_denials_total",
            &[("route", "admin"), ("policy", "auth")],
        );
        // 4 without or with a wrong token, 1 alias, 3 doubles, the tricks
        // that reached the gate, 1 over HTTP/2.
        assert!(denied.is_some_and(|n| n >= 9.0), "{denied:?}\n{metrics}");
        assert!(!metrics.contains(TOKEN));
    }
}

#[tokio::test]
async fn the_bearer_scheme_on_authorization() {
    let gw = TestGateway::start().await;
    let b = Backend::named("b").start().await;
    gw.create_route(json!({
        "name": "api", "path": "/", "backends": [{"url": b.url}],
        "policies": {"auth": {"header": "Authorization", "tokens": ["s3cret", "other"]}}
    }))
    .await;
    let r = gw.http.get(gw.proxy_url("/x")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"switchyard\""
    );
    for bad in ["s3cret", "Basic s3cret", "Bearer nope", "Bearer "] {
        let r = gw
            .http
            .get(gw.proxy_url("/x"))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
    for good in ["Bearer s3cret", "bearer other"] {
        let r = gw
            .http
            .get(gw.proxy_url("/x"))
            .header("authorization", good)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{good}");
        let echo: Value = r.json().await.unwrap();
        assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    }
    let (status, _) = raw(
        &gw,
        "GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn ip_rules_deny_wins_and_trusted_proxies_name_the_client() {
    for inline in [true, false] {
        let gw = TestGateway::start_with(|s| {
            s.server.inline = inline;
            s.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        })
        .await;
        let b = Backend::named("b").start().await;
        gw.create_route(json!({
            "name": "inside", "path": "/inside", "backends": [{"url": b.url}],
            "policies": {"ip_allow": ["10.0.0.0/8", "2001:db8::/32"], "ip_deny": ["10.0.0.7/32"]}
        }))
        .await;
        let from = |xff: Option<&'static str>| {
            let mut r = gw.http.get(gw.proxy_url("/inside"));
            if let Some(x) = xff {
                r = r.header("x-forwarded-for", x);
            }
            async move { r.send().await.unwrap().status() }
        };
        // The peer itself (127.0.0.1) is not allowed.
        assert_eq!(from(None).await, StatusCode::FORBIDDEN);
        assert_eq!(from(Some("10.1.2.3")).await, StatusCode::OK);
        assert_eq!(from(Some("2001:db8::5")).await, StatusCode::OK);
        assert_eq!(
            from(Some("10.0.0.7")).await,
            StatusCode::FORBIDDEN,
            "deny wins"
        );
        // The last untrusted address counts, not a forged first one.
        assert_eq!(
            from(Some("10.1.2.3, 192.0.2.1")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(from(Some("192.0.2.1, 10.1.2.3")).await, StatusCode::OK);
        let m = gw.metrics().await;
        assert_eq!(
            sample(
                &m,
                "switchyard_policy_denials_total",
                &[("route", "inside"), ("policy", "ip_deny")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "switchyard_policy_denials_total",
                &[("route", "inside"), ("policy", "ip_allow")]
            ),
            Some(2.0)
        );
    }
    // Without trusted proxies, X-Forwarded-For says nothing.
    let gw = TestGateway::start().await;
    let b = Backend::named("b").start().await;
    gw.create_route(json!({
        "name": "inside", "path": "/", "backends": [{"url": b.url}],
        "policies": {"ip_allow": ["10.0.0.0/8"]}
    }))
    .await;
    let r = gw
        .http
        .get(gw.proxy_url("/"))
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(b.hits(), 0);
}

/// Send requests one after another for `span`; the number let through,
/// the time from the first to the last, and the last 429's fields.
async fn hammer(
    gw: &TestGateway,
    path: &str,
    header: Option<(&str, &str)>,
    span: Duration,
) -> (u32, Duration, Option<reqwest::header::HeaderMap>) {
    let (mut ok, mut limited) = (0, None);
    let start = Instant::now();
    let mut last = start;
    while start.elapsed() < span {
        let mut r = gw.http.get(gw.proxy_url(path));
        if let Some((n, v)) = header {
            r = r.header(n, v);
        }
        let r = r.send().await.unwrap();
        last = Instant::now();
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited = Some(r.headers().clone()),
            other => panic!("{other}"),
        }
    }
    (ok, last - start, limited)
}

#[tokio::test]
async fn rate_limits_are_accurate_per_key() {
    let gw = TestGateway::start().await;
    let b = Backend::named("b").start().await;
    gw.create_route(json!({
        "name": "limited", "path": "/limited", "backends": [{"url": b.url}],
        "policies": {"rate_limit": {"key": "route", "requests_per_second": 40, "burst": 20}}
    }))
    .await;
    let (ok, took, limited) = hammer(&gw, "/limited", None, Duration::from_millis(1500)).await;
    let expected = 20.0 + 40.0 * took.as_secs_f64();
    assert!(
        (ok as f64 - expected).abs() <= expected * 0.1,
        "{ok} let through in {took:?}, expected {expected:.0} ± 10%"
    );
    let h = limited.expect("some requests were limited");
    assert_eq!(h["retry-after"], "1");
    assert_eq!(h["ratelimit-limit"], "20");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert!(
        h["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 1
    );
    // Per header value: one key's burst is not another's.
    gw.create_route(json!({
        "name": "per-user", "path": "/per-user", "backends": [{"url": b.url}],
        "policies": {"rate_limit": {"key": "header:X-User", "requests_per_second": 1, "burst": 3}}
    }))
    .await;
    for user in ["ann", "bob"] {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let r = gw
                .http
                .get(gw.proxy_url("/per-user"))
                .header("x-user", user)
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, 200, 429], "{user}");
    }
}

#[tokio::test]
async fn rate_limit_state_survives_other_changes() {
    let gw = TestGateway::start().await;
    let b = Backend::named("b").start().await;
    let limited = |extra: Value| {
        let mut policies =
            json!({"rate_limit": {"key": "route", "requests_per_second": 1, "burst": 3}});
        if let (Some(p), Some(e)) = (policies.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        json!({"name": "a", "path": "/a", "backends": [{"url": b.url}], "policies": policies})
    };
    gw.create_route(limited(json!({}))).await;
    gw.create_route(json!({
        "name": "b", "path": "/b", "backends": [{"url": b.url}],
        "policies": {"rate_limit": {"key": "route", "requests_per_second": 1, "burst": 3}}
    }))
    .await;
    let status = |path: &'static str| {
        let r = gw.http.get(gw.proxy_url(path)).send();
        async move { r.await.unwrap().status().as_u16() }
    };
    for _ in 0..3 {
        assert_eq!(status("/a").await, 200);
    }
    assert_eq!(status("/a").await, 429);
    // Another route changes, and so do route a's other policies: a's
    // bucket is still empty.
    let (s, v) = gw
        .admin_json(
            Method::PUT,
            "/admin/routes/b",
            Some(
                json!({"name": "b", "path": "/b", "backends": [{"url": b.url}],
                        "policies": {"ip_deny": ["10.0.0.0/8"]}}),
            ),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let (s, v) = gw
        .admin_json(
            Method::PUT,
            "/admin/routes/a",
            Some(limited(
                json!({"response_headers": {"set": {"x-changed": "1"}}}),
            )),
        )
        .await;
    assert!(s.is_success(), "{v}");
    assert_eq!(status("/a").await, 429, "a's bucket survived");
    let r = gw.http.get(gw.proxy_url("/b")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn cors_preflight_and_simple_requests() {
    for inline in [true, false] {
        let gw = TestGateway::start_with(|s| s.server.inline = inline).await;
        let b = Backend::named("b").start().await;
        gw.create_route(json!({
            "name": "app", "path": "/", "backends": [{"url": b.url}],
            "policies": {"cors": {
                "allow_origins": ["https://app.example", "https://*.example.org"],
                "allow_methods": ["GET", "POST"], "allow_headers": ["content-type"],
                "expose_headers": ["x-request-id"], "max_age_s": 600
            }}
        }))
        .await;
        let preflight = |origin: &'static str| {
            gw.http
                .request(Method::OPTIONS, gw.proxy_url("/items"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
        };
        let r = preflight("https://shop.example.org").await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://shop.example.org");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(h["access-control-allow-headers"], "content-type");
        assert_eq!(h["access-control-max-age"], "600");
        assert!(h["vary"].to_str().unwrap().contains("Origin"));
        assert!(h.get("access-control-allow-credentials").is_none());
        let r = preflight("https://evil.example").await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().get("access-control-allow-origin").is_none());
        assert_eq!(b.hits(), 0, "preflights never reach the backend");
        // A simple request from an allowed origin is decorated.
        let r = gw
            .http
            .get(gw.proxy_url("/items"))
            .header("origin", "https://app.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-expose-headers"], "x-request-id");
        assert_eq!(h["vary"], "Origin");
        // From another origin, or none: no grant, but `Vary` all the same.
        for origin in [Some("https://evil.example"), None] {
            let mut r = gw.http.get(gw.proxy_url("/items"));
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert!(r.headers().get("access-control-allow-origin").is_none());
            assert_eq!(r.headers()["vary"], "Origin");
        }
        // Credentials echo the origin, never `*`.
        gw.create_route(json!({
            "name": "creds", "path": "/creds", "backends": [{"url": b.url}],
            "policies": {"cors": {"allow_origins": ["https://app.example"], "allow_credentials": true}}
        }))
        .await;
        let r = gw
            .http
            .get(gw.proxy_url("/creds"))
            .header("origin", "https://app.example")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    }
}

#[tokio::test]
async fn request_and_response_fields_are_edited() {
    // A backend that answers with the head it received, and fields of its
    // own for the route to edit.
    let (url, _) = raw_backend(|mut s, head| async move {
        use tokio::io::AsyncWriteExt;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-drop-me: 1\r\nx-keep: 1\r\ncontent-length: {}\r\n\r\n{head}",
            head.len()
        );
        let _ = s.write_all(answer.as_bytes()).await;
    })
    .await;
    for inline in [true, false] {
        let gw = TestGateway::start_with(|s| s.server.inline = inline).await;
        gw.create_route(json!({
            "name": "edited", "path": "/", "backends": [{"url": url}],
            "policies": {
                "request_headers": {"set": {"x-env": "prod"}, "add": {"x-tag": "gw"}, "remove": ["cookie"]},
                "response_headers": {
                    "set": {"strict-transport-security": "max-age=31536000", "content-type": "text/plain"},
                    "add": {"x-served": "yes"}, "remove": ["x-drop-me"]
                }
            }
        }))
        .await;
        let r = gw
            .http
            .get(gw.proxy_url("/x"))
            .header("cookie", "secret=1")
            .header("x-env", "dev")
            .header("x-tag", "client")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers().clone();
        assert_eq!(h["strict-transport-security"], "max-age=31536000");
        assert_eq!(h["x-served"], "yes");
        assert_eq!(h["x-keep"], "1");
        assert!(h.get("x-drop-me").is_none(), "{inline}: {h:?}");
        let types: Vec<_> = h.get_all("content-type").iter().collect();
        assert_eq!(types, ["text/plain"], "set replaces the backend's");
        assert_eq!(h["via"], "1.1 switchyard", "the gateway's own fields stay");
        let sent = r.text().await.unwrap().to_ascii_lowercase();
        assert!(sent.contains("\r\nx-env: prod\r\n"), "{sent}");
        assert!(!sent.contains("x-env: dev"), "{sent}");
        assert!(!sent.contains("cookie"), "{sent}");
        assert!(
            sent.contains("\r\nx-tag: client\r\n") && sent.contains("\r\nx-tag: gw\r\n"),
            "{sent}"
        );
        assert!(
            sent.contains("\r\nx-request-id: "),
            "the gateway's fields still go: {sent}"
        );
    }
}

#[tokio::test]
async fn redirects_need_no_backend() {
    for inline in [true, false] {
        let gw = TestGateway::start_with(|s| s.server.inline = inline).await;
        gw.create_route(json!({
            "name": "moved", "path": "/old",
            "policies": {"redirect": {"status": 308, "location": "https://example.com{path}{query}"}}
        }))
        .await;
        let no_follow = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = no_follow
            .get(gw.proxy_url("/old/a%20b/../c?x=1&y"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()["location"], "https://example.com/old/c?x=1&y");
        assert!(r.headers().contains_key("x-request-id"));
        let r = no_follow.get(gw.proxy_url("/old")).send().await.unwrap();
        assert_eq!(r.headers()["location"], "https://example.com/old");
    }
}

#[tokio::test]
async fn tokens_never_reach_a_log_line_an_export_or_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let gw = Process::start(&db, &["--log-format", "json"]);
    let admin = Backend::named("admin").start().await;
    gw.create_route(json!({
        "name": "admin", "path": "/admin", "backends": [{"url": admin.url}],
        "policies": {"auth": {"header": "X-Admin-Token", "tokens": [TOKEN]}}
    }))
    .await;
    let http = reqwest::Client::new();
    for token in [TOKEN, "wrong-token-42"] {
        http.get(format!("http://{}/admin/x", gw.proxy_addr))
            .header("x-admin-token", token)
            .send()
            .await
            .unwrap();
    }
    let export = http
        .get(format!("http://{}/admin/config", gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export.contains("sha256"), "{export}");
    let metrics = http
        .get(format!("http://{}/metrics", gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The access log names the policy that denied a request.
    let log = eventually(Duration::from_secs(10), || {
        let lines = gw.log.lock().unwrap().clone();
        async move {
            lines
                .iter()
                .any(|l| l.contains(r#""policy":"auth""#))
                .then_some(lines)
        }
    })
    .await
    .expect("an access-log line names the auth policy");
    for text in log
        .iter()
        .map(String::as_str)
        .chain([export.as_str(), metrics.as_str()])
    {
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!text.contains("wrong-token-42"), "{text}");
    }
}

#[tokio::test]
async fn a_routes_timeout_overrides_its_upstreams() {
    for inline in [true, false] {
        let gw = TestGateway::start_with(|s| s.server.inline = inline).await;
        let slow = Backend::named("slow")
            .delay(Duration::from_millis(1500))
            .start()
            .await;
        gw.create_upstream(json!({"name": "pool", "backends": [{"url": slow.url}], "retries": 0}))
            .await;
        gw.create_route(
            json!({"name": "quick", "path": "/quick", "upstream": "pool", "timeout_ms": 200}),
        )
        .await;
        gw.create_route(json!({"name": "patient", "path": "/patient", "upstream": "pool"}))
            .await;
        let r = gw.http.get(gw.proxy_url("/quick")).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::GATEWAY_TIMEOUT,
            "the route's 200 ms"
        );
        let r = gw.http.get(gw.proxy_url("/patient")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "the upstream's default 30 s");
    }
}
