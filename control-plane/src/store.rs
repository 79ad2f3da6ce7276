//! The SQLite config store: every SQL statement of Switchyard lives here.
//!
//! The database runs in WAL mode with foreign keys on and
//! `synchronous = FULL`: a write acknowledged to a client has been fsynced,
//! so it survives `kill -9` and power loss alike. Writers take
//! `BEGIN IMMEDIATE` transactions with a busy timeout, so concurrent
//! writers queue instead of failing. Every mutation bumps the single
//! global config version inside its transaction ([`Store::apply`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use data_plane::config::{
    BackendConfig, GatewayConfig, RouteConfig, Strategy, Timeouts, UpstreamConfig,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::model::{Config, NewBackend, Route, RouteTarget, Upstream};
use crate::view::{
    BackendView, ConfigBackendView, ConfigRouteView, ConfigUpstreamView, ConfigView, RouteView,
    UpstreamView,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{detail}")]
    Duplicate {
        pointer: &'static str,
        detail: String,
    },
    #[error("upstream {name:?} is used by routes: {}", routes.join(", "))]
    InUse { name: String, routes: Vec<String> },
    #[error("upstream {0:?} does not exist")]
    UnknownUpstream(String),
    #[error("the resource has changed (its version is now {current}); re-read it and retry")]
    PreconditionFailed { current: u64 },
    #[error("stored config is unreadable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// One typed change to the config (Sōzu-style). Each carries the version
/// the client expects the resource to have (`If-Match`), if any.
#[derive(Debug, Clone)]
pub enum Change {
    CreateRoute(Route),
    ReplaceRoute {
        route: Route,
        expect: Option<u64>,
    },
    DeleteRoute {
        name: String,
        expect: Option<u64>,
    },
    CreateUpstream(Upstream),
    ReplaceUpstream {
        upstream: Upstream,
        expect: Option<u64>,
    },
    DeleteUpstream {
        name: String,
        expect: Option<u64>,
    },
    AddBackend {
        upstream: String,
        backend: NewBackend,
    },
    UpdateBackend {
        upstream: String,
        id: u64,
        backend: NewBackend,
        expect: Option<u64>,
    },
    RemoveBackend {
        upstream: String,
        id: u64,
        expect: Option<u64>,
    },
    /// Replace the whole config; `expect` is the global config version.
    ReplaceConfig {
        config: Config,
        expect: Option<u64>,
    },
}

/// What a change produced: the resource as it now is, or nothing (delete).
#[derive(Debug, Clone)]
pub enum Applied {
    Route(RouteView),
    Upstream(UpstreamView),
    Backend(BackendView),
    Config(ConfigView),
    Deleted,
}

/// Handle to the config database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

type Tx = Transaction<'static, Sqlite>;

fn check_expect(expect: Option<u64>, current: u64) -> Result<(), StoreError> {
    match expect {
        Some(e) if e != current => Err(StoreError::PreconditionFailed { current }),
        _ => Ok(()),
    }
}

fn not_found(kind: &'static str, name: impl Into<String>) -> StoreError {
    StoreError::NotFound {
        kind,
        name: name.into(),
    }
}

impl Store {
    /// Open (creating if missing) and migrate the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Start a write transaction (`BEGIN IMMEDIATE`: takes the write lock
    /// now, so a concurrent writer waits on the busy timeout).
    pub async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The whole config as it is committed now.
    pub async fn load(&self) -> Result<GatewayConfig, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_config(&mut conn).await
    }

    pub async fn config_version(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        config_version(&mut conn).await
    }

    pub async fn list_routes(&self) -> Result<(Vec<RouteView>, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let version = config_version(&mut tx).await?;
        let rows: Vec<RouteRow> = sqlx::query_as(ROUTE_SELECT_ALL).fetch_all(&mut *tx).await?;
        let views = rows.into_iter().map(route_view).collect::<Result<_, _>>()?;
        Ok((views, version))
    }

    pub async fn route(&self, name: &str) -> Result<RouteView, StoreError> {
        let mut conn = self.pool.acquire().await?;
        get_route(&mut conn, name).await
    }

    pub async fn list_upstreams(&self) -> Result<(Vec<UpstreamView>, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let version = config_version(&mut tx).await?;
        let names: Vec<(String,)> = sqlx::query_as("SELECT name FROM upstreams ORDER BY name")
            .fetch_all(&mut *tx)
            .await?;
        let mut views = Vec::with_capacity(names.len());
        for (name,) in names {
            views.push(get_upstream(&mut tx, &name).await?);
        }
        Ok((views, version))
    }

    pub async fn upstream(&self, name: &str) -> Result<UpstreamView, StoreError> {
        let mut conn = self.pool.acquire().await?;
        get_upstream(&mut conn, name).await
    }

    pub async fn backend(&self, upstream: &str, id: u64) -> Result<BackendView, StoreError> {
        let mut conn = self.pool.acquire().await?;
        get_backend(&mut conn, upstream, id).await
    }

    /// The whole config as one importable document.
    pub async fn export(&self) -> Result<ConfigView, StoreError> {
        let mut tx = self.pool.begin().await?;
        export(&mut tx).await
    }
}

