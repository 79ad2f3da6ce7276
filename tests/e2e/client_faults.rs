//! A client's fault is the client's: a malformed, truncated, slow or
//! stalled request body is answered as such and never counts against a
//! backend (no ejection, no upstream error, no backend WARN).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{Backend, TestGateway, read_to_close, sample};

/// Two backends behind a route, default outlier detection (five failures
/// in a row eject), a 300 ms response-header timeout and a 300 ms client
/// body timeout.
async fn two_backends() -> (TestGateway, Backend, Backend) {
    let gw = TestGateway::start_with(|s| {
        s.proxy.client_body_timeout = Duration::from_millis(300);
    })
    .await;
    let a = Backend::named("a").start().await;
    let b = Backend::named("b").start().await;
    gw.create_upstream(json!({
        "name": "u",
        "backends": [{"url": a.url}, {"url": b.url}],
        "timeouts": {"response_header_ms": 300},
    }))
    .await;
    gw.create_route(json!({"name": "r", "path": "/", "upstream": "u"}))
        .await;
    (gw, a, b)
}

/// Send `pieces` with `gap` between them, then read the answer to the
/// close; its status (`None`: closed without one).
async fn upload(addr: SocketAddr, pieces: &[&str], gap: Duration, half_close: bool) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        if s.write_all(piece.as_bytes()).await.is_err() {
            break;
        }
    }
    if half_close {
        let _ = s.shutdown().await;
    }
    let raw = read_to_close(&mut s, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&raw);
    text.split(' ').nth(1).and_then(|c| c.parse().ok())
}

const CHUNKED: &str =
    "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn a_flood_of_bad_and_slow_bodies_leaves_every_backend_healthy() {
    let (gw, a, b) = two_backends().await;
    let addr = gw.gateway().proxy_addr;
    for i in 0..12 {
        // Malformed chunked framing: a 400.
        let bad = format!("{CHUNKED}zz\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            upload(addr, &[&bad], Duration::ZERO, false).await,
            Some(400),
            "#{i}"
        );
        // A bad chunk after a good one (some of the body has gone
        // upstream by then).
        let later = format!("{CHUNKED}5\r\nhello\r\n5\r\nworldXX\r\n0\r\n\r\n");
        assert_eq!(
            upload(addr, &[&later], Duration::ZERO, false).await,
            Some(400),
            "#{i}"
        );
        // Cut short: the client went away; whatever it is told, it is
        // not the backend's fault.
        let short = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly this";
        let status = upload(addr, &[short], Duration::ZERO, true).await;
        assert!(matches!(status, None | Some(400)), "#{i}: {status:?}");
    }
    // Slow but steady: the response-header timeout runs from the end of
    // the body, so 4 × 150 ms of upload against a 300 ms timeout is fine.
    let steady = [
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\nConnection: close\r\n\r\nabc",
        "def",
        "ghi",
        "jkl",
    ];
    for _ in 0..3 {
        let status = upload(addr, &steady, Duration::from_millis(150), false).await;
        assert_eq!(status, Some(200));
    }
    // Stalled past the client body timeout: a 408.
    for _ in 0..6 {
        let stalled = [
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\nConnection: close\r\n\r\nabc",
            "def",
        ];
        let status = upload(addr, &stalled, Duration::from_millis(700), false).await;
        assert!(matches!(status, Some(408)), "{status:?}");
    }
    // Nothing of it is held against the backends.
    for backend in [&a, &b] {
        let h = gw.backend_health("u", &backend.url).await;
        assert_eq!(h["ejections"], 0, "{h}");
        assert_eq!(h["ejected"], false, "{h}");
        assert_eq!(h["consecutive_failures"], 0, "{h}");
    }
    let metrics = gw.metrics().await;
    for kind in ["connect", "timeout", "protocol", "status_5xx"] {
        for backend in [&a, &b] {
            let errors = sample(
                &metrics,
                "switchyard_upstream_errors_total",
                &[("backend", &backend.url), ("kind", kind)],
            );
            assert_eq!(errors, Some(0.0), "{kind} {}", backend.url);
        }
    }
    let client_errors = sample(
        &metrics,
        "switchyard_requests_total",
        &[("route", "r"), ("method", "POST"), ("status", "400")],
    )
    .unwrap_or(0.0);
    assert!(
        client_errors >= 24.0,
        "counted as client errors: {client_errors}"
    );
    // Both backends still take their turns.
    let (before_a, before_b) = (a.hits(), b.hits());
    for _ in 0..10 {
        let (status, _) = gw.get("/after").await;
        assert_eq!(status, 200);
    }
    assert_eq!((a.hits() - before_a, b.hits() - before_b), (5, 5));
}

/// A backend that takes none of a body (and does not answer) is the one at
/// fault: the response-header timeout runs from the last piece it took.
#[tokio::test]
async fn a_backend_that_takes_no_body_times_out() {
    let (url, _) = crate::common::backend::raw_backend(|s, _head| async move {
        // Reads nothing more, answers nothing, for longer than the test.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    let gw = TestGateway::start().await;
    gw.create_upstream(
        json!({"name": "u", "backends": [{"url": url}], "retries": 0,
        "timeouts": {"response_header_ms": 300}}),
    )
    .await;
    gw.create_route(
        json!({"name": "r", "path": "/", "upstream": "u", "max_body_bytes": 1u64 << 30}),
    )
    .await;
    let size = 64 << 20;
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let head = tokio::time::timeout(Duration::from_secs(20), async {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tokio::io::AsyncReadExt::read(&mut rd, &mut byte)
                .await
                .unwrap_or(0)
                == 0
            {
                break;
            }
            head.push(byte[0]);
        }
        head
    })
    .await
    .expect("an answer within 20 s, not a request held forever");
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 504 "), "{text}");
    // And the request is over: its connection closes, and the backend
    // connection (which would hold the client's body) is let go.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut rest).await;
    })
    .await;
    assert!(
        closed.is_ok(),
        "the client connection was held after the 504"
    );
    writer.abort();
}
