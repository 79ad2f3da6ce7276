//! The immutable, compiled routing snapshot.
//!
//! A [`Snapshot`] is built from a [`GatewayConfig`] off the hot path: the
//! route table is indexed, backend URLs are parsed once, balancers are
//! ready to pick, and every backend holds the `Arc` of its live state from
//! the [`Registry`]. A request loads one snapshot and uses it until it is
//! done, so it sees the old config or the new one, never a mix.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::uri::{Authority, Scheme, Uri};

use crate::balance::{self, Backends, Balancer, Candidate, PickContext};
use crate::config::{
    GatewayConfig, HashOn, HealthCheck, MAX_EJECTION_MS, OutlierDetection, UpstreamConfig,
};
use crate::metrics::RequestStats;
use crate::proxy::client::{ClientKey, UpstreamClient};
use crate::registry::{BackendKey, BackendState, Registry, RouteKey, UpstreamStats};
use crate::routing::{RouteMatch, RouteTable, RouteTableBuilder, path};

/// Why a config cannot be compiled. The control plane validates first, so
/// reaching one of these means a bug or a hand-made config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("upstream {0:?} is defined twice")]
    DuplicateUpstream(String),
    #[error("route {0:?} is defined twice")]
    DuplicateRoute(String),
    #[error("route {route:?} refers to unknown upstream {upstream:?}")]
    UnknownUpstream { route: String, upstream: String },
    #[error("route {route:?} has an invalid path {path:?}")]
    BadPath { route: String, path: String },
    #[error("route {route:?} has an invalid method {method:?}")]
    BadMethod { route: String, method: String },
    #[error("routes {0:?} and {1:?} match the same host, path and methods")]
    Conflict(String, String),
    #[error("upstream {upstream:?}: {source}")]
    Client {
        upstream: String,
        source: crate::proxy::client::ClientError,
    },
    #[error("upstream {upstream:?} has an invalid backend URL {url:?}: {reason}")]
    BadBackendUrl {
        upstream: String,
        url: String,
        reason: &'static str,
    },
}

/// A route, ready to forward.
#[derive(Debug)]
pub struct CompiledRoute {
    pub name: Arc<str>,
    /// Index into [`Snapshot::upstreams`].
    pub upstream: usize,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    pub max_body_bytes: Option<u64>,
    /// Request counters (kept across snapshots by the registry).
    pub stats: Arc<RequestStats>,
}

/// One backend with its parsed address and live state.
#[derive(Debug)]
pub struct CompiledBackend {
    pub id: u64,
    pub url: Arc<str>,
    pub scheme: Scheme,
    pub authority: Authority,
    pub weight: u32,
    pub state: Arc<BackendState>,
}

/// An upstream pool, ready to pick from.
#[derive(Debug)]
pub struct CompiledUpstream {
    pub name: Arc<str>,
    pub backends: Box<[CompiledBackend]>,
    balancer: Box<dyn Balancer>,
    pub response_header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub client: UpstreamClient,
    pub strategy: crate::config::Strategy,
    pub hash_on: Option<HashOn>,
    pub health_check: Option<HealthCheck>,
    pub outlier_detection: OutlierDetection,
    pub retries: u32,
    pub fail_open: bool,
    pub stats: Arc<UpstreamStats>,
}

/// The balancer's view of the backends for one pick.
struct View<'a> {
    backends: &'a [CompiledBackend],
    tried: &'a [usize],
    ignore_health: bool,
}

impl Backends for View<'_> {
    fn len(&self) -> usize {
        self.backends.len()
    }
    fn eligible(&self, i: usize) -> bool {
        let b = &self.backends[i];
        b.weight > 0 && (self.ignore_health || b.state.is_available()) && !self.tried.contains(&i)
    }
    fn in_flight(&self, i: usize) -> u64 {
        self.backends[i].state.in_flight()
    }
    fn ewma_ns(&self, i: usize) -> u64 {
        self.backends[i].state.ewma_ns()
    }
}

impl CompiledUpstream {
    /// The index of the backend for the next attempt of a request, skipping
    /// `tried`. Unhealthy and ejected backends are passed over; when none
    /// is left and the upstream fails open, they are used anyway.
    pub fn pick(&self, ctx: &PickContext, tried: &[usize]) -> Option<usize> {
        let view = View {
            backends: &self.backends,
            tried,
            ignore_health: false,
        };
        self.balancer.pick(&view, ctx).or_else(|| {
            self.fail_open.then(|| {
                let view = View {
                    ignore_health: true,
                    ..view
                };
                self.balancer.pick(&view, ctx)
            })?
        })
    }

    /// Record that backend `i` answered well.
    pub fn report_success(&self, i: usize) {
        self.backends[i].state.record_success();
    }

