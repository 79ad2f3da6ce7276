//! One authority per request, and the protocol corners a strict peer or a
//! smuggling tool pokes at: HTTP/1.0 upgrades, transfer codings, `_`
//! aliases of framing fields, HTTP/1 bytes on an `h2` TLS connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::backend::raw_backend;
use crate::common::{Backend, TestGateway, raw_request};

/// A gateway (inline server on or off) with routes by host: `public.example`
/// to backend `public`, `internal.example` to backend `internal`, the
/// latter keeping the client's host.
async fn host_routes(inline: bool) -> (TestGateway, Backend, Backend) {
    let gw = TestGateway::start_with(|s| {
        s.server.inline = inline;
        s.proxy.forwarded_header = true;
    })
    .await;
    let public = Backend::named("public").start().await;
    let internal = Backend::named("internal").start().await;
    gw.create_route(json!({"name": "pub", "path": "/", "hosts": ["public.example"], "backends": [{"url": public.url}]}))
        .await;
    gw.create_route(json!({"name": "int", "path": "/", "hosts": ["internal.example"], "preserve_host": true, "backends": [{"url": internal.url}]}))
        .await;
    (gw, public, internal)
}

fn echo_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not an echo: {body}"))
}

/// RFC 9112 §3.2.2: an absolute-form target's authority wins over `Host`,
/// and the backend is told the same authority the request was routed by.
#[tokio::test]
async fn the_authority_is_decided_once() {
    for inline in [true, false] {
        let (gw, public, internal) = host_routes(inline).await;
        let addr = gw.gateway().proxy_addr;
        let raw = "GET http://internal.example/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n";
        let (status, body) = raw_request(addr, raw).await;
        assert_eq!(status, 200, "{body}");
        let echo = echo_of(&body);
        assert_eq!(echo["backend"], "internal");
        let h = &echo["headers"];
        assert_eq!(h["x-forwarded-host"], "internal.example", "{h}");
        assert_eq!(h["host"], "internal.example", "preserve_host: {h}");
        assert!(
            h["forwarded"]
                .as_str()
                .unwrap()
                .ends_with(";host=internal.example"),
            "{h}"
        );
        // With only a Host, the Host.
        let raw = "GET /x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n";
        let (status, body) = raw_request(addr, raw).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            echo_of(&body)["headers"]["x-forwarded-host"],
            "public.example"
        );
        assert_eq!((public.hits(), internal.hits()), (1, 1));
    }
}

#[tokio::test]
async fn a_host_that_is_not_a_host_and_port_is_a_400() {
    let a = Backend::named("a").start().await;
    for inline in [true, false] {
        let gw = TestGateway::routing_all_to(&a.url, inline).await;
        let addr = gw.gateway().proxy_addr;
        for host in [
            "a b",
            "user@x",
            "x/y",
            "x?y",
            "x#y",
            "[::1",
            "[nope]:80",
            "x:80a",
            "x\\y",
            "%zz",
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let (status, body) = raw_request(addr, &raw).await;
            assert_eq!(status, 400, "inline {inline}: Host {host:?}: {body}");
            assert_eq!(echo_of(&body)["error"], "bad_host");
        }
        let raw = "GET http://user@x/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        assert_eq!(
            raw_request(addr, raw).await.0,
            400,
            "userinfo in the target"
        );
        for host in [
            "x",
            "x:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "a-b.c_d~e",
            "x%41y",
            "",
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let (status, body) = raw_request(addr, &raw).await;
            assert_eq!(status, 200, "inline {inline}: Host {host:?}: {body}");
        }
    }
}

