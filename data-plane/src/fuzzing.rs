//! Fuzz entry points: each takes arbitrary bytes, runs one of the
//! hand-written protocol parsers on them, and panics if it breaks an
//! invariant — beyond not panicking itself: offsets within the input,
//! output that parses as HTTP again, a round trip that gives back what went
//! in, and the same verdict as hyper's server on the same bytes.
//!
//! The `fuzz/` crate's targets (cargo fuzz, libFuzzer) call these with
//! feature `fuzzing`; the unit tests replay the committed seed corpus
//! (`fuzz/corpus/`) through them, so the corpus runs in every `cargo test`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, Version};

use crate::http1::body::{Decode, Decoded, at_close, decode};
use crate::http1::head::{self, Parsed as ResponseParsed, ToResponse};
use crate::http1::request_head::{self, FEW_FIELDS, MAX_FIELDS, Parsed};
use crate::http1::{BodyFraming, H1Error};
use crate::http1::{headers, response};
use crate::routing::path;
use crate::server::respond::ClientHead;
use crate::server::stop::Stop;

/// What the inline server's parser made of a request head: method, target,
/// fields by name (values in order).
type Request = (Method, String, BTreeMap<Vec<u8>, Vec<Vec<u8>>>);

/// Parse with the inline server's parser, as it does: few field slots
/// first, all of them if that is not enough. `None`: not for the inline
/// server (partial, refused, or handed to hyper).
fn inline_request(data: &[u8]) -> Option<(usize, Request, headers::Seen)> {
    type Found = Option<(usize, Request, headers::Seen)>;
    fn with<const N: usize>(data: &[u8]) -> Result<Found, httparse::Error> {
        let mut buf = BytesMut::from(data);
        let mut spans = [[0u32; 4]; N];
        let Parsed::Head { len, head } = request_head::parse::<N>(&mut buf, &mut spans)? else {
            return Ok(None);
        };
        assert!(len <= data.len(), "a head longer than the input");
        let mut target = head.path.to_string();
        if let Some(q) = head.query {
            target.push('?');
            target.push_str(q);
        }
        let mut fields: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        for (name, value) in crate::http1::fields::Fields::each(&head.fields) {
            assert!(!name.is_empty(), "an empty field name");
            assert!(
                !name.iter().any(u8::is_ascii_uppercase),
                "a name not lowercased"
            );
            assert!(
                !value.contains(&b'\r') && !value.contains(&b'\n'),
                "a line break in a value"
            );
            fields
                .entry(name.to_vec())
                .or_default()
                .push(value.to_vec());
        }
        assert!(head.path.starts_with('/'), "a path that is not origin-form");
        let seen = headers::Seen::of(&head.fields);
        Ok(Some((len, (head.method, target, fields), seen)))
    }
    match with::<FEW_FIELDS>(data) {
        Err(httparse::Error::TooManyHeaders) => with::<MAX_FIELDS>(data).ok().flatten(),
        parsed => parsed.ok().flatten(),
    }
}

/// The inline server's request-head parser.
pub fn request_head(data: &[u8]) {
    if let Some((len, (method, target, _), _)) = inline_request(data) {
        let head = &data[..len];
        assert!(
            head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
            "{head:?}"
        );
        let line = format!("{method} {target} ");
        assert!(
            head.windows(line.len()).any(|w| w == line.as_bytes()),
            "{line:?} not in {head:?}"
        );
    }
}

