//! Protocol safety over raw sockets: request lines, Host, limits, timeouts,
//! smuggling. Where the point is bytes on the wire, the test writes them.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Backend, TestGateway, raw_request, read_head};

async fn gateway_with_backend() -> (TestGateway, Backend) {
    let gw = TestGateway::start_with(|s| {
        s.server.header_read_timeout = Duration::from_millis(400);
    })
    .await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "pub", "path": "/pub", "max_body_bytes": 1000, "backends": [{"url": a.url}]}))
        .await;
    (gw, a)
}

#[tokio::test]
async fn request_lines_and_hosts_a_gateway_must_refuse() {
    let (gw, a) = gateway_with_backend().await;
    let addr = gw.gateway().proxy_addr;
    let cases = [
        (
            "CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n",
            405,
        ),
        (
            "OPTIONS * HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
            400,
        ),
        ("GET /pub HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (
            "GET /pub HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /pub/%2e%2e/%2e%2e/etc HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            404,
        ),
    ];
    for (raw, want) in cases {
        let (status, body) = raw_request(addr, raw).await;
        assert_eq!(status, want, "{raw:?}: {body}");
    }
    // HTTP/1.0 needs no Host.
    let (status, _) = raw_request(addr, "GET /pub HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    assert_eq!(a.hits(), 1, "only the valid request reached the backend");
}

#[tokio::test]
async fn absolute_form_is_routed_by_config_never_to_its_authority() {
    let (gw, a) = gateway_with_backend().await;
    let elsewhere = Backend::named("elsewhere").start().await;
    let raw = format!(
        "GET http://{}/pub/x HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        elsewhere.addr
    );
    let (status, body) = raw_request(gw.gateway().proxy_addr, &raw).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"backend\":\"a\""), "{body}");
    assert_eq!((a.hits(), elsewhere.hits()), (1, 0));
}

