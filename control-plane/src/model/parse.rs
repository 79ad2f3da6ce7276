//! JSON value → request type, with every failure named by JSON pointer.
//!
//! A request type is read from a `serde_json::Value` through [`Strict`], a
//! small serde data format over `Value` with two rules serde_json's own
//! `Value` deserializer does not have:
//!
//! - **A struct must be a JSON object.** serde's derived structs also
//!   accept the array of their field values (`["api", "/api"]`), for
//!   formats without field names, and serde_json offers them that form.
//!   Whether a format does is the format's choice (serde_yaml does not;
//!   see serde-rs/serde#2432), so this one refuses it for every struct at
//!   any depth, from the types themselves: there is no list of where
//!   objects stand to keep in step with each body type (such lists had
//!   drifted: `tls` was checked in a config document but not in an
//!   upstream body).
//! - **An integer member takes a number with a zero fraction** (`210.0`,
//!   `2.1e2`) as the integer it equals, as JSON Schema's `integer` (the
//!   type openapi.yaml gives such members) does. A fraction (`210.5`) is
//!   "must be an integer". Past 2^53 a float no longer tells which integer
//!   was written, so there only integers written as such are taken.
//!
//! Everything else is serde_json's `Value` behaviour; serde_path_to_error
//! names the member of any failure.

use serde::Deserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Error, Value};

use super::FieldError;

/// The largest integer every smaller one of which a float holds exactly.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Parse `value` into `T`; a failure is the field error of the first bad
/// member.
pub fn parse<T: DeserializeOwned>(value: Value) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(Strict(value)).map_err(|e| {
        let mut pointer = String::new();
        for seg in e.path().iter() {
            use serde_path_to_error::Segment;
            match seg {
                Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    pointer.push('/');
                    pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                }
                Segment::Unknown => {}
            }
        }
        vec![FieldError::new(pointer, e.inner().to_string())]
    })
}

/// The admin API's data format over a JSON value (see the module doc).
struct Strict(Value);

impl Strict {
    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0 {
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().expect("an f64 number");
                if f.fract() != 0.0 {
                    Err(de::Error::custom("must be an integer"))
                } else if f.abs() > MAX_EXACT_FLOAT {
                    Err(de::Error::custom(
                        "must be an integer without a fraction or exponent when larger than 2^53",
                    ))
                } else if f < 0.0 {
                    visitor.visit_i64(f as i64)
                } else {
                    visitor.visit_u64(f as u64)
                }
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn object<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            _ => Err(de::Error::custom("must be a JSON object")),
        }
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.integer(visitor)
        }
    )*};
}

impl<'de> Deserializer<'de> for Strict {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => n.deserialize_any(visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => {
                let len = items.len();
                let mut items = Items(items.into_iter());
                let v = visitor.visit_seq(&mut items)?;
                match items.0.len() {
                    0 => Ok(v),
                    _ => Err(de::Error::invalid_length(
                        len,
                        &"fewer elements in the array",
                    )),
                }
            }
            Value::Object(map) => {
                let len = map.len();
                let mut members = Members {
                    iter: map.into_iter(),
                    value: None,
                };
                let v = visitor.visit_map(&mut members)?;
                match members.iter.len() {
                    0 => Ok(v),
                    _ => Err(de::Error::invalid_length(
                        len,
                        &"fewer members in the object",
                    )),
                }
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            v => visitor.visit_some(Strict(v)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.object(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.object(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// No request type has an enum; if one comes, it gets serde_json's
    /// rules (the strict ones above do not reach inside it).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
    }

    serde::forward_to_deserialize_any! {
        bool f32 f64 i128 u128 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct identifier ignored_any
    }
}

/// The elements of an array, each read strictly.
struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for &mut Items {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Strict(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The members of an object, each value read strictly.
struct Members {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for &mut Members {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(IntoDeserializer::<Error>::into_deserializer(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value was asked for before its key"))?;
        seed.deserialize(Strict(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests;