/// Bump the global config version inside `tx`; returns the new version.
pub async fn bump_version(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let (v,): (i64,) = sqlx::query_as(
        "UPDATE meta SET config_version = config_version + 1 WHERE id = 1 RETURNING config_version",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(v as u64)
}

pub async fn config_version(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let (v,): (i64,) = sqlx::query_as("SELECT config_version FROM meta WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok(v as u64)
}

/// Apply one change at config version `version` inside a write transaction.
pub async fn apply(
    conn: &mut SqliteConnection,
    change: Change,
    version: u64,
) -> Result<Applied, StoreError> {
    match change {
        Change::CreateRoute(route) => {
            if route_exists(conn, &route.name).await? {
                return Err(StoreError::Duplicate {
                    pointer: "/name",
                    detail: format!("route {:?} already exists", route.name),
                });
            }
            let upstream = resolve_target(conn, &route, version).await?;
            insert_route(conn, &route, &upstream, version).await?;
            Ok(Applied::Route(get_route(conn, &route.name).await?))
        }
        Change::ReplaceRoute { route, expect } => {
            let old = get_route(conn, &route.name).await?;
            check_expect(expect, old.version)?;
            let upstream = resolve_target(conn, &route, version).await?;
            sqlx::query(
                "UPDATE routes SET path = ?, methods = ?, hosts = ?, strip_prefix = ?, upstream = ?, version = ?
                 WHERE name = ?",
            )
            .bind(&route.path)
            .bind(json_list(&route.methods))
            .bind(json_list(&route.hosts))
            .bind(route.strip_prefix)
            .bind(&upstream)
            .bind(version as i64)
            .bind(&route.name)
            .execute(&mut *conn)
            .await?;
            if old.upstream != upstream {
                release_owned(conn, &old.upstream, &route.name).await?;
            }
            Ok(Applied::Route(get_route(conn, &route.name).await?))
        }
        Change::DeleteRoute { name, expect } => {
            let old = get_route(conn, &name).await?;
            check_expect(expect, old.version)?;
            sqlx::query("DELETE FROM routes WHERE name = ?")
                .bind(&name)
                .execute(&mut *conn)
                .await?;
            release_owned(conn, &old.upstream, &name).await?;
            Ok(Applied::Deleted)
        }
        Change::CreateUpstream(u) => {
            insert_upstream(conn, &u, None, version).await?;
            Ok(Applied::Upstream(get_upstream(conn, &u.name).await?))
        }
        Change::ReplaceUpstream {
            upstream: u,
            expect,
        } => {
            let old = get_upstream(conn, &u.name).await?;
            check_expect(expect, old.version)?;
            update_upstream(conn, &u.name, u.strategy, u.timeouts, version).await?;
            sync_backends(conn, &u.name, &u.backends, version).await?;
            Ok(Applied::Upstream(get_upstream(conn, &u.name).await?))
        }
        Change::DeleteUpstream { name, expect } => {
            let old = get_upstream(conn, &name).await?;
            check_expect(expect, old.version)?;
            let routes = routes_using(conn, &name).await?;
            if !routes.is_empty() {
                return Err(StoreError::InUse { name, routes });
            }
            sqlx::query("DELETE FROM upstreams WHERE name = ?")
                .bind(&name)
                .execute(&mut *conn)
                .await?;
            Ok(Applied::Deleted)
        }
        Change::AddBackend { upstream, backend } => {
            get_upstream(conn, &upstream).await?;
            ensure_url_free(conn, &upstream, &backend.url, None).await?;
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO backends (upstream, url, weight, version) VALUES (?, ?, ?, ?) RETURNING id",
            )
            .bind(&upstream)
            .bind(&backend.url)
            .bind(backend.weight as i64)
            .bind(version as i64)
            .fetch_one(&mut *conn)
            .await?;
            touch_upstream(conn, &upstream, version).await?;
            Ok(Applied::Backend(
                get_backend(conn, &upstream, id as u64).await?,
            ))
        }
        Change::UpdateBackend {
            upstream,
            id,
            backend,
            expect,
        } => {
            let old = get_backend(conn, &upstream, id).await?;
            check_expect(expect, old.version)?;
            ensure_url_free(conn, &upstream, &backend.url, Some(id)).await?;
            sqlx::query("UPDATE backends SET url = ?, weight = ?, version = ? WHERE id = ?")
                .bind(&backend.url)
                .bind(backend.weight as i64)
                .bind(version as i64)
                .bind(id as i64)
                .execute(&mut *conn)
                .await?;
            touch_upstream(conn, &upstream, version).await?;
            Ok(Applied::Backend(get_backend(conn, &upstream, id).await?))
        }
        Change::RemoveBackend {
            upstream,
            id,
            expect,
        } => {
            let old = get_backend(conn, &upstream, id).await?;
            check_expect(expect, old.version)?;
            sqlx::query("DELETE FROM backends WHERE id = ?")
                .bind(id as i64)
                .execute(&mut *conn)
                .await?;
            touch_upstream(conn, &upstream, version).await?;
            Ok(Applied::Deleted)
        }
        Change::ReplaceConfig { config, expect } => {
            // `version` was bumped in this transaction: the client saw the one before.
            check_expect(expect, version - 1)?;
            replace_config(conn, config, version).await?;
            Ok(Applied::Config(export(conn).await?))
        }
    }
}

/// Make the stored config exactly `config`. Upstreams that stay keep their
/// backends' ids (matched by URL); everything written gets `version`.
async fn replace_config(
    conn: &mut SqliteConnection,
    config: Config,
    version: u64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM routes")
        .execute(&mut *conn)
        .await?;
    let existing: Vec<(String,)> = sqlx::query_as("SELECT name FROM upstreams")
        .fetch_all(&mut *conn)
        .await?;
    for (name,) in existing {
        if !config.upstreams.iter().any(|u| u.upstream.name == name) {
            sqlx::query("DELETE FROM upstreams WHERE name = ?")
                .bind(&name)
                .execute(&mut *conn)
                .await?;
        }
    }
    for u in &config.upstreams {
        let up = &u.upstream;
        if upstream_exists(conn, &up.name).await? {
            update_upstream(conn, &up.name, up.strategy, up.timeouts, version).await?;
            sqlx::query("UPDATE upstreams SET owner_route = ? WHERE name = ?")
                .bind(u.owner_route.as_deref())
                .bind(&up.name)
                .execute(&mut *conn)
                .await?;
            sync_backends(conn, &up.name, &up.backends, version).await?;
        } else {
            insert_upstream(conn, up, u.owner_route.as_deref(), version).await?;
        }
    }
    for route in &config.routes {
        let RouteTarget::Upstream(upstream) = &route.target else {
            unreachable!("a validated config document has no inline backends");
        };
        insert_route(conn, route, upstream, version).await?;
    }
    Ok(())
}

async fn insert_route(
    conn: &mut SqliteConnection,
    route: &Route,
    upstream: &str,
    version: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO routes (name, path, methods, hosts, strip_prefix, upstream, version)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&route.name)
    .bind(&route.path)
    .bind(json_list(&route.methods))
    .bind(json_list(&route.hosts))
    .bind(route.strip_prefix)
    .bind(upstream)
    .bind(version as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The whole config as one document, in a stable order (names; backends by id).
async fn export(conn: &mut SqliteConnection) -> Result<ConfigView, StoreError> {
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

/// The upstream a route will use, creating or refreshing its own upstream
/// when the route gives backends inline.
async fn resolve_target(
    conn: &mut SqliteConnection,
    route: &Route,
    version: u64,
) -> Result<String, StoreError> {
    match &route.target {
        RouteTarget::Upstream(name) => {
            if !upstream_exists(conn, name).await? {
                return Err(StoreError::UnknownUpstream(name.clone()));
            }
            Ok(name.clone())
        }
        RouteTarget::Inline { strategy, backends } => {
            let owner: Option<(Option<String>,)> =
                sqlx::query_as("SELECT owner_route FROM upstreams WHERE name = ?")
                    .bind(&route.name)
                    .fetch_optional(&mut *conn)
                    .await?;
            match owner {
                None => {
                    let u = Upstream {
                        name: route.name.clone(),
                        strategy: *strategy,
                        backends: backends.clone(),
                        timeouts: Timeouts::default(),
                    };
                    insert_upstream(conn, &u, Some(&route.name), version).await?;
                }
                Some((Some(owner),)) if owner == route.name => {
                    let old = get_upstream(conn, &route.name).await?;
                    update_upstream(conn, &route.name, *strategy, old.timeouts, version).await?;
                    sync_backends(conn, &route.name, backends, version).await?;
                }
                Some(_) => {
                    return Err(StoreError::Duplicate {
                        pointer: "/backends",
                        detail: format!(
                            "an upstream named {:?} already exists; refer to it with \"upstream\" instead of inline backends",
                            route.name
                        ),
                    });
                }
            }
            Ok(route.name.clone())
        }
    }
}

/// After route `route` stopped using `upstream`: if the route owned it,
/// delete it, or just disown it when other routes still use it.
async fn release_owned(
    conn: &mut SqliteConnection,
    upstream: &str,
    route: &str,
) -> Result<(), StoreError> {
    let owned: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM upstreams WHERE name = ? AND owner_route = ?")
            .bind(upstream)
            .bind(route)
            .fetch_optional(&mut *conn)
            .await?;
    if owned.is_none() {
        return Ok(());
    }
    if routes_using(conn, upstream).await?.is_empty() {
        sqlx::query("DELETE FROM upstreams WHERE name = ?")
            .bind(upstream)
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query("UPDATE upstreams SET owner_route = NULL WHERE name = ?")
            .bind(upstream)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn insert_upstream(
    conn: &mut SqliteConnection,
    u: &Upstream,
    owner: Option<&str>,
    version: u64,
) -> Result<(), StoreError> {
    if upstream_exists(conn, &u.name).await? {
        return Err(StoreError::Duplicate {
            pointer: "/name",
            detail: format!("upstream {:?} already exists", u.name),
        });
    }
    sqlx::query(
        "INSERT INTO upstreams (name, strategy, connect_timeout_ms, response_header_timeout_ms, owner_route, version)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&u.name)
    .bind(u.strategy.as_str())
    .bind(u.timeouts.connect_ms as i64)
    .bind(u.timeouts.response_header_ms as i64)
    .bind(owner)
    .bind(version as i64)
    .execute(&mut *conn)
    .await?;
    sync_backends(conn, &u.name, &u.backends, version).await
}

async fn update_upstream(
    conn: &mut SqliteConnection,
    name: &str,
    strategy: Strategy,
    timeouts: Timeouts,
    version: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE upstreams SET strategy = ?, connect_timeout_ms = ?, response_header_timeout_ms = ?, version = ?
         WHERE name = ?",
    )
    .bind(strategy.as_str())
    .bind(timeouts.connect_ms as i64)
    .bind(timeouts.response_header_ms as i64)
    .bind(version as i64)
    .bind(name)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn touch_upstream(
    conn: &mut SqliteConnection,
    name: &str,
    version: u64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE upstreams SET version = ? WHERE name = ?")
        .bind(version as i64)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Make the backends of `upstream` exactly `wanted`: backends whose URL
/// stays keep their id (and version, unless their weight changed).
async fn sync_backends(
    conn: &mut SqliteConnection,
    upstream: &str,
    wanted: &[NewBackend],
    version: u64,
) -> Result<(), StoreError> {
    let existing: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT id, url, weight FROM backends WHERE upstream = ?")
            .bind(upstream)
            .fetch_all(&mut *conn)
            .await?;
    for (id, url, _) in &existing {
        if !wanted.iter().any(|w| &w.url == url) {
            sqlx::query("DELETE FROM backends WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    for w in wanted {
        match existing.iter().find(|(_, url, _)| url == &w.url) {
            Some((id, _, weight)) if *weight != w.weight as i64 => {
                sqlx::query("UPDATE backends SET weight = ?, version = ? WHERE id = ?")
                    .bind(w.weight as i64)
                    .bind(version as i64)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            Some(_) => {}
            None => {
                sqlx::query(
                    "INSERT INTO backends (upstream, url, weight, version) VALUES (?, ?, ?, ?)",
                )
                .bind(upstream)
                .bind(&w.url)
                .bind(w.weight as i64)
                .bind(version as i64)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}

async fn ensure_url_free(
    conn: &mut SqliteConnection,
    upstream: &str,
    url: &str,
    except: Option<u64>,
) -> Result<(), StoreError> {
    let other: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM backends WHERE upstream = ? AND url = ? AND id != ?")
            .bind(upstream)
            .bind(url)
            .bind(except.map_or(-1, |id| id as i64))
            .fetch_optional(&mut *conn)
            .await?;
    match other {
        Some((id,)) => Err(StoreError::Duplicate {
            pointer: "/url",
            detail: format!("upstream {upstream:?} already has backend {url} (id {id})"),
        }),
        None => Ok(()),
    }
}

async fn route_exists(conn: &mut SqliteConnection, name: &str) -> Result<bool, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM routes WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

async fn upstream_exists(conn: &mut SqliteConnection, name: &str) -> Result<bool, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM upstreams WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

async fn routes_using(
    conn: &mut SqliteConnection,
    upstream: &str,
) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM routes WHERE upstream = ? ORDER BY name")
            .bind(upstream)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

// ------------------------------------------------------------- reading ---

type RouteRow = (String, String, String, String, bool, String, i64);
const ROUTE_SELECT_ALL: &str =
    "SELECT name, path, methods, hosts, strip_prefix, upstream, version FROM routes ORDER BY name";

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("a list of strings serialises")
}

fn parse_list(raw: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(raw)
        .map_err(|e| StoreError::Corrupt(format!("bad JSON list {raw:?}: {e}")))
}

fn route_view(row: RouteRow) -> Result<RouteView, StoreError> {
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

async fn get_route(conn: &mut SqliteConnection, name: &str) -> Result<RouteView, StoreError> {
    let row: Option<RouteRow> = sqlx::query_as(
        "SELECT name, path, methods, hosts, strip_prefix, upstream, version FROM routes WHERE name = ?",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    route_view(row.ok_or_else(|| not_found("route", name))?)
}

fn parse_strategy(raw: &str) -> Result<Strategy, StoreError> {
    Strategy::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("unknown strategy {raw:?}")))
}

async fn get_upstream(conn: &mut SqliteConnection, name: &str) -> Result<UpstreamView, StoreError> {
    let row: Option<(String, String, i64, i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT name, strategy, connect_timeout_ms, response_header_timeout_ms, owner_route, version
         FROM upstreams WHERE name = ?",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let (name, strategy, connect, header, owner_route, version) =
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
        owner_route,
        version: version as u64,
        name,
    })
}

async fn get_backend(
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
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT name, strategy, connect_timeout_ms, response_header_timeout_ms FROM upstreams ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let upstreams = rows
        .into_iter()
        .map(|(name, strategy, connect, header)| {
            Ok(UpstreamConfig {
                strategy: parse_strategy(&strategy)?,
                backends: backends.remove(&name).unwrap_or_default(),
                timeouts: Timeouts {
                    connect_ms: connect as u64,
                    response_header_ms: header as u64,
                },
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
