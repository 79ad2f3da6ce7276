//! Reading rows into views, the whole config, and the export document.

use std::collections::HashMap;

use data_plane::config::{
    BackendConfig, GatewayConfig, RouteConfig, Strategy, Timeouts, UpstreamConfig,
};
use sqlx::sqlite::SqliteConnection;

use super::{StoreError, config_version, not_found};
use crate::model::Policy;
use crate::view::{
    BackendView, ConfigBackendView, ConfigRouteView, ConfigUpstreamView, ConfigView, RouteView,
    UpstreamView,
};

pub(super) type RouteRow = (String, String, String, String, bool, String, i64);
pub(super) const ROUTE_SELECT_ALL: &str =
    "SELECT name, path, methods, hosts, strip_prefix, upstream, version FROM routes ORDER BY name";

pub(super) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("a list of strings serialises")
}

fn parse_list(raw: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(raw)
        .map_err(|e| StoreError::Corrupt(format!("bad JSON list {raw:?}: {e}")))
}

pub(super) fn route_view(row: RouteRow) -> Result<RouteView, StoreError> {
    let (name, path, methods, hosts, strip_prefix, upstream, version) = row;
    Ok(RouteView {
        name,
        path,
        methods: parse_list(&methods)?,
        hosts: parse_list(&hosts)?,
        strip_prefix,
        upstream,
        version: version as u64,
    })
}

pub(super) async fn get_route(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<RouteView, StoreError> {
    let row: Option<RouteRow> = sqlx::query_as(
        "SELECT name, path, methods, hosts, strip_prefix, upstream, version FROM routes WHERE name = ?",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    route_view(row.ok_or_else(|| not_found("route", name))?)
}

/// name, strategy, connect ms, response-header ms, policy JSON, owner, version.
type UpstreamRow = (String, String, i64, i64, String, Option<String>, i64);

fn parse_policy(raw: &str) -> Result<Policy, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("bad policy {raw:?}: {e}")))
}

fn parse_strategy(raw: &str) -> Result<Strategy, StoreError> {
    Strategy::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("unknown strategy {raw:?}")))
}

pub(super) async fn get_upstream(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<UpstreamView, StoreError> {
    let row: Option<UpstreamRow> = sqlx::query_as(
        "SELECT name, strategy, connect_timeout_ms, response_header_timeout_ms, policy, owner_route, version
         FROM upstreams WHERE name = ?",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let (name, strategy, connect, header, policy, owner_route, version) =
        row.ok_or_else(|| not_found("upstream", name))?;
    let backends: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT id, url, weight, version FROM backends WHERE upstream = ? ORDER BY id",
    )
    .bind(&name)
    .fetch_all(&mut *conn)
    .await?;
    Ok(UpstreamView {
        strategy: parse_strategy(&strategy)?.as_str().to_string(),
        backends: backends
            .into_iter()
            .map(|(id, url, weight, version)| BackendView {
                id: id as u64,
                url,
                weight: weight as u32,
                version: version as u64,
            })
            .collect(),
        timeouts: Timeouts {
            connect_ms: connect as u64,
            response_header_ms: header as u64,
        },
        policy: parse_policy(&policy)?,
        owner_route,
        version: version as u64,
        name,
    })
}

pub(super) async fn get_backend(
    conn: &mut SqliteConnection,
    upstream: &str,
    id: u64,
) -> Result<BackendView, StoreError> {
    let row: Option<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT id, url, weight, version FROM backends WHERE upstream = ? AND id = ?",
    )
    .bind(upstream)
    .bind(id as i64)
    .fetch_optional(&mut *conn)
    .await?;
    let (id, url, weight, version) =
        row.ok_or_else(|| not_found("backend", format!("{upstream}/{id}")))?;
    Ok(BackendView {
        id: id as u64,
        url,
        weight: weight as u32,
        version: version as u64,
    })
}

/// The whole config as `conn` sees it (inside a transaction: including its
/// uncommitted changes), in a stable order.
pub async fn load_config(conn: &mut SqliteConnection) -> Result<GatewayConfig, StoreError> {
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
    let rows: Vec<(String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT name, strategy, connect_timeout_ms, response_header_timeout_ms, policy FROM upstreams ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let upstreams = rows
        .into_iter()
        .map(|(name, strategy, connect, header, policy)| {
            let policy = parse_policy(&policy)?;
            Ok(UpstreamConfig {
                strategy: parse_strategy(&strategy)?,
                backends: backends.remove(&name).unwrap_or_default(),
                timeouts: Timeouts {
                    connect_ms: connect as u64,
                    response_header_ms: header as u64,
                },
                hash_on: policy.hash_on,
                health_check: policy.health_check,
                outlier_detection: policy.outlier_detection,
                retries: policy.retries,
                fail_open: policy.fail_open,
                name,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let rows: Vec<RouteRow> = sqlx::query_as(ROUTE_SELECT_ALL)
        .fetch_all(&mut *conn)
        .await?;
    let routes = rows
        .into_iter()
        .map(|row| {
            let v = route_view(row)?;
            Ok(RouteConfig {
                name: v.name,
                path: v.path,
                methods: v.methods,
                hosts: v.hosts,
                strip_prefix: v.strip_prefix,
                upstream: v.upstream,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(GatewayConfig {
        version,
        routes,
        upstreams,
    })
}

/// The whole config as one document, in a stable order (names; backends by id).
pub(super) async fn export(conn: &mut SqliteConnection) -> Result<ConfigView, StoreError> {
    let version = config_version(conn).await?;
    let names: Vec<(String,)> = sqlx::query_as("SELECT name FROM upstreams ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    let mut upstreams = Vec::with_capacity(names.len());
    for (name,) in names {
        let u = get_upstream(conn, &name).await?;
        upstreams.push(ConfigUpstreamView {
            name: u.name,
            strategy: u.strategy,
            backends: u
                .backends
                .into_iter()
                .map(|b| ConfigBackendView {
                    url: b.url,
                    weight: b.weight,
                })
                .collect(),
            timeouts: u.timeouts,
            policy: u.policy,
            owner_route: u.owner_route,
        });
    }
    let rows: Vec<RouteRow> = sqlx::query_as(ROUTE_SELECT_ALL)
        .fetch_all(&mut *conn)
        .await?;
    let routes = rows
        .into_iter()
        .map(|row| {
            let v = route_view(row)?;
            Ok(ConfigRouteView {
                name: v.name,
                path: v.path,
                methods: v.methods,
                hosts: v.hosts,
                strip_prefix: v.strip_prefix,
                upstream: v.upstream,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(ConfigView {
        version,
        upstreams,
        routes,
    })
}
