//! Request extractors that answer with the API's own problem+json errors
//! instead of axum's plain-text rejections.

use axum::extract::{FromRequest, Request};
use http::HeaderMap;
use http::header;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::model::FieldError;

/// Largest admin request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body: `application/json` (or any `+json` type, such as
/// `application/merge-patch+json`), at most [`MAX_BODY_BYTES`], parsed into
/// `T` with every type error named by JSON pointer.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::TooLarge(MAX_BODY_BYTES))?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::Malformed(e.to_string()))?;
        // Every admin body (and merge patch) is an object; serde would
        // otherwise accept a struct written as an array of its fields.
        if !value.is_object() {
            return Err(ApiError::Invalid(vec![FieldError::new(
                "",
                "must be a JSON object",
            )]));
        }
        Ok(JsonBody(from_value(value)?))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserialise `value` into `T`, mapping the first error to a field error.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
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
        let message = e.inner().to_string();
        ApiError::Invalid(vec![FieldError::new(pointer, message)])
    })
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RouteSpec, UpstreamSpec};

    fn pointer<T: DeserializeOwned + std::fmt::Debug>(v: Value) -> String {
        match from_value::<T>(v).unwrap_err() {
            ApiError::Invalid(errs) => errs[0].pointer.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn type_errors_name_the_field() {
        assert_eq!(
            pointer::<RouteSpec>(serde_json::json!({"name": 5})),
            "/name"
        );
        assert_eq!(
            pointer::<RouteSpec>(serde_json::json!({"strip_prefix": "yes"})),
            "/strip_prefix"
        );
        assert_eq!(
            pointer::<UpstreamSpec>(
                serde_json::json!({"backends": [{"url": "http://a"}, {"weight": -1}]})
            ),
            "/backends/1/weight"
        );
        assert_eq!(
            pointer::<RouteSpec>(serde_json::json!({"name": "a", "pth": "/"})),
            "/pth"
        );
    }
}
