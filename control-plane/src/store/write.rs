//! Applying [`Change`]s inside a write transaction.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use data_plane::config::UpstreamPolicy;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use super::read::{
    ROUTE_COLUMNS, RouteRow, all_rows, get_backend, get_route, get_upstream, json_list,
};
use super::{Applied, Change, StoreError, Touched, is_sqlite};
use crate::model::{Config, ConfigUpstream, NewBackend, Route, RouteTarget, Upstream};

fn check_expect(expect: Option<u64>, current: u64) -> Result<(), StoreError> {
    match expect {
        Some(e) if e != current => Err(StoreError::PreconditionFailed { current }),
        _ => Ok(()),
    }
}

/// Apply one change at config version `version` inside a write transaction.
pub async fn apply(
    conn: &mut AnyConnection,
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
            insert_route(conn, &route, upstream.as_deref(), version).await?;
            Ok(Applied::Route(get_route(conn, &route.name).await?))
        }
        Change::ReplaceRoute { route, expect } => {
            let old = get_route(conn, &route.name).await?;
            check_expect(expect, old.version)?;
            let upstream = resolve_target(conn, &route, version).await?;
            update_route_row(conn, &route_row(&route, upstream.as_deref(), version)).await?;
            if let Some(before) = &old.route.upstream
                && upstream.as_ref() != Some(before)
            {
                release_owned(conn, before, &route.name).await?;
            }
            Ok(Applied::Route(get_route(conn, &route.name).await?))
        }
        Change::DeleteRoute { name, expect } => {
            let old = get_route(conn, &name).await?;
            check_expect(expect, old.version)?;
            sqlx::query("DELETE FROM routes WHERE name = $1")
                .bind(&name)
                .execute(&mut *conn)
                .await?;
            if let Some(before) = &old.route.upstream {
                release_owned(conn, before, &name).await?;
            }
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
            update_upstream(conn, &u, version).await?;
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
            sqlx::query("DELETE FROM upstreams WHERE name = $1")
                .bind(&name)
                .execute(&mut *conn)
                .await?;
            Ok(Applied::Deleted)
        }
        Change::AddBackend {
            upstream,
            backend,
            expect,
        } => {
            let old = get_upstream(conn, &upstream).await?;
            check_expect(expect, old.version)?;
            ensure_url_free(conn, &upstream, &backend.url, None).await?;
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO backends (upstream, url, weight, version) VALUES ($1, $2, $3, $4) RETURNING id",
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
            sqlx::query("UPDATE backends SET url = $1, weight = $2, version = $3 WHERE id = $4")
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
            sqlx::query("DELETE FROM backends WHERE id = $1")
                .bind(id as i64)
                .execute(&mut *conn)
                .await?;
            touch_upstream(conn, &upstream, version).await?;
            Ok(Applied::Deleted)
        }
        Change::ReplaceConfig { config, expect } => {
            // `version` was bumped in this transaction: the client saw the one before.
            check_expect(expect, version - 1)?;
            match replace_config(conn, config, version).await? {
                Some(written) => Ok(Applied::Replaced(written)),
                None => Ok(Applied::Unchanged),
            }
        }
    }
}

/// How many stored routes a whole config written may remove or change for
/// them to be written one statement each; past it, every route is deleted
/// and inserted again in batches ([`insert_rows`]), which is fewer round
/// trips.
pub(crate) const ROUTE_EDITS: usize = 1024;

