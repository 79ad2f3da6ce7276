//! The immutable, compiled routing snapshot.
//!
//! A [`Snapshot`] is built from a [`GatewayConfig`] off the hot path: the
//! route table is indexed, backend URLs are parsed once, balancers are
//! ready to pick, and every backend holds the `Arc` of its live state from
//! the [`Registry`]. A request loads one snapshot and uses it until it is
//! done, so it sees the old config or the new one, never a mix.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::uri::{Authority, Scheme};

use crate::available::Availability;
use crate::balance::{self, Backends, Balancer, Candidate, PickContext};
use crate::config::{
    GatewayConfig, HashOn, HealthCheck, OutlierDetection, RouteConfig, UpstreamConfig,
    parse_backend_url,
};
use crate::counters::RequestStats;
use crate::persist::{ChunkedVec, ShardedMap};
use crate::policy::CompiledPolicies;
use crate::registry::{BackendKey, BackendState, Registry, RouteKey, UpstreamStats};
use crate::routing::{RouteMatch, RouteTable, path};
use crate::transport::client::{ClientKey, UpstreamClient};

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
    #[error("route {0:?} has no upstream and does not redirect")]
    NoUpstream(String),
    #[error("route {route:?} has an invalid policy at {pointer}: {detail}")]
    BadPolicy {
        route: String,
        pointer: String,
        detail: String,
    },
    #[error("upstream {upstream:?}: {source}")]
    Client {
        upstream: String,
        source: crate::transport::client::ClientError,
    },
    #[error("upstream {upstream:?} has an invalid backend URL {url:?}: {reason}")]
    BadBackendUrl {
        upstream: String,
        url: String,
        reason: &'static str,
    },
}

impl BuildError {
    /// The member of the upstream's config at fault, as a JSON pointer
    /// below the upstream (`/tls/ca_file`), when one member is; the reason
    /// is this error's [`source`](std::error::Error::source).
    pub fn field(&self) -> Option<&'static str> {
        use crate::transport::client::ClientError;
        match self {
            BuildError::Client { source, .. } => Some(match source {
                ClientError::CaFile { .. } => "/tls/ca_file",
                ClientError::ServerName(_) => "/tls/server_name",
            }),
            _ => None,
        }
    }
}

/// A route, ready to forward.
#[derive(Debug)]
pub struct CompiledRoute {
    pub name: Arc<str>,
    /// The upstream's slot (see [`Snapshot::upstream`]); none for a route
    /// that only redirects.
    pub upstream: Option<usize>,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    pub max_body_bytes: Option<u64>,
    /// The response-head timeout, when the route overrides its upstream's.
    pub timeout: Option<std::time::Duration>,
    /// Its policies; none for a route that has none (most).
    pub policies: Option<Box<CompiledPolicies>>,
    /// Request counters (kept across snapshots by the registry).
    pub stats: Arc<RequestStats>,
    /// What it was compiled from, and its normalised prefix.
    config: RouteConfig,
    prefix: Box<str>,
}

impl CompiledRoute {
    /// The config the route was compiled from.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }
}

/// One backend with its parsed address and live state.
#[derive(Debug)]
pub struct CompiledBackend {
    pub id: u64,
    pub url: Arc<str>,
    pub scheme: Scheme,
    pub authority: Authority,
    /// `Host` for requests that do not keep the client's.
    pub host: http::HeaderValue,
    /// The same as a header line (`host: …\r\n`), for the inline client.
    pub host_line: bytes::Bytes,
    /// A plain `http://` backend of an HTTP/1.1 upstream: requests skip
    /// the upstream's `client` and use the backend's own connection pool.
    pub pooled: bool,
    pub weight: u32,
    pub state: Arc<BackendState>,
}

