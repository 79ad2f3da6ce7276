//! JSON → request type, with every failure named by JSON pointer.
//!
//! serde's derived `Deserialize` also accepts a struct written as an array
//! of its field values (`["api", "/api"]`). Admin bodies are objects, so
//! each body type declares where objects must stand ([`Shape::OBJECTS`])
//! and [`parse`] checks those positions before serde runs.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::FieldError;

/// Where a request type expects JSON objects: JSON pointers, `*` for every
/// element of an array. Keep in step with the type's nested structs.
pub trait Shape {
    const OBJECTS: &'static [&'static str];
}

impl Shape for Value {
    /// A merge patch: the document itself must be an object.
    const OBJECTS: &'static [&'static str] = &[""];
}

/// Parse `value` into `T`: shape check, then serde with the error's path.
pub fn parse<T: DeserializeOwned + Shape>(value: Value) -> Result<T, Vec<FieldError>> {
    let errors: Vec<FieldError> = T::OBJECTS
        .iter()
        .flat_map(|pattern| resolve(&value, pattern))
        .filter(|(_, v)| !v.is_object() && !v.is_null())
        .map(|(pointer, _)| FieldError::new(pointer, "must be a JSON object"))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut pointer = String::new();
        for seg in e.path().iter() {
            use serde_path_to_error::Segment;
            match seg {
                Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    pointer.push('/');
                    pointer.push_str(&escape(key));
                }
                Segment::Unknown => {}
            }
        }
        vec![FieldError::new(pointer, e.inner().to_string())]
    })
}

/// Every value in `root` that `pattern` names, with its pointer. Positions
/// that do not exist (or are not arrays where `*` stands) are skipped: the
/// type check reports those.
fn resolve<'v>(root: &'v Value, pattern: &str) -> Vec<(String, &'v Value)> {
    let mut found = vec![(String::new(), root)];
    for seg in pattern.split('/').skip(1) {
        found = found
            .into_iter()
            .flat_map(|(ptr, v)| -> Vec<(String, &Value)> {
                match (seg, v) {
                    ("*", Value::Array(items)) => items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{ptr}/{i}"), item))
                        .collect(),
                    (key, Value::Object(map)) => map
                        .get(key)
                        .map(|child| vec![(format!("{ptr}/{}", escape(key)), child)])
                        .unwrap_or_default(),
                    _ => vec![],
                }
            })
            .collect();
    }
    found
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConfigSpec, RouteSpec, UpstreamSpec};
    use serde_json::json;

    fn pointers<T: DeserializeOwned + Shape + std::fmt::Debug>(v: Value) -> Vec<String> {
        parse::<T>(v)
            .unwrap_err()
            .into_iter()
            .map(|e| e.pointer)
            .collect()
    }

    #[test]
    fn type_errors_name_the_field() {
        assert_eq!(pointers::<RouteSpec>(json!({"name": 5})), ["/name"]);
        assert_eq!(
            pointers::<RouteSpec>(json!({"strip_prefix": "yes"})),
            ["/strip_prefix"]
        );
        assert_eq!(
            pointers::<UpstreamSpec>(json!({"backends": [{"url": "http://a"}, {"weight": -1}]})),
            ["/backends/1/weight"]
        );
        assert_eq!(
            pointers::<RouteSpec>(json!({"name": "a", "pth": "/"})),
            ["/pth"]
        );
    }

    #[test]
    fn structs_written_as_arrays_are_refused() {
        assert_eq!(pointers::<RouteSpec>(json!(["a", "/a"])), [""]);
        assert_eq!(pointers::<RouteSpec>(json!("a")), [""]);
        assert_eq!(
            pointers::<UpstreamSpec>(
                json!({"name": "u", "backends": [{"url": "http://a"}, ["http://b", 1]]})
            ),
            ["/backends/1"]
        );
        assert_eq!(
            pointers::<UpstreamSpec>(json!({"name": "u", "timeouts": [1, 2]})),
            ["/timeouts"]
        );
        assert_eq!(
            pointers::<ConfigSpec>(
                json!({"upstreams": [{"name": "u", "backends": [[1]]}], "routes": [["r"]]})
            ),
            ["/upstreams/0/backends/0", "/routes/0"]
        );
        // null stands for "absent" in optional fields.
        assert!(parse::<UpstreamSpec>(json!({"name": "u", "timeouts": null})).is_ok());
    }
}
