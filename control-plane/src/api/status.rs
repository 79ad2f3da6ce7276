//! `GET /admin/status` and `GET /admin/upstreams/{name}/health`: what is
//! live right now, read from the snapshot in force (not the database) and
//! the live backend state.

use axum::Json;
use axum::extract::State;
use data_plane::registry::Health;
use data_plane::snapshot::CompiledUpstream;
use serde::Serialize;

use super::AdminState;
use super::error::ApiError;
use super::extract::ApiPath;

#[derive(Debug, Serialize)]
pub struct Status {
    pub config_version: u64,
    pub routes: usize,
    pub upstreams: Vec<UpstreamHealth>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamHealth {
    pub name: String,
    pub strategy: &'static str,
    pub health_checked: bool,
    pub fail_open: bool,
    pub backends: Vec<BackendHealth>,
}

#[derive(Debug, Serialize)]
pub struct BackendHealth {
    pub id: u64,
    pub url: String,
    pub weight: u32,
    /// `healthy`, `unhealthy`, `unknown` (not probed), `ejected` (passive
    /// detection keeps it out for now) or `failing` (its passive failure
    /// streak reached the threshold, but it cannot be ejected).
    pub state: &'static str,
    /// Active health: `healthy`, `unhealthy` or `unknown`.
    pub health: Health,
    pub ejected: bool,
    pub since_unix_ms: u64,
    pub last_probe_unix_ms: Option<u64>,
    pub last_probe_result: Option<String>,
    pub last_probe_latency_ms: Option<f64>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub ejections: u64,
    pub in_flight: u64,
    pub requests: u64,
    pub ewma_ms: f64,
}

fn upstream_health(u: &CompiledUpstream) -> UpstreamHealth {
    UpstreamHealth {
        name: u.name.to_string(),
        strategy: u.strategy.as_str(),
        health_checked: u.health_check.is_some(),
        fail_open: u.fail_open,
        backends: u
            .backends
            .iter()
            .map(|b| {
                let probes = b.state.probe_record();
                BackendHealth {
                    id: b.id,
                    url: b.url.to_string(),
                    weight: b.weight,
                    state: b.state.condition().as_str(),
                    health: b.state.health(),
                    ejected: b.state.is_ejected(),
                    since_unix_ms: probes.since_unix_ms,
                    last_probe_unix_ms: probes.last_probe_unix_ms,
                    last_probe_result: probes.last_result,
                    last_probe_latency_ms: probes.last_latency_ms,
                    consecutive_successes: probes.consecutive_successes,
                    consecutive_failures: probes.consecutive_failures,
                    ejections: b.state.ejections(),
                    in_flight: b.state.in_flight(),
                    requests: b.state.requests(),
                    ewma_ms: b.state.ewma_ns() as f64 / 1e6,
                }
            })
            .collect(),
    }
}

pub async fn status(State(s): State<AdminState>) -> Json<Status> {
    let snap = s.publisher.plane().snapshot();
    let mut upstreams: Vec<UpstreamHealth> = snap.upstreams().map(upstream_health).collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    Json(Status {
        config_version: snap.version(),
        routes: snap.route_count(),
        upstreams,
    })
}

pub async fn upstream(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<UpstreamHealth>, ApiError> {
    let snap = s.publisher.plane().snapshot();
    snap.upstream_named(&name)
        .map(|u| Json(upstream_health(u)))
        .ok_or_else(|| ApiError::NotFound(format!("upstream {name:?} is not live")))
}
