//! `GET /admin/status` and `GET /admin/upstreams/{name}/health`: what is
//! live right now, read from the snapshot in force (not the database) and
//! the live backend state, as the data plane reports it
//! ([`data_plane::status`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use data_plane::status::{Status, UpstreamStatus};

use super::AdminState;
use super::error::ApiError;
use super::extract::ApiPath;

/// The live status, and which gateway answers: per-node state (health,
/// counters, ejections) is each node's own.
#[derive(Debug, serde::Serialize)]
pub struct NodeStatus {
    pub node: Arc<str>,
    #[serde(flatten)]
    pub status: Status,
}

pub async fn status(State(s): State<AdminState>) -> Json<NodeStatus> {
    Json(NodeStatus {
        node: Arc::clone(&s.node),
        status: Status::of(&s.publisher.plane().snapshot()),
    })
}

pub async fn upstream(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<UpstreamStatus>, ApiError> {
    UpstreamStatus::named(&s.publisher.plane().snapshot(), &name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("upstream {name:?} is not live")))
}
