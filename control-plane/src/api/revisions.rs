//! `/admin/revisions`: the history of committed changes, the config at
//! each kept version, the diff between two, and rollback.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::Response;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::changing::Changing;
use super::config::replace_with;
use super::error::ApiError;
use super::extract::ApiPath;
use super::{AdminState, if_match};
use crate::model::{self, ConfigSpec};
use crate::store::revisions::{self, Resources, RevisionView, Source, Summary};
use crate::view::ListView;

/// Default and largest `limit` of a page of revisions.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

/// A query parameter given as text, so a bad value is our problem+json
/// (naming it) and not axum's plain-text rejection.
#[derive(Debug, Deserialize)]
pub struct Params {
    limit: Option<String>,
    before: Option<String>,
    from: Option<String>,
}

fn number(name: &str, raw: Option<&String>) -> Result<Option<u64>, ApiError> {
    raw.map(|r| {
        r.parse().map_err(|_| {
            ApiError::bad_parameter(name, format!("{name} must be a whole number, not {r:?}"))
        })
    })
    .transpose()
}

fn params(
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Params, ApiError> {
    query
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_parameter("", e.body_text()))
}

pub async fn list(
    State(s): State<AdminState>,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListView<RevisionView>>, ApiError> {
    let p = params(query)?;
    let limit = number("limit", p.limit.as_ref())?.unwrap_or(u64::from(DEFAULT_LIMIT));
    if !(1..=u64::from(MAX_LIMIT)).contains(&limit) {
        return Err(ApiError::bad_parameter(
            "limit",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let before = number("before", p.before.as_ref())?;
    let store = s.publisher.store();
    let config_version = store.config_version().await?;
    let items = store.revisions(limit as u32, before).await?;
    Ok(Json(ListView {
        items,
        config_version,
    }))
}

/// A revision with the whole config at its version.
#[derive(Debug, Serialize)]
pub struct RevisionDocument {
    #[serde(flatten)]
    pub revision: RevisionView,
    /// The config at this version, in the `/admin/config` format.
    pub config: Value,
}

pub async fn read(
    State(s): State<AdminState>,
    ApiPath(version): ApiPath<u64>,
) -> Result<Json<RevisionDocument>, ApiError> {
    let (revision, state) = s.publisher.store().revision(version).await?;
    Ok(Json(RevisionDocument {
        revision,
        config: state.document(version),
    }))
}

/// The difference between the configs at two versions.
#[derive(Debug, Serialize)]
pub struct RevisionDiff {
    pub from: u64,
    pub to: u64,
    pub summary: Summary,
    /// RFC 6902 JSON Patch from the config at `from` to the config at
    /// `to` (`/admin/config` documents without their `version`).
    pub patch: json_patch::Patch,
}

/// The config at `version`: version 0 is the empty config every database
/// starts with.
async fn state_at(s: &AdminState, version: u64) -> Result<Resources, ApiError> {
    if version == 0 {
        return Ok(Resources::default());
    }
    Ok(s.publisher.store().revision(version).await?.1)
}

pub async fn diff(
    State(s): State<AdminState>,
    ApiPath(version): ApiPath<u64>,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RevisionDiff>, ApiError> {
    let p = params(query)?;
    let to = state_at(&s, version).await?;
    let from = number("from", p.from.as_ref())?.unwrap_or(version.saturating_sub(1));
    let before = state_at(&s, from).await.map_err(|e| match e {
        ApiError::Publish(crate::publish::PublishError::Store(
            crate::store::StoreError::NotFound { .. },
        )) => ApiError::NotFound(format!(
            "revision {from} is not kept: give ?from= a kept version (GET /admin/revisions)"
        )),
        other => other,
    })?;
    Ok(Json(RevisionDiff {
        from,
        to: version,
        summary: revisions::summary(&before, &to),
        patch: before.patch_to(&to),
    }))
}

pub async fn rollback(
    State(s): State<AdminState>,
    ApiPath(version): ApiPath<u64>,
    headers: HeaderMap,
    c: Changing,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    let (_, state) = s.publisher.store().revision(version).await?;
    // The document is read as `PUT /admin/config` reads one: what no longer
    // validates (or compiles, like a CA file that is gone) is refused.
    let spec: ConfigSpec = model::parse(state.document(version)).map_err(ApiError::Invalid)?;
    let config = spec.validate()?;
    replace_with(&s, c.from_source(Source::Rollback), config, expect).await
}
