//! Admin API request types and their validation ("parse, don't validate").
//!
//! A body is read strictly ([`read_json`]: a member given twice is refused)
//! and parsed into a `*Spec` DTO that rejects unknown fields ([`parse`]:
//! structs only from objects, integers also from `210.0`); `validate()`
//! turns a DTO into a domain value ([`Route`], [`Upstream`],
//! [`NewBackend`]) or into the list of every bad field, each named by JSON
//! pointer. Only domain values reach the store.
//!
//! Rules (documented in openapi.yaml):
//! - names: 1–63 characters of `A-Z a-z 0-9 . _ -`, starting with a letter
//!   or digit;
//! - route `path`: starts with `/`, at most 1024 bytes, already normal (no
//!   `.`/`..` segments, no `//`, no `%` escapes, no `?`/`#`, no whitespace
//!   or control characters);
//! - `methods`: distinct, from GET HEAD POST PUT PATCH DELETE OPTIONS TRACE;
//! - `hosts`: distinct DNS names or IPv4 addresses, no port, stored lower
//!   case;
//! - backend `url`: absolute `http://` or `https://` with a host, optional
//!   port 1–65535, no path (a trailing `/` is dropped), query or user info;
//! - `weight`: 0–1000, default 1; 0 drains the backend;
//! - upstream policy (timeouts, retries, health…): see `model/policy.rs`;
//! - route `timeout_ms`: 1 to [`MAX_ROUTE_TIMEOUT_MS`];
//! - route `policies` (auth, IP rules, rate limit, CORS, header edits,
//!   redirect): see `model/policies.rs`; a route may have neither
//!   `upstream` nor `backends` only when it redirects (`policies.redirect`).
//!
//! The domain values are the data plane's config types wherever they can
//! be: a validated upstream is an [`UpstreamConfig`] (its backends without
//! ids, which the store assigns) and its policy a
//! [`UpstreamPolicy`](data_plane::config::UpstreamPolicy); a validated
//! route's policies are a [`RoutePolicies`] (auth tokens hashed).
//!
//! Which members a route, upstream or backend object may have is said once,
//! by [`RouteSpec`], [`UpstreamSpec`] and [`BackendSpec`] (unknown members
//! are refused; read-only ones, such as `version`, accepted and ignored):
//! the resource endpoints, their PATCH (the merged representation) and the
//! whole-config document ([`ConfigSpec`]) all read these.

mod document;
mod json;
mod parse;
mod policies;
mod policy;

pub use document::{Config, ConfigSpec, ConfigUpstream, DocumentError};
pub use json::{JsonError, read as read_json};
pub use parse::parse;
pub use policies::{
    AuthSpec, CorsSpec, HeaderEditsSpec, MAX_TOKEN_LEN, PoliciesSpec, RateLimitSpec, RedirectSpec,
    TokenSpec, Tokens, hash_token,
};
pub use policy::{
    HealthCheckSpec, MAX_CONNECT_MS, MAX_RESPONSE_HEADER_MS, OutlierSpec, PolicySpec, TimeoutsSpec,
    TlsSpec,
};

use data_plane::config::{
    MAX_ROUTE_TIMEOUT_MS, RoutePolicies, Strategy, UpstreamConfig, parse_backend_url,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

pub const MAX_NAME_LEN: usize = 63;
pub const MAX_PATH_LEN: usize = 1024;
pub const MAX_WEIGHT: u32 = 1000;
/// Largest per-route body limit that can be configured (1 TiB).
pub const MAX_BODY_LIMIT: u64 = 1 << 40;
pub const DEFAULT_WEIGHT: u32 = 1;
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

/// One invalid field: a JSON pointer into the request body and the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub pointer: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// Collects field errors while validating one body.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, pointer: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError::new(pointer, detail));
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

// ---------------------------------------------------------------- DTOs ---

/// Body of `POST /admin/routes` and `PUT /admin/routes/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub preserve_host: bool,
    pub max_body_bytes: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub upstream: Option<String>,
    pub backends: Option<Vec<BackendSpec>>,
    pub strategy: Option<String>,
    pub policies: Option<PoliciesSpec>,
    /// Read-only (the representation carries it); ignored on input.
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
}

/// Body of `POST /admin/upstreams` and `PUT /admin/upstreams/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: Option<String>,
    pub strategy: Option<String>,
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    pub timeouts: Option<TimeoutsSpec>,
    pub hash_on: Option<String>,
    pub health_check: Option<HealthCheckSpec>,
    pub outlier_detection: Option<OutlierSpec>,
    pub retries: Option<u32>,
    pub fail_open: Option<bool>,
    pub tls: Option<TlsSpec>,
    pub http2: Option<bool>,
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
    /// Read-only in the upstream endpoints (ignored there); meaningful in
    /// a whole-config document.
    #[serde(default)]
    pub owner_route: Option<String>,
}

/// A backend in a request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub url: Option<String>,
    pub weight: Option<u32>,
    #[serde(default, rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
}