/// An upstream pool, ready to pick from.
#[derive(Debug)]
pub struct CompiledUpstream {
    pub name: Arc<str>,
    pub backends: Box<[CompiledBackend]>,
    balancer: Box<dyn Balancer>,
    /// Which backends are out now, and the balancer's plan for the others.
    availability: Availability,
    pub response_header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub client: Arc<UpstreamClient>,
    pub connect_timeout: Duration,
    pub strategy: crate::config::Strategy,
    pub hash_on: Option<HashOn>,
    pub health_check: Option<HealthCheck>,
    pub outlier_detection: OutlierDetection,
    pub retries: u32,
    pub fail_open: bool,
    pub stats: Arc<UpstreamStats>,
    /// What it was compiled from.
    config: UpstreamConfig,
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
    /// `tried`. Unhealthy and ejected backends are passed over (the others
    /// keep their relative weights); when none is left and the upstream
    /// fails open, they are used anyway.
    pub fn pick(&self, ctx: &PickContext, tried: &[usize]) -> Option<usize> {
        let current = self.availability.current(&*self.balancer, self.states());
        let view = View {
            backends: &self.backends,
            tried,
            ignore_health: false,
        };
        self.balancer.pick(current.plan(), &view, ctx).or_else(|| {
            self.fail_open.then(|| {
                let view = View {
                    ignore_health: true,
                    ..view
                };
                self.balancer.pick(self.availability.full(), &view, ctx)
            })?
        })
    }

    /// The settings `client` was made for (connect timeout, TLS, HTTP/2).
    pub fn client_key(&self) -> ClientKey {
        client_key(&self.config)
    }

    /// The backends' live states, in index order.
    fn states(&self) -> impl Iterator<Item = &BackendState> + Clone {
        self.backends.iter().map(|b| &*b.state)
    }
}

/// One step of [`Snapshot::patch`]: a route or upstream put in place
/// (added, or replacing the one of that name) or taken out. (Not boxed:
/// a patch is made once per admin change, and a route with its policies
/// is simply the largest thing one carries.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Patch {
    Route(RouteConfig),
    RemoveRoute(String),
    Upstream(UpstreamConfig),
    RemoveUpstream(String),
}

/// Live state a patch left behind: the registry and the health checker
/// forget it when the patched snapshot is installed.
#[derive(Debug, Default)]
pub struct Retired {
    pub routes: Vec<RouteKey>,
    pub upstreams: Vec<String>,
    pub backends: Vec<BackendKey>,
    /// Upstreams added or recompiled (their health checks are reconciled).
    pub changed_upstreams: Vec<Arc<str>>,
}

/// One immutable, compiled config version.
///
/// Routes and upstreams sit in slots that keep their index from one
/// version to the next, so [`Snapshot::patch`] changes one route or
/// upstream without recompiling, reindexing or copying the others: the
/// route table shares its unchanged tries and the slots share their
/// unchanged entries.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    version: u64,
    table: RouteTable,
    routes: ChunkedVec<Option<Arc<CompiledRoute>>>,
    upstreams: ChunkedVec<Option<Arc<CompiledUpstream>>>,
    route_slots: ShardedMap<usize>,
    upstream_slots: ShardedMap<usize>,
    /// How many routes use each upstream slot.
    users: ChunkedVec<u32>,
    free_routes: Vec<usize>,
    free_upstreams: Vec<usize>,
}

impl Snapshot {
    /// The snapshot in force before any config is loaded: version 0, no
    /// routes.
    pub fn empty() -> Self {
        Snapshot::default()
    }

    /// Compile `config`, reusing live backend state from `registry`.
    pub fn build(config: &GatewayConfig, registry: &Registry) -> Result<Self, BuildError> {
        let mut snap = Snapshot {
            version: config.version,
            ..Snapshot::default()
        };
        let mut retired = Retired::default();
        for u in &config.upstreams {
            if snap.upstream_slots.contains_key(u.name.as_str()) {
                return Err(BuildError::DuplicateUpstream(u.name.clone()));
            }
            snap.put_upstream(u, registry, &mut retired)?;
        }
        for r in &config.routes {
            if snap.route_slots.contains_key(r.name.as_str()) {
                return Err(BuildError::DuplicateRoute(r.name.clone()));
            }
            snap.put_route(r, registry, &mut retired)?;
        }
        Ok(snap)
    }

