//! The one place admin errors become HTTP: RFC 9457 problem+json bodies
//! `{type, title, status, detail, errors: [{pointer, detail}]}`.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderValue};
use serde::Serialize;

use crate::model::FieldError;
use crate::publish::PublishError;
use crate::store::StoreError;
use data_plane::BuildError;

/// Everything an admin request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    Malformed(String),
    #[error("the request body gives a member twice ({}): each member of an object must be unique", .0.pointer)]
    DuplicateMember(FieldError),
    #[error("the request body is invalid")]
    Invalid(Vec<FieldError>),
    #[error("the request body must be at most {0} bytes")]
    TooLarge(usize),
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("a valid 'Authorization: Bearer <token>' header is required")]
    Unauthorized,
    #[error("no such endpoint")]
    NoEndpoint,
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("If-Match must be a quoted version like \"7\" or *")]
    BadPrecondition,
    /// A query parameter or header (named by the error's pointer) is bad.
    #[error("{}", .0.detail)]
    BadParameter(FieldError),
    #[error("{}", .0.detail)]
    Conflict(FieldError),
    #[error("{}", .0.detail)]
    RouteConflict(FieldError),
    #[error(
        "{0} clients already follow the event stream (the most it serves); close one, or retry later"
    )]
    TooManySubscribers(usize),
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The handler panicked (reported, with this request ID, where it was
    /// caught: see [`super::recovering`]).
    #[error("the gateway failed while handling the request (request ID {0})")]
    Panicked(String),
}

impl ApiError {
    /// A bad query parameter or header, named (`dry_run`, `limit`, …).
    pub fn bad_parameter(name: &str, detail: impl Into<String>) -> ApiError {
        ApiError::BadParameter(FieldError::new(name, detail.into()))
    }

    /// A route change refused because it would match the same requests as
    /// another route: name the other one.
    pub fn for_route(err: PublishError, this: &str) -> ApiError {
        match err {
            PublishError::Rejected(BuildError::Conflict(a, b)) => {
                let other = if a == this { b } else { a };
                ApiError::RouteConflict(FieldError::new(
                    "/path",
                    format!("route {other:?} already matches the same hosts, path and methods"),
                ))
            }
            other => ApiError::Publish(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Publish(PublishError::Store(e))
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    errors: Vec<FieldError>,
    /// The ID an internal error was logged with.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl ApiError {
    /// Status, stable code (last part of `type`), title, field errors.
    fn parts(&self) -> (StatusCode, &'static str, &'static str, Vec<FieldError>) {
        use StatusCode as S;
        match self {
            ApiError::Malformed(_) => (S::BAD_REQUEST, "malformed-json", "Malformed JSON", vec![]),
            ApiError::DuplicateMember(e) => (
                S::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                vec![e.clone()],
            ),
            ApiError::Invalid(errs) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-fields",
                "Invalid fields",
                errs.clone(),
            ),
            ApiError::TooLarge(_) => (
                S::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request body too large",
                vec![],
            ),
            ApiError::UnsupportedMediaType(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                vec![],
            ),
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized", "Unauthorized", vec![]),
            ApiError::BadParameter(e) => (
                S::BAD_REQUEST,
                "invalid-parameter",
                "Invalid parameter",
                vec![e.clone()],
            ),
            ApiError::Conflict(e) => (S::CONFLICT, "conflict", "Conflict", vec![e.clone()]),
            ApiError::RouteConflict(e) => (
                S::CONFLICT,
                "route-conflict",
                "Route conflict",
                vec![e.clone()],
            ),
            ApiError::NoEndpoint => (S::NOT_FOUND, "no-endpoint", "Not found", vec![]),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found", vec![]),
            ApiError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                vec![],
            ),
            ApiError::BadPrecondition
            | ApiError::Publish(PublishError::Store(StoreError::PreconditionFailed { .. })) => (
                S::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
                vec![],
            ),
            ApiError::Publish(PublishError::Store(e)) => match e {
                StoreError::NotFound { .. } => (S::NOT_FOUND, "not-found", "Not found", vec![]),
                StoreError::Duplicate { pointer, detail } => (
                    S::CONFLICT,
                    "conflict",
                    "Conflict",
                    vec![FieldError::new(*pointer, detail.clone())],
                ),
                StoreError::InUse { .. } => (S::CONFLICT, "in-use", "Resource in use", vec![]),
                StoreError::Unavailable => (
                    S::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Config database unreachable",
                    vec![],
                ),
                StoreError::UnknownUpstream(name) => (
                    S::UNPROCESSABLE_ENTITY,
                    "unknown-reference",
                    "Unknown reference",
                    vec![FieldError::new(
                        "/upstream",
                        format!("upstream {name:?} does not exist"),
                    )],
                ),
                _ => (
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    vec![],
                ),
            },
            ApiError::Publish(PublishError::Rejected(BuildError::Conflict(a, b))) => (
                S::CONFLICT,
                "route-conflict",
                "Route conflict",
                vec![FieldError::new(
                    "/path",
                    format!("routes {a:?} and {b:?} would match the same hosts, path and methods"),
                )],
            ),
            ApiError::Publish(PublishError::Rejected(e)) => match e.field() {
                // One member of the upstream is at fault: name it, with why.
                Some(pointer) => (
                    S::UNPROCESSABLE_ENTITY,
                    "invalid-fields",
                    "Invalid fields",
                    vec![FieldError::new(
                        pointer,
                        std::error::Error::source(e)
                            .map_or_else(|| e.to_string(), |reason| reason.to_string()),
                    )],
                ),
                None => (
                    S::UNPROCESSABLE_ENTITY,
                    "rejected",
                    "Config rejected by the data plane",
                    vec![],
                ),
            },
            ApiError::TooManySubscribers(_) => (
                S::SERVICE_UNAVAILABLE,
                "too-many-subscribers",
                "Too many event subscribers",
                vec![],
            ),
            ApiError::Panicked(_) => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                vec![],
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title, errors) = self.parts();
        let request_id = match &self {
            ApiError::Panicked(id) => Some(id.as_str()),
            _ => None,
        };
        // A panic was logged where it was caught, once.
        if status.is_server_error()
            && request_id.is_none()
            && !matches!(self, ApiError::TooManySubscribers(_))
        {
            tracing::error!(error = %self, "admin request failed");
        }
        let problem = Problem {
            kind: format!("urn:switchyard:problem:{code}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            errors,
            request_id,
        };
        let body = serde_json::to_vec(&problem).expect("a problem serialises");
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            resp.headers_mut().insert("x-request-id", id);
        }
        resp
    }
}
