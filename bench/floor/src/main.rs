//! The floor of a tokio proxy, for `bench/run.sh --floor`: what the kernel
//! and the runtime cost per request when the proxy does nothing else.
//!
//! One current-thread runtime, one task per client connection, and one
//! keep-alive backend connection per client connection (made on its first
//! request). Heads are parsed with httparse both ways and rewritten as a
//! gateway must at the least (an `X-Forwarded-For` up, a `Via` down); the
//! backend's `Content-Length` body is copied with the head in one write.
//! No routing, balancing, health, metrics, timeouts, pooling or error
//! answers — not a proxy to use, a measure of what those cost on top of
//! the floor. Errors close the connection.
//!
//! Usage: bench-floor LISTEN_ADDR BACKEND_ADDR

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        eprintln!("usage: bench-floor LISTEN_ADDR BACKEND_ADDR");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&listen)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
        eprintln!("bench-floor listening on {listen}, backend {backend}");
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let backend = backend.clone();
            tokio::spawn(async move {
                let _ = serve(client, &backend).await;
            });
        }
    });
}

async fn serve(mut client: TcpStream, backend: &str) -> std::io::Result<()> {
    let mut upstream: Option<TcpStream> = None;
    let (mut inbuf, mut upbuf, mut out) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let Some((head_len, _)) = read_head(&mut client, &mut inbuf, &mut out, true).await? else {
            return Ok(());
        };
        inbuf.drain(..head_len);
        let up = match &mut upstream {
            Some(up) => up,
            None => {
                let up = TcpStream::connect(backend).await?;
                up.set_nodelay(true)?;
                upstream.insert(up)
            }
        };
        up.write_all(&out).await?;
        let Some((head_len, length)) = read_head(up, &mut upbuf, &mut out, false).await? else {
            return Ok(());
        };
        while upbuf.len() < head_len + length {
            if read_more(up, &mut upbuf).await? == 0 {
                return Ok(());
            }
        }
        out.extend_from_slice(&upbuf[head_len..head_len + length]);
        upbuf.drain(..head_len + length);
        client.write_all(&out).await?;
    }
}

/// Read until `buf` holds a whole head, and write its rewrite into `out`:
/// a request (`X-Forwarded-For` added) or a response (`Via` added). The
/// head's length and its `Content-Length` (0 if none), or `None` at the end
/// of the stream.
async fn read_head(
    io: &mut TcpStream,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    request: bool,
) -> std::io::Result<Option<(usize, usize)>> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        out.clear();
        let parsed = if request {
            let mut req = httparse::Request::new(&mut fields);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    for piece in [req.method.unwrap_or("GET"), " ", req.path.unwrap_or("/")] {
                        out.extend_from_slice(piece.as_bytes());
                    }
                    out.extend_from_slice(b" HTTP/1.1\r\n");
                    put_fields(out, req.headers, b"x-forwarded-for: 127.0.0.1\r\n\r\n");
                    Ok(Some((len, 0)))
                }
                Ok(httparse::Status::Partial) => Ok(None),
                Err(e) => Err(e),
            }
        } else {
            let mut resp = httparse::Response::new(&mut fields);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
                    put_fields(out, resp.headers, b"via: 1.1 floor\r\n\r\n");
                    Ok(Some((len, content_length(resp.headers))))
                }
                Ok(httparse::Status::Partial) => Ok(None),
                Err(e) => Err(e),
            }
        };
        match parsed {
            Ok(Some(head)) => return Ok(Some(head)),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        if read_more(io, buf).await? == 0 {
            return Ok(None);
        }
    }
}

fn put_fields(out: &mut Vec<u8>, fields: &[httparse::Header<'_>], last: &[u8]) {
    for field in fields {
        out.extend_from_slice(field.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(field.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(last);
}

fn content_length(fields: &[httparse::Header<'_>]) -> usize {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("content-length"))
        .and_then(|f| std::str::from_utf8(f.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

async fn read_more(io: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    io.read_buf(buf).await
}