// ------------------------------------------------------- domain values ---

/// Where a route sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// An existing upstream, by name.
    Upstream(String),
    /// Backends given inline: the route owns an upstream named after it.
    Inline {
        strategy: Strategy,
        backends: Vec<NewBackend>,
    },
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub path: String,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    pub max_body_bytes: Option<u64>,
    pub timeout_ms: Option<u64>,
    /// `None` only for a route that redirects (`policies.redirect`).
    pub target: Option<RouteTarget>,
    /// Auth tokens as their hashes only.
    pub policies: RoutePolicies,
}

/// A validated upstream: the data plane's upstream config, its backends
/// not yet given ids.
pub type Upstream = UpstreamConfig<NewBackend>;

/// A validated backend (URL normalised to `scheme://authority`); also how
/// an exported document writes a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewBackend {
    pub url: String,
    pub weight: u32,
}

// ---------------------------------------------------------- validation ---

/// Check a resource name; `Err` is the reason.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_len = !name.is_empty() && name.len() <= MAX_NAME_LEN;
    let mut chars = name.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok_len && ok_first && ok_rest {
        Ok(())
    } else {
        Err(format!(
            "must be 1-{MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        ))
    }
}

/// The name of a resource body: required on create; on replace it may be
/// omitted but must match the URL when given.
fn resolve_name(errors: &mut Errors, given: Option<String>, from_url: Option<&str>) -> String {
    match (given, from_url) {
        (Some(n), Some(u)) if n != u => {
            errors.add(
                "/name",
                format!("must match the name in the URL ({u:?}); renaming is not supported"),
            );
            n
        }
        (Some(n), _) => {
            if let Err(e) = check_name(&n) {
                errors.add("/name", e);
            }
            n
        }
        (None, Some(u)) => u.to_string(),
        (None, None) => {
            errors.add("/name", "is required");
            String::new()
        }
    }
}

fn check_path(errors: &mut Errors, path: Option<String>) -> String {
    let Some(path) = path else {
        errors.add("/path", "is required");
        return String::new();
    };
    let reason = if !path.starts_with('/') {
        Some("must start with '/'".to_string())
    } else if path.len() > MAX_PATH_LEN {
        Some(format!("must be at most {MAX_PATH_LEN} bytes"))
    } else if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b > 0x7e)
    {
        Some("must not contain whitespace, control or non-ASCII characters".into())
    } else if path.contains(['?', '#']) {
        Some("must not contain a query or fragment".into())
    } else if path.contains('%') {
        Some("must not contain percent-escapes; give the decoded path".into())
    } else if path.contains("//") {
        Some("must not contain empty segments ('//')".into())
    } else if path.split('/').any(|s| s == "." || s == "..") {
        Some("must not contain '.' or '..' segments".into())
    } else if path.contains('\\') {
        Some("must not contain '\\'".into())
    } else {
        None
    };
    if let Some(r) = reason {
        errors.add("/path", r);
    }
    path
}

fn check_methods(errors: &mut Errors, methods: Vec<String>) -> Vec<String> {
    for (i, m) in methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            errors.add(
                format!("/methods/{i}"),
                format!("must be one of {}", METHODS.join(", ")),
            );
        } else if methods[..i].contains(m) {
            errors.add(format!("/methods/{i}"), "is listed twice");
        }
    }
    methods
}

pub(crate) fn is_host_name(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_hosts(errors: &mut Errors, hosts: Vec<String>) -> Vec<String> {
    let hosts: Vec<String> = hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
    for (i, h) in hosts.iter().enumerate() {
        if !is_host_name(h) {
            errors.add(
                format!("/hosts/{i}"),
                "must be a DNS name or IPv4 address without port or wildcard",
            );
        } else if hosts[..i].contains(h) {
            errors.add(format!("/hosts/{i}"), "is listed twice");
        }
    }
    hosts
}

fn check_strategy(errors: &mut Errors, pointer: &str, strategy: Option<String>) -> Strategy {
    match strategy {
        None => Strategy::default(),
        Some(s) => Strategy::parse(&s).unwrap_or_else(|| {
            errors.add(
                pointer,
                format!("must be one of {}", Strategy::ALL.join(", ")),
            );
            Strategy::default()
        }),
    }
}

/// `scheme://host[:port]` with the host in lower case and the scheme's
/// default port left out, so one server has one spelling.
fn normal_url(scheme: &http::uri::Scheme, authority: &http::uri::Authority) -> String {
    let host = authority.host().to_ascii_lowercase();
    let default = if *scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    match authority.port_u16() {
        Some(p) if p != default => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    }
}

/// Validate one backend; `base` is its JSON pointer ("" for a body).
fn check_backend(errors: &mut Errors, base: &str, spec: BackendSpec) -> NewBackend {
    let url = match spec.url {
        None => {
            errors.add(format!("{base}/url"), "is required");
            String::new()
        }
        Some(raw) => match parse_backend_url(&raw) {
            Ok((scheme, authority)) => normal_url(&scheme, &authority),
            Err(reason) => {
                errors.add(format!("{base}/url"), reason);
                raw
            }
        },
    };
    let weight = spec.weight.unwrap_or(DEFAULT_WEIGHT);
    if weight > MAX_WEIGHT {
        errors.add(
            format!("{base}/weight"),
            format!("must be between 0 and {MAX_WEIGHT}"),
        );
    }
    NewBackend { url, weight }
}

fn check_backends(errors: &mut Errors, specs: Vec<BackendSpec>) -> Vec<NewBackend> {
    let mut out: Vec<NewBackend> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let b = check_backend(errors, &format!("/backends/{i}"), spec);
        if !b.url.is_empty() && out.iter().any(|o| o.url == b.url) {
            errors.add(
                format!("/backends/{i}/url"),
                "is listed twice in this upstream",
            );
        }
        out.push(b);
    }
    out
}