    /// Record a failure of backend `i` (connect error, timeout or 5xx) and
    /// eject it when the streak reaches the threshold, unless that would
    /// eject more than `max_ejection_percent` of the upstream.
    pub fn report_failure(&self, i: usize) {
        let od = &self.outlier_detection;
        let b = &self.backends[i];
        let streak = b.state.record_failure();
        if !od.enabled || streak < od.consecutive_failures || b.state.is_ejected() {
            return;
        }
        let ejected = self
            .backends
            .iter()
            .filter(|x| x.state.is_ejected())
            .count();
        if (ejected + 1) * 100 > od.max_ejection_percent as usize * self.backends.len() {
            tracing::warn!(
                upstream = %self.name, backend = %b.url, streak,
                "backend keeps failing but is not ejected: max_ejection_percent reached"
            );
            return;
        }
        let period = b.state.eject(
            Duration::from_millis(od.base_ejection_ms),
            Duration::from_millis(MAX_EJECTION_MS),
        );
        tracing::warn!(
            upstream = %self.name, backend = %b.url, streak,
            ejected_for_ms = period.as_millis() as u64,
            "backend ejected after consecutive failures"
        );
    }
}

/// One immutable, compiled config version.
#[derive(Debug)]
pub struct Snapshot {
    version: u64,
    table: RouteTable,
    routes: Box<[CompiledRoute]>,
    upstreams: Box<[CompiledUpstream]>,
}

