//! Reading rows into views, the whole config, and the export document.

use std::collections::{BTreeSet, HashMap};

use data_plane::config::{
    BackendConfig, GatewayConfig, RouteConfig, RoutePolicies, Strategy, Timeouts, UpstreamConfig,
    UpstreamPolicy,
};
use sqlx::AnyConnection;

use super::revisions::Resources;
use super::{StoreError, config_version, not_found};
use crate::model::{ConfigUpstream, NewBackend};
use crate::view::{BackendView, ConfigView, RouteView, UpstreamView};

#[derive(Debug, sqlx::FromRow)]
struct RouteRow {
    name: String,
    path: String,
    methods: String,
    hosts: String,
    /// Booleans are integers (0 or 1) in both databases, so one query
    /// reads them from either.
    strip_prefix: i64,
    preserve_host: i64,
    max_body_bytes: Option<i64>,
    timeout_ms: Option<i64>,
    /// `None` for a route that only redirects.
    upstream: Option<String>,
    /// The JSON of the route's [`RoutePolicies`] (`{}`: none).
    policies: String,
    version: i64,
}
const ROUTE_COLUMNS: &str = "name, path, methods, hosts, strip_prefix, preserve_host, \
     max_body_bytes, timeout_ms, upstream, policies, version";

pub(super) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("a list of strings serialises")
}

fn parse_list(raw: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(raw)
        .map_err(|e| StoreError::Corrupt(format!("bad JSON list {raw:?}: {e}")))
}

/// Every route, by name.
pub(super) async fn all_routes(conn: &mut AnyConnection) -> Result<Vec<RouteView>, StoreError> {
    let rows: Vec<RouteRow> =
        sqlx::query_as(&format!("SELECT {ROUTE_COLUMNS} FROM routes ORDER BY name"))
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter().map(route_view).collect()
}

fn route_view(row: RouteRow) -> Result<RouteView, StoreError> {
    let raw = &row.policies;
    let policies: RoutePolicies = serde_json::from_str(raw)
        .map_err(|e| StoreError::Corrupt(format!("bad route policies {raw:?}: {e}")))?;
    Ok(RouteView {
        route: RouteConfig {
            methods: parse_list(&row.methods)?,
            hosts: parse_list(&row.hosts)?,
            name: row.name,
            path: row.path,
            strip_prefix: row.strip_prefix != 0,
            preserve_host: row.preserve_host != 0,
            max_body_bytes: row.max_body_bytes.map(|n| n as u64),
            timeout_ms: row.timeout_ms.map(|n| n as u64),
            upstream: row.upstream,
            policies,
        },
        version: row.version as u64,
    })
}

async fn route_row(conn: &mut AnyConnection, name: &str) -> Result<Option<RouteRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ROUTE_COLUMNS} FROM routes WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?)
}

pub(super) async fn get_route(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<RouteView, StoreError> {
    let row = route_row(conn, name).await?;
    route_view(row.ok_or_else(|| not_found("route", name))?)
}

#[derive(Debug, sqlx::FromRow)]
struct UpstreamRow {
    name: String,
    strategy: String,
    connect_timeout_ms: i64,
    response_header_timeout_ms: i64,
    body_idle_timeout_ms: i64,
    policy: String,
    owner_route: Option<String>,
    version: i64,
}

const UPSTREAM_COLUMNS: &str = "name, strategy, connect_timeout_ms, response_header_timeout_ms, \
     body_idle_timeout_ms, policy, owner_route, version";

impl UpstreamRow {
    /// The upstream's policy: its timeouts from their columns, the rest
    /// from the `policy` column's JSON (see `write::policy_json`).
    fn policy(&self) -> Result<UpstreamPolicy, StoreError> {
        let raw = &self.policy;
        let policy: UpstreamPolicy = serde_json::from_str(raw)
            .map_err(|e| StoreError::Corrupt(format!("bad policy {raw:?}: {e}")))?;
        Ok(UpstreamPolicy {
            timeouts: Timeouts {
                connect_ms: self.connect_timeout_ms as u64,
                response_header_ms: self.response_header_timeout_ms as u64,
                body_idle_ms: self.body_idle_timeout_ms as u64,
            },
            ..policy
        })
    }

    /// The upstream's config with `backends`.
    fn config<B>(self, backends: Vec<B>) -> Result<UpstreamConfig<B>, StoreError> {
        Ok(UpstreamConfig {
            strategy: parse_strategy(&self.strategy)?,
            policy: self.policy()?,
            backends,
            name: self.name,
        })
    }
}

fn parse_strategy(raw: &str) -> Result<Strategy, StoreError> {
    Strategy::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("unknown strategy {raw:?}")))
}

async fn upstream_row(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<UpstreamRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {UPSTREAM_COLUMNS} FROM upstreams WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?)
}

pub(super) async fn get_upstream(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<UpstreamView, StoreError> {
    let row = upstream_row(conn, name).await?;
    let row = row.ok_or_else(|| not_found("upstream", name))?;
    let backends: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT id, url, weight, version FROM backends WHERE upstream = $1 ORDER BY id",
    )
    .bind(&row.name)
    .fetch_all(&mut *conn)
    .await?;
    upstream_view(row, backends.into_iter().map(backend_view).collect())
}

