//! A route's `cors` policy, compiled: which origins it allows, the
//! preflight answer's fields, and the fields a response gets.
//!
//! - A preflight (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`) is answered by the gateway: `204`
//!   with the allowed origin, methods, headers and max age when the origin
//!   is allowed; a `403` (a denial by `cors`) when it is not.
//! - Any other request from an allowed origin has its response decorated
//!   with the allowed origin (the request's own, or `*` when every origin
//!   is allowed without credentials), credentials and exposed headers; the
//!   backend's own CORS fields give way.
//! - Unless every origin gets `*`, every response of the route says
//!   `Vary: Origin`: what it carries depends on the request's origin.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::config::policies::Cors;
use crate::http1::fields::Fields;

/// The backend's CORS fields a decorated response replaces.
pub static REPLACED: [HeaderName; 3] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
];

static ANY: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
static PREFLIGHT_VARY: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// `*` is listed (then credentials are off: the config refuses both).
    any: bool,
    exact: Vec<String>,
    /// `https://*.example.org` as (`https://`, `.example.org`).
    subdomains: Vec<(String, String)>,
    credentials: bool,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

/// How a request fares under the policy.
#[derive(Debug)]
pub enum CorsCheck {
    /// A preflight from an allowed origin: the gateway's `204` fields.
    Preflight(Vec<(HeaderName, HeaderValue)>),
    /// A preflight from an origin not allowed.
    Refused,
    /// Not a preflight: the fields its response gets.
    Decorate(Vec<(HeaderName, HeaderValue)>),
}

impl CorsPolicy {
    pub fn compile(c: &Cors) -> Self {
        let mut policy = CorsPolicy {
            any: false,
            exact: Vec::new(),
            subdomains: Vec::new(),
            credentials: c.allow_credentials,
            // The CORS-safelisted methods unless the policy names others.
            methods: if c.allow_methods.is_empty() {
                HeaderValue::from_static("GET, HEAD, POST")
            } else {
                joined_owned(&c.allow_methods)
            },
            headers: joined_lower(&c.allow_headers),
            expose: joined_lower(&c.expose_headers),
            max_age: c.max_age_s.map(HeaderValue::from),
        };
        for origin in &c.allow_origins {
            if origin == "*" {
                policy.any = true;
            } else if let Some((scheme, host)) = origin.split_once("://*.") {
                policy
                    .subdomains
                    .push((format!("{scheme}://"), format!(".{host}")));
            } else {
                policy.exact.push(origin.clone());
            }
        }
        policy
    }

    /// Whether `origin` (as the request sent it) is allowed.
    pub fn allows(&self, origin: &[u8]) -> bool {
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        self.any
            || self.exact.iter().any(|o| o.eq_ignore_ascii_case(origin))
            || self.subdomains.iter().any(|(scheme, suffix)| {
                let lower = origin.to_ascii_lowercase();
                lower
                    .strip_prefix(scheme.as_str())
                    .and_then(|host| {
                        host.strip_suffix(suffix.as_str()).or_else(|| {
                            // With a port after the domain.
                            let (h, port) = host.rsplit_once(':')?;
                            port.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
                            h.strip_suffix(suffix.as_str())
                        })
                    })
                    .is_some_and(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    })
            })
    }

    /// What the policy makes of a request.
    pub fn check(&self, method: &Method, fields: &impl Fields) -> CorsCheck {
        let mut origins = fields.all(&header::ORIGIN);
        let origin = match (origins.next(), origins.next()) {
            (Some(o), None) => Some(o),
            _ => None,
        };
        let preflight =
            method == Method::OPTIONS && fields.contains(&header::ACCESS_CONTROL_REQUEST_METHOD);
        let allowed = origin.filter(|o| self.allows(o));
        if preflight && origin.is_some() {
            let Some(origin) = allowed else {
                return CorsCheck::Refused;
            };
            let mut out = self.origin_fields(origin);
            out.push((header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()));
            if let Some(h) = &self.headers {
                out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
            }
            if let Some(age) = &self.max_age {
                out.push((header::ACCESS_CONTROL_MAX_AGE, age.clone()));
            }
            out.push((header::VARY, PREFLIGHT_VARY.clone()));
            return CorsCheck::Preflight(out);
        }
        let mut out = match allowed {
            Some(origin) => {
                let mut out = self.origin_fields(origin);
                if let Some(e) = &self.expose {
                    out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
                }
                out
            }
            None => Vec::new(),
        };
        if self.varies() {
            out.push((header::VARY, ORIGIN.clone()));
        }
        CorsCheck::Decorate(out)
    }

    /// Whether the answer depends on the origin (not `*` for all).
    fn varies(&self) -> bool {
        !self.any || self.credentials
    }

    fn origin_fields(&self, origin: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
        let value = if self.any && !self.credentials {
            ANY.clone()
        } else {
            HeaderValue::from_bytes(origin).unwrap_or_else(|_| ANY.clone())
        };
        let mut out = vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, value)];
        if self.credentials {
            out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone()));
        }
        out
    }
}