/// Make the stored config exactly `config`: routes, upstreams and
/// backends as stored are read once, compared in memory with what the
/// document's would be as rows, and only what differs is written (a
/// statement per row is a round trip, to SQLite's worker thread or to
/// PostgreSQL; one per row made a document of 100,000 routes take
/// seconds, and inserting them all again half a second). Upstreams that
/// stay keep their backends' ids (matched by URL); every route and
/// upstream gets `version`, changed or not (the version of a resource is
/// that of the last change written over it).
///
/// Returns the routes and upstreams whose rows it wrote (added, changed or
/// removed; an upstream's rows are its own and its backends'), or `None`,
/// having written nothing, when every row is as stored already (versions
/// aside): the same document synced again. That is decided in the store's
/// own terms, the columns as written, so no second rule of what "the same"
/// means can drift from the writes; a difference of form only (a column
/// written by an older release) reads as a change, and the caller then
/// finds that the export of those names did not change.
async fn replace_config(
    conn: &mut AnyConnection,
    config: Config,
    version: u64,
) -> Result<Option<Touched>, StoreError> {
    let columns = "name, strategy, connect_timeout_ms, response_header_timeout_ms, \
        body_idle_timeout_ms, policy, owner_route";
    let stored: HashMap<String, UpstreamColumns> = all_rows(conn, "upstreams", columns, "name")
        .await?
        .into_iter()
        .map(
            |(name, strategy, connect, header, idle, policy, owner): StoredUpstream| {
                (name, (strategy, connect, header, idle, policy, owner))
            },
        )
        .collect();
    let mut stored_backends: HashMap<String, Vec<StoredBackend>> = HashMap::new();
    let rows: Vec<(i64, String, String, i64)> =
        all_rows(conn, "backends", "id, upstream, url, weight", "id").await?;
    for (id, upstream, url, weight) in rows {
        stored_backends
            .entry(upstream)
            .or_default()
            .push((id, url, weight));
    }
    let mut held: Vec<RouteRow> = all_rows(conn, "routes", ROUTE_COLUMNS, "name").await?;
    let mut routes: Vec<RouteRow> = config
        .routes
        .iter()
        .map(|route| match &route.target {
            Some(RouteTarget::Upstream(name)) => route_row(route, Some(name), version),
            None => route_row(route, None, version),
            Some(RouteTarget::Inline { .. }) => {
                unreachable!("a validated config document has no inline backends")
            }
        })
        .collect();
    let diff = RouteDiff::of(&mut held, &mut routes);
    let upstreams = UpstreamDiff::of(&config, &stored, &stored_backends);
    let written = Touched {
        routes: diff.names(),
        upstreams: upstreams.names(),
    };
    if written.routes.is_empty() && written.upstreams.is_empty() {
        return Ok(None);
    }
    let one_by_one = diff.removed.len() + diff.changed.len() <= ROUTE_EDITS;
    if one_by_one {
        for name in &diff.removed {
            sqlx::query("DELETE FROM routes WHERE name = $1")
                .bind(*name)
                .execute(&mut *conn)
                .await?;
        }
    } else {
        sqlx::query("DELETE FROM routes")
            .execute(&mut *conn)
            .await?;
    }
    let mut new_upstreams = Vec::new();
    let mut new_backends = Vec::new();
    for u in &upstreams.written {
        let up = &u.upstream;
        let owner = u.owner_route.as_deref();
        let Some(columns) = stored.get(&up.name) else {
            new_upstreams.push((up, owner));
            new_backends.extend(up.backends.iter().map(|b| (up.name.as_str(), b)));
            continue;
        };
        if *columns != upstream_columns(up, owner) {
            update_upstream(conn, up, version).await?;
            sqlx::query("UPDATE upstreams SET owner_route = $1 WHERE name = $2")
                .bind(owner)
                .bind(&up.name)
                .execute(&mut *conn)
                .await?;
        }
        let held = stored_backends.remove(&up.name).unwrap_or_default();
        let added = reconcile_backends(conn, &held, &up.backends, version).await?;
        new_backends.extend(added.into_iter().map(|b| (up.name.as_str(), b)));
    }
    insert_upstreams(conn, &new_upstreams, version).await?;
    insert_backends(conn, &new_backends, version).await?;
    // Routes before the upstreams that go: a route moved off one (or
    // removed) no longer holds it (ON DELETE RESTRICT), and a route moved
    // onto a new one finds it.
    if one_by_one {
        for row in &diff.changed {
            update_route_row(conn, row).await?;
        }
        insert_route_rows(conn, &diff.added).await?;
        // The routes kept as they were are written too (their version).
        if diff.kept > 0 {
            sqlx::query("UPDATE routes SET version = $1")
                .bind(version as i64)
                .execute(&mut *conn)
                .await?;
        }
    } else {
        insert_route_rows(conn, &routes.iter().collect::<Vec<_>>()).await?;
    }
    for name in &upstreams.removed {
        // Its backends go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM upstreams WHERE name = $1")
            .bind(*name)
            .execute(&mut *conn)
            .await?;
    }
    // Every upstream left is one of the document's: all are written.
    sqlx::query("UPDATE upstreams SET version = $1")
        .bind(version as i64)
        .execute(&mut *conn)
        .await?;
    Ok(Some(written))
}

/// How the stored routes differ from a document's (each list in name
/// order), versions aside.
struct RouteDiff<'a> {
    /// Stored, not in the document.
    removed: Vec<&'a str>,
    /// In both, with some other column.
    changed: Vec<&'a RouteRow>,
    /// In the document only.
    added: Vec<&'a RouteRow>,
    /// How many are in both, the same.
    kept: usize,
}

