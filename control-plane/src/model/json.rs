//! Reading an admin body (or a `--bootstrap` file) into a JSON value, with
//! one rule serde_json does not have: an object may not give the same
//! member twice, at any depth. `{"name": "a", "name": "b"}` is refused
//! with the member's JSON pointer, not read as its last value.
//!
//! Why refuse: RFC 8259 leaves duplicate names to the reader and I-JSON
//! (RFC 7493) forbids them. Readers that keep the first value and readers
//! that keep the last disagree, so such a body can mean one thing to the
//! tool or reviewer that produced it and another to the gateway.
//!
//! Why by hand: serde_json keeps the last value and has no switch for it;
//! its maintainer's answer is a `Deserialize` impl of one's own
//! (serde-rs/json#762), which [`read`] is: a visitor that builds the same
//! `Value` serde_json would, checking each key against the object it is
//! joining. It runs on serde_json's parser, so that parser's recursion
//! limit (128 levels) and the admin API's body limits (1 MiB; 64 MiB for a
//! whole config) bound its work,
//! and the pointer of a member is built only when it is refused.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::FieldError;

/// Why bytes were not read as a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (serde_json's message, with line and column).
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// An object gives a member twice; the pointer names the member.
    #[error("{}: {}", .0.pointer, .0.detail)]
    DuplicateKey(FieldError),
}

/// What [`JsonError::DuplicateKey`] says about the member.
const DUPLICATE_DETAIL: &str = "is given more than once (each member of an object must be unique)";

/// Parse `bytes` as one JSON value, refusing duplicate member names.
pub fn read(bytes: &[u8]) -> Result<Value, JsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let reader = Reader {
        at: &Segment::Root,
        duplicate: &duplicate,
    };
    let value = reader
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match (value, duplicate.into_inner()) {
        (_, Some(pointer)) => Err(JsonError::DuplicateKey(FieldError::new(
            pointer,
            DUPLICATE_DETAIL,
        ))),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(JsonError::Syntax(e.to_string())),
    }
}

/// Where the reader is: a list linked up the stack, turned into a JSON
/// pointer only when a member is refused.
enum Segment<'a> {
    Root,
    Key(&'a str, &'a Segment<'a>),
    Index(usize, &'a Segment<'a>),
}

impl Segment<'_> {
    fn pointer(&self) -> String {
        match self {
            Segment::Root => String::new(),
            Segment::Key(key, parent) => {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                format!("{}/{escaped}", parent.pointer())
            }
            Segment::Index(i, parent) => format!("{}/{i}", parent.pointer()),
        }
    }
}

/// Builds the `Value` at `at`; on a repeated member, records its pointer
/// in `duplicate` and fails (serde's errors carry only a message).
#[derive(Clone, Copy)]
struct Reader<'p> {
    at: &'p Segment<'p>,
    duplicate: &'p RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // serde_json's parser never yields NaN or infinity.
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        loop {
            let at = Segment::Index(items.len(), self.at);
            let item = Reader { at: &at, ..self };
            match seq.next_element_seed(item)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = members.next_key::<String>()? {
            let at = Segment::Key(&key, self.at);
            if object.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(at.pointer());
                return Err(de::Error::custom(format!(
                    "the member {key:?} is given twice"
                )));
            }
            let value = members.next_value_seed(Reader { at: &at, ..self })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn duplicate_at(text: &str) -> String {
        match read(text.as_bytes()) {
            Err(JsonError::DuplicateKey(e)) => e.pointer,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"a": [1, -2, 2.5, 1e300, 18446744073709551616, true, null, "x", {}], "b": {"c": {"d": []}}, "": 0}"#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(read(text.as_bytes()).unwrap(), expected);
        assert_eq!(read(b" 7 ").unwrap(), json!(7));
    }

    #[test]
    fn a_member_given_twice_is_named_at_any_depth() {
        assert_eq!(duplicate_at(r#"{"name": "a", "name": "b"}"#), "/name");
        assert_eq!(
            duplicate_at(r#"{"backends": [{"url": "x"}, {"url": "y", "weight": 1, "url": "z"}]}"#),
            "/backends/1/url"
        );
        assert_eq!(
            duplicate_at(r#"{"upstreams": [{"tls": {"a/b": 1, "a/b": 2}}]}"#),
            "/upstreams/0/tls/a~1b"
        );
        // The same value twice is still twice; null is a value.
        assert_eq!(duplicate_at(r#"{"x": null, "x": null}"#), "/x");
        // Equal names in different objects are fine.
        assert!(read(br#"{"a": {"n": 1}, "b": {"n": 1}, "n": [{"n": 1}]}"#).is_ok());
    }

    #[test]
    fn escaped_spellings_of_one_name_are_the_same_name() {
        assert_eq!(duplicate_at(r#"{"name": 1, "na\u006de": 2}"#), "/name");
    }

    #[test]
    fn syntax_errors_and_depth_are_serde_jsons() {
        assert!(matches!(read(b""), Err(JsonError::Syntax(_))));
        assert!(matches!(read(b"{} x"), Err(JsonError::Syntax(_))));
        assert!(matches!(read(br#"{"a": 1,}"#), Err(JsonError::Syntax(_))));
        let deep = "[".repeat(200) + &"]".repeat(200);
        match read(deep.as_bytes()) {
            Err(JsonError::Syntax(e)) => assert!(e.contains("recursion limit"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
