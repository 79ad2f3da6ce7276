//! Proxying: routing, balancing, headers, failures.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::backend::{dead_url, raw_backend};
use crate::common::{Backend, TestGateway, raw_get};

#[tokio::test]
async fn a_posted_route_is_used_by_the_very_next_request() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    assert_eq!(gw.get("/svc").await.0, StatusCode::NOT_FOUND);
    gw.create_route(json!({"name": "svc", "path": "/svc", "backends": [{"url": a.url}]}))
        .await;
    // No waiting: the 201 is sent after the snapshot is live.
    let (status, echo) = gw.get_json("/svc/x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["backend"], "a");
    assert_eq!(echo["path"], "/svc/x");
}

#[tokio::test]
async fn strip_prefix_keeps_the_query() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(
        json!({"name": "api", "path": "/api", "strip_prefix": true, "backends": [{"url": a.url}]}),
    )
    .await;
    let (_, echo) = gw.get_json("/api/users/7?fields=a,b&x=%20y").await;
    assert_eq!(echo["path"], "/users/7");
    assert_eq!(echo["query"], "fields=a,b&x=%20y");
    let (_, echo) = gw.get_json("/api").await;
    assert_eq!(echo["path"], "/");
    let (_, echo) = gw.get_json("/api?q=1").await;
    assert_eq!(echo["path"], "/");
    assert_eq!(echo["query"], "q=1");
    // Segment boundary: /apix is not /api.
    assert_eq!(gw.get("/apix").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn round_robin_alternates_exactly() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    gw.create_route(
        json!({"name": "rr", "path": "/", "backends": [{"url": a.url}, {"url": b.url}]}),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(
            gw.get_json("/").await.1["backend"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let first = seen[0].clone();
    let other = if first == "a" { "b" } else { "a" };
    for (i, name) in seen.iter().enumerate() {
        assert_eq!(name, if i % 2 == 0 { &first } else { other }, "{seen:?}");
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[tokio::test]
async fn weight_zero_drains_a_backend() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    let _ = gw
        .create_route(
            json!({"name": "d", "path": "/", "backends": [{"url": a.url}, {"url": b.url}]}),
        )
        .await;
    let (_, up) = gw
        .admin_json(reqwest::Method::GET, "/admin/upstreams/d", None)
        .await;
    let id = up["backends"][0]["id"].as_u64().unwrap();
    let (status, _) = gw
        .admin_json(
            reqwest::Method::PATCH,
            &format!("/admin/upstreams/d/backends/{id}"),
            Some(json!({"weight": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..6 {
        assert_eq!(gw.get_json("/").await.1["backend"], "b");
    }
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn deleting_a_route_gives_404_json() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "gone", "path": "/gone", "backends": [{"url": a.url}]}))
        .await;
    assert_eq!(gw.get("/gone").await.0, StatusCode::OK);
    let r = gw
        .admin(reqwest::Method::DELETE, "/admin/routes/gone", None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = gw.http.get(gw.proxy_url("/gone")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["request_id"], id);
    // Its inline upstream went with it.
    let (status, _) = gw
        .admin_json(reqwest::Method::GET, "/admin/upstreams/gone", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dead_backend_gives_502_json_with_request_id() {
    let gw = TestGateway::start().await;
    gw.create_route(json!({"name": "dead", "path": "/", "backends": [{"url": dead_url().await}]}))
        .await;
    let r = gw
        .http
        .get(gw.proxy_url("/x"))
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(r.headers()["x-request-id"], "trace-123");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], 502);
    assert_eq!(body["error"], "upstream_connect");
    assert_eq!(body["request_id"], "trace-123");
}

#[tokio::test]
async fn slow_backend_gives_504_after_the_response_header_timeout() {
    let gw = TestGateway::start().await;
    let slow = Backend::named("slow")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let (status, _) = gw
        .admin_json(
            reqwest::Method::POST,
            "/admin/upstreams",
            Some(json!({"name": "slow", "backends": [{"url": slow.url}], "timeouts": {"response_header_ms": 200}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    gw.create_route(json!({"name": "slow", "path": "/", "upstream": "slow"}))
        .await;
    let (status, body) = gw.get_json("/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["error"], "upstream_timeout");
}

#[tokio::test]
async fn empty_upstream_gives_503() {
    let gw = TestGateway::start().await;
    let (status, _) = gw
        .admin_json(
            reqwest::Method::POST,
            "/admin/upstreams",
            Some(json!({"name": "empty"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    gw.create_route(json!({"name": "e", "path": "/", "upstream": "empty"}))
        .await;
    let (status, body) = gw.get_json("/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "no_backend");
}

#[tokio::test]
async fn headers_are_rewritten_both_ways() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "h", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let r = gw
        .http
        .get(gw.proxy_url("/h"))
        .header("host", "shop.example:8443")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-secret, x-forwarded-for")
        .header("x-secret", "do not forward")
        .header("keep-alive", "timeout=5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "a request ID is generated: {id}");
    assert!(r.headers().get("server").is_none());
    assert!(r.headers().get("x-powered-by").is_none());
    let echo: serde_json::Value = r.json().await.unwrap();
    let h = &echo["headers"];
    assert!(
        h.get("x-secret").is_none(),
        "Connection-named header stripped"
    );
    assert!(h.get("keep-alive").is_none());
    // Listed in Connection, but the gateway's own value is set after stripping.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example:8443");
    assert_eq!(h["x-request-id"], id.as_str());
    assert_eq!(
        h["host"],
        a.addr.to_string(),
        "Host is rewritten to the backend"
    );
}

#[tokio::test]
async fn forwarding_headers_from_untrusted_clients_are_replaced() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "h", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let r = gw
        .http
        .get(gw.proxy_url("/"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-real-ip", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.7")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    assert_eq!(r.headers()["via"], "1.1 switchyard");
    let echo: serde_json::Value = r.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h.get("forwarded").is_none());
    assert_eq!(h["x-request-id"], "abc-123");
    assert_eq!(h["via"], "1.1 switchyard");
}

#[tokio::test]
async fn trusted_proxies_are_extended_and_forwarded_is_sent() {
    let gw = TestGateway::start_with(|s| {
        s.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        s.proxy.forwarded_header = true;
    })
    .await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "h", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let r = gw
        .http
        .get(gw.proxy_url("/"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .header("host", "shop.example")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(
        h["forwarded"],
        "for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=shop.example"
    );
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(
        json!({"name": "p", "path": "/", "preserve_host": true, "backends": [{"url": a.url}]}),
    )
    .await;
    let r = gw
        .http
        .get(gw.proxy_url("/"))
        .header("host", "shop.example")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["host"], "shop.example");
    assert_eq!(echo["headers"]["x-forwarded-host"], "shop.example");
}

#[tokio::test]
async fn hosts_and_methods_route_requests() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    gw.create_route(json!({"name": "shop", "path": "/", "hosts": ["shop.example"], "backends": [{"url": a.url}]}))
        .await;
    gw.create_route(
        json!({"name": "writes", "path": "/", "methods": ["POST"], "backends": [{"url": b.url}]}),
    )
    .await;
    let get = |host: &'static str| {
        let req = gw.http.get(gw.proxy_url("/p")).header("host", host);
        async move { req.send().await.unwrap() }
    };
    assert_eq!(
        get("shop.example")
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()["backend"],
        "a"
    );
    assert_eq!(
        get("SHOP.example:80")
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()["backend"],
        "a"
    );
    assert_eq!(get("other.example").await.status(), StatusCode::NOT_FOUND);
    let r = gw
        .http
        .post(gw.proxy_url("/p"))
        .body("payload")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["backend"], "b");
    assert_eq!(echo["body"], "payload", "request body streamed through");
}

#[tokio::test]
async fn encoded_paths_are_normalised_before_matching() {
    let gw = TestGateway::start().await;
    let a = Backend::named("public").start().await;
    gw.create_route(json!({"name": "pub", "path": "/pub", "backends": [{"url": a.url}]}))
        .await;
    let addr = gw.gateway().proxy_addr;
    // Nothing routes /admin: every spelling of it must miss.
    for trick in [
        "/pub/../admin",
        "/pub/%2e%2e/admin",
        "/pub/%2E%2e/admin",
        "//admin",
        "/./admin",
        "/%61dmin",
        "/admin;x",
    ] {
        let (status, body) = raw_get(addr, trick).await;
        assert_eq!(status, 404, "{trick}: {body}");
    }
    for refused in [
        "/pub/a%2fb",
        "/admin%2f",
        "/pub/%5c",
        "/pub/%00",
        "/pub/%zz",
    ] {
        let (status, body) = raw_get(addr, refused).await;
        assert_eq!(status, 400, "{refused}: {body}");
        assert!(body.contains("bad_path"), "{body}");
    }
    // The normalised path is exactly what reaches the backend.
    let (status, body) = raw_get(addr, "/pub//x/../%79/./z?q=%2e").await;
    assert_eq!(status, 200);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/pub/y/z");
    assert_eq!(echo["query"], "q=%2e");
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "h2", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client.get(gw.proxy_url("/two")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::OK);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/two");
    assert_eq!(
        echo["headers"]["x-forwarded-host"],
        gw.gateway().proxy_addr.to_string()
    );
}

#[tokio::test]
async fn upstream_error_statuses_pass_through_untouched() {
    let gw = TestGateway::start().await;
    let broken = Backend::named("broken").status(500).start().await;
    gw.create_route(json!({"name": "b", "path": "/", "backends": [{"url": broken.url}]}))
        .await;
    let (status, echo) = gw.get_json("/boom").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        echo["backend"], "broken",
        "the backend's own body, not a gateway error"
    );
}

/// The next request head (without its blank line) read from a raw backend
/// connection, `buf` holding what was read ahead; `None` once the peer
/// closes.
async fn next_head(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    Some(head)
}

/// A keep-alive backend on raw sockets that counts connections and answers
/// every request with the Host and request target it saw, with a
/// Content-Length or chunked.
async fn counting_backend(
    chunked: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    raw_backend(move |mut s, first| async move {
        let mut head = first;
        let mut buf = Vec::new();
        loop {
            let target = head.split(' ').nth(1).unwrap_or("").to_string();
            let host = head
                .lines()
                .find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
                .unwrap_or("")
                .to_string();
            let body = format!("{host} {target}");
            let resp = if chunked {
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            if s.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            // The next request head on the same connection.
            match next_head(&mut s, &mut buf).await {
                Some(next) => head = next,
                None => return,
            }
        }
    })
    .await
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_reused() {
    let gw = TestGateway::start().await;
    for (name, chunked) in [("length", false), ("chunked", true)] {
        let (url, conns) = counting_backend(chunked).await;
        gw.create_route(
            json!({"name": name, "path": format!("/{name}"), "backends": [{"url": url}]}),
        )
        .await;
        let authority = url.trim_start_matches("http://").to_string();
        for i in 0..20 {
            let (status, body) = gw.get(&format!("/{name}/{i}?q=1")).await;
            assert_eq!(status, StatusCode::OK);
            // Origin-form target, and the backend's own Host.
            assert_eq!(body, format!("{authority} /{name}/{i}?q=1"));
        }
        assert_eq!(
            conns.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "20 {name} answers in a row share one backend connection"
        );
    }
}

#[tokio::test]
async fn backend_closing_idle_connections_costs_no_request() {
    use tokio::io::AsyncWriteExt;
    let gw = TestGateway::start().await;
    // Answers one request per connection as keep-alive, then closes the
    // connection while the gateway holds it idle.
    let (url, conns) = raw_backend(|mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    })
    .await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": url}]}))
        .await;
    for i in 0..10 {
        let (status, body) = gw.get(&format!("/{i}")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "ok"),
            "request {i}"
        );
        // Sometimes before the backend closed, sometimes after.
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 10);
}

#[tokio::test]
async fn bodiless_answers_keep_their_framing_and_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = TestGateway::start().await;
    // Keep-alive backend: HEAD gets a Content-Length and no body, /204 and
    // /304 no body, anything else five bytes.
    let (url, conns) = raw_backend(|mut s, first| async move {
        let mut head = first;
        let mut buf = Vec::new();
        loop {
            let resp: &[u8] = if head.starts_with("HEAD ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
            } else if head.starts_with("GET /204") {
                b"HTTP/1.1 204 No Content\r\n\r\n"
            } else if head.starts_with("GET /304") {
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            };
            if s.write_all(resp).await.is_err() {
                return;
            }
            // The next request head on the same connection.
            match next_head(&mut s, &mut buf).await {
                Some(next) => head = next,
                None => return,
            }
        }
    })
    .await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": url}]}))
        .await;
    let mut s = tokio::net::TcpStream::connect(gw.gateway().proxy_addr)
        .await
        .unwrap();
    let mut answers = String::new();
    for (request, expect_body) in [
        ("HEAD /a", ""),
        ("GET /204", ""),
        ("GET /304", ""),
        ("GET /b", "hello"),
    ] {
        s.write_all(format!("{request} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // Read exactly one answer: its head, then the body it announces
        // (none for HEAD, 204 and 304).
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
                .await
                .expect("answer head within 5 s")
                .unwrap();
            assert_eq!(n, 1, "connection closed after {got:?}");
            got.push(byte[0]);
        }
        let mut body = vec![0u8; expect_body.len()];
        s.read_exact(&mut body).await.unwrap();
        assert_eq!(body, expect_body.as_bytes(), "{request}");
        answers.push_str(&String::from_utf8_lossy(&got));
    }
    let lower = answers.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200 ok\r\n"), "{answers}");
    assert!(
        lower.contains("content-length: 5"),
        "HEAD keeps the length: {answers}"
    );
    assert!(lower.contains("http/1.1 204 no content"), "{answers}");
    assert!(lower.contains("http/1.1 304 not modified"), "{answers}");
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "bodiless answers leave the backend connection reusable"
    );
}