    /// This snapshot with `patches` applied, as version `version`: only the
    /// routes and upstreams named are compiled; the rest is shared with
    /// `self`. The result is what [`Snapshot::build`] would make of the
    /// patched config. Also returns the live state the patch retired.
    pub fn patch(
        &self,
        version: u64,
        patches: &[Patch],
        registry: &Registry,
    ) -> Result<(Self, Retired), BuildError> {
        let mut snap = self.clone();
        snap.version = version;
        let mut retired = Retired::default();
        // Upstreams first (routes may point at new ones), removals of
        // upstreams last (routes may have just let go of them).
        for p in patches {
            if let Patch::Upstream(u) = p {
                snap.put_upstream(u, registry, &mut retired)?;
            }
        }
        // Routes removed before routes put, whatever the order given: a
        // route renamed, or moved onto the path of one removed, must not
        // meet the one it replaces. (Two routes trading places still meet:
        // the caller compiles the whole config then.)
        for p in patches {
            if let Patch::RemoveRoute(name) = p {
                snap.remove_route(name, &mut retired);
            }
        }
        for p in patches {
            if let Patch::Route(r) = p {
                snap.put_route(r, registry, &mut retired)?;
            }
        }
        for p in patches {
            if let Patch::RemoveUpstream(name) = p {
                snap.remove_upstream(name, &mut retired)?;
            }
        }
        Ok((snap, retired))
    }

    fn put_upstream(
        &mut self,
        u: &UpstreamConfig,
        registry: &Registry,
        retired: &mut Retired,
    ) -> Result<(), BuildError> {
        let slot = self.upstream_slots.get(u.name.as_str()).copied();
        if let Some(old) = slot.and_then(|i| self.upstreams[i].as_ref()) {
            if old.config == *u {
                return Ok(());
            }
            retired.backends.extend(
                old.config
                    .backends
                    .iter()
                    .filter(|b| !u.backends.iter().any(|n| n.url == b.url))
                    .map(|b| BackendKey {
                        upstream: u.name.clone(),
                        url: b.url.clone(),
                    }),
            );
        }
        let compiled = Arc::new(compile_upstream(u, registry)?);
        retired.changed_upstreams.push(Arc::clone(&compiled.name));
        match slot {
            Some(i) => *slot_mut(&mut self.upstreams, i) = Some(compiled),
            None => {
                let i = take_slot(&mut self.upstreams, &mut self.free_upstreams);
                *slot_mut(&mut self.upstreams, i) = Some(compiled);
                while self.users.len() <= i {
                    self.users.push(0);
                }
                *slot_mut(&mut self.users, i) = 0;
                self.upstream_slots.insert(u.name.as_str().into(), i);
            }
        }
        Ok(())
    }

    fn remove_upstream(&mut self, name: &str, retired: &mut Retired) -> Result<(), BuildError> {
        let Some(i) = self.upstream_slots.get(name).copied() else {
            return Ok(());
        };
        if self.users.get(i).is_some_and(|&n| n > 0) {
            let route = self
                .routes()
                .find(|r| r.upstream == Some(i))
                .map_or_else(String::new, |r| r.name.to_string());
            return Err(BuildError::UnknownUpstream {
                route,
                upstream: name.to_string(),
            });
        }
        self.upstream_slots.remove(name);
        if let Some(old) = slot_mut(&mut self.upstreams, i).take() {
            retired
                .backends
                .extend(old.config.backends.iter().map(|b| BackendKey {
                    upstream: name.to_string(),
                    url: b.url.clone(),
                }));
        }
        retired.upstreams.push(name.to_string());
        self.free_upstreams.push(i);
        Ok(())
    }

