//! The whole-config document of `GET`/`PUT /admin/config` and
//! `--bootstrap`: every upstream and route in one body, validated as a
//! whole (all or nothing).

use std::collections::{HashMap, HashSet};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::{FieldError, Route, RouteSpec, RouteTarget, Upstream, UpstreamSpec};

/// Body of `PUT /admin/config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Read-only (the export carries it); ignored on input.
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// An upstream of a validated document, with the route that owns it; also
/// how the export writes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigUpstream {
    #[serde(flatten)]
    pub upstream: Upstream,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_route: Option<String>,
}

/// A validated whole config: every route refers to an upstream in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub upstreams: Vec<ConfigUpstream>,
    pub routes: Vec<Route>,
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// Bad values (422).
    Invalid(Vec<FieldError>),
    /// A name used twice (409).
    Conflict(FieldError),
}

fn prefixed(errors: Vec<FieldError>, prefix: &str) -> impl Iterator<Item = FieldError> + '_ {
    errors
        .into_iter()
        .map(move |e| FieldError::new(format!("{prefix}{}", e.pointer), e.detail))
}

/// The first repeated name, as a conflict at `/{list}/{i}/name`.
fn first_duplicate<'a>(list: &str, names: impl Iterator<Item = &'a str>) -> Option<FieldError> {
    let mut seen = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(first) = seen.insert(name, i) {
            return Some(FieldError::new(
                format!("/{list}/{i}/name"),
                format!("{name:?} is already used by /{list}/{first}"),
            ));
        }
    }
    None
}

