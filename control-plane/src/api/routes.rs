//! `/admin/routes` handlers.

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
use crate::model::RouteSpec;
use crate::store::{Applied, Change};
use crate::view::{ListView, RouteView};

pub async fn list(State(s): State<AdminState>) -> Result<Json<ListView<RouteView>>, ApiError> {
    let (items, config_version) = s.publisher.store().list_routes().await?;
    Ok(Json(ListView {
        items,
        config_version,
    }))
}

pub async fn read(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let view = s.publisher.store().route(&name).await?;
    Ok(resource(StatusCode::OK, view.version, &view))
}

fn respond(status: StatusCode, version: u64, applied: Applied, location: bool) -> Response {
    match applied {
        Applied::Route(view) => {
            let loc = location.then(|| format!("/admin/routes/{}", view.route.name));
            mutated(status, version, &view, loc)
        }
        _ => unreachable!("route changes produce routes"),
    }
}

pub async fn create(
    State(s): State<AdminState>,
    c: Changing,
    JsonBody(spec): JsonBody<RouteSpec>,
) -> Result<Response, ApiError> {
    let route = spec.validate(None).map_err(ApiError::Invalid)?;
    let name = route.name.clone();
    let (version, applied) = done!(
        c.run(&s, Change::CreateRoute(route))
            .await
            .map_err(|e| ApiError::for_route(e, &name))?
    );
    Ok(respond(StatusCode::CREATED, version, applied, true))
}

pub async fn replace(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    c: Changing,
    JsonBody(spec): JsonBody<RouteSpec>,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    let route = spec.validate(Some(&name)).map_err(ApiError::Invalid)?;
    let (version, applied) = done!(
        c.run(&s, Change::ReplaceRoute { route, expect })
            .await
            .map_err(|e| ApiError::for_route(e, &name))?
    );
    Ok(respond(StatusCode::OK, version, applied, false))
}

pub async fn patch(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    c: Changing,
    JsonBody(patch): JsonBody<MergePatch>,
) -> Result<Response, ApiError> {
    let explicit = if_match(&headers)?;
    let (version, applied) = done!(
        patch_with_retry(explicit, || async {
            let current = s.publisher.store().route(&name).await?;
            let spec: RouteSpec = from_value(merge_patch(&current, &patch))?;
            let route = spec.validate(Some(&name)).map_err(ApiError::Invalid)?;
            let expect = Some(explicit.unwrap_or(current.version));
            Ok(c.run(&s, Change::ReplaceRoute { route, expect }).await?)
        })
        .await?
    );
    Ok(respond(StatusCode::OK, version, applied, false))
}

pub async fn remove(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    c: Changing,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    let (version, _) = done!(c.run(&s, Change::DeleteRoute { name, expect }).await?);
    Ok(deleted(version))
}
