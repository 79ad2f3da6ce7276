//! Clients that stop reading: after the send timeout the client connection
//! is closed and the backend connection let go, on the inline server,
//! hyper's, and for tunnels.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::backend::raw_backend;
use crate::common::{TestGateway, eventually, sample};

/// A backend that answers every request with an endless body (or, to an
/// upgrade, a 101 and then endless bytes), writing until the gateway lets
/// go of the connection; `released` counts the connections it lost so.
async fn endless_backend() -> (String, Arc<AtomicUsize>) {
    let released = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&released);
    let (url, _) = raw_backend(move |mut s, head| {
        let counter = Arc::clone(&counter);
        async move {
            let answer: &[u8] = if head.to_ascii_lowercase().contains("upgrade: x") {
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n"
            };
            if s.write_all(answer).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            // Bounded: 4 GiB would take far longer than any test here.
            for _ in 0..65_536 {
                if s.write_all(&chunk).await.is_err() {
                    counter.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    })
    .await;
    (url, released)
}

/// Send `request` and read nothing; wait until the backend connection is
/// let go and the client's socket is closed.
async fn stop_reading(gw: &TestGateway, request: &str, released: &AtomicUsize, what: &str) {
    let before = released.load(Ordering::SeqCst);
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let let_go = eventually(Duration::from_secs(15), || async {
        (released.load(Ordering::SeqCst) > before).then_some(())
    })
    .await;
    assert!(
        let_go.is_some(),
        "{what}: the backend connection was never let go"
    );
    // What was buffered drains, then the gateway's close shows.
    let mut buf = vec![0u8; 1 << 20];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the client connection was not closed"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_let_go_after_the_send_timeout() {
    let (url, released) = endless_backend().await;
    for inline in [true, false] {
        let gw = TestGateway::start_with(|s| {
            s.server.inline = inline;
            s.proxy.send_timeout = Duration::from_millis(300);
        })
        .await;
        gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": url}]}))
            .await;
        let server = if inline { "inline" } else { "hyper" };
        let get = "GET /big HTTP/1.1\r\nHost: t\r\n\r\n";
        stop_reading(&gw, get, &released, &format!("{server} GET")).await;
        // A request with a body goes through hyper's client.
        let post = "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi";
        stop_reading(&gw, post, &released, &format!("{server} POST")).await;
        let upgrade = "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n";
        stop_reading(&gw, upgrade, &released, &format!("{server} tunnel")).await;
        // Nothing is left in flight.
        let idle = eventually(Duration::from_secs(5), || async {
            let m = gw.metrics().await;
            (sample(&m, "switchyard_backend_in_flight", &[("backend", &url)]) == Some(0.0))
                .then_some(())
        })
        .await;
        assert!(idle.is_some(), "{server}: requests still in flight");
    }
}

/// An HTTP/2 client that stops reading grants no more window: nothing
/// waits on the socket, yet the answer goes nowhere. It is let go too.
#[tokio::test]
async fn an_http2_client_that_grants_no_window_is_let_go() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (url, released) = endless_backend().await;
    let gw = TestGateway::start_with(|s| s.proxy.send_timeout = Duration::from_millis(300)).await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": url}]}))
        .await;
    let io = TokioIo::new(TcpStream::connect(gw.gateway().proxy_addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("http://t/big")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    // The head arrives; the body is never read.
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let let_go = eventually(Duration::from_secs(15), || async {
        (released.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    assert!(let_go.is_some(), "the backend connection was never let go");
    let closed = tokio::time::timeout(Duration::from_secs(15), conn).await;
    assert!(closed.is_ok(), "the client connection was not closed");
    drop(resp);
}