/// The inline client's response-head parser, through both of its sinks:
/// hyper's `Response`, and the inline server's head written from the
/// received bytes. The written heads parse as HTTP/1.1 again, carry one
/// framing, no hop-by-hop field, and the same end-to-end fields as the
/// `Response` after the proxy's rewrite. The first byte picks the method.
pub fn response_head(data: &[u8]) {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let method = if first & 1 == 0 {
        Method::GET
    } else {
        Method::HEAD
    };
    let id = HeaderValue::from_static("fuzz-id");
    // hyper's form.
    let mut buf = BytesMut::from(data);
    let mut ignore = |_: StatusCode, _: &http::HeaderMap| {};
    let mut sink = ToResponse {
        interim: &mut ignore,
    };
    let final_head = loop {
        match head::parse(&mut buf, &method, &mut sink) {
            Ok(ResponseParsed::Interim) => continue,
            Ok(ResponseParsed::Final { head, body, .. }) => break Some((head, body)),
            Ok(ResponseParsed::Partial) | Err(_) => break None,
        }
    };
    // The inline server's form, of the same bytes.
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    let stop = Stop::new().watch();
    let mut sink = ClientHead {
        out: &mut out,
        committed: 0,
        socket: None,
        request_id: &id,
        close: first & 2 != 0,
        stop: &stop,
        decoration: None,
    };
    let written = loop {
        match head::parse(&mut buf, &method, &mut sink) {
            Ok(ResponseParsed::Interim) => continue,
            Ok(ResponseParsed::Final { .. }) => break true,
            Ok(ResponseParsed::Partial) | Err(_) => break false,
        }
    };
    let Some((mut resp, body)) = final_head else {
        assert!(!written, "only one sink took the head");
        return;
    };
    assert!(written, "only one sink took the head");
    let status = resp.status();
    assert!((200..=599).contains(&status.as_u16()), "{status}");
    if body == BodyFraming::None {
        assert!(method == Method::HEAD || status == 204 || status == 304);
    }
    response::forward_response(resp.headers_mut(), &id);
    // Every head written parses; the last is the final one.
    let mut rest = &out[..];
    let mut last = None;
    while !rest.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(rest) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!(
                "written head does not parse: {other:?}: {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        assert_eq!(parsed.version, Some(1));
        let mut names: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for f in parsed.headers.iter() {
            names
                .entry(f.name.to_ascii_lowercase())
                .or_default()
                .push(f.value.to_vec());
        }
        last = Some((parsed.code.unwrap(), names));
        rest = &rest[len..];
    }
    let (code, written) = last.expect("a final head was written");
    assert_eq!(code, status.as_u16());
    for hop in [
        "keep-alive",
        "upgrade",
        "te",
        "proxy-connection",
        "server",
        "x-powered-by",
    ] {
        assert!(!written.contains_key(hop), "{hop} passed on");
    }
    if let Some(conn) = written.get("connection") {
        assert_eq!(
            conn,
            &[b"close".to_vec()],
            "Connection is the gateway's own"
        );
    }
    let framings = ["content-length", "transfer-encoding"]
        .iter()
        .filter(|n| written.contains_key(**n))
        .count();
    assert!(framings <= 1, "two framings: {written:?}");
    assert_eq!(written["x-request-id"], [b"fuzz-id".to_vec()]);
    // The same end-to-end fields as hyper's form, after the rewrite.
    let mut mapped: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in resp.headers() {
        mapped
            .entry(name.to_string())
            .or_default()
            .push(value.as_bytes().to_vec());
    }
    let gateways = [
        "date",
        "content-length",
        "transfer-encoding",
        "connection",
        "trailer",
        "via",
    ];
    mapped.retain(|name, _| !gateways.contains(&name.as_str()));
    let mut written = written;
    written.retain(|name, _| !gateways.contains(&name.as_str()));
    assert_eq!(written, mapped, "the two sinks pass on different fields");
}

/// The chunked decoder. The first byte picks the test: arbitrary bytes
/// fed in pieces (never more data out than bytes in), or a body encoded
/// from the input (sizes in odd forms, extensions, trailers) that must
/// decode to exactly what was encoded, fed in pieces too.
pub fn chunked(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(mode >> 2).max(1);
    if mode & 1 == 0 {
        let (got, _) = decode_in_pieces(data, piece);
        if let Ok((body, _, _)) = got {
            assert!(body.len() <= data.len());
        }
        return;
    }
    let (wire, body, trailer) = encode(data, mode);
    let (got, rest) = decode_in_pieces(&wire, piece);
    let (decoded, trailers, ended) =
        got.unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&wire)));
    assert!(ended, "a whole body did not end");
    assert_eq!(decoded, body);
    assert_eq!(trailers.map(|t| t["x-sum"].as_bytes().to_vec()), trailer);
    assert_eq!(rest, b"NEXT", "the decoder took bytes past the body");
}

/// Decoded body, its trailers, and whether it ended; what is left of the
/// input after it.
type Decoding = (
    Result<(Vec<u8>, Option<http::HeaderMap>, bool), H1Error>,
    Vec<u8>,
);

