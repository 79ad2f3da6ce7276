//! Streaming, upgrades (WebSocket tunnels), cancellation and timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::backend::raw_backend;
use crate::common::{Backend, TestGateway, eventually, read_head};

/// A backend that accepts WebSocket upgrades and then echoes bytes back
/// upper-cased; it closes when the client half-closes.
async fn upgrade_echo_backend() -> String {
    raw_backend(|mut s, head| async move {
        if !head.to_ascii_lowercase().contains("upgrade: websocket") {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno").await;
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await;
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = s.shutdown().await;
                    return;
                }
                Ok(n) => {
                    let _ = s.write_all(&buf[..n].to_ascii_uppercase()).await;
                }
            }
        }
    })
    .await
    .0
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// A WebSocket tunnel through `gw` to an upper-casing echo backend (route
/// `/ws`): the client socket once the gateway answered 101, and that head.
async fn open_tunnel(gw: &TestGateway) -> (TcpStream, String) {
    let url = upgrade_echo_backend().await;
    gw.create_route(json!({"name": "ws", "path": "/ws", "backends": [{"url": url}]}))
        .await;
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    s.write_all(UPGRADE.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (s, head)
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_both_ways_with_half_close() {
    let gw = TestGateway::start().await;
    let (mut s, head) = open_tunnel(&gw).await;
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in ["hello", "second frame"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg.to_ascii_uppercase().as_bytes());
    }
    // Half-close: our FIN reaches the backend, whose close reaches us.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(matches!(n, Ok(Ok(0))), "{n:?}");
}

#[tokio::test]
async fn a_refused_upgrade_never_becomes_a_tunnel_and_h2c_is_stripped() {
    let gw = TestGateway::start().await;
    let plain = Backend::named("plain").start().await;
    gw.create_route(json!({"name": "p", "path": "/", "backends": [{"url": plain.url}]}))
        .await;
    // The backend answers 200 to an upgrade request: an ordinary response.
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    s.write_all(UPGRADE.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("upgrade:"), "{head}");
    // h2c upgrade tokens are not passed on.
    let r = gw
        .http
        .get(gw.proxy_url("/"))
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert!(echo["headers"].get("upgrade").is_none(), "{echo}");
    assert!(echo["headers"].get("http2-settings").is_none(), "{echo}");
}

#[tokio::test]
async fn a_quiet_tunnel_outlives_the_header_read_timeout() {
    let gw = TestGateway::start_with(|s| {
        s.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = open_tunnel(&gw).await.0;
    // Quiet for more than twice the timeout (the tunnel's own idle limit
    // is minutes): the tunnel is not the connection watchdog's business.
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.write_all(b"still there").await.unwrap();
    let mut buf = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("an echo within 5 s")
        .unwrap();
    assert_eq!(&buf, b"STILL THERE");
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let gw = TestGateway::start_with(|s| s.proxy.tunnel_idle = Duration::from_millis(300)).await;
    let mut s = open_tunnel(&gw).await.0;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn shutdown_drains_open_websockets() {
    let gw = TestGateway::start().await;
    let mut s = open_tunnel(&gw).await.0;
    let stopping = tokio::spawn(gw.stop());
    // During the drain the tunnel still works.
    s.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"STILL HERE");
    assert!(
        !stopping.is_finished(),
        "shutdown did not wait for the open tunnel"
    );
    // Once the client is done, shutdown completes.
    drop(s);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn event_streams_are_flushed_per_event() {
    let gw = TestGateway::start().await;
    let (url, _) = raw_backend(|mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let _ = s.write_all(b"d\r\ndata: first\n\n\r\n").await;
        // The second event comes much later.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let _ = s.write_all(b"e\r\ndata: second\n\n\r\n0\r\n\r\n").await;
    })
    .await;
    gw.create_route(json!({"name": "sse", "path": "/", "backends": [{"url": url}]}))
        .await;
    let mut r = gw.http.get(gw.proxy_url("/events")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("the first event arrives before the stream ends")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
}

#[tokio::test]
async fn an_upstream_that_dies_mid_body_aborts_the_response() {
    let gw = TestGateway::start().await;
    let (url, _) = raw_backend(|mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly a little")
            .await;
        // Then the backend crashes.
    })
    .await;
    gw.create_upstream(json!({"name": "u", "retries": 0, "backends": [{"url": url}]}))
        .await;
    gw.create_route(json!({"name": "r", "path": "/", "upstream": "u"}))
        .await;
    let r = gw.http.get(gw.proxy_url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "a short body must not look complete"
    );
}

#[tokio::test]
async fn a_stalled_body_is_aborted_after_body_idle_within_ten_percent() {
    let gw = TestGateway::start().await;
    let (url, _) = raw_backend(|mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nstart")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    gw.create_upstream(
        json!({"name": "u", "timeouts": {"body_idle_ms": 400}, "backends": [{"url": url}]}),
    )
    .await;
    gw.create_route(json!({"name": "r", "path": "/", "upstream": "u"}))
        .await;
    let r = gw.http.get(gw.proxy_url("/")).send().await.unwrap();
    let started = Instant::now();
    assert!(r.bytes().await.is_err());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(360) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn response_header_timeout_is_kept_within_ten_percent() {
    let gw = TestGateway::start().await;
    let slow = Backend::named("slow")
        .delay(Duration::from_secs(10))
        .start()
        .await;
    gw.create_upstream(json!({"name": "u", "retries": 0, "timeouts": {"response_header_ms": 1000}, "backends": [{"url": slow.url}]}))
        .await;
    gw.create_route(json!({"name": "r", "path": "/", "upstream": "u"}))
        .await;
    let started = Instant::now();
    let (status, body) = gw.get_json("/").await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(1100),
        "{took:?}"
    );
}

#[tokio::test]
async fn connect_timeout_is_kept_within_ten_percent() {
    hanging_connect_gives_504_in(json!({"connect_ms": 800}), Duration::from_millis(800)).await;
}

/// The response-header timeout counts from the attempt's start, so it also
/// ends a connect that the connect timeout would allow longer.
#[tokio::test]
async fn response_header_timeout_also_bounds_the_connect() {
    hanging_connect_gives_504_in(
        json!({"connect_ms": 5000, "response_header_ms": 600}),
        Duration::from_millis(600),
    )
    .await;
}

/// A GET to a backend whose connects hang gets a 504 after `expected`
/// (within 10%), with these upstream `timeouts`.
async fn hanging_connect_gives_504_in(timeouts: serde_json::Value, expected: Duration) {
    // A listener whose backlog is full drops further SYNs: connects hang.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let gw = TestGateway::start().await;
    gw.create_upstream(json!({"name": "u", "retries": 0, "timeouts": timeouts,
        "backends": [{"url": format!("http://{addr}")}]}))
        .await;
    gw.create_route(json!({"name": "r", "path": "/", "upstream": "u"}))
        .await;
    let started = Instant::now();
    let (status, body) = gw.get_json("/").await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "upstream_timeout");
    assert!(
        took >= expected * 9 / 10 && took <= expected * 11 / 10,
        "{took:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_upstream_request() {
    let gw = TestGateway::start().await;
    let closed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&closed);
    let (url, conns) = raw_backend(move |mut s, _| {
        let seen = Arc::clone(&seen);
        async move {
            // Never answer; notice when the gateway hangs up.
            let mut buf = [0u8; 64];
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await
            {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": url}]}))
        .await;
    let mut client = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    client
        .write_all(b"GET /long HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            (conns.load(Ordering::SeqCst) == 1).then_some(())
        })
        .await
        .is_some()
    );
    drop(client);
    let cancelled = eventually(Duration::from_secs(5), || async {
        (closed.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert!(
        cancelled.is_some(),
        "the upstream request outlived its client"
    );
}

#[tokio::test]
async fn trailers_are_relayed_to_clients_that_accept_them() {
    let gw = TestGateway::start().await;
    let saw_te = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&saw_te);
    let (url, _) = raw_backend(move |mut s, head| {
        let seen = Arc::clone(&seen);
        async move {
            if head.to_ascii_lowercase().contains("te: trailers") {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n")
                .await;
        }
    })
    .await;
    gw.create_route(json!({"name": "t", "path": "/", "backends": [{"url": url}]}))
        .await;
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.contains("hello"), "{text}");
    assert!(text.contains("x-checksum: abc123"), "{text}");
    assert_eq!(
        saw_te.load(Ordering::SeqCst),
        1,
        "the backend was told trailers are welcome"
    );
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The client holds its body until it hears 100 Continue.
    let interim = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .expect("100 Continue arrives");
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    s.write_all(b"hello").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"body\":\"hello\""), "{text}");
}

/// A backend answering `/hints` with a 103 and then, once `release` is
/// notified, the final 200; `/hints-now` sends both at once; anything else
/// gets a plain 200. One request per connection (each answer says close).
async fn early_hints_backend(release: Arc<tokio::sync::Notify>) -> String {
    let (url, _) = raw_backend(move |mut s, head| {
        let release = Arc::clone(&release);
        async move {
            const HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\nServer: leaky\r\n\r\n";
            const FINAL: &[u8] =
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
            if head.starts_with("GET /hints-now ") {
                let _ = s.write_all(&[HINTS, FINAL].concat()).await;
            } else if head.starts_with("GET /hints ") {
                let _ = s.write_all(HINTS).await;
                release.notified().await;
                let _ = s.write_all(FINAL).await;
            } else {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nplain")
                    .await;
            }
        }
    })
    .await;
    url
}

#[tokio::test]
async fn early_hints_reach_the_client_before_the_final_response() {
    let gw = TestGateway::start().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let url = early_hints_backend(Arc::clone(&release)).await;
    gw.create_route(json!({"name": "h", "path": "/", "backends": [{"url": url}]}))
        .await;
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    s.write_all(b"GET /hints HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // The backend holds its final answer until the client has the hints.
    let hints = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .expect("103 arrives while the backend still works");
    assert!(hints.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{hints}");
    let lower = hints.to_ascii_lowercase();
    assert!(
        lower.contains("link: </app.css>; rel=preload\r\n"),
        "{hints}"
    );
    assert!(!lower.contains("server:"), "{hints}");
    release.notify_one();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .expect("the final answer follows");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let mut body = [0u8; 5];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"hello");

    // The connection is still in step: the next answer is whole and plain.
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nplain"), "{text}");
}

#[tokio::test]
async fn early_hints_sent_with_the_final_response_still_come_first() {
    let gw = TestGateway::start().await;
    let url = early_hints_backend(Arc::new(tokio::sync::Notify::new())).await;
    gw.create_route(json!({"name": "h", "path": "/", "backends": [{"url": url}]}))
        .await;
    let addr = gw.gateway().proxy_addr;
    let fetch = |request: &'static [u8]| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };

    let text = fetch(b"GET /hints-now HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    let (hints, rest) = text.split_once("\r\n\r\n").expect("two heads");
    assert!(hints.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{text}");
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(rest.ends_with("\r\n\r\nhello"), "{text}");

    // Pipelined behind another request, the hint may only ever stand
    // between whole messages.
    let text = fetch(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\nGET /hints-now HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    let (first, second) = text.split_once("plain").expect("first answer whole");
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let second = match second.split_once("\r\n\r\n") {
        Some((hints, rest)) if hints.starts_with("HTTP/1.1 103 ") => rest,
        _ => second,
    };
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(second.ends_with("\r\n\r\nhello"), "{text}");

    // HTTP/1.0 clients must not get a 1xx (RFC 9110 §15.2).
    let text = fetch(b"GET /hints-now HTTP/1.0\r\nHost: t\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(!text.contains("103"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
}
