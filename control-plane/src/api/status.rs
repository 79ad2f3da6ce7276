//! `GET /admin/status`: what is live right now, read from the snapshot in
//! force (not the database) plus live backend counters.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AdminState;

#[derive(Debug, Serialize)]
pub struct Status {
    pub config_version: u64,
    pub routes: usize,
    pub upstreams: Vec<UpstreamStatus>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Serialize)]
pub struct BackendStatus {
    pub id: u64,
    pub url: String,
    pub weight: u32,
    pub in_flight: u64,
    pub requests: u64,
}

pub async fn status(State(s): State<AdminState>) -> Json<Status> {
    let snap = s.publisher.plane().snapshot();
    Json(Status {
        config_version: snap.version(),
        routes: snap.routes().len(),
        upstreams: snap
            .upstreams()
            .iter()
            .map(|u| UpstreamStatus {
                name: u.name.to_string(),
                backends: u
                    .backends
                    .iter()
                    .map(|b| BackendStatus {
                        id: b.id,
                        url: b.url.to_string(),
                        weight: b.weight,
                        in_flight: b.state.in_flight(),
                        requests: b.state.requests(),
                    })
                    .collect(),
            })
            .collect(),
    })
}