/// Feed `wire` to a chunked decoder `piece` bytes at a time.
fn decode_in_pieces(wire: &[u8], piece: usize) -> Decoding {
    let mut state = Decode::of(BodyFraming::Chunked);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let (mut body, mut trailers) = (Vec::new(), None);
    loop {
        match decode(&mut state, &mut buf) {
            Ok(Decoded::Frame(frame)) => match frame.into_data() {
                Ok(data) => body.extend_from_slice(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Ok(Decoded::End) => {
                let mut rest = buf.to_vec();
                rest.extend_from_slice(&wire[fed..]);
                return (Ok((body, trailers, true)), rest);
            }
            Ok(Decoded::NeedMore) if fed < wire.len() => {
                let end = (fed + piece).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
            Ok(Decoded::NeedMore) => {
                return match at_close(&mut state) {
                    Some(Err(e)) => (Err(e), buf.to_vec()),
                    _ => (Ok((body, trailers, false)), buf.to_vec()),
                };
            }
            Err(e) => return (Err(e), buf.to_vec()),
        }
    }
}

/// `data` as a chunked body (chunks cut where `data` says), then `NEXT`:
/// the wire bytes, the body, and the trailer value if one was sent.
fn encode(data: &[u8], mode: u8) -> (Vec<u8>, Vec<u8>, Option<Vec<u8>>) {
    let mut wire = Vec::new();
    let mut body = Vec::new();
    let mut rest = data;
    let mut i = 0usize;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len % 40).min(tail.len());
        if len == 0 {
            rest = tail;
            continue;
        }
        let (chunk, tail) = tail.split_at(len);
        let size = match i % 3 {
            0 => format!("{len:x}"),
            1 => format!("{len:X}"),
            _ => format!("000{len:x}"),
        };
        let ext = if i % 4 == 1 {
            ";name=\"v a\""
        } else if i % 4 == 2 {
            " ; x"
        } else {
            ""
        };
        wire.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
        body.extend_from_slice(chunk);
        rest = tail;
        i += 1;
    }
    wire.extend_from_slice(b"0\r\n");
    let trailer = (mode & 2 != 0).then(|| format!("{}", body.len()).into_bytes());
    if let Some(t) = &trailer {
        wire.extend_from_slice(b"X-Sum: ");
        wire.extend_from_slice(t);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\nNEXT");
    (wire, body, trailer)
}

/// The path normaliser: what it accepts comes out normal (a `/` first, no
/// empty, `.` or `..` segment, no escaped separator, upper-case escapes),
/// and normalising that again changes nothing.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = path::normalize(raw) else {
        return;
    };
    assert!(normal.starts_with('/'), "{normal:?}");
    for segment in normal[1..].split('/').rev().skip(1) {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "{segment:?} in {normal:?}"
        );
    }
    let bytes = normal.as_bytes();
    for (i, _) in normal.match_indices('%') {
        let escape = &bytes[i + 1..i + 3];
        assert!(
            escape
                .iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{normal:?}"
        );
        assert!(!matches!(escape, b"2F" | b"5C" | b"00"), "{normal:?}");
    }
    let again = path::normalize(&normal).expect("a normal path is accepted");
    assert_eq!(again, normal, "normalising twice changed it");
}

/// The inline server's parser against hyper's server (as the gateway
/// configures it) on the same bytes: a head the inline server serves
/// itself (it parses it, and the proxy takes it: no body, upgrade, …) must
/// be one hyper's takes, read alike — method, target, fields.
pub fn inline_vs_hyper(data: &[u8]) {
    let Some((len, inline, seen)) = inline_request(data) else {
        return;
    };
    if !crate::proxy::inline::takes(seen) {
        return;
    }
    let hyper = hyper_request(&data[..len]);
    let Some(hyper) = hyper else {
        panic!(
            "the inline server took a head hyper's refuses: {:?}",
            String::from_utf8_lossy(&data[..len])
        );
    };
    assert_eq!(inline, hyper, "{:?}", String::from_utf8_lossy(&data[..len]));
}

/// What hyper's HTTP/1 server (the gateway's configuration) reads of
/// `head`: `None` if it refuses it.
fn hyper_request(head: &[u8]) -> Option<Request> {
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        static BUILDER: hyper::server::conn::http1::Builder =
            crate::server::hyper_conn::builders(&crate::server::ServerConfig::default()).http1;
    }
    let seen: Arc<Mutex<Option<Request>>> = Arc::default();
    let service = {
        let seen = Arc::clone(&seen);
        hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let mut fields: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
            for (name, value) in req.headers() {
                fields
                    .entry(name.as_str().as_bytes().to_vec())
                    .or_default()
                    .push(value.as_bytes().to_vec());
            }
            assert_eq!(req.version(), Version::HTTP_11);
            let mut slot = seen.lock().unwrap();
            if slot.is_none() {
                *slot = Some((req.method().clone(), req.uri().to_string(), fields));
            }
            std::future::ready(Ok::<_, Infallible>(http::Response::new(
                http_body_util::Empty::<Bytes>::new(),
            )))
        })
    };
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let conn = BUILDER.with(|b| b.serve_connection(TokioIo::new(server), service));
            let talk = async {
                client.write_all(head).await.unwrap();
                client.shutdown().await.unwrap();
                let mut answer = Vec::new();
                let _ = client.read_to_end(&mut answer).await;
            };
            let _ = tokio::join!(conn, talk);
        })
    });
    seen.lock().unwrap().take()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the seed corpus (`fuzz/corpus/<target>/`) through
    /// its target: the corpus runs in every `cargo test`.
    #[test]
    fn the_seed_corpus_replays_clean() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 5] = [
            ("request_head", request_head),
            ("response_head", response_head),
            ("chunked", chunked),
            ("path", path),
            ("inline_vs_hyper", inline_vs_hyper),
        ];
        for (name, target) in targets {
            let dir = root.join(name);
            let mut files = 0;
            for entry in
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let done = std::panic::catch_unwind(|| target(&data));
                assert!(
                    done.is_ok(),
                    "{name}: {} broke an invariant",
                    path.display()
                );
                files += 1;
            }
            assert!(files >= 5, "{name}: only {files} seeds");
        }
    }
}