#[tokio::test]
async fn size_limits_answer_414_431_413() {
    let (gw, a) = gateway_with_backend().await;
    let addr = gw.gateway().proxy_addr;
    let long_path = format!("/pub/{}", "a".repeat(9 * 1024));
    let (status, _) = raw_request(
        addr,
        &format!("GET {long_path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 414);
    let big_header = "x".repeat(70 * 1024);
    let (status, _) = raw_request(
        addr,
        &format!("GET /pub HTTP/1.1\r\nHost: t\r\nX-Big: {big_header}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 431);
    // Declared too large: refused before any byte goes upstream.
    let r = gw
        .http
        .post(gw.proxy_url("/pub"))
        .body(vec![b'x'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(a.hits(), 0);
    // Chunked, so only counting while streaming can tell.
    let chunk = format!("3e8\r\n{}\r\n", "z".repeat(1000));
    let raw = format!(
        "POST /pub HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(5)
    );
    let (status, body) = raw_request(addr, &raw).await;
    assert_eq!(status, 413, "{body}");
    // Within the limit, chunked or not, it passes.
    let r = gw
        .http
        .post(gw.proxy_url("/pub"))
        .body(vec![b'y'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Read from `s` until the peer closes; `Err` if it stays open past `deadline`.
async fn closed_within(s: &mut TcpStream, deadline: Duration) -> Result<(), ()> {
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn slowloris_and_idle_keep_alive_connections_are_closed() {
    let (gw, _a) = gateway_with_backend().await;
    let addr = gw.gateway().proxy_addr;
    // A head that never completes.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /pub HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5))
            .await
            .is_ok(),
        "slowloris connection left open"
    );
    // A keep-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /pub HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut idle, Duration::from_secs(5))
            .await
            .is_ok(),
        "idle keep-alive left open"
    );
}

#[tokio::test]
async fn a_head_still_coming_in_does_not_hold_up_the_drain() {
    let (gw, _a) = gateway_with_backend().await;
    let mut slow = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    slow.write_all(b"GET /pub HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    // The drain period is 5 s; the head's time (400 ms) runs out first.
    let started = tokio::time::Instant::now();
    let drained = gw.shutdown().await;
    assert_eq!(drained, data_plane::server::Drained::Clean);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "drain waited {:?}",
        started.elapsed()
    );
    assert!(
        closed_within(&mut slow, Duration::from_secs(1))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_request_in_flight_outlives_the_header_timeout() {
    let (gw, _a) = gateway_with_backend().await;
    // Three times the 400 ms header timeout to answer.
    let slow = Backend::named("slow")
        .delay(Duration::from_millis(1200))
        .start()
        .await;
    gw.create_route(json!({"name": "slow", "path": "/slow", "backends": [{"url": slow.url}]}))
        .await;
    let addr = gw.gateway().proxy_addr;
    // HTTP/1.1 keep-alive, then the same connection again once idle a while
    // (less than the timeout).
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // HTTP/2: the connection is busy while the stream is open.
    let (mut send, conn) = h2_client(addr).await;
    let r = send.send_request(get(addr, "/slow")).await.unwrap();
    assert_eq!(r.status(), 200);
    drop((send, conn));
    assert_eq!(slow.hits(), 3);
}

#[tokio::test]
async fn idle_http2_connections_get_goaway_and_close() {
    let (gw, _a) = gateway_with_backend().await;
    let addr = gw.gateway().proxy_addr;
    let (mut send, conn) = h2_client(addr).await;
    let r = send.send_request(get(addr, "/pub")).await.unwrap();
    assert_eq!(r.status(), 200);
    http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap();
    // Quiet from here: past the 400 ms timeout the gateway says GOAWAY,
    // the client stops taking requests and the connection ends cleanly.
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "idle HTTP/2 connection left open or ended with an error: {ended:?}"
    );
    assert!(send.send_request(get(addr, "/pub")).await.is_err());
}

#[tokio::test]
async fn an_http2_client_that_ignores_goaway_is_dropped() {
    let (gw, a) = gateway_with_backend().await;
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    // Preface, empty SETTINGS, then GET /pub on stream 1 (HPACK: :method GET,
    // :scheme http, :path "/pub", :authority "t"), then silence: in
    // particular no answer to the PING that GOAWAY sends.
    let mut raw = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    raw.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let block = [&[0x82, 0x86, 0x44, 4][..], b"/pub", &[0x41, 1], b"t"].concat();
    raw.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
    raw.extend_from_slice(&block);
    s.write_all(&raw).await.unwrap();
    // Frames until the gateway closes (5 s at most; the timeout is 400 ms).
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after 5 s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let mut types = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        types.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(types.contains(&1), "no response HEADERS: {types:?}");
    assert!(types.contains(&7), "no GOAWAY before the close: {types:?}");
    assert_eq!(a.hits(), 1);
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An HTTP/2 (prior knowledge) client connection; the task driving it
/// ends when the connection does.
async fn h2_client(
    addr: SocketAddr,
) -> (H2Sender, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

fn get(addr: SocketAddr, path: &str) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// Read one response to a GET (head and a `Content-Length` body).
async fn read_response(s: &mut TcpStream) -> String {
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(s))
        .await
        .expect("an answer within 10 s");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    head
}

#[tokio::test]
async fn connections_past_the_limit_wait_for_a_free_slot() {
    let gw = TestGateway::start_with(|s| s.server.max_connections = 2).await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let addr: SocketAddr = gw.gateway().proxy_addr;
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    let third = tokio::spawn(async move {
        raw_request(
            addr,
            "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    // Proving it waits takes waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served past the limit"
    );
    drop(first);
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

/// Send `raw`, read until close, and count the responses in the stream.
async fn responses(addr: SocketAddr, raw: &str) -> (usize, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    (text.matches("HTTP/1.1 ").count(), text)
}

#[tokio::test]
async fn smuggling_attempts_never_reach_a_backend_as_extra_requests() {
    let (gw, a) = gateway_with_backend().await;
    let addr = gw.gateway().proxy_addr;
    let smuggled = "GET /pub/smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let payloads = [
        format!(
            "POST /pub HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /pub HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /pub HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello{smuggled}"
        ),
        format!("POST /pub HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 40\r\n\r\nhello{smuggled}"),
        format!("POST /pub HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello{smuggled}"),
        format!(
            "POST /pub HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /pub HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /pub HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
    ];
    for payload in &payloads {
        let before = a.hits();
        let (answered, text) = responses(addr, payload).await;
        let reached = a.hits() - before;
        let from_backend = text.matches("\"backend\":\"a\"").count();
        // Every request the backend saw was answered to the client as such:
        // nothing hidden in a body became a request of its own upstream.
        assert_eq!(reached, from_backend, "{payload:?}\n{text}");
        assert!(reached <= answered);
        assert!(
            !text.contains("/pub/smuggled") || text.matches("HTTP/1.1 200").count() >= 2,
            "{text}"
        );
    }
}

#[tokio::test]
async fn duplicate_requests_are_not_invented() {
    // Sanity for the test above: two honest pipelined requests are two hits.
    let (gw, a) = gateway_with_backend().await;
    let raw = "GET /pub/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /pub/2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (answered, _) = responses(gw.gateway().proxy_addr, raw).await;
    assert_eq!((answered, a.hits()), (2, 2));
}