    fn put_route(
        &mut self,
        r: &RouteConfig,
        registry: &Registry,
        retired: &mut Retired,
    ) -> Result<(), BuildError> {
        let existing = self.route_slots.get(r.name.as_str()).copied();
        if let Some(old) = existing.and_then(|i| self.routes[i].as_ref())
            && old.config == *r
        {
            return Ok(());
        }
        let upstream = match &r.upstream {
            Some(name) => Some(*self.upstream_slots.get(name.as_str()).ok_or_else(|| {
                BuildError::UnknownUpstream {
                    route: r.name.clone(),
                    upstream: name.clone(),
                }
            })?),
            None if r.policies.redirect.is_some() => None,
            None => return Err(BuildError::NoUpstream(r.name.clone())),
        };
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
        let key = RouteKey::of(r);
        let limiter = registry.rate_limiter(&key, r.policies.rate_limit.as_deref());
        let policies = CompiledPolicies::compile(&r.policies, limiter)
            .map_err(|p| BuildError::BadPolicy {
                route: r.name.clone(),
                pointer: p.pointer,
                detail: p.detail,
            })?
            .map(Box::new);
        let slot = match existing {
            Some(i) => {
                let old = slot_mut(&mut self.routes, i)
                    .take()
                    .expect("a named slot is filled");
                self.table.remove(i, &old.prefix, &old.config.hosts);
                if let Some(u) = old.upstream {
                    *slot_mut(&mut self.users, u) -= 1;
                }
                if old.config.upstream != r.upstream {
                    retired.routes.push(RouteKey::of(&old.config));
                }
                i
            }
            None => take_slot(&mut self.routes, &mut self.free_routes),
        };
        if let Err(c) = self.table.insert(slot, &prefix, &r.hosts, &methods) {
            let other = self.routes[c.existing]
                .as_ref()
                .map_or_else(String::new, |o| o.config.name.clone());
            return Err(BuildError::Conflict(other, r.name.clone()));
        }
        if let Some(u) = upstream {
            *slot_mut(&mut self.users, u) += 1;
        }
        *slot_mut(&mut self.routes, slot) = Some(Arc::new(CompiledRoute {
            name: r.name.as_str().into(),
            upstream,
            strip_prefix: r.strip_prefix,
            preserve_host: r.preserve_host,
            max_body_bytes: r.max_body_bytes,
            timeout: r.timeout_ms.map(std::time::Duration::from_millis),
            policies,
            stats: registry.route(&key),
            config: r.clone(),
            prefix: prefix.into_owned().into_boxed_str(),
        }));
        if existing.is_none() {
            self.route_slots.insert(r.name.as_str().into(), slot);
        }
        Ok(())
    }