/// Every upstream with its backends, by name (backends by id): two
/// queries whatever the count (one per upstream took about a second at
/// 10,000 upstreams, for each export, checkpoint and list).
pub(super) async fn all_upstreams(
    conn: &mut AnyConnection,
) -> Result<Vec<UpstreamView>, StoreError> {
    let mut backends: HashMap<String, Vec<BackendView>> = HashMap::new();
    let rows: Vec<(String, i64, String, i64, i64)> = sqlx::query_as(
        "SELECT upstream, id, url, weight, version FROM backends ORDER BY upstream, id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (upstream, id, url, weight, version) in rows {
        backends
            .entry(upstream)
            .or_default()
            .push(backend_view((id, url, weight, version)));
    }
    let rows: Vec<UpstreamRow> = sqlx::query_as(&format!(
        "SELECT {UPSTREAM_COLUMNS} FROM upstreams ORDER BY name"
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let backends = backends.remove(&row.name).unwrap_or_default();
            upstream_view(row, backends)
        })
        .collect()
}

fn backend_view((id, url, weight, version): (i64, String, i64, i64)) -> BackendView {
    BackendView {
        id: id as u64,
        url,
        weight: weight as u32,
        version: version as u64,
    }
}

fn upstream_view(
    mut row: UpstreamRow,
    backends: Vec<BackendView>,
) -> Result<UpstreamView, StoreError> {
    Ok(UpstreamView {
        owner_route: row.owner_route.take(),
        version: row.version as u64,
        upstream: row.config(backends)?,
    })
}

pub(super) async fn get_backend(
    conn: &mut AnyConnection,
    upstream: &str,
    id: u64,
) -> Result<BackendView, StoreError> {
    let row: Option<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT id, url, weight, version FROM backends WHERE upstream = $1 AND id = $2",
    )
    .bind(upstream)
    .bind(id as i64)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(backend_view)
        .ok_or_else(|| not_found("backend", format!("{upstream}/{id}")))
}

/// The whole config as `conn` sees it (inside a transaction: including its
/// uncommitted changes), in a stable order.
pub async fn load_config(conn: &mut AnyConnection) -> Result<GatewayConfig, StoreError> {
    let version = config_version(conn).await?;
    let mut backends: HashMap<String, Vec<BackendConfig>> = HashMap::new();
    let rows: Vec<(i64, String, String, i64)> =
        sqlx::query_as("SELECT id, upstream, url, weight FROM backends ORDER BY upstream, id")
            .fetch_all(&mut *conn)
            .await?;
    for (id, upstream, url, weight) in rows {
        backends.entry(upstream).or_default().push(BackendConfig {
            id: id as u64,
            url,
            weight: weight as u32,
        });
    }
    let rows: Vec<UpstreamRow> = sqlx::query_as(&format!(
        "SELECT {UPSTREAM_COLUMNS} FROM upstreams ORDER BY name"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let upstreams = rows
        .into_iter()
        .map(|row| {
            let backends = backends.remove(&row.name).unwrap_or_default();
            row.config(backends)
        })
        .collect::<Result<_, StoreError>>()?;
    let routes = all_routes(conn)
        .await?
        .into_iter()
        .map(|view| view.route)
        .collect();
    Ok(GatewayConfig {
        version,
        routes,
        upstreams,
    })
}

/// One route as the data plane runs it (`None`: there is no such route),
/// as `conn` sees it.
pub async fn load_route(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<RouteConfig>, StoreError> {
    let row = route_row(conn, name).await?;
    row.map(|row| route_view(row).map(|view| view.route))
        .transpose()
}

/// One upstream with its backends as the data plane runs it (`None`: there
/// is no such upstream), as `conn` sees it.
pub async fn load_upstream(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<UpstreamConfig>, StoreError> {
    let Some(row) = upstream_row(conn, name).await? else {
        return Ok(None);
    };
    let rows: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT id, url, weight FROM backends WHERE upstream = $1 ORDER BY id")
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
    let backends = rows
        .into_iter()
        .map(|(id, url, weight)| BackendConfig {
            id: id as u64,
            url,
            weight: weight as u32,
        })
        .collect();
    row.config(backends).map(Some)
}

/// The whole config as one document, in a stable order (names; backends by id).
pub async fn export(conn: &mut AnyConnection) -> Result<ConfigView, StoreError> {
    let version = config_version(conn).await?;
    let upstreams = all_upstreams(conn)
        .await?
        .into_iter()
        .map(config_upstream)
        .collect();
    let routes = all_routes(conn)
        .await?
        .into_iter()
        .map(|view| view.route)
        .collect();
    Ok(ConfigView {
        version,
        upstreams,
        routes,
    })
}

/// An upstream as the export shows it (backends without ids).
fn config_upstream(view: UpstreamView) -> ConfigUpstream {
    let u = view.upstream;
    ConfigUpstream {
        upstream: UpstreamConfig {
            backends: u
                .backends
                .into_iter()
                .map(|b| NewBackend {
                    url: b.url,
                    weight: b.weight,
                })
                .collect(),
            name: u.name,
            strategy: u.strategy,
            policy: u.policy,
        },
        owner_route: view.owner_route,
    }
}

/// The state of the named routes and upstreams in the export format
/// (`None`: there is none of that name).
pub async fn resources(
    conn: &mut AnyConnection,
    routes: &BTreeSet<String>,
    upstreams: &BTreeSet<String>,
) -> Result<Resources, StoreError> {
    let mut state = Resources::default();
    for name in routes {
        let row = route_row(conn, name).await?;
        let doc = match row {
            Some(row) => {
                Some(serde_json::to_value(route_view(row)?.route).expect("a route serialises"))
            }
            None => None,
        };
        state.routes.insert(name.clone(), doc);
    }
    for name in upstreams {
        let doc = match get_upstream(conn, name).await {
            Ok(view) => {
                Some(serde_json::to_value(config_upstream(view)).expect("an upstream serialises"))
            }
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        state.upstreams.insert(name.clone(), doc);
    }
    Ok(state)
}
