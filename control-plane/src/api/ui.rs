//! The dashboard at `/ui/`: a page, a script and a style sheet, embedded
//! in the binary (`control-plane/ui/`, hand-written with no build step,
//! so neither building nor running the gateway needs Node.js).
//!
//! The files hold no data and are served without the admin token; the
//! page is a client of the public admin API only, and asks for the token
//! itself when the API answers 401 (it keeps it in session storage and
//! sends it as `Authorization: Bearer`, never as a cookie, so there is no
//! CSRF surface). Every answer carries a strict Content-Security-Policy:
//! scripts, styles and connections from this origin only, no inline
//! script or style, no framing.

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use http::HeaderValue;
use http::header;

use super::error::ApiError;

/// The policy of every dashboard answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// (name, content type, body) of each embedded file.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../ui/icon.svg"),
    ),
];

const INDEX: &str = include_str!("../../ui/index.html");

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidate: a new gateway serves a new page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /` and `GET /ui`: to the dashboard.
pub async fn root() -> Redirect {
    Redirect::temporary("/ui/")
}

/// `GET /ui/`: the page.
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/{asset}`: its script, style sheet and icon.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| page(content_type, body))
        .ok_or(ApiError::NoEndpoint)
}
