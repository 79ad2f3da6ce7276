//! `/admin/upstreams/{name}/backends` handlers.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};

use super::changing::Changing;
use super::error::ApiError;
use super::extract::{ApiPath, JsonBody, from_value};
use super::{
    AdminState, MergePatch, deleted, if_match, merge_patch, mutated, patch_with_retry, resource,
};
use crate::model::BackendSpec;
use crate::store::{Applied, Change};
use crate::view::{BackendView, ListView};

pub async fn list(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ListView<BackendView>>, ApiError> {
    let store = s.publisher.store();
    let config_version = store.config_version().await?;
    let view = store.upstream(&name).await?;
    Ok(Json(ListView {
        items: view.upstream.backends,
        config_version,
    }))
}

pub async fn read(
    State(s): State<AdminState>,
    ApiPath((name, id)): ApiPath<(String, u64)>,
) -> Result<Response, ApiError> {
    let view = s.publisher.store().backend(&name, id).await?;
    Ok(resource(StatusCode::OK, view.version, &view))
}

fn respond(
    status: StatusCode,
    version: u64,
    upstream: &str,
    applied: Applied,
    location: bool,
) -> Response {
    match applied {
        Applied::Backend(view) => {
            let loc = location.then(|| format!("/admin/upstreams/{upstream}/backends/{}", view.id));
            mutated(status, version, &view, loc)
        }
        _ => unreachable!("backend changes produce backends"),
    }
}

pub async fn create(
    State(s): State<AdminState>,
    ApiPath(upstream): ApiPath<String>,
    headers: HeaderMap,
    c: Changing,
    JsonBody(spec): JsonBody<BackendSpec>,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    let backend = spec.validate().map_err(ApiError::Invalid)?;
    let change = Change::AddBackend {
        upstream: upstream.clone(),
        backend,
        expect,
    };
    let (version, applied) = done!(c.run(&s, change).await?);
    Ok(respond(
        StatusCode::CREATED,
        version,
        &upstream,
        applied,
        true,
    ))
}

pub async fn patch(
    State(s): State<AdminState>,
    ApiPath((upstream, id)): ApiPath<(String, u64)>,
    headers: HeaderMap,
    c: Changing,
    JsonBody(patch): JsonBody<MergePatch>,
) -> Result<Response, ApiError> {
    let explicit = if_match(&headers)?;
    let (version, applied) = done!(
        patch_with_retry(explicit, || async {
            let current = s.publisher.store().backend(&upstream, id).await?;
            let spec: BackendSpec = from_value(merge_patch(&current, &patch))?;
            let backend = spec.validate().map_err(ApiError::Invalid)?;
            let expect = Some(explicit.unwrap_or(current.version));
            let change = Change::UpdateBackend {
                upstream: upstream.clone(),
                id,
                backend,
                expect,
            };
            Ok(c.run(&s, change).await?)
        })
        .await?
    );
    Ok(respond(StatusCode::OK, version, &upstream, applied, false))
}

pub async fn remove(
    State(s): State<AdminState>,
    ApiPath((upstream, id)): ApiPath<(String, u64)>,
    headers: HeaderMap,
    c: Changing,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    let change = Change::RemoveBackend {
        upstream,
        id,
        expect,
    };
    let (version, _) = done!(c.run(&s, change).await?);
    Ok(deleted(version))
}
