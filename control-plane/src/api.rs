//! The admin REST API (axum). Handlers are thin: parse and validate the
//! body ([`crate::model`]), turn it into a [`Change`](crate::store::Change),
//! hand it to the [`Publisher`], and render the result. No SQL here.

/// The version and resource of a change that ran, or (from the handler)
/// a dry run's answer.
macro_rules! done {
    ($ran:expr) => {
        match $ran {
            $crate::api::changing::Ran::Done(version, applied) => (version, applied),
            $crate::api::changing::Ran::Dry(resp) => return Ok(resp),
        }
    };
}

mod backends;
pub mod changing;
pub mod config;
#[cfg(test)]
mod contract_tests;
pub mod error;
pub mod events;
mod explain;
pub mod extract;
mod revisions;
mod routes;
mod status;
mod ui;
mod upstreams;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::publish::Publisher;
use data_plane::recover;
use error::ApiError;

/// Shared state of the admin handlers.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub publisher: Arc<Publisher>,
    /// When set, every `/admin` request must carry `Bearer <token>`.
    pub token: Option<Arc<str>>,
    /// The `/admin/events` hub.
    pub events: Arc<events::Events>,
    /// This gateway's name (`--node-name`), in `/admin/status`.
    pub node: Arc<str>,
}

/// The admin router: `/admin/...` (behind the token, if any).
pub fn app(state: AdminState) -> Router {
    let admin = Router::new()
        .route("/admin/routes", get(routes::list).post(routes::create))
        .route(
            "/admin/routes/{name}",
            get(routes::read)
                .put(routes::replace)
                .patch(routes::patch)
                .delete(routes::remove),
        )
        .route(
            "/admin/upstreams",
            get(upstreams::list).post(upstreams::create),
        )
        .route(
            "/admin/upstreams/{name}",
            get(upstreams::read)
                .put(upstreams::replace)
                .patch(upstreams::patch)
                .delete(upstreams::remove),
        )
        .route("/admin/upstreams/{name}/health", get(status::upstream))
        .route(
            "/admin/upstreams/{name}/backends",
            get(backends::list).post(backends::create),
        )
        .route(
            "/admin/upstreams/{name}/backends/{id}",
            get(backends::read)
                .patch(backends::patch)
                .delete(backends::remove),
        )
        .route("/admin/status", get(status::status))
        .route("/admin/explain", get(explain::explain))
        .route("/admin/events", get(events::events))
        .route("/admin/revisions", get(revisions::list))
        .route("/admin/revisions/{version}", get(revisions::read))
        .route("/admin/revisions/{version}/diff", get(revisions::diff))
        .route(
            "/admin/revisions/{version}/rollback",
            axum::routing::post(revisions::rollback),
        )
        .route("/admin/config", get(config::export).put(config::replace))
        .route("/admin/openapi.yaml", get(config::openapi))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .fallback(unmatched);
    // The token guards unknown paths too, so they cannot be probed.
    let admin = admin.layer(middleware::from_fn_with_state(state.clone(), require_token));
    // Prometheus scrapes without credentials, as it does elsewhere; the
    // dashboard's files hold no data (it asks for the token itself).
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(ui::root))
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/{asset}", get(ui::asset))
        .merge(admin)
        .with_state(state);
    recovering(app)
}

/// `router` with a handler's panic answered: a 500 problem with a request
/// ID, logged once with it and counted in `switchyard_panics_total` (see
/// `data_plane::recover`); other requests are untouched.
pub fn recovering(router: Router) -> Router {
    router.layer(middleware::from_fn(recover_panic))
}