impl RouteSpec {
    /// Validate a route body. `url_name` is the name in the URL for PUT.
    pub fn validate(self, url_name: Option<&str>) -> Result<Route, Vec<FieldError>> {
        let mut e = Errors::default();
        let name = resolve_name(&mut e, self.name, url_name);
        let path = check_path(&mut e, self.path);
        let methods = check_methods(&mut e, self.methods);
        let hosts = check_hosts(&mut e, self.hosts);
        if self.max_body_bytes.is_some_and(|n| n > MAX_BODY_LIMIT) {
            e.add(
                "/max_body_bytes",
                format!("must be between 0 and {MAX_BODY_LIMIT}"),
            );
        }
        if self
            .timeout_ms
            .is_some_and(|n| !(1..=MAX_ROUTE_TIMEOUT_MS).contains(&n))
        {
            e.add(
                "/timeout_ms",
                format!("must be between 1 and {MAX_ROUTE_TIMEOUT_MS}"),
            );
        }
        let redirects = self.policies.as_ref().is_some_and(|p| p.redirect.is_some());
        let target = match (self.upstream, self.backends) {
            (Some(_), Some(_)) => {
                e.add(
                    "/backends",
                    "give either 'upstream' or 'backends', not both",
                );
                None
            }
            (None, None) => {
                if redirects {
                    if self.strategy.is_some() {
                        e.add("/strategy", "only allowed with inline 'backends'");
                    }
                } else {
                    e.add(
                        "/upstream",
                        "either 'upstream' or 'backends' is required (or a 'policies.redirect')",
                    );
                }
                None
            }
            (Some(u), None) => {
                if self.strategy.is_some() {
                    e.add(
                        "/strategy",
                        "only allowed with inline 'backends'; set it on the upstream",
                    );
                }
                if let Err(r) = check_name(&u) {
                    e.add("/upstream", r);
                }
                Some(RouteTarget::Upstream(u))
            }
            (None, Some(backends)) => {
                if backends.is_empty() {
                    e.add("/backends", "must list at least one backend");
                }
                let strategy = check_strategy(&mut e, "/strategy", self.strategy);
                if strategy == Strategy::ConsistentHash {
                    e.add(
                        "/strategy",
                        "consistent_hash needs hash_on: define an upstream for it",
                    );
                }
                Some(RouteTarget::Inline {
                    strategy,
                    backends: check_backends(&mut e, backends),
                })
            }
        };
        let policies = self
            .policies
            .map(|p| p.validate(&mut e))
            .unwrap_or_default();
        e.finish(Route {
            name,
            path,
            methods,
            hosts,
            strip_prefix: self.strip_prefix,
            preserve_host: self.preserve_host,
            max_body_bytes: self.max_body_bytes,
            timeout_ms: self.timeout_ms,
            target,
            policies,
        })
    }
}

impl UpstreamSpec {
    /// Validate an upstream body. `url_name` is the name in the URL for PUT.
    pub fn validate(self, url_name: Option<&str>) -> Result<Upstream, Vec<FieldError>> {
        let mut e = Errors::default();
        let name = resolve_name(&mut e, self.name, url_name);
        let strategy = check_strategy(&mut e, "/strategy", self.strategy);
        let backends = check_backends(&mut e, self.backends);
        let policy = PolicySpec {
            timeouts: self.timeouts,
            hash_on: self.hash_on,
            health_check: self.health_check,
            outlier_detection: self.outlier_detection,
            retries: self.retries,
            fail_open: self.fail_open,
            tls: self.tls,
            http2: self.http2,
        }
        .validate(&mut e, strategy);
        e.finish(Upstream {
            name,
            strategy,
            backends,
            policy,
        })
    }
}

impl BackendSpec {
    /// Validate a single-backend body (`POST .../backends`, PATCH).
    pub fn validate(self) -> Result<NewBackend, Vec<FieldError>> {
        let mut e = Errors::default();
        let b = check_backend(&mut e, "", self);
        e.finish(b)
    }
}

#[cfg(test)]
mod tests;