impl<'a> RouteDiff<'a> {
    /// Sorts both lists by name (bytewise, as Rust compares strings) and
    /// walks them side by side.
    fn of(held: &'a mut [RouteRow], wanted: &'a mut [RouteRow]) -> RouteDiff<'a> {
        held.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        wanted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut diff = RouteDiff {
            removed: Vec::new(),
            changed: Vec::new(),
            added: Vec::new(),
            kept: 0,
        };
        let (held, wanted): (&'a [RouteRow], &'a [RouteRow]) = (held, wanted);
        let (mut i, mut j) = (0, 0);
        while i < held.len() || j < wanted.len() {
            match (held.get(i), wanted.get(j)) {
                (Some(h), Some(w)) if h.name == w.name => {
                    if route_columns(h) == route_columns(w) {
                        diff.kept += 1;
                    } else {
                        diff.changed.push(w);
                    }
                    i += 1;
                    j += 1;
                }
                (Some(h), Some(w)) if h.name < w.name => {
                    diff.removed.push(&h.name);
                    i += 1;
                }
                (Some(h), None) => {
                    diff.removed.push(&h.name);
                    i += 1;
                }
                (_, Some(w)) => {
                    diff.added.push(w);
                    j += 1;
                }
                (None, None) => unreachable!("one of the two lists has rows left"),
            }
        }
        diff
    }

    /// Every route name in the diff, each once, in name order.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .removed
            .iter()
            .map(|name| name.to_string())
            .chain(
                self.changed
                    .iter()
                    .chain(&self.added)
                    .map(|row| row.name.clone()),
            )
            .collect();
        names.sort_unstable();
        names
    }
}

/// How the stored upstreams differ from a document's, backends included.
struct UpstreamDiff<'a> {
    /// The document's upstreams whose rows writing them would change:
    /// not stored yet, or with columns other than `stored`, or with
    /// backends other than `stored_backends` in URLs or weights.
    written: Vec<&'a ConfigUpstream>,
    /// Stored, not in the document.
    removed: Vec<&'a str>,
}