async fn recover_panic(req: Request, next: Next) -> Response {
    match recover::catching(next.run(req)).await {
        Ok(resp) => resp,
        Err(panic) => {
            let id = data_plane::http1::headers::new_request_id();
            panic.report(&id);
            ApiError::Panicked(id.to_str().unwrap_or_default().to_string()).into_response()
        }
    }
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(State(state): State<AdminState>) -> Response {
    exposition(state.publisher).await
}

/// The Prometheus text exposition of `publisher`'s metrics, as a
/// response (the admin listener's `/metrics` and the metrics listener's).
/// Rendered on a blocking thread: with 10,000 upstreams it is tens of
/// megabytes of text and up to half a second of CPU, which on the
/// calling runtime (the proxy's, for the metrics listener) would hold its
/// requests behind it at every scrape. One render at a time: scrapers
/// that come meanwhile (two Prometheus replicas, or anyone, as neither
/// listener asks for a token) wait their turn rather than multiply the
/// memory and the CPU taken from the proxy; one that leaves while it
/// waits costs nothing.
pub async fn exposition(publisher: Arc<Publisher>) -> Response {
    let turn = Arc::clone(publisher.metrics().renders())
        .acquire_owned()
        .await
        .expect("the renders' semaphore is never closed");
    let rendered = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        publisher.metrics().render()
    })
    .await;
    match rendered {
        Ok((content_type, body)) => {
            let mut resp = body.into_response();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            resp
        }
        // The panic hook has logged and counted it on that thread.
        Err(e) if e.is_panic() => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be rendered\n",
        )
            .into_response(),
        // The runtime is shutting down.
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// Method label: a fixed set, never request data.
fn method_label(m: &http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// Count every admin request by route template, and write one audit line
/// per mutation.
async fn observe(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let unrevised = changing::Unrevised::default();
    req.extensions_mut().insert(unrevised.clone());
    let method = req.method().clone();
    let endpoint = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let resource = req.uri().path().to_string();
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string());
    // As the handler reads them (a bad one is refused, and logged as such).
    let comment = changing::comment(req.headers()).ok().flatten();
    let dry_run = changing::dry_run(req.uri().query()).unwrap_or(false);
    let resp = next.run(req).await;
    let status = resp.status();
    state
        .publisher
        .metrics()
        .admin_requests
        .with_label_values(&[method_label(&method), &endpoint, status.as_str()])
        .inc();
    if !matches!(
        method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    ) {
        let version = resp
            .headers()
            .get(CONFIG_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        // The revision a change made is the config version it answers
        // with (a no-op answers with the current one and makes none).
        tracing::info!(
            target: "switchyard::audit",
            method = %method,
            endpoint = %endpoint,
            resource = %resource,
            client = client.as_deref().unwrap_or("-"),
            status = status.as_u16(),
            config_version = version,
            revision = if status.is_success() && !dry_run && !unrevised.0.load(std::sync::atomic::Ordering::Relaxed) {
                version
            } else {
                "-"
            },
            comment = comment.as_deref().unwrap_or("-"),
            result = match (status.is_success(), dry_run) {
                (true, false) if unrevised.0.load(std::sync::atomic::Ordering::Relaxed) => "unchanged",
                (true, false) => "applied",
                (true, true) => "dry_run",
                (false, _) => "refused",
            },
        );
    }
    resp
}

/// Paths that are no endpoint: counted, then 404.
async fn unmatched(State(state): State<AdminState>, method: http::Method) -> ApiError {
    state
        .publisher
        .metrics()
        .admin_requests
        .with_label_values(&[method_label(&method), "unmatched", "404"])
        .inc();
    ApiError::NoEndpoint
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// The version a client expects (`If-Match: "7"`); `*` or no header means
/// any. A tag that is not one of ours can never match: 412.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let raw = raw.to_str().map_err(|_| ApiError::BadPrecondition)?.trim();
    if raw == "*" {
        return Ok(None);
    }
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or(ApiError::BadPrecondition)
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

/// Header carried by every mutation response: the config version now live.
pub const CONFIG_VERSION_HEADER: &str = "x-config-version";

/// A resource response with its `ETag` (= its version).
fn resource<T: Serialize>(status: StatusCode, version: u64, body: &T) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}

/// The response to a mutation that produced `body` at config `version`.
fn mutated<T: Serialize>(
    status: StatusCode,
    version: u64,
    body: &T,
    location: Option<String>,
) -> Response {
    let mut resp = resource(status, version, body);
    let h = resp.headers_mut();
    h.insert(CONFIG_VERSION_HEADER, HeaderValue::from(version));
    if let Some(loc) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
        h.insert(header::LOCATION, loc);
    }
    resp
}

/// The response to a delete at config `version`.
fn deleted(version: u64) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(CONFIG_VERSION_HEADER, HeaderValue::from(version));
    resp
}

/// A PATCH body: an RFC 7396 merge patch, which must be a JSON object (a
/// patch of any other kind would replace the whole resource).
#[derive(Debug)]
pub struct MergePatch(serde_json::Value);

impl<'de> serde::Deserialize<'de> for MergePatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let members: serde_json::Map<String, serde_json::Value> =
            serde::Deserialize::deserialize(d)?;
        Ok(MergePatch(members.into()))
    }
}

/// Apply an RFC 7396 merge patch to a representation; the result is read
/// like a PUT body (whose type accepts and ignores the read-only members
/// of the representation, such as `version`).
fn merge_patch<T: Serialize>(current: &T, MergePatch(patch): &MergePatch) -> serde_json::Value {
    let mut doc = serde_json::to_value(current).expect("a view serialises");
    json_patch::merge(&mut doc, patch);
    doc
}

/// Run a read-merge-write `attempt` for PATCH. Each attempt writes only if
/// the resource still has the version it read; when the client gave no
/// `If-Match`, a concurrent change just means reading again.
async fn patch_with_retry<T, F, Fut>(explicit: Option<u64>, mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    const ATTEMPTS: usize = 8;
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(ApiError::Publish(crate::publish::PublishError::Store(
                crate::store::StoreError::PreconditionFailed { .. },
            ))) if explicit.is_none() && tries < ATTEMPTS => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A handler that panics gets a 500 problem with the request ID it was
    /// logged with; the next request is served as usual.
    #[tokio::test]
    async fn a_panicking_handler_is_a_500_problem_with_a_request_id() {
        let app = recovering(
            Router::new()
                .route(
                    "/boom",
                    get(|| async {
                        if std::hint::black_box(true) {
                            panic!("handler broke");
                        }
                        "unreachable"
                    }),
                )
                .route("/fine", get(|| async { "fine" })),
        );
        let before = recover::panics();
        let resp = app
            .clone()
            .oneshot(
                http::Request::get("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "urn:switchyard:problem:internal");
        assert_eq!(problem["request_id"], id);
        assert!(recover::panics() > before, "counted");
        let resp = app
            .oneshot(
                http::Request::get("/fine")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[cfg(test)]
mod exposition_tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    /// Scrapes take turns: while a render holds the turn another scrape
    /// waits, however long it is given, and it answers once the turn is
    /// free.
    #[tokio::test]
    async fn metrics_are_rendered_one_scrape_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, publisher) = crate::publish::tests::started(&dir).await;
        let publisher = Arc::new(publisher);

        let held = Arc::clone(publisher.metrics().renders())
            .acquire_owned()
            .await
            .unwrap();
        let mut waiting = tokio::spawn(exposition(Arc::clone(&publisher)));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut waiting)
                .await
                .is_err(),
            "a scrape was answered while another render held the turn"
        );
        drop(held);
        let resp = waiting.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains("switchyard_store_up"), "{text}");
        // The turn is given back: the next scrape answers at once.
        let again = exposition(publisher).await;
        assert_eq!(again.status(), StatusCode::OK);
    }
}
