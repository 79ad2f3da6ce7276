//! No backend answer can panic the gateway, and a panic all the same is
//! answered, logged once and counted: on the inline server and hyper's.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::backend::raw_backend;
use crate::common::{Backend, Process, TestGateway, eventually, read_to_close, sample};

/// A backend answering each path with the bytes of one response shape.
async fn heads_backend() -> String {
    raw_backend(|mut s, head| async move {
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let answer: &[u8] = match path.as_str() {
            // Valid (RFC 9112): relayed as the backend meant them.
            "/no-reason" => b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
            "/no-reason-space" => b"HTTP/1.1 404 \r\nContent-Length: 2\r\n\r\nno",
            "/obs-text-reason" => b"HTTP/1.1 200 Caf\xe9\r\nContent-Length: 2\r\n\r\nok",
            "/bare-lf" => b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: 1\n\nok",
            "/interim-no-reason" => {
                b"HTTP/1.1 103\r\nLink: </a>\r\n\r\nHTTP/1.1 201\r\nContent-Length: 2\r\n\r\nok"
            }
            "/empty-value" => {
                b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Spaces:   \r\nContent-Length: 2\r\n\r\nok"
            }
            "/obs-text-value" => {
                b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\nContent-Length: 2\r\n\r\nok"
            }
            "/code-599" => b"HTTP/1.1 599 Custom\r\nContent-Length: 2\r\n\r\nok",
            // Invalid: a 502.
            "/four-digits" => b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
            "/code-099" => b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok",
            "/code-600" => b"HTTP/1.1 600 High\r\nContent-Length: 2\r\n\r\nok",
            "/version" => b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "/garbage" => b"hello, world\r\n\r\n",
            "/nul" => b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
            "/folded" => b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
            "/space-before-colon" => b"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 2\r\n\r\nok",
            "/lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        };
        let _ = s.write_all(answer).await;
        let _ = s.shutdown().await;
    })
    .await
    .0
}

/// What a client sees of one answer: everything until the close.
async fn ask(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let raw = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(!raw.is_empty(), "{path}: an empty reply");
    String::from_utf8_lossy(&raw).into_owned()
}

fn gateways() -> [(&'static str, bool); 2] {
    [("inline", true), ("hyper", false)]
}

#[tokio::test]
async fn every_valid_response_head_is_relayed_and_an_invalid_one_is_a_502() {
    let backend = heads_backend().await;
    let port = backend.rsplit(':').next().unwrap().to_string();
    let mut answers = Vec::new();
    for (_, inline) in gateways() {
        let gw = TestGateway::routing_all_to(&backend, inline).await;
        let addr = gw.gateway().proxy_addr;
        let mut seen = Vec::new();
        for (path, status_line, body) in [
            ("/no-reason", "HTTP/1.1 200 \r\n", "ok"),
            ("/no-reason-space", "HTTP/1.1 404 \r\n", "no"),
            ("/obs-text-reason", "HTTP/1.1 200 \r\n", "ok"),
            ("/bare-lf", "HTTP/1.1 200 OK\r\n", "ok"),
            ("/interim-no-reason", "HTTP/1.1 103 Early Hints\r\n", "ok"),
            ("/empty-value", "HTTP/1.1 200 OK\r\n", "ok"),
            ("/obs-text-value", "HTTP/1.1 200 OK\r\n", "ok"),
            ("/code-599", "HTTP/1.1 599 Custom\r\n", "ok"),
        ] {
            let text = ask(addr, path).await;
            assert!(text.starts_with(status_line), "{path}: {text:?}");
            assert!(text.ends_with(body), "{path}: {text:?}");
            seen.push(text.lines().next().unwrap().to_string());
        }
        let text = ask(addr, "/interim-no-reason").await;
        assert!(text.contains("\r\nHTTP/1.1 201 \r\n"), "{text:?}");
        let text = ask(addr, "/empty-value").await.to_ascii_lowercase();
        assert!(text.contains("\r\nx-empty: \r\n"), "{text:?}");
        let text = ask(addr, "/obs-text-value").await;
        assert!(text.contains("caf\u{fffd}"), "the byte passed on: {text:?}");
        for path in [
            "/four-digits",
            "/code-099",
            "/code-600",
            "/version",
            "/garbage",
            "/nul",
            "/folded",
            "/space-before-colon",
            "/lengths",
        ] {
            let text = ask(addr, path).await;
            assert!(
                text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
                "{path}: {text:?}"
            );
            let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!(body["error"], "upstream_protocol", "{path}");
            assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
            // Nothing of the inside: neither the backend's address nor
            // the parser's complaint.
            assert!(
                !text.contains("127.0.0.1") && !text.contains(&port),
                "{text}"
            );
            seen.push(format!("{path} 502"));
        }
        answers.push(seen);
    }
    assert_eq!(
        answers[0], answers[1],
        "the inline server and hyper's agree"
    );
}

/// One request on `s` (kept open): the status and the body of the answer.
async fn exchange(s: &mut TcpStream, request: &str) -> (u16, Value) {
    s.write_all(request.as_bytes()).await.unwrap();
    let head = crate::common::read_head(s).await;
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a length")
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    s.read_exact(&mut body).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

fn request(path: &str, id: &str, fault: Option<&str>) -> String {
    let fault = fault.map_or(String::new(), |f| {
        format!("X-Switchyard-Test-Panic: {f}\r\n")
    });
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Request-ID: {id}\r\n{fault}\r\n")
}

#[tokio::test]
async fn a_panic_is_answered_500_with_the_request_id_and_the_connection_goes_on() {
    let a = Backend::named("a").start().await;
    for (server, inline) in gateways() {
        let gw = TestGateway::routing_all_to(&a.url, inline).await;
        let addr = gw.gateway().proxy_addr;
        let mut bystander = TcpStream::connect(addr).await.unwrap();
        let before = sample(&gw.metrics().await, "switchyard_panics_total", &[]).unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        for (i, stage) in ["route", "send"].into_iter().enumerate() {
            let id = format!("{server}-{stage}");
            let (status, body) = exchange(&mut s, &request("/x", &id, Some(stage))).await;
            assert_eq!(status, 500, "{server} {stage}: {body}");
            assert_eq!(body["error"], "internal_error");
            assert_eq!(body["request_id"], id);
            // The connection's next request is served.
            let (status, body) =
                exchange(&mut s, &request("/next", &format!("{id}-next"), None)).await;
            assert_eq!(
                (status, &body["path"]),
                (200, &json!("/next")),
                "{server} {stage}"
            );
            let metrics = gw.metrics().await;
            let panics = sample(&metrics, "switchyard_panics_total", &[]).unwrap();
            assert!(
                panics >= before + i as f64 + 1.0,
                "{server} {stage}: {panics}"
            );
        }
        // Once the body streams, the answer is aborted, and only it.
        s.write_all(request("/x", &format!("{server}-body"), Some("body")).as_bytes())
            .await
            .unwrap();
        let raw = read_to_close(&mut s, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n"),
            "{server}: {text:?}"
        );
        assert!(
            !text.contains("\"path\":\"/x\""),
            "{server}: not a whole answer: {text:?}"
        );
        let (status, _) = exchange(&mut bystander, &request("/other", "other", None)).await;
        assert_eq!(status, 200, "{server}: another connection is untouched");
        let (status, _) = crate::common::raw_get(addr, "/after").await;
        assert_eq!(status, 200);
    }
}

/// The real binary: the panic is logged once, with the request ID, and
/// Rust's own panic message is not printed beside it.
#[tokio::test]
async fn a_panic_is_logged_once_with_the_request_id() {
    let a = Backend::named("a").start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gw.db").display());
    let gw = Process::start(&url, &["--log-format", "json"]);
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let id = "panic-logged-once";
    let (status, _) = crate::common::raw_request(
        gw.proxy_addr,
        &format!("GET / HTTP/1.1\r\nHost: t\r\nX-Request-ID: {id}\r\nX-Switchyard-Test-Panic: send\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 500);
    let logged = eventually(Duration::from_secs(5), || {
        let lines = gw.log.lock().unwrap().clone();
        async move {
            lines
                .iter()
                .any(|l| l.contains("request handling panicked"))
                .then_some(lines)
        }
    })
    .await
    .expect("the panic is logged");
    let about: Vec<_> = logged.iter().filter(|l| l.contains("panicked")).collect();
    assert_eq!(about.len(), 1, "{about:#?}");
    let line: Value = serde_json::from_str(about[0]).unwrap();
    assert_eq!(line["fields"]["request_id"], id, "{line}");
    assert!(
        line["fields"]["panic"]
            .as_str()
            .unwrap()
            .contains("fault injected"),
        "{line}"
    );
    assert!(
        !logged.iter().any(|l| l.starts_with("thread '")),
        "{logged:#?}"
    );
}

/// A failure's answer names its kind, never the backend's address nor the
/// OS error; the access log line has both (`error`), and the authority the
/// request was routed by (`host`: an absolute-form target's over `Host`).
#[tokio::test]
async fn error_bodies_hide_the_inside_and_the_access_log_tells_it() {
    let dead = crate::common::backend::dead_url().await;
    let port = dead.rsplit(':').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gw.db").display());
    let gw = Process::start(&url, &["--log-format", "json"]);
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": dead}]}))
        .await;
    for (id, target, host) in [
        ("hidden-1", "/x", "public.example"),
        ("hidden-2", "http://routed.example/x", "public.example"),
    ] {
        let raw = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Request-ID: {id}\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = crate::common::raw_request(gw.proxy_addr, &raw).await;
        assert_eq!(status, 502, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["error"], "upstream_connect");
        assert_eq!(answer["request_id"], id);
        for inside in ["127.0.0.1", port.as_str(), "refused", "os error"] {
            assert!(!body.contains(inside), "{inside:?} in {body}");
        }
    }
    let lines = eventually(Duration::from_secs(5), || {
        let lines = gw.log.lock().unwrap().clone();
        async move {
            let access: Vec<Value> = lines
                .iter()
                .filter(|l| l.contains("switchyard::access"))
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            (access.len() >= 2).then_some(access)
        }
    })
    .await
    .expect("two access lines");
    for (line, host) in lines.iter().zip(["public.example", "routed.example"]) {
        let f = &line["fields"];
        assert_eq!(f["status"], 502);
        assert_eq!(f["host"], host, "{line}");
        let error = f["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {line}"));
        assert!(error.contains(&dead), "{error}");
        assert!(error.contains("refused"), "{error}");
    }
}