impl<'a> UpstreamDiff<'a> {
    fn of(
        config: &'a Config,
        stored: &'a HashMap<String, UpstreamColumns>,
        stored_backends: &HashMap<String, Vec<StoredBackend>>,
    ) -> UpstreamDiff<'a> {
        let wanted: HashSet<&str> = config
            .upstreams
            .iter()
            .map(|u| u.upstream.name.as_str())
            .collect();
        UpstreamDiff {
            written: config
                .upstreams
                .iter()
                .filter(|u| {
                    let up = &u.upstream;
                    let held = stored_backends.get(&up.name).map_or(&[][..], Vec::as_slice);
                    stored.get(&up.name) != Some(&upstream_columns(up, u.owner_route.as_deref()))
                        || !same_backends(held, &up.backends)
                })
                .collect(),
            removed: stored
                .keys()
                .map(String::as_str)
                .filter(|name| !wanted.contains(name))
                .collect(),
        }
    }

    /// Every upstream name in the diff, each once, in name order.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .written
            .iter()
            .map(|u| u.upstream.name.clone())
            .chain(self.removed.iter().map(|name| name.to_string()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// A route row's columns but its version (every field named, so a column
/// added to [`RouteRow`] is compared too).
#[allow(clippy::type_complexity)]
fn route_columns(
    row: &RouteRow,
) -> (
    &str,
    &str,
    &str,
    &str,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<&str>,
    &str,
) {
    let RouteRow {
        name,
        path,
        methods,
        hosts,
        strip_prefix,
        preserve_host,
        max_body_bytes,
        timeout_ms,
        upstream,
        policies,
        version: _,
    } = row;
    (
        name,
        path,
        methods,
        hosts,
        *strip_prefix,
        *preserve_host,
        *max_body_bytes,
        *timeout_ms,
        upstream.as_deref(),
        policies,
    )
}

/// Whether backends stored as `held` are `wanted`: the same URLs, each
/// with the same weight ([`reconcile_backends`] would change nothing).
fn same_backends(held: &[StoredBackend], wanted: &[NewBackend]) -> bool {
    let held: HashMap<&str, i64> = held.iter().map(|(_, url, w)| (url.as_str(), *w)).collect();
    let wanted: HashMap<&str, i64> = wanted
        .iter()
        .map(|b| (b.url.as_str(), b.weight as i64))
        .collect();
    held == wanted
}

/// An upstream's columns as [`insert_upstreams`] writes them, but its name
/// and version: strategy, the three timeouts, policy, owner route.
type UpstreamColumns = (String, i64, i64, i64, String, Option<String>);
/// An upstream's name and [`UpstreamColumns`], as one row.
type StoredUpstream = (String, String, i64, i64, i64, String, Option<String>);

fn upstream_columns(u: &Upstream, owner: Option<&str>) -> UpstreamColumns {
    (
        u.strategy.as_str().to_string(),
        u.policy.timeouts.connect_ms as i64,
        u.policy.timeouts.response_header_ms as i64,
        u.policy.timeouts.body_idle_ms as i64,
        policy_json(&u.policy),
        owner.map(str::to_string),
    )
}

/// A stored backend: id, URL, weight.
type StoredBackend = (i64, String, i64);

/// The most bind parameters one statement of [`insert_rows`] carries:
/// under SQLite's limit (32,766) and PostgreSQL's (65,535).
const MAX_PARAMS: usize = 30_000;

/// Insert `rows` into `table` with as few statements as [`MAX_PARAMS`]
/// allows, in the order given (so ids are given in that order). `bind`
/// binds one row's values in the order of `columns` (comma-separated).
async fn insert_rows<T>(
    conn: &mut AnyConnection,
    table: &str,
    columns: &str,
    rows: &[T],
    bind: impl for<'q> Fn(Query<'q, Any, AnyArguments<'q>>, &'q T) -> Query<'q, Any, AnyArguments<'q>>,
) -> Result<(), StoreError> {
    // PostgreSQL's parameters are numbered (`$1`). SQLite takes those too,
    // but sqlx then looks each one up by name, which walks the statement's
    // list of names: quadratic in its parameters (minutes at 100,000
    // routes). Its anonymous `?` are bound in order.
    let anonymous = is_sqlite(conn);
    let width = columns.split(',').count();
    for chunk in rows.chunks(MAX_PARAMS / width) {
        let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
        let mut n = 0;
        for row in 0..chunk.len() {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..width {
                n += 1;
                sql.push_str(if column == 0 { "" } else { ", " });
                if anonymous {
                    sql.push('?');
                } else {
                    write!(sql, "${n}").expect("writing to a String");
                }
            }
            sql.push(')');
        }
        // Each chunk's text is used once: not kept among the prepared
        // statements.
        let mut query = sqlx::query(&sql).persistent(false);
        for row in chunk {
            query = bind(query, row);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The row [`insert_route_rows`] writes for `route`, using `upstream`
/// (`None`: it redirects), at `version`.
fn route_row(route: &Route, upstream: Option<&str>, version: u64) -> RouteRow {
    RouteRow {
        name: route.name.clone(),
        path: route.path.clone(),
        methods: json_list(&route.methods),
        hosts: json_list(&route.hosts),
        strip_prefix: route.strip_prefix as i64,
        preserve_host: route.preserve_host as i64,
        max_body_bytes: route.max_body_bytes.map(|n| n as i64),
        timeout_ms: route.timeout_ms.map(|n| n as i64),
        upstream: upstream.map(str::to_string),
        policies: policies_json(route),
        version: version as i64,
    }
}

/// Insert route rows ([`route_row`]).
async fn insert_route_rows(conn: &mut AnyConnection, rows: &[&RouteRow]) -> Result<(), StoreError> {
    insert_rows(conn, "routes", ROUTE_COLUMNS, rows, |q, row| {
        bind_route_settings(q.bind(&row.name), row)
    })
    .await
}

/// Write a stored route's row ([`route_row`]) over it.
async fn update_route_row(conn: &mut AnyConnection, row: &RouteRow) -> Result<(), StoreError> {
    let update = sqlx::query(
        "UPDATE routes SET path = $1, methods = $2, hosts = $3, strip_prefix = $4, preserve_host = $5,
         max_body_bytes = $6, timeout_ms = $7, upstream = $8, policies = $9, version = $10
         WHERE name = $11",
    );
    bind_route_settings(update, row)
        .bind(&row.name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Bind a route row's columns but its name, from `path` to `version`, in
/// the order of [`ROUTE_COLUMNS`] (after the name: [`insert_route_rows`])
/// and of the `UPDATE` in [`update_route_row`].
fn bind_route_settings<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    row: &'q RouteRow,
) -> Query<'q, Any, AnyArguments<'q>> {
    q.bind(&row.path)
        .bind(&row.methods)
        .bind(&row.hosts)
        .bind(row.strip_prefix)
        .bind(row.preserve_host)
        .bind(row.max_body_bytes)
        .bind(row.timeout_ms)
        .bind(&row.upstream)
        .bind(&row.policies)
        .bind(row.version)
}

/// Insert upstreams (not their backends), each with its owner route.
async fn insert_upstreams(
    conn: &mut AnyConnection,
    upstreams: &[(&Upstream, Option<&str>)],
    version: u64,
) -> Result<(), StoreError> {
    const COLUMNS: &str = "name, strategy, connect_timeout_ms, response_header_timeout_ms, \
        body_idle_timeout_ms, policy, owner_route, version";
    insert_rows(conn, "upstreams", COLUMNS, upstreams, |q, (u, owner)| {
        q.bind(&u.name)
            .bind(u.strategy.as_str())
            .bind(u.policy.timeouts.connect_ms as i64)
            .bind(u.policy.timeouts.response_header_ms as i64)
            .bind(u.policy.timeouts.body_idle_ms as i64)
            .bind(policy_json(&u.policy))
            .bind(*owner)
            .bind(version as i64)
    })
    .await
}

/// Insert backends, each with the upstream it belongs to.
async fn insert_backends(
    conn: &mut AnyConnection,
    backends: &[(&str, &NewBackend)],
    version: u64,
) -> Result<(), StoreError> {
    const COLUMNS: &str = "upstream, url, weight, version";
    insert_rows(conn, "backends", COLUMNS, backends, |q, (upstream, b)| {
        q.bind(*upstream)
            .bind(&b.url)
            .bind(b.weight as i64)
            .bind(version as i64)
    })
    .await
}

async fn insert_route(
    conn: &mut AnyConnection,
    route: &Route,
    upstream: Option<&str>,
    version: u64,
) -> Result<(), StoreError> {
    insert_route_rows(conn, &[&route_row(route, upstream, version)]).await
}

/// The `policies` column: the JSON of the route's policies as the API
/// shows them (auth tokens as hashes; `{}` for none).
fn policies_json(route: &Route) -> String {
    serde_json::to_string(&route.policies).expect("route policies serialise")
}

/// The upstream a route will use (`None`: a route that only redirects),
/// creating or refreshing its own upstream when the route gives backends
/// inline.
async fn resolve_target(
    conn: &mut AnyConnection,
    route: &Route,
    version: u64,
) -> Result<Option<String>, StoreError> {
    let Some(target) = &route.target else {
        return Ok(None);
    };
    match target {
        RouteTarget::Upstream(name) => {
            if !upstream_exists(conn, name).await? {
                return Err(StoreError::UnknownUpstream(name.clone()));
            }
            Ok(Some(name.clone()))
        }
        RouteTarget::Inline { strategy, backends } => {
            let owner: Option<(Option<String>,)> =
                sqlx::query_as("SELECT owner_route FROM upstreams WHERE name = $1")
                    .bind(&route.name)
                    .fetch_optional(&mut *conn)
                    .await?;
            match owner {
                None => {
                    let u = Upstream {
                        name: route.name.clone(),
                        strategy: *strategy,
                        backends: backends.clone(),
                        policy: UpstreamPolicy::default(),
                    };
                    insert_upstream(conn, &u, Some(&route.name), version).await?;
                }
                Some((Some(owner),)) if owner == route.name => {
                    // The route sets strategy and backends; settings made on
                    // the upstream itself (timeouts, policy) are kept, except
                    // `hash_on`, which only a consistent_hash upstream has (an
                    // inline strategy never is one).
                    let old = get_upstream(conn, &route.name).await?.upstream;
                    let u = Upstream {
                        name: route.name.clone(),
                        strategy: *strategy,
                        backends: backends.clone(),
                        policy: UpstreamPolicy {
                            hash_on: None,
                            ..old.policy
                        },
                    };
                    update_upstream(conn, &u, version).await?;
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
            Ok(Some(route.name.clone()))
        }
    }
}

/// After route `route` stopped using `upstream`: if the route owned it,
/// delete it, or just disown it when other routes still use it.
async fn release_owned(
    conn: &mut AnyConnection,
    upstream: &str,
    route: &str,
) -> Result<(), StoreError> {
    let owned: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM upstreams WHERE name = $1 AND owner_route = $2")
            .bind(upstream)
            .bind(route)
            .fetch_optional(&mut *conn)
            .await?;
    if owned.is_none() {
        return Ok(());
    }
    if routes_using(conn, upstream).await?.is_empty() {
        sqlx::query("DELETE FROM upstreams WHERE name = $1")
            .bind(upstream)
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query("UPDATE upstreams SET owner_route = NULL WHERE name = $1")
            .bind(upstream)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn insert_upstream(
    conn: &mut AnyConnection,
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
    insert_upstreams(conn, &[(u, owner)], version).await?;
    sync_backends(conn, &u.name, &u.backends, version).await
}

/// The `policy` column: the upstream's policy but its timeouts, which
/// have columns of their own (so the column reads as it always has).
fn policy_json(policy: &UpstreamPolicy) -> String {
    let mut json = serde_json::to_value(policy).expect("a policy serialises");
    if let Some(members) = json.as_object_mut() {
        members.remove("timeouts");
    }
    json.to_string()
}

/// Write an upstream's settings (not its backends).
async fn update_upstream(
    conn: &mut AnyConnection,
    u: &Upstream,
    version: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE upstreams SET strategy = $1, connect_timeout_ms = $2, response_header_timeout_ms = $3,
         body_idle_timeout_ms = $4, policy = $5, version = $6 WHERE name = $7",
    )
    .bind(u.strategy.as_str())
    .bind(u.policy.timeouts.connect_ms as i64)
    .bind(u.policy.timeouts.response_header_ms as i64)
    .bind(u.policy.timeouts.body_idle_ms as i64)
    .bind(policy_json(&u.policy))
    .bind(version as i64)
    .bind(&u.name)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn touch_upstream(
    conn: &mut AnyConnection,
    name: &str,
    version: u64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE upstreams SET version = $1 WHERE name = $2")
        .bind(version as i64)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Make the backends of `upstream` exactly `wanted`: backends whose URL
/// stays keep their id (and version, unless their weight changed).
async fn sync_backends(
    conn: &mut AnyConnection,
    upstream: &str,
    wanted: &[NewBackend],
    version: u64,
) -> Result<(), StoreError> {
    let held: Vec<StoredBackend> =
        sqlx::query_as("SELECT id, url, weight FROM backends WHERE upstream = $1 ORDER BY id")
            .bind(upstream)
            .fetch_all(&mut *conn)
            .await?;
    let added = reconcile_backends(conn, &held, wanted, version).await?;
    let rows: Vec<(&str, &NewBackend)> = added.into_iter().map(|b| (upstream, b)).collect();
    insert_backends(conn, &rows, version).await
}

/// Bring an upstream's backends from `held` (as stored) to `wanted`,
/// matched by URL: delete the ones no longer wanted, change weights.
/// Returns the wanted backends not stored yet, in their order, for the
/// caller to insert.
async fn reconcile_backends<'w>(
    conn: &mut AnyConnection,
    held: &[StoredBackend],
    wanted: &'w [NewBackend],
    version: u64,
) -> Result<Vec<&'w NewBackend>, StoreError> {
    let wanted_urls: HashSet<&str> = wanted.iter().map(|w| w.url.as_str()).collect();
    for (id, url, _) in held {
        if !wanted_urls.contains(url.as_str()) {
            sqlx::query("DELETE FROM backends WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    let held: HashMap<&str, (i64, i64)> = held
        .iter()
        .map(|(id, url, weight)| (url.as_str(), (*id, *weight)))
        .collect();
    let mut added = Vec::new();
    for w in wanted {
        match held.get(w.url.as_str()) {
            Some((id, weight)) if *weight != w.weight as i64 => {
                sqlx::query("UPDATE backends SET weight = $1, version = $2 WHERE id = $3")
                    .bind(w.weight as i64)
                    .bind(version as i64)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            Some(_) => {}
            None => added.push(w),
        }
    }
    Ok(added)
}

async fn ensure_url_free(
    conn: &mut AnyConnection,
    upstream: &str,
    url: &str,
    except: Option<u64>,
) -> Result<(), StoreError> {
    let other: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM backends WHERE upstream = $1 AND url = $2 AND id != $3")
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

async fn route_exists(conn: &mut AnyConnection, name: &str) -> Result<bool, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM routes WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

async fn upstream_exists(conn: &mut AnyConnection, name: &str) -> Result<bool, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM upstreams WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

async fn routes_using(conn: &mut AnyConnection, upstream: &str) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM routes WHERE upstream = $1 ORDER BY name")
            .bind(upstream)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}
