//! The inline HTTP/1.1 server: it answers exactly as hyper's server does,
//! and hands a connection to hyper's with every byte it read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::backend::raw_backend;
use crate::common::{Backend, TestGateway, read_to_close};

/// A keep-alive backend on raw sockets answering by path, with the
/// framings, fields and statuses a gateway must pass on faithfully.
async fn shapes_backend() -> String {
    raw_backend(|mut s, head| async move {
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let answer: &[u8] = match path.as_str() {
            "/length" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nServer: b/1\r\nX-Powered-By: php\r\nVia: 1.0 edge, 1.1 mid\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nX-Request-ID: theirs\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nX-Kept: Yes\r\n\r\nhello",
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kept: 1\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            "/both" => b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "/until-close" => b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
            "/reason" => b"HTTP/1.1 299 Fine By Me\r\nContent-Length: 2\r\n\r\nok",
            "/no-content" => b"HTTP/1.1 204 No Content\r\nX-Kept: 1\r\n\r\n",
            "/not-modified" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"v1\"\r\n\r\n",
            "/unavailable" => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nRetry-After: 1\r\n\r\nbusy",
            "/trailer-length" => b"HTTP/1.1 200 OK\r\nTrailer: x-sum\r\nContent-Length: 2\r\n\r\nok",
            "/trailer-chunked" => b"HTTP/1.1 200 OK\r\nTrailer: x-sum\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-sum: 9\r\n\r\n",
            "/http10" => b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "/http10-until-close" => b"HTTP/1.0 200 OK\r\n\r\nto the end",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        };
        let answer = if head.starts_with("HEAD ") {
            // The head alone: what a GET would get, without its body.
            let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            &answer[..end]
        } else {
            answer
        };
        let _ = s.write_all(answer).await;
        let _ = s.shutdown().await;
    })
    .await
    .0
}

/// One answer as a client sees it: status line, fields (names lowercase,
/// `date` and `x-request-id` only checked for), and the body decoded.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status_line: String,
    fields: BTreeMap<String, String>,
    body: Vec<u8>,
}

async fn ask(addr: SocketAddr, method: &str, path: &str) -> Seen {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let raw = read_to_close(&mut s, Duration::from_secs(10)).await;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let mut fields = BTreeMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        let name = name.to_ascii_lowercase();
        let value = match name.as_str() {
            "date" => {
                assert!(httpdate_ok(value.trim()), "{value}");
                "(a date)".to_string()
            }
            "x-request-id" => {
                assert_eq!(value.trim().len(), 32, "the gateway's own ID");
                "(an id)".to_string()
            }
            _ => value.trim().to_string(),
        };
        assert!(fields.insert(name, value).is_none(), "one line per field");
    }
    let mut body = raw[end + 4..].to_vec();
    if fields.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    Seen {
        status_line,
        fields,
        body,
    }
}

fn httpdate_ok(date: &str) -> bool {
    date.ends_with(" GMT") && date.len() == 29
}

fn dechunk(mut chunked: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&chunked[..line_end]).unwrap(), 16).unwrap();
        chunked = &chunked[line_end + 2..];
        if size == 0 {
            assert_eq!(chunked, b"\r\n", "the chunked body ends cleanly");
            return body;
        }
        body.extend_from_slice(&chunked[..size]);
        assert_eq!(&chunked[size..size + 2], b"\r\n");
        chunked = &chunked[size + 2..];
    }
}

/// Every shape of answer, through a gateway on the inline server and one
/// on hyper's alone: the same status line, fields and body.
#[tokio::test]
async fn both_http1_servers_answer_alike() {
    let backend = shapes_backend().await;
    let inline = TestGateway::start().await;
    let hyper_only = TestGateway::start_with(|s| s.server.inline = false).await;
    for gw in [&inline, &hyper_only] {
        gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": backend}]}))
            .await;
    }
    let cases = [
        ("GET", "/length"),
        ("HEAD", "/length"),
        ("GET", "/chunked"),
        ("GET", "/both"),
        ("GET", "/until-close"),
        ("GET", "/reason"),
        ("GET", "/no-content"),
        ("GET", "/not-modified"),
        ("GET", "/unavailable"),
        ("GET", "/trailer-length"),
        ("HEAD", "/trailer-length"),
        ("GET", "/trailer-chunked"),
        ("HEAD", "/trailer-chunked"),
        ("GET", "/http10"),
        ("GET", "/http10-until-close"),
        ("GET", "/missing-route-is-fine-too"),
    ];
    for (method, path) in cases {
        let a = ask(inline.gateway().proxy_addr, method, path).await;
        let b = ask(hyper_only.gateway().proxy_addr, method, path).await;
        assert_eq!(a, b, "{method} {path}");
    }
    // And what they agree on is right.
    let seen = ask(inline.gateway().proxy_addr, "GET", "/length").await;
    assert_eq!(seen.status_line, "HTTP/1.1 200 OK");
    assert_eq!(seen.body, b"hello");
    assert_eq!(seen.fields["via"], "1.0 edge, 1.1 mid, 1.1 switchyard");
    assert_eq!(seen.fields["x-kept"], "Yes");
    assert_eq!(seen.fields["content-length"], "5");
    assert_eq!(seen.fields["connection"], "close");
    for gone in ["server", "x-powered-by", "x-secret", "keep-alive"] {
        assert!(!seen.fields.contains_key(gone), "{gone}");
    }
    let seen = ask(inline.gateway().proxy_addr, "GET", "/until-close").await;
    assert_eq!(seen.fields["transfer-encoding"], "chunked");
    assert_eq!(seen.body, b"until the end");
    let seen = ask(inline.gateway().proxy_addr, "GET", "/reason").await;
    assert_eq!(seen.status_line, "HTTP/1.1 299 Fine By Me");
}