impl ConfigSpec {
    pub fn validate(self) -> Result<Config, DocumentError> {
        let mut errors = Vec::new();
        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        for (i, spec) in self.upstreams.into_iter().enumerate() {
            let owner_route = spec.owner_route.clone();
            match spec.validate(None) {
                Ok(upstream) => upstreams.push(ConfigUpstream {
                    upstream,
                    owner_route,
                }),
                Err(es) => errors.extend(prefixed(es, &format!("/upstreams/{i}"))),
            }
        }
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, spec) in self.routes.into_iter().enumerate() {
            match spec.validate(None) {
                Ok(route) if matches!(route.target, Some(RouteTarget::Inline { .. })) => errors.push(FieldError::new(
                    format!("/routes/{i}/backends"),
                    "inline backends are not allowed in a config document; define the upstream under /upstreams",
                )),
                Ok(route) => routes.push(route),
                Err(es) => errors.extend(prefixed(es, &format!("/routes/{i}"))),
            }
        }
        if !errors.is_empty() {
            return Err(DocumentError::Invalid(errors));
        }
        if let Some(e) = first_duplicate(
            "upstreams",
            upstreams.iter().map(|u| u.upstream.name.as_str()),
        )
        .or_else(|| first_duplicate("routes", routes.iter().map(|r| r.name.as_str())))
        {
            return Err(DocumentError::Conflict(e));
        }
        let upstream_of = |route: &Route| match &route.target {
            Some(RouteTarget::Upstream(name)) => Some(name.clone()),
            None => None,
            Some(RouteTarget::Inline { .. }) => unreachable!("refused above"),
        };
        // By name, not by scanning: a document may have 100,000 routes.
        let upstream_names: HashSet<&str> =
            upstreams.iter().map(|u| u.upstream.name.as_str()).collect();
        let route_by_name: HashMap<&str, &Route> =
            routes.iter().map(|r| (r.name.as_str(), r)).collect();
        for (i, r) in routes.iter().enumerate() {
            let Some(target) = upstream_of(r) else {
                continue; // a route that only redirects
            };
            if !upstream_names.contains(target.as_str()) {
                errors.push(FieldError::new(
                    format!("/routes/{i}/upstream"),
                    format!("upstream {target:?} is not defined in this document"),
                ));
            }
        }
        for (i, u) in upstreams.iter().enumerate() {
            let Some(owner) = &u.owner_route else {
                continue;
            };
            let owned_right = owner == &u.upstream.name
                && route_by_name
                    .get(owner.as_str())
                    .is_some_and(|r| upstream_of(r).as_ref() == Some(owner));
            if !owned_right {
                errors.push(FieldError::new(
                    format!("/upstreams/{i}/owner_route"),
                    "must name a route of this document that has the upstream's name and uses it",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(DocumentError::Invalid(errors));
        }
        Ok(Config { upstreams, routes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse;
    use serde_json::json;

    fn validate(v: serde_json::Value) -> Result<Config, DocumentError> {
        parse::<ConfigSpec>(v).unwrap().validate()
    }

    fn invalid_pointers(v: serde_json::Value) -> Vec<String> {
        match validate(v) {
            Err(DocumentError::Invalid(es)) => es.into_iter().map(|e| e.pointer).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_valid_document() {
        let c = validate(json!({
            "version": 9,
            "upstreams": [{"name": "api", "backends": [{"url": "http://127.0.0.1:1"}], "owner_route": "api"},
                          {"name": "web"}],
            "routes": [{"name": "api", "path": "/api", "upstream": "api"}, {"name": "w", "path": "/", "upstream": "web"}]
        }))
        .unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[0].owner_route.as_deref(), Some("api"));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(
            validate(json!({})).unwrap(),
            Config {
                upstreams: vec![],
                routes: vec![]
            }
        );
    }

    #[test]
    fn errors_point_into_the_document() {
        assert_eq!(
            invalid_pointers(json!({
                "upstreams": [{"name": "ok"}, {"name": "u", "backends": [{"url": "nope"}]}],
                "routes": [{"name": "r", "path": "x", "upstream": "ok"}, {"name": "i", "path": "/i", "backends": [{"url": "http://h"}]}]
            })),
            [
                "/upstreams/1/backends/0/url",
                "/routes/0/path",
                "/routes/1/backends"
            ]
        );
        assert_eq!(
            invalid_pointers(
                json!({"upstreams": [{"name": "u", "owner_route": "u"}], "routes": [{"name": "r", "path": "/", "upstream": "missing"}]})
            ),
            ["/routes/0/upstream", "/upstreams/0/owner_route"]
        );
    }

    /// A route that only redirects names no upstream; one that does not
    /// redirect still must.
    #[test]
    fn a_redirect_needs_no_upstream() {
        let c = validate(json!({
            "routes": [{"name": "old", "path": "/old",
                        "policies": {"redirect": {"status": 308, "location": "https://new.example{path}"}}}]
        }))
        .unwrap();
        assert_eq!(c.routes[0].target, None);
        assert_eq!(
            invalid_pointers(
                json!({"routes": [{"name": "r", "path": "/", "policies": {"ip_deny": ["10.0.0.0/8"]}}]})
            ),
            ["/routes/0/upstream"]
        );
        assert_eq!(
            invalid_pointers(
                json!({"routes": [{"name": "r", "path": "/", "upstream": "u",
                "policies": {"rate_limit": {"key": "route", "requests_per_second": 1, "burst": 0}}}],
                "upstreams": [{"name": "u"}]})
            ),
            ["/routes/0/policies/rate_limit/burst"]
        );
    }

    #[test]
    fn duplicate_names_conflict() {
        let e = validate(json!({"upstreams": [{"name": "u"}, {"name": "v"}, {"name": "u"}]}))
            .unwrap_err();
        assert!(matches!(e, DocumentError::Conflict(f) if f.pointer == "/upstreams/2/name"));
        let e = validate(json!({"upstreams": [{"name": "u"}],
            "routes": [{"name": "r", "path": "/a", "upstream": "u"}, {"name": "r", "path": "/b", "upstream": "u"}]}))
        .unwrap_err();
        assert!(matches!(e, DocumentError::Conflict(f) if f.pointer == "/routes/1/name"));
    }
}
