//! `GET`/`PUT /admin/config` (the whole config as one document) and
//! `GET /admin/openapi.yaml` (the API contract).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use data_plane::BuildError;
use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::changing::Changing;
use super::error::ApiError;
use super::extract::{JsonBody, MAX_CONFIG_BYTES};
use super::{AdminState, if_match, mutated, resource};
use crate::model::{Config, ConfigSpec, DocumentError, FieldError};
use crate::publish::PublishError;
use crate::store::revisions::Source;
use crate::store::{Applied, Change};

/// The OpenAPI document, compiled in so it always matches this build.
pub const OPENAPI_YAML: &str = include_str!("../../../openapi/openapi.yaml");

pub async fn openapi() -> Response {
    let mut resp = OPENAPI_YAML.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    resp
}

pub async fn export(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let view = s.publisher.store().export().await?;
    Ok(resource(StatusCode::OK, view.version, &view))
}

impl From<DocumentError> for ApiError {
    fn from(e: DocumentError) -> Self {
        match e {
            DocumentError::Invalid(errors) => ApiError::Invalid(errors),
            DocumentError::Conflict(error) => ApiError::Conflict(error),
        }
    }
}

pub async fn replace(
    State(s): State<AdminState>,
    headers: HeaderMap,
    c: Changing,
    JsonBody(spec): JsonBody<ConfigSpec, MAX_CONFIG_BYTES>,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    let config = spec.validate()?;
    replace_with(&s, c.from_source(Source::Import), config, expect).await
}

/// Make the live config `config` (`PUT /admin/config`, a rollback).
pub async fn replace_with(
    s: &AdminState,
    c: Changing,
    config: Config,
    expect: Option<u64>,
) -> Result<Response, ApiError> {
    let route_names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
    let (version, applied) = match c.run(s, Change::ReplaceConfig { config, expect }).await {
        // Point a route conflict at the document's route, not a bare "/path".
        Err(PublishError::Rejected(BuildError::Conflict(existing, new))) => {
            let index = route_names.iter().position(|n| *n == new).unwrap_or(0);
            return Err(ApiError::Conflict(FieldError::new(
                format!("/routes/{index}/path"),
                format!(
                    "route {new:?} matches the same hosts, path and methods as route {existing:?}"
                ),
            )));
        }
        other => done!(other?),
    };
    match applied {
        Applied::Config(view) => Ok(mutated(StatusCode::OK, version, &view, None)),
        _ => unreachable!("a config change produces a config"),
    }
}