/// The preflight's status.
pub const PREFLIGHT_STATUS: StatusCode = StatusCode::NO_CONTENT;

fn joined_owned(items: &[String]) -> HeaderValue {
    HeaderValue::from_str(&items.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn joined_lower(items: &[String]) -> Option<HeaderValue> {
    let lower: Vec<String> = items.iter().map(|s| s.to_ascii_lowercase()).collect();
    (!lower.is_empty()).then(|| HeaderValue::from_str(&lower.join(", ")).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy::compile(&Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["Content-Type".into()],
            expose_headers: vec!["x-request-id".into()],
            allow_credentials: credentials,
            max_age_s: Some(600),
        })
    }

    #[test]
    fn origins() {
        let p = policy(&["https://app.example", "https://*.example.org"], false);
        assert!(p.allows(b"https://app.example"));
        assert!(p.allows(b"https://a.example.org"));
        assert!(p.allows(b"https://a.b.example.org"));
        assert!(p.allows(b"https://a.example.org:8443"));
        assert!(!p.allows(b"https://example.org"));
        assert!(!p.allows(b"http://a.example.org"));
        assert!(!p.allows(b"https://evil-example.org"));
        assert!(!p.allows(b"https://a.example.org.evil"));
        assert!(!p.allows(b"https://app.example.evil"));
        assert!(!p.allows(b"null"));
    }

    #[test]
    fn preflight_and_decoration() {
        let p = policy(&["https://app.example"], true);
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, "https://app.example".parse().unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            "POST".parse().unwrap(),
        );
        let CorsCheck::Preflight(f) = p.check(&Method::OPTIONS, &h) else {
            panic!("a preflight")
        };
        let get = |f: &[(HeaderName, HeaderValue)], n: HeaderName| {
            f.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(&f, header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
            "https://app.example"
        );
        assert_eq!(
            get(&f, header::ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(),
            "true"
        );
        assert_eq!(
            get(&f, header::ACCESS_CONTROL_ALLOW_METHODS).unwrap(),
            "GET, POST"
        );
        assert_eq!(
            get(&f, header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap(),
            "content-type"
        );
        assert_eq!(get(&f, header::ACCESS_CONTROL_MAX_AGE).unwrap(), "600");
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(matches!(p.check(&Method::OPTIONS, &h), CorsCheck::Refused));
        // A simple request: decorated when allowed, `Vary` either way.
        let mut h = HeaderMap::new();
        let CorsCheck::Decorate(f) = p.check(&Method::GET, &h) else {
            panic!()
        };
        assert_eq!(f, [(header::VARY, ORIGIN.clone())]);
        h.insert(header::ORIGIN, "https://app.example".parse().unwrap());
        let CorsCheck::Decorate(f) = p.check(&Method::GET, &h) else {
            panic!()
        };
        assert_eq!(
            get(&f, header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap(),
            "x-request-id"
        );
        assert_eq!(get(&f, header::VARY).unwrap(), "Origin");
        // `*` without credentials: no echo, no Vary.
        let p = policy(&["*"], false);
        let CorsCheck::Decorate(f) = p.check(&Method::GET, &h) else {
            panic!()
        };
        assert_eq!(get(&f, header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*");
        assert!(get(&f, header::VARY).is_none());
    }
}
