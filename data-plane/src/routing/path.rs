//! Request-path normalisation, done once before matching so that no encoding
//! trick reaches a route the plain path would not.
//!
//! Steps (RFC 3986 §6.2.2): percent-encoded unreserved characters are
//! decoded (`%61` → `a`, `%2e` → `.`), remaining escapes get upper-case hex,
//! empty segments (`//`) are dropped, `.` and `..` segments are resolved.
//! Escapes that would change the segment structure or smuggle a terminator
//! (`%2f`, `%5c`, `%00`) and raw control characters, spaces, backslashes or
//! `#` are refused: a path containing them is answered 400, never guessed at.

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path contains an encoded '/', '\\' or NUL")]
    EncodedSeparator,
    #[error("path contains a malformed percent-escape")]
    BadEscape,
    #[error("path contains a control character, space, backslash or '#'")]
    BadCharacter,
}

/// Normalise `path` (the URI path, without query). Borrows when the path is
/// already normal, which is the common case.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut needs_work = false;
    let mut prev = 0u8;
    for &b in bytes {
        match b {
            0..=0x20 | 0x7f | b'\\' | b'#' => return Err(PathError::BadCharacter),
            b'%' => needs_work = true,
            b'/' if prev == b'/' => needs_work = true,
            b'.' if prev == b'/' => needs_work = true,
            _ => {}
        }
        prev = b;
    }
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decode escapes of unreserved characters; keep (upper-cased) all others.
/// Works on bytes: every other byte, a non-ASCII one too, is kept as it
/// is, so the result is as much UTF-8 as the input (an escape becomes one
/// ASCII byte or stays three).
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex_val),
            bytes.get(i + 2).copied().and_then(hex_val),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = hi << 4 | lo;
        match value {
            b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
            v if is_unreserved(v) => out.push(v),
            v => {
                out.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 0xf)]])
            }
        }
        i += 3;
    }
    // Only ASCII bytes were put in place of ASCII bytes.
    String::from_utf8(out).map_err(|_| PathError::BadCharacter)
}

/// Resolve `.`/`..` and drop empty segments. A trailing slash is kept when
/// the input ended in `/`, `/.` or `/..` (RFC 3986 §5.2.4).
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path[1..].split('/') {
        trailing_slash = false;
        match seg {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize(p).unwrap().into_owned()
    }

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(normalize("/api/v1/users"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a.b/c..d"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn dot_segments_and_duplicate_slashes() {
        assert_eq!(n("/pub/../admin"), "/admin");
        assert_eq!(n("/./admin"), "/admin");
        assert_eq!(n("//admin"), "/admin");
        assert_eq!(n("/a//b///c"), "/a/b/c");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/../../x"), "/x");
        assert_eq!(n("/a/"), "/a/");
    }

    #[test]
    fn encoded_dots_and_unreserved_are_decoded() {
        assert_eq!(n("/pub/%2e%2e/admin"), "/admin");
        assert_eq!(n("/pub/%2E%2e/admin"), "/admin");
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/a%7eb"), "/a~b");
        // Reserved characters stay encoded, hex upper-cased.
        assert_eq!(n("/a%3fb"), "/a%3Fb");
        assert_eq!(n("/caf%c3%a9"), "/caf%C3%A9");
        // Bytes beside an escape are kept as they are, non-ASCII ones too.
        assert_eq!(n("/caf\u{e9}%41"), "/caf\u{e9}A");
        assert_eq!(n("/\u{1f600}/%2e%2e/x/\u{e9}%2e"), "/x/\u{e9}.");
    }

    #[test]
    fn dangerous_escapes_and_characters_are_refused() {
        assert_eq!(normalize("/admin%2f"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a b"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a\\b"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a\tb"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a#b"), Err(PathError::BadCharacter));
        assert_eq!(normalize("a/b"), Err(PathError::NotAbsolute));
    }
}