/// Responses off one connection, one at a time: head, then the body its
/// `Content-Length` announces.
async fn answers(s: &mut TcpStream, n: usize) -> Vec<(u16, Value)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .expect("answers within 5 s")
                .unwrap();
            assert_ne!(read, 0, "closed after {} answers", out.len());
            buf.extend_from_slice(&chunk[..read]);
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        while buf.len() < end + 4 + length {
            let mut chunk = [0u8; 4096];
            let read = s.read(&mut chunk).await.unwrap();
            assert_ne!(read, 0);
            buf.extend_from_slice(&chunk[..read]);
        }
        let body = serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap();
        buf.drain(..end + 4 + length);
        out.push((status, body));
    }
    out
}

/// Pipelined requests in one write: two the inline server serves, a POST
/// with a body that moves the connection to hyper's server (with the
/// request after it, already read), then more on hyper's side.
#[tokio::test]
async fn a_connection_moves_to_hyper_mid_way_with_every_byte() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    let pipelined = "GET /one HTTP/1.1\r\nHost: t\r\n\r\n\
                     GET /two?x=1 HTTP/1.1\r\nHost: t\r\n\r\n\
                     POST /three HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
                     GET /four HTTP/1.1\r\nHost: t\r\n\r\n";
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let got = answers(&mut s, 4).await;
    let seen: Vec<_> = got
        .iter()
        .map(|(status, echo)| {
            assert_eq!(*status, 200);
            (
                echo["method"].as_str().unwrap().to_string(),
                echo["path"].as_str().unwrap().to_string(),
                echo["body"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("GET", "/one", ""),
        ("GET", "/two", ""),
        ("POST", "/three", "hello"),
        ("GET", "/four", ""),
    ]
    .map(|(m, p, b)| (m.to_string(), p.to_string(), b.to_string()));
    assert_eq!(seen, expected);
    assert_eq!(got[1].1["query"], "x=1");
    // Still open and served.
    s.write_all(b"GET /five HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(answers(&mut s, 1).await[0].1["path"], "/five");
    assert_eq!(a.hits(), 5);
}

/// Heads with more fields than the first parse has room for are served;
/// past hyper's limit of fields, hyper's server answers 431. Targets with
/// characters outside RFC 3986's set go to hyper, which takes them too.
#[tokio::test]
async fn many_fields_and_unusual_targets() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let addr = gw.gateway().proxy_addr;
    let head = |fields: usize, target: &str| {
        let mut h = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
        for i in 0..fields {
            h.push_str(&format!("X-Field-{i}: {i}\r\n"));
        }
        h + "\r\n"
    };
    let (status, body) = crate::common::raw_request(addr, &head(60, "/many")).await;
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["x-field-59"], "59");
    let (status, _) = crate::common::raw_request(addr, &head(120, "/too-many")).await;
    assert_eq!(status, 431);
    let (status, body) = crate::common::raw_request(addr, &head(0, "/a%20b/{x}|y")).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert!(
        echo["path"].as_str().unwrap().starts_with("/a%20b/"),
        "{echo}"
    );
    assert_eq!(a.hits(), 2);
}

/// A client that half-closes after pipelined requests: as hyper, the
/// inline server answers what it had begun before it saw the close (the
/// close is not watched for while a pipelined request waits in the buffer)
/// and then closes.
#[tokio::test]
async fn a_half_close_after_pipelined_requests_is_taken_as_hyper_takes_it() {
    let slow = Backend::named("slow")
        .delay(Duration::from_millis(150))
        .start()
        .await;
    let inline = TestGateway::start().await;
    let hyper_only = TestGateway::start_with(|s| s.server.inline = false).await;
    let mut seen = Vec::new();
    for gw in [&inline, &hyper_only] {
        gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": slow.url}]}))
            .await;
        let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let raw = read_to_close(&mut s, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let paths: Vec<_> = ["\"/a\"", "\"/b\""]
            .into_iter()
            .filter(|p| text.contains(&format!("\"path\":{p}")))
            .collect();
        seen.push(paths);
    }
    assert_eq!(seen[0], seen[1], "inline vs hyper");
    assert_eq!(seen[0][0], "\"/a\"", "the first is answered");
}

/// Once a connection carried HTTP/1.1, an HTTP/2 preface on it is not a
/// switch to HTTP/2 (hyper's server would have taken it as HTTP/1 from the
/// start): the answer is HTTP/1 or a close, never HTTP/2 frames.
#[tokio::test]
async fn an_http2_preface_after_http1_requests_is_not_http2() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(answers(&mut s, 1).await[0].1["path"], "/a");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let rest = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// A response still to come when the drain begins says `Connection: close`
/// (as hyper's graceful shutdown does), and the connection then closes.
#[tokio::test]
async fn an_answer_written_during_the_drain_says_close() {
    let gw = TestGateway::start().await;
    let slow = Backend::named("slow")
        .delay(Duration::from_millis(300))
        .start()
        .await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": slow.url}]}))
        .await;
    let mut s = TcpStream::connect(gw.gateway().proxy_addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let in_flight = crate::common::eventually(Duration::from_secs(5), || async {
        (slow.hits() == 1).then_some(())
    })
    .await;
    assert!(in_flight.is_some());
    let stopping = tokio::spawn(gw.stop());
    let raw = read_to_close(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 "), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    drop(stopping.await.unwrap());
}
