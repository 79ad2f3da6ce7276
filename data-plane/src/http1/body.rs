//! A message body's framing decoded from a buffer: `Content-Length`,
//! chunked (with trailers) or until close. Pure: the caller reads more
//! when told ([`Decoded::NeedMore`]) and calls [`at_close`] when the
//! connection ends. Used by the inline client's response bodies
//! (`transport::h1::body`); fuzzed by `fuzz/fuzz_targets/chunked.rs`.

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderMap;
use http_body::Frame;

use super::head::{BodyFraming, header_field};
use super::{H1Error, MAX_HEAD, MAX_HEADERS};

/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug)]
pub(crate) enum Decode {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the backend closes.
    Eof,
    Done,
}

impl Decode {
    /// The decoder of a body framed as `framing`.
    pub(crate) fn of(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::None => Decode::Length(0),
            BodyFraming::Length(n) => Decode::Length(n),
            BodyFraming::Chunked => Decode::Chunked(Chunk::Size),
            BodyFraming::Eof => Decode::Eof,
        }
    }

    /// Nothing of the body is left to read.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Decode::Done | Decode::Length(0))
    }
}

#[derive(Debug)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// What [`decode`] made of the buffer.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A piece of the body, or its trailers.
    Frame(Frame<Bytes>),
    /// The body is over (no trailers, or they were handed out).
    End,
    /// The buffer holds no more of the body: read more.
    NeedMore,
}

/// Decode the next piece of a body framed as `state` from `buf`, taking
/// what it uses off the buffer. Pure: the caller reads more when told, and
/// calls [`at_close`] when the connection ends.
#[inline]
pub(crate) fn decode(state: &mut Decode, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
    loop {
        match state {
            Decode::Done => return Ok(Decoded::End),
            Decode::Length(0) => {
                *state = Decode::Done;
                return Ok(Decoded::End);
            }
            Decode::Length(left) | Decode::Chunked(Chunk::Data(left)) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                if *left == 0
                    && let Decode::Chunked(chunk) = state
                {
                    *chunk = Chunk::DataEnd;
                }
                let data = buf.split_to(n as usize).freeze();
                return Ok(Decoded::Frame(Frame::data(data)));
            }
            Decode::Eof => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                return Ok(Decoded::Frame(Frame::data(buf.split().freeze())));
            }
            Decode::Chunked(chunk) => match step_chunked(chunk, buf)? {
                Step::More => return Ok(Decoded::NeedMore),
                Step::Next => {}
                Step::End(trailers) => {
                    *state = Decode::Done;
                    return Ok(match trailers {
                        Some(t) => Decoded::Frame(Frame::trailers(t)),
                        None => Decoded::End,
                    });
                }
            },
        }
    }
}

/// The connection closed with the body framed as `state` not over: the end
/// of a body read until close, else a body cut short.
pub(crate) fn at_close(state: &mut Decode) -> Option<Result<Frame<Bytes>, H1Error>> {
    if matches!(state, Decode::Eof) {
        *state = Decode::Done;
        None
    } else {
        Some(Err(H1Error::Truncated))
    }
}

/// What one step of the chunked decoder found.
#[derive(Debug)]
enum Step {
    /// Needs more bytes.
    More,
    /// Moved on; go again.
    Next,
    /// The last chunk and the trailer section (if it had fields) are read.
    End(Option<HeaderMap>),
}

/// Advance the chunked decoder over what `buf` holds (data itself is taken
/// by the caller in `Chunk::Data`).
fn step_chunked(chunk: &mut Chunk, buf: &mut BytesMut) -> Result<Step, H1Error> {
    match chunk {
        Chunk::Data(_) => unreachable!("chunk data is taken by the caller"),
        Chunk::Size => {
            let Some(end) = find(buf, b"\r\n") else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err(H1Error::Chunked)
                } else {
                    Ok(Step::More)
                };
            };
            let size = chunk_size(&buf[..end])?;
            buf.advance(end + 2);
            *chunk = if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            };
            Ok(Step::Next)
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(H1Error::Chunked);
            }
            buf.advance(2);
            *chunk = Chunk::Size;
            Ok(Step::Next)
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(Step::End(None));
            }
            let Some(end) = find(buf, b"\r\n\r\n") else {
                return if buf.len() > MAX_HEAD {
                    Err(H1Error::HeadTooLarge)
                } else {
                    Ok(Step::More)
                };
            };
            let section = buf.split_to(end + 4).freeze();
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let fields = match httparse::parse_headers(&section, &mut fields) {
                Ok(httparse::Status::Complete((_, fields))) => fields,
                Ok(httparse::Status::Partial) => return Err(H1Error::Chunked),
                Err(e) => return Err(H1Error::Parse(e)),
            };
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for field in fields.iter() {
                let (name, value) =
                    header_field(field.name.as_bytes(), section.slice_ref(field.value))?;
                trailers.append(name, value);
            }
            Ok(Step::End(Some(trailers)))
        }
    }
}

/// `1*HEXDIG [ BWS ";" extensions ]` → the size (leading zeros allowed;
/// extensions may hold any byte but controls other than HTAB).
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(H1Error::Chunked);
    }
    let rest = &line[digits..];
    let rest_ok = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .is_none_or(|i| {
            rest[i] == b';'
                && rest[i..]
                    .iter()
                    .all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
        });
    if !rest_ok {
        return Err(H1Error::Chunked);
    }
    line[..digits].iter().try_fold(0u64, |size, &b| {
        let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
        size.checked_mul(16)
            .and_then(|s| s.checked_add(digit))
            .ok_or(H1Error::Chunked)
    })
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"A ; ext=1").unwrap(), 10);
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"00000000000000000010").unwrap(), 16);
        assert_eq!(chunk_size(b"5;name=\"caf\xc3\xa9\"").unwrap(), 5);
        for bad in [
            &b""[..],
            b"x",
            b"1 2",
            b"-1",
            b"1\x00",
            b"1;a\x01",
            b"10000000000000000",
        ] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
    }
}