impl Snapshot {
    /// The snapshot in force before any config is loaded: version 0, no
    /// routes.
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            table: RouteTable::default(),
            routes: Box::new([]),
            upstreams: Box::new([]),
        }
    }

    /// Compile `config`, reusing live backend state from `registry`.
    pub fn build(config: &GatewayConfig, registry: &Registry) -> Result<Self, BuildError> {
        let mut upstream_index = HashMap::with_capacity(config.upstreams.len());
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for (i, u) in config.upstreams.iter().enumerate() {
            if upstream_index.insert(u.name.as_str(), i).is_some() {
                return Err(BuildError::DuplicateUpstream(u.name.clone()));
            }
            upstreams.push(compile_upstream(u, registry)?);
        }

        let mut builder = RouteTableBuilder::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut seen = HashSet::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            if !seen.insert(r.name.as_str()) {
                return Err(BuildError::DuplicateRoute(r.name.clone()));
            }
            let upstream = *upstream_index.get(r.upstream.as_str()).ok_or_else(|| {
                BuildError::UnknownUpstream {
                    route: r.name.clone(),
                    upstream: r.upstream.clone(),
                }
            })?;
            let bad_path = || BuildError::BadPath {
                route: r.name.clone(),
                path: r.path.clone(),
            };
            let prefix = path::normalize(&r.path).map_err(|_| bad_path())?;
            let methods = r
                .methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.as_bytes()).map_err(|_| BuildError::BadMethod {
                        route: r.name.clone(),
                        method: m.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            builder
                .insert(i, &prefix, &r.hosts, &methods)
                .map_err(|c| {
                    BuildError::Conflict(config.routes[c.existing].name.clone(), r.name.clone())
                })?;
            routes.push(CompiledRoute {
                name: r.name.as_str().into(),
                upstream,
                strip_prefix: r.strip_prefix,
                preserve_host: r.preserve_host,
                max_body_bytes: r.max_body_bytes,
                stats: registry.route(&RouteKey {
                    route: r.name.clone(),
                    upstream: r.upstream.clone(),
                }),
            });
        }

        Ok(Snapshot {
            version: config.version,
            table: builder.build(),
            routes: routes.into_boxed_slice(),
            upstreams: upstreams.into_boxed_slice(),
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Route a request: `host` without port, `path` normalised.
    pub fn find(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
    ) -> Option<(RouteMatch, &CompiledRoute)> {
        self.table
            .find(host, method, path)
            .map(|m| (m, &self.routes[m.route]))
    }

    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    pub fn upstreams(&self) -> &[CompiledUpstream] {
        &self.upstreams
    }

    /// Registry keys of every backend in this snapshot.
    pub fn backend_keys(&self) -> HashSet<BackendKey> {
        self.upstreams
            .iter()
            .flat_map(|u| {
                u.backends.iter().map(|b| BackendKey {
                    upstream: u.name.to_string(),
                    url: b.url.to_string(),
                })
            })
            .collect()
    }
}

fn compile_upstream(
    u: &UpstreamConfig,
    registry: &Registry,
) -> Result<CompiledUpstream, BuildError> {
    let mut backends = Vec::with_capacity(u.backends.len());
    for b in &u.backends {
        let (scheme, authority) =
            parse_backend_url(&b.url).map_err(|reason| BuildError::BadBackendUrl {
                upstream: u.name.clone(),
                url: b.url.clone(),
                reason,
            })?;
        let key = BackendKey {
            upstream: u.name.clone(),
            url: b.url.clone(),
        };
        backends.push(CompiledBackend {
            id: b.id,
            url: b.url.as_str().into(),
            scheme,
            authority,
            weight: b.weight,
            state: registry.backend(&key),
        });
    }
    let candidates: Vec<Candidate> = backends
        .iter()
        .map(|b| Candidate {
            weight: b.weight,
            key: &b.url,
        })
        .collect();
    let balancer = balance::build(u.strategy, &candidates);
    Ok(CompiledUpstream {
        name: u.name.as_str().into(),
        balancer,
        backends: backends.into_boxed_slice(),
        response_header_timeout: Duration::from_millis(u.timeouts.response_header_ms),
        body_idle_timeout: Duration::from_millis(u.timeouts.body_idle_ms),
        client: registry
            .client(&ClientKey {
                connect_timeout: Duration::from_millis(u.timeouts.connect_ms),
                tls: u.tls.clone(),
                http2: u.http2,
            })
            .map_err(|source| BuildError::Client {
                upstream: u.name.clone(),
                source,
            })?,
        strategy: u.strategy,
        hash_on: u.hash_on.clone(),
        health_check: u.health_check.clone(),
        outlier_detection: u.outlier_detection,
        retries: u.retries,
        fail_open: u.fail_open,
        stats: registry.upstream(&u.name),
    })
}

/// Parse a backend URL: absolute `http`/`https` with a host, no path beyond
/// `/`, no query, no user info.
pub fn parse_backend_url(url: &str) -> Result<(Scheme, Authority), &'static str> {
    let uri: Uri = url.parse().map_err(|_| "not a valid URL")?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        Some(_) => return Err("scheme must be http or https"),
        None => return Err("must be an absolute http:// or https:// URL"),
    };
    let authority = uri.authority().ok_or("must have a host")?.clone();
    if authority.host().is_empty() {
        return Err("must have a host");
    }
    if authority.as_str().contains('@') {
        return Err("must not contain user info");
    }
    match authority.port_u16() {
        Some(0) => return Err("port must be between 1 and 65535"),
        None if authority.as_str() != authority.host() => {
            return Err("port must be between 1 and 65535");
        }
        _ => {}
    }
    if let Some(pq) = uri.path_and_query()
        && (pq.path() != "/" || pq.query().is_some())
    {
        return Err("must not have a path or query");
    }
    Ok((scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, RouteConfig, Strategy, Timeouts};

    fn config(weight: u32) -> GatewayConfig {
        GatewayConfig {
            version: 3,
            routes: vec![RouteConfig {
                name: "api".into(),
                path: "/api".into(),
                methods: vec![],
                hosts: vec![],
                strip_prefix: true,
                preserve_host: false,
                max_body_bytes: None,
                upstream: "pool".into(),
            }],
            upstreams: vec![UpstreamConfig {
                name: "pool".into(),
                strategy: Strategy::RoundRobin,
                backends: vec![BackendConfig {
                    id: 1,
                    url: "http://127.0.0.1:9001".into(),
                    weight,
                }],
                timeouts: Timeouts::default(),
                hash_on: None,
                health_check: None,
                outlier_detection: Default::default(),
                retries: 1,
                fail_open: false,
                tls: Default::default(),
                http2: false,
            }],
        }
    }

    #[test]
    fn backend_urls() {
        assert!(parse_backend_url("http://127.0.0.1:9001").is_ok());
        assert!(parse_backend_url("https://example.com").is_ok());
        assert!(parse_backend_url("http://[::1]:80/").is_ok());
        assert!(parse_backend_url("ftp://x").is_err());
        assert!(parse_backend_url("127.0.0.1:9001").is_err());
        assert!(parse_backend_url("http://x:0").is_err());
        assert!(parse_backend_url("http://x:65536").is_err());
        assert!(parse_backend_url("http://x/base").is_err());
        assert!(parse_backend_url("http://x/?a=b").is_err());
        assert!(parse_backend_url("http://u:p@x").is_err());
    }

    #[test]
    fn live_state_is_reused_across_builds() {
        let reg = Registry::new();
        let a = Snapshot::build(&config(1), &reg).unwrap();
        let b = Snapshot::build(&config(7), &reg).unwrap();
        let sa = &a.upstreams()[0].backends[0].state;
        let sb = &b.upstreams()[0].backends[0].state;
        assert!(Arc::ptr_eq(sa, sb));
        let _g = sa.start();
        assert_eq!(sb.in_flight(), 1);
    }

    #[test]
    fn dangling_upstream_is_refused() {
        let mut c = config(1);
        c.routes[0].upstream = "nope".into();
        assert!(matches!(
            Snapshot::build(&c, &Registry::new()),
            Err(BuildError::UnknownUpstream { .. })
        ));
    }
}
