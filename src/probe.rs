//! The metrics listener (`--metrics-listen`): `GET /metrics`, `GET
//! /healthz` and `GET /readyz`, and nothing else — no admin API behind it,
//! so it can face a container network (Prometheus, a health check, a load
//! balancer) without a token.
//!
//! It answers from the moment the addresses are taken, before the database
//! is opened: `/healthz` says the process is up (200); `/readyz` says 200
//! only while the config is loaded and published and the listeners take
//! traffic, 503 before that and again once a shutdown drains (a gateway
//! on a shared database that cannot be reached stays ready, as it serves
//! its live or cached config, and says so in the body); `/metrics`
//! is the admin listener's exposition (503 until the control plane runs).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use control_plane::Publisher;
use http::StatusCode;
use http::header;

/// Where the process stands, as `/readyz` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Opening the database, publishing the config.
    Starting = 0,
    /// Taking traffic.
    Ready = 1,
    /// Shutting down: no new traffic should be sent here.
    Draining = 2,
}

/// What the metrics listener knows of the process.
#[derive(Debug, Default)]
pub struct Probe {
    stage: AtomicU8,
    publisher: OnceLock<Arc<Publisher>>,
}

impl Probe {
    pub fn set(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Release);
    }

    pub fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Acquire) {
            1 => Stage::Ready,
            2 => Stage::Draining,
            _ => Stage::Starting,
        }
    }

    /// The control plane runs: `/metrics` has something to say.
    pub fn publishing(&self, publisher: Arc<Publisher>) {
        let _ = self.publisher.set(publisher);
    }
}

/// The metrics listener's routes.
pub fn router(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok\n") }))
        .route("/readyz", get(ready))
        .fallback(|| async {
            text(
                StatusCode::NOT_FOUND,
                "only /metrics, /healthz and /readyz here\n",
            )
        })
        .with_state(probe)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let body: String = body.into();
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn ready(State(probe): State<Arc<Probe>>) -> Response {
    match probe.stage() {
        Stage::Ready => match probe.publisher.get() {
            Some(publisher) if !publisher.store_up() => text(
                StatusCode::OK,
                format!(
                    "ready: serving config version {}; the config database is unreachable\n",
                    publisher.plane().snapshot().version()
                ),
            ),
            _ => text(StatusCode::OK, "ready\n"),
        },
        Stage::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        Stage::Draining => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
    }
}

async fn metrics(State(probe): State<Arc<Probe>>) -> Response {
    let Some(publisher) = probe.publisher.get() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    };
    control_plane::api::exposition(Arc::clone(publisher)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: &Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .clone()
            .oneshot(
                http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_only_between_start_and_drain() {
        let probe = Arc::new(Probe::default());
        let app = router(Arc::clone(&probe));
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&app, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
        );
        assert_eq!(
            get(&app, "/metrics").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        probe.set(Stage::Ready);
        assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
        probe.set(Stage::Draining);
        assert_eq!(
            get(&app, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        );
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/admin/routes").await.0, StatusCode::NOT_FOUND);
    }
}
