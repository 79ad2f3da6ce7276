//! A minimal, fast HTTP/1.1 backend for the proxy benchmark: every request
//! gets `200 OK` with the same 100-byte body, on a keep-alive connection;
//! `/1mib` gets a 1 MiB body instead (the large-response mode).
//! One thread (current-thread runtime), so `taskset` pins it to one core.
//!
//! Usage: bench-backend [ADDR]   (default 127.0.0.1:19000)

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// 99 bytes of payload + newline = 100 bytes.
static BODY: &[u8; 100] = b"switchyard-bench-backend-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmnopqrstuvwxyz!\n";
/// The `/1mib` body: 1 MiB.
const LARGE: usize = 1 << 20;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:19000".to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let large = Bytes::from(BODY.repeat(LARGE / BODY.len() + 1)).slice(..LARGE);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        eprintln!("bench-backend listening on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let large = large.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = if req.uri().path() == "/1mib" {
                        large.clone()
                    } else {
                        Bytes::from_static(BODY)
                    };
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
