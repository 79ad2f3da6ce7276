//! Request extractors that answer with the API's own problem+json errors
//! instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use http::HeaderMap;
use http::header;
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::model::{JsonError, parse, read_json};

/// Largest admin request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest whole config accepted (`PUT /admin/config`): 100,000 routes
/// with their upstreams are about 17 MB of JSON; this leaves room for
/// several times that.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024 * 1024;

/// A JSON body: `application/json` (or any `+json` type, such as
/// `application/merge-patch+json`), at most `LIMIT` bytes, read with
/// duplicate members refused ([`read_json`]) and parsed into `T` with every
/// type error named by JSON pointer ([`parse`]).
#[derive(Debug)]
pub struct JsonBody<T, const LIMIT: usize = MAX_BODY_BYTES>(pub T);

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S>
    for JsonBody<T, LIMIT>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        let bytes = axum::body::to_bytes(req.into_body(), LIMIT)
            .await
            .map_err(|_| ApiError::TooLarge(LIMIT))?;
        let value = read_json(&bytes).map_err(|e| match e {
            JsonError::Syntax(reason) => ApiError::Malformed(reason),
            JsonError::DuplicateKey(member) => ApiError::DuplicateMember(member),
        })?;
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

/// Parse `value` into `T`, every failure a field error (422).
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    parse(value).map_err(ApiError::Invalid)
}

/// Path parameters; a value that does not parse (a non-numeric backend id,
/// bad percent-encoding) names no resource: 404 problem+json.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(e) => Err(ApiError::NotFound(e.body_text())),
        }
    }
}