    fn remove_route(&mut self, name: &str, retired: &mut Retired) {
        let Some(i) = self.route_slots.remove(name) else {
            return;
        };
        if let Some(old) = slot_mut(&mut self.routes, i).take() {
            self.table.remove(i, &old.prefix, &old.config.hosts);
            if let Some(u) = old.upstream {
                *slot_mut(&mut self.users, u) -= 1;
            }
            retired.routes.push(RouteKey::of(&old.config));
        }
        self.free_routes.push(i);
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether some route is for given hosts only (else [`Snapshot::find`]
    /// needs no host).
    pub fn has_host_routes(&self) -> bool {
        self.table.has_host_routes()
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
            .map(|m| (m, self.route(m.route)))
    }

    /// The routes a lookup of this request looks at (see
    /// [`crate::routing::RouteTable::considered`]).
    pub fn considered(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
    ) -> Vec<crate::routing::Considered> {
        self.table.considered(host, method, path)
    }

    /// The route in slot `i` (as given by [`Snapshot::find`]).
    pub fn route(&self, i: usize) -> &CompiledRoute {
        self.routes[i].as_deref().expect("a route slot in use")
    }

    /// The upstream in slot `i` (as given by [`CompiledRoute::upstream`]).
    pub fn upstream(&self, i: usize) -> &CompiledUpstream {
        self.upstreams[i]
            .as_deref()
            .expect("an upstream slot in use")
    }

    /// Every route, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = &CompiledRoute> {
        self.routes.iter().filter_map(Option::as_deref)
    }

    /// Every upstream, in no particular order.
    pub fn upstreams(&self) -> impl Iterator<Item = &CompiledUpstream> {
        self.upstreams.iter().filter_map(Option::as_deref)
    }

    pub fn route_count(&self) -> usize {
        self.route_slots.len()
    }

    pub fn upstream_count(&self) -> usize {
        self.upstream_slots.len()
    }

    /// The route named `name`.
    pub fn route_named(&self, name: &str) -> Option<&CompiledRoute> {
        self.route_slots.get(name).map(|&i| self.route(i))
    }

    /// The upstream named `name`.
    pub fn upstream_named(&self, name: &str) -> Option<&CompiledUpstream> {
        self.upstream_slots.get(name).map(|&i| self.upstream(i))
    }

    /// The config this snapshot runs, routes and upstreams sorted by name.
    pub fn config(&self) -> GatewayConfig {
        let mut routes: Vec<RouteConfig> = self.routes().map(|r| r.config.clone()).collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut upstreams: Vec<UpstreamConfig> =
            self.upstreams().map(|u| u.config.clone()).collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        GatewayConfig {
            version: self.version,
            routes,
            upstreams,
        }
    }
}

/// A free slot of `slots` (reused, or a new one at the end).
fn take_slot<T: Clone>(slots: &mut ChunkedVec<Option<T>>, free: &mut Vec<usize>) -> usize {
    free.pop().unwrap_or_else(|| {
        slots.push(None);
        slots.len() - 1
    })
}

/// Slot `i`, which exists (slots are never shortened).
fn slot_mut<T: Clone>(slots: &mut ChunkedVec<T>, i: usize) -> &mut T {
    slots.get_mut(i).expect("slot indexes stay valid")
}

/// The one place an upstream's config (its [`UpstreamPolicy`]) becomes the
/// compiled form the hot path reads: durations, parsed URLs, a balancer and
/// a client, each made once here rather than per request.
///
/// [`UpstreamPolicy`]: crate::config::UpstreamPolicy
fn compile_upstream(
    u: &UpstreamConfig,
    registry: &Registry,
) -> Result<CompiledUpstream, BuildError> {
    let policy = &u.policy;
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
        let host = match authority.port_u16() {
            Some(80) if scheme == Scheme::HTTP => authority.host(),
            Some(443) if scheme == Scheme::HTTPS => authority.host(),
            _ => authority.as_str(),
        };
        let host = http::HeaderValue::from_str(host).map_err(|_| BuildError::BadBackendUrl {
            upstream: u.name.clone(),
            url: b.url.clone(),
            reason: "not a valid host",
        })?;
        let host_line = [b"host: ", host.as_bytes(), b"\r\n"].concat().into();
        backends.push(CompiledBackend {
            id: b.id,
            url: b.url.as_str().into(),
            pooled: scheme == Scheme::HTTP && !policy.http2,
            scheme,
            authority,
            host,
            host_line,
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
    let availability = Availability::new(&*balancer, backends.iter().map(|b| &*b.state));
    Ok(CompiledUpstream {
        name: u.name.as_str().into(),
        balancer,
        availability,
        backends: backends.into_boxed_slice(),
        response_header_timeout: Duration::from_millis(policy.timeouts.response_header_ms),
        body_idle_timeout: Duration::from_millis(policy.timeouts.body_idle_ms),
        client: registry
            .client(&client_key(u))
            .map_err(|source| BuildError::Client {
                upstream: u.name.clone(),
                source,
            })?,
        connect_timeout: Duration::from_millis(policy.timeouts.connect_ms),
        strategy: u.strategy,
        hash_on: policy.hash_on.clone(),
        health_check: policy.health_check.clone(),
        outlier_detection: policy.outlier_detection,
        retries: policy.retries,
        fail_open: policy.fail_open,
        stats: registry.upstream(&u.name),
        config: u.clone(),
    })
}

/// The connection settings of `u`'s client.
fn client_key(u: &UpstreamConfig) -> ClientKey {
    ClientKey {
        connect_timeout: Duration::from_millis(u.policy.timeouts.connect_ms),
        tls: u.policy.tls.clone(),
        http2: u.policy.http2,
    }
}

/// A snapshot of one upstream `u`, from the JSON of its config (`name`
/// added), for tests of what it does with its backends.
#[cfg(test)]
pub(crate) fn one_upstream(mut upstream: serde_json::Value) -> Snapshot {
    upstream["name"] = "u".into();
    let config: GatewayConfig = serde_json::from_value(serde_json::json!({
        "version": 1, "routes": [], "upstreams": [upstream],
    }))
    .expect("a valid upstream config");
    Snapshot::build(&config, &Registry::new()).expect("it compiles")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, RouteConfig, Strategy, UpstreamPolicy};

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
                timeout_ms: None,
                upstream: Some("pool".into()),
                policies: Default::default(),
            }],
            upstreams: vec![UpstreamConfig {
                name: "pool".into(),
                strategy: Strategy::RoundRobin,
                backends: vec![BackendConfig {
                    id: 1,
                    url: "http://127.0.0.1:9001".into(),
                    weight,
                }],
                policy: UpstreamPolicy::default(),
            }],
        }
    }

    #[test]
    fn live_state_is_reused_across_builds() {
        let reg = Registry::new();
        let a = Snapshot::build(&config(1), &reg).unwrap();
        let b = Snapshot::build(&config(7), &reg).unwrap();
        let sa = &a.upstream(0).backends[0].state;
        let sb = &b.upstream(0).backends[0].state;
        assert!(Arc::ptr_eq(sa, sb));
        let _g = sa.start();
        assert_eq!(sb.in_flight(), 1);
    }

    #[test]
    fn rate_limit_buckets_outlive_other_changes() {
        let reg = Registry::new();
        let limited = |burst: u32, deny: &[&str]| {
            let mut c = config(1);
            c.routes[0].policies = serde_json::from_value(serde_json::json!({
                "rate_limit": {"key": "route", "requests_per_second": 5, "burst": burst},
                "ip_deny": deny,
            }))
            .unwrap();
            c
        };
        let buckets = |s: &Snapshot| {
            let policies = s.route(0).policies.as_ref().expect("compiled");
            Arc::clone(policies.rate_limiter().expect("a limit"))
        };
        let a = Snapshot::build(&limited(10, &[]), &reg).unwrap();
        // Another weight, another policy of the route: the same buckets.
        let b = Snapshot::build(&limited(10, &["10.0.0.0/8"]), &reg).unwrap();
        let mut c = limited(10, &["10.0.0.0/8"]);
        c.upstreams[0].backends[0].weight = 3;
        let c = Snapshot::build(&c, &reg).unwrap();
        assert!(Arc::ptr_eq(&buckets(&a), &buckets(&b)));
        assert!(Arc::ptr_eq(&buckets(&a), &buckets(&c)));
        // Another limit: new buckets.
        let d = Snapshot::build(&limited(20, &[]), &reg).unwrap();
        assert!(!Arc::ptr_eq(&buckets(&a), &buckets(&d)));
        // No policy: nothing compiled.
        assert!(
            Snapshot::build(&config(1), &reg)
                .unwrap()
                .route(0)
                .policies
                .is_none()
        );
    }

    #[test]
    fn a_route_needs_an_upstream_unless_it_redirects() {
        let mut c = config(1);
        c.routes[0].upstream = None;
        assert_eq!(
            Snapshot::build(&c, &Registry::new()).err(),
            Some(BuildError::NoUpstream("api".into()))
        );
        c.routes[0].policies.redirect = Some(Box::new(crate::config::policies::Redirect {
            status: 308,
            location: "https://example.com{path}".into(),
        }));
        let s = Snapshot::build(&c, &Registry::new()).unwrap();
        assert!(s.route(0).upstream.is_none());
    }

    #[test]
    fn dangling_upstream_is_refused() {
        let mut c = config(1);
        c.routes[0].upstream = Some("nope".into());
        assert!(matches!(
            Snapshot::build(&c, &Registry::new()),
            Err(BuildError::UnknownUpstream { .. })
        ));
    }
}
