//! What HTTP/1 means, for both halves of the gateway: field classification
//! and the forwarding policy in both directions, request and response
//! heads (parsed in place and written), and body framing. Pure: no socket,
//! no snapshot, no live state — the inline server (`server/`) and the
//! inline client (`transport/h1`) are built on it, and so is what hyper's
//! paths do to heads, so the two cannot diverge.
//!
//! - [`fields`]: a request head's fields, from a header map or in place;
//! - [`headers`]: hop-by-hop and list fields, request IDs;
//! - [`forward`]: the request's rewrite for the backend;
//! - [`response`]: the response's fields for the client — one policy
//!   writing to a header map or to bytes;
//! - [`request_head`]: the inline server's request-head parser;
//! - [`head`]: response heads parsed in place, their framing decided;
//! - [`body`]: bodies decoded by that framing (chunked with trailers).

pub mod body;
pub mod fields;
pub mod forward;
pub mod head;
pub mod headers;
pub mod request_head;
pub mod response;

use std::io;

use http::Method;

pub use head::{BodyFraming, HeadSink, RawHead};

/// Most header fields in a response head (or trailer section): hyper's
/// default, as before this client.
pub const MAX_HEADERS: usize = 100;
/// Largest response head (status line and fields), and trailer section:
/// hyper's default read buffer limit, as before this client.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("backend connection: {0}")]
    Io(#[from] io::Error),
    #[error("backend closed the connection before a complete response head")]
    Closed,
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid Content-Length in the response")]
    ContentLength,
    #[error("backend switched protocols without being asked")]
    Switching,
    #[error("HTTP/1.0 response with Transfer-Encoding (faulty framing, RFC 9112 §6.1)")]
    Http10TransferEncoding,
    #[error("response with a transfer coding other than chunked")]
    TransferCoding,
    #[error("invalid chunked response body")]
    Chunked,
    #[error("response body ended before its end")]
    Truncated,
    #[error("no response head before the deadline")]
    TimedOut,
}

/// Serialise a request head without body: request line, the header lines
/// `fields` writes, and `content-length: 0` for the methods whose bodies a
/// backend may insist on being told the length of, unless `has_length`
/// (the fields carry one). Returns the length of the request line (where a
/// backend's `host` goes, see `prepare.rs`).
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    has_length: bool,
    fields: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let start = out.len();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    if let Some(query) = query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let line_len = out.len() - start;
    fields(out);
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) && !has_length {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    line_len
}
