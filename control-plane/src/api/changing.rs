//! What every mutating endpoint shares: who is changing the config and why
//! (recorded with the revision), and whether this is only a dry run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, StatusCode};

use super::error::ApiError;
use super::{AdminState, CONFIG_VERSION_HEADER};
use crate::publish::{DryRun, PublishError};
use crate::store::revisions::{ChangeMeta, MAX_COMMENT_CHARS, Source};
use crate::store::{Applied, Change};

/// The header an operator explains a change with.
pub const COMMENT_HEADER: &str = "x-change-comment";

/// A mutation's context: its revision metadata and `?dry_run=true`.
#[derive(Debug, Clone)]
pub struct Changing {
    pub meta: ChangeMeta,
    pub dry_run: bool,
    /// Set when the change made no revision (it changed nothing), for the
    /// audit line (see `api::observe`).
    unrevised: Option<Unrevised>,
}

/// The flag [`Changing::run`] sets for a change that made no revision.
#[derive(Debug, Clone, Default)]
pub struct Unrevised(pub Arc<AtomicBool>);

/// What running a change came to. (One per admin change, moved once:
/// its size does not matter, as for [`Applied`].)
#[allow(clippy::large_enum_variant)]
pub enum Ran {
    /// Applied (or a no-op): the version live now and the resource.
    Done(u64, Applied),
    /// A dry run's answer, ready to send.
    Dry(Response),
}

impl Changing {
    /// The same request with another source (`PUT /admin/config` is an
    /// import, a rollback a rollback).
    pub fn from_source(mut self, source: Source) -> Changing {
        self.meta.source = source;
        self
    }

    /// Apply `change`, or only try it on a dry run.
    pub async fn run(&self, state: &AdminState, change: Change) -> Result<Ran, PublishError> {
        if self.dry_run {
            let dry = state.publisher.dry_run(change).await?;
            return Ok(Ran::Dry(dry_response(&dry)));
        }
        let (version, applied, revised) = state.publisher.apply_revised(change, &self.meta).await?;
        if let (false, Some(flag)) = (revised, &self.unrevised) {
            flag.0.store(true, Ordering::Relaxed);
        }
        Ok(Ran::Done(version, applied))
    }
}

fn dry_response(dry: &DryRun) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(dry)).into_response();
    resp.headers_mut()
        .insert(CONFIG_VERSION_HEADER, dry.config_version.into());
    resp
}

/// `?dry_run=`: `true`/`false` (also `1`/`0`); other query parameters are
/// not this extractor's business.
pub(super) fn dry_run(query: Option<&str>) -> Result<bool, ApiError> {
    let mut dry = false;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "dry_run" {
            continue;
        }
        dry = match value {
            "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(ApiError::bad_parameter(
                    "dry_run",
                    format!("dry_run must be true or false, not {other:?}"),
                ));
            }
        };
    }
    Ok(dry)
}

/// `X-Change-Comment`: UTF-8 text of at most [`MAX_COMMENT_CHARS`]
/// characters, without control characters.
pub(super) fn comment(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(COMMENT_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_parameter(
            "X-Change-Comment",
            "give X-Change-Comment once",
        ));
    }
    let text = std::str::from_utf8(value.as_bytes())
        .map_err(|_| {
            ApiError::bad_parameter("X-Change-Comment", "X-Change-Comment must be UTF-8 text")
        })?
        .trim();
    if text.chars().any(char::is_control) {
        return Err(ApiError::bad_parameter(
            "X-Change-Comment",
            "X-Change-Comment may not hold control characters",
        ));
    }
    if text.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::bad_parameter(
            "X-Change-Comment",
            format!("X-Change-Comment is longer than {MAX_COMMENT_CHARS} characters"),
        ));
    }
    Ok((!text.is_empty()).then(|| text.to_string()))
}

impl<S: Send + Sync> FromRequestParts<S> for Changing {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let template = parts
            .extensions
            .get::<MatchedPath>()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.to_string());
        Ok(Changing {
            meta: ChangeMeta {
                source: Source::Api,
                endpoint: format!("{} {template}", parts.method),
                client,
                comment: comment(&parts.headers)?,
            },
            dry_run: dry_run(parts.uri.query())?,
            unrevised: parts.extensions.get::<Unrevised>().cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_takes_true_or_false_and_names_itself_otherwise() {
        assert!(!dry_run(None).unwrap());
        assert!(dry_run(Some("dry_run=true")).unwrap());
        assert!(dry_run(Some("x=1&dry_run=1")).unwrap());
        assert!(!dry_run(Some("dry_run=false")).unwrap());
        match dry_run(Some("dry_run=yes")) {
            Err(ApiError::BadParameter(e)) => assert_eq!(e.pointer, "dry_run"),
            other => panic!("{other:?}"),
        }
    }
}
