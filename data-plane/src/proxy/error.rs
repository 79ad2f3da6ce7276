//! Proxy failures and the one place they become HTTP responses.
//!
//! A failure's `Display` is for the operator: it names the backend and the
//! OS error, and goes to the debug log and the access log's `error` field.
//! What the client is told ([`ProxyError::public_message`]) names the kind
//! of failure only: a gateway's clients never learn its internal addresses.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::http1::H1Error;
use crate::http1::headers::X_REQUEST_ID;
use crate::policy::{Verdict, cors};
use crate::routing::path::PathError;
use crate::transport::pool::PoolError;

/// A boxed error source.
use crate::BoxError;

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid request path: {0}")]
    BadPath(#[from] PathError),
    #[error("no route matches the request")]
    NoRoute,
    #[error("CONNECT is not supported")]
    MethodNotAllowed,
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    #[error("bad Host: {0}")]
    BadHost(&'static str),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("transfer codings other than chunked are not supported")]
    UnsupportedCoding,
    /// The client's body was malformed or cut short, or the client went
    /// away while sending it: the client's fault, not the backend's.
    #[error("the request body was malformed or incomplete")]
    BadRequestBody,
    /// The client stopped sending its body.
    #[error("the request body did not arrive in time")]
    ClientTimeout,
    #[error("upstream {0:?} has no backend available")]
    NoBackend(Arc<str>),
    #[error("could not connect to backend {backend}")]
    Connect {
        backend: Arc<str>,
        #[source]
        source: BoxError,
    },
    #[error("backend {backend} did not answer in time")]
    Timeout { backend: Arc<str> },
    #[error("backend {backend} failed: {source}")]
    Upstream {
        backend: Arc<str>,
        #[source]
        source: BoxError,
    },
    /// Handling the request panicked (see [`crate::recover`]).
    #[error("the gateway failed while handling the request")]
    Internal,
    /// The route's policies answered the request themselves: a denial, a
    /// redirect or a CORS preflight (not a failure, but the same early
    /// end).
    #[error("{}", policy_text(.0))]
    Policy(Box<Verdict>),
}

fn policy_text(v: &Verdict) -> String {
    match v {
        Verdict::Denied(d) => format!(
            "denied by the route's {} policy: {}",
            d.by.as_str(),
            d.message
        ),
        Verdict::Redirect { status, .. } => format!("redirected ({})", status.as_u16()),
        Verdict::Preflight(_) => "CORS preflight answered".to_string(),
    }
}

impl ProxyError {
    /// Classify a client error: connect timeouts are timeouts (504), other
    /// connect failures and protocol errors are 502.
    pub fn from_client(backend: &Arc<str>, source: hyper_util::client::legacy::Error) -> Self {
        let backend = Arc::clone(backend);
        if source.is_connect() {
            if caused_by_timeout(&source) {
                ProxyError::Timeout { backend }
            } else {
                ProxyError::Connect {
                    backend,
                    source: source.into(),
                }
            }
        } else {
            ProxyError::Upstream {
                backend,
                source: source.into(),
            }
        }
    }

    pub fn from_pool(backend: &Arc<str>, source: PoolError) -> Self {
        let backend = Arc::clone(backend);
        match source {
            PoolError::ConnectTimeout | PoolError::H1(H1Error::TimedOut) => {
                ProxyError::Timeout { backend }
            }
            PoolError::Connect(e) => ProxyError::Connect {
                backend,
                source: e.into(),
            },
            PoolError::Http(e) => ProxyError::Upstream {
                backend,
                source: e.into(),
            },
            PoolError::H1(e) => ProxyError::Upstream {
                backend,
                source: e.into(),
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadPath(_) | ProxyError::BadHost(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::BadRequestBody => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoBackend(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Policy(v) => match &**v {
                Verdict::Denied(d) => d.status,
                Verdict::Redirect { status, .. } => *status,
                Verdict::Preflight(_) => cors::PREFLIGHT_STATUS,
            },
        }
    }

    /// Stable machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadPath(_) => "bad_path",
            ProxyError::BadHost(_) => "bad_host",
            ProxyError::NoRoute => "no_route",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::UriTooLong(_) => "uri_too_long",
            ProxyError::BodyTooLarge(_) => "body_too_large",
            ProxyError::UnsupportedCoding => "unsupported_transfer_coding",
            ProxyError::BadRequestBody => "bad_request_body",
            ProxyError::ClientTimeout => "client_timeout",
            ProxyError::NoBackend(_) => "no_backend",
            ProxyError::Connect { .. } => "upstream_connect",
            ProxyError::Upstream { .. } => "upstream_protocol",
            ProxyError::Timeout { .. } => "upstream_timeout",
            ProxyError::Internal => "internal_error",
            ProxyError::Policy(v) => match &**v {
                Verdict::Denied(d) => d.code,
                Verdict::Redirect { .. } => "redirect",
                Verdict::Preflight(_) => "cors_preflight",
            },
        }
    }

    /// What the client is told: the kind of failure, never a backend's
    /// address nor an OS error.
    pub fn public_message(&self) -> std::borrow::Cow<'static, str> {
        match self {
            ProxyError::NoBackend(_) => "no backend of the upstream is available".into(),
            ProxyError::Connect { .. } => "could not connect to a backend".into(),
            ProxyError::Timeout { .. } => "the backend did not answer in time".into(),
            ProxyError::Upstream { .. } => {
                "the backend's answer failed or was not valid HTTP".into()
            }
            ProxyError::Policy(v) => match &**v {
                Verdict::Denied(d) => d.message.into(),
                _ => self.to_string().into(),
            },
            // These name nothing inside the gateway (listed, not defaulted:
            // a new kind must be looked at before its text goes out).
            ProxyError::BadPath(_)
            | ProxyError::NoRoute
            | ProxyError::MethodNotAllowed
            | ProxyError::UriTooLong(_)
            | ProxyError::BadHost(_)
            | ProxyError::BodyTooLarge(_)
            | ProxyError::UnsupportedCoding
            | ProxyError::BadRequestBody
            | ProxyError::ClientTimeout
            | ProxyError::Internal => self.to_string().into(),
        }
    }

    /// The JSON error response, carrying the request ID in body and header
    /// (a redirect or a preflight: its own answer, with no body).
    pub fn into_response(self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let status = self.status();
        let ProxyError::Policy(verdict) = self else {
            return json_error(status, self.code(), &self.public_message(), request_id);
        };
        match *verdict {
            Verdict::Denied(d) => {
                let mut resp = json_error(status, d.code, d.message, request_id);
                for (name, value) in d.fields {
                    resp.headers_mut().append(name, value);
                }
                resp
            }
            Verdict::Redirect { location, .. } => {
                bodiless(status, [(header::LOCATION, location)], request_id)
            }
            Verdict::Preflight(fields) => bodiless(status, fields, request_id),
        }
    }
}

/// A gateway answer with no body: its status and fields, and the request
/// ID.
fn bodiless(
    status: StatusCode,
    fields: impl IntoIterator<Item = (http::HeaderName, HeaderValue)>,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(String::new()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (name, value) in fields {
        h.append(name, value);
    }
    h.insert(&X_REQUEST_ID, request_id.clone());
    resp
}

/// The gateway's JSON error answer.
fn json_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "status": status.as_u16(),
        "error": code,
        "message": message,
        "request_id": request_id.to_str().unwrap_or_default(),
    });
    let mut resp = Response::new(ProxyBody::full(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(&X_REQUEST_ID, request_id.clone());
    resp
}

fn caused_by_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = err.source();
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = e.source();
    }
    false
}