/// An HTTP/2 (prior knowledge) request with these pseudo and plain fields.
async fn h2_status(addr: SocketAddr, uri: &str, host: Option<&str>) -> u16 {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get(uri);
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await;
    resp.map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn over_http2_the_authority_is_checked_too() {
    let (gw, _public, internal) = host_routes(true).await;
    let addr = gw.gateway().proxy_addr;
    assert_eq!(
        h2_status(addr, "http://internal.example/x", None).await,
        200
    );
    assert_eq!(internal.hits(), 1);
    // A Host that names another authority than `:authority`.
    let status = h2_status(addr, "http://internal.example/x", Some("public.example")).await;
    assert_eq!(status, 400);
    let status = h2_status(addr, "http://internal.example/x", Some("internal.example")).await;
    assert_eq!(status, 200, "the same, said twice, is fine");
    assert_eq!(
        h2_status(addr, "http://u@internal.example/x", None).await,
        400
    );
    assert_eq!(internal.hits(), 2);
}

#[tokio::test]
async fn an_upgrade_in_an_http10_request_is_ignored() {
    let a = Backend::named("a").start().await;
    for inline in [true, false] {
        let gw = TestGateway::routing_all_to(&a.url, inline).await;
        let raw = "GET /ws HTTP/1.0\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let (status, body) = raw_request(gw.gateway().proxy_addr, raw).await;
        assert_eq!(status, 200, "{body}");
        let h = &echo_of(&body)["headers"];
        assert!(
            h.get("upgrade").is_none() && h.get("connection").is_none(),
            "{h}"
        );
    }
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_a_501() {
    let a = Backend::named("a").start().await;
    for inline in [true, false] {
        let gw = TestGateway::routing_all_to(&a.url, inline).await;
        let addr = gw.gateway().proxy_addr;
        for coding in [
            "gzip, chunked",
            "deflate,chunked",
            "chunked, chunked, gzip, chunked",
        ] {
            let raw = format!(
                "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: {coding}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            );
            let (status, body) = raw_request(addr, &raw).await;
            assert_eq!(status, 501, "{coding}: {body}");
            assert_eq!(echo_of(&body)["error"], "unsupported_transfer_coding");
        }
        let raw = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let (status, body) = raw_request(addr, raw).await;
        assert_eq!((status, &echo_of(&body)["body"]), (200, &json!("hello")));
    }
    assert_eq!(a.hits(), 2, "only the chunked requests reached the backend");
}

/// A backend's answer with another coding than chunked is not passed on
/// garbled (its `Transfer-Encoding` is hop-by-hop): a 502, on both the
/// inline client's path and hyper's client's (a request with a body).
#[tokio::test]
async fn a_response_coded_other_than_chunked_is_a_502() {
    let (url, _) = raw_backend(|mut s, _head| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            )
            .await;
        let _ = s.shutdown().await;
    })
    .await;
    let gw = TestGateway::start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": url}]}))
        .await;
    let (status, body) = gw.get("/").await;
    assert_eq!(status, 502, "{body}");
    let r = gw
        .http
        .post(gw.proxy_url("/"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

/// A `101` to a request that asked for no upgrade is no answer (on
/// hyper's client's path: a request with a body).
#[tokio::test]
async fn an_unasked_switch_is_a_502() {
    let (url, _) = raw_backend(|mut s, _head| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
            )
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    let gw = TestGateway::start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": url}]}))
        .await;
    let r = gw
        .http
        .post(gw.proxy_url("/"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let (status, _) = gw.get("/").await;
    assert_eq!(status, 502);
}

/// `Content_Length`, `Transfer_Encoding`, `X_Forwarded_For`: a backend
/// reading fields as CGI variables takes them for the real ones, so they
/// are not passed on.
#[tokio::test]
async fn underscore_aliases_of_decided_fields_are_not_forwarded() {
    let a = Backend::named("a").start().await;
    for inline in [true, false] {
        let gw = TestGateway::routing_all_to(&a.url, inline).await;
        let addr = gw.gateway().proxy_addr;
        for (method, body) in [("GET", ""), ("POST", "hello")] {
            let raw = format!(
                "{method} / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nContent_Length: 99\r\nTransfer_Encoding: chunked\r\nX_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nX_Custom: kept\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let (status, answer) = raw_request(addr, &raw).await;
            assert_eq!(status, 200, "{answer}");
            let echo = echo_of(&answer);
            let h = echo["headers"].as_object().unwrap();
            for gone in [
                "content_length",
                "transfer_encoding",
                "x_forwarded_for",
                "x_real_ip",
            ] {
                assert!(!h.contains_key(gone), "{method}: {gone} in {h:?}");
            }
            assert_eq!(h["x_custom"], "kept");
            assert_eq!(echo["body"], body);
        }
    }
}

/// A TLS connection that agreed on `h2` by ALPN speaks HTTP/2 only: HTTP/1
/// bytes get a connection error, not an answer (h2spec 3.5/2).
#[tokio::test]
async fn http1_bytes_on_an_h2_tls_connection_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls = data_plane::server::tls_config(&cert_path, &key_path).unwrap();
    let gw = TestGateway::start_with(|s| s.server.tls = Some(tls)).await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let connect = |alpn: &'static [u8]| {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let addr = gw.gateway().proxy_addr;
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .unwrap()
        }
    };
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut h2 = connect(b"h2").await;
    h2.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut h2, &mut answer),
    )
    .await
    .expect("closed within 5 s");
    assert!(
        !answer.starts_with(b"HTTP/1.1"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(a.hits(), 0);
    // The same bytes after agreeing on http/1.1 are a request.
    let mut h1 = connect(b"http/1.1").await;
    h1.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut h1, &mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}
