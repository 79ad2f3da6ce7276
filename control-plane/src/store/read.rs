//! Reading rows into views, the whole config, and the export document.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use data_plane::config::{
    BackendConfig, GatewayConfig, RouteConfig, RoutePolicies, Strategy, Timeouts, UpstreamConfig,
    UpstreamPolicy,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::AnyConnection;

use super::revisions::Resources;
use super::{StoreError, Touched, config_version, is_sqlite, not_found};
use crate::model::{ConfigUpstream, NewBackend};
use crate::view::{BackendView, ConfigView, RouteView, UpstreamView};

/// A route's columns, in the order of [`ROUTE_COLUMNS`] (a whole-table
/// read decodes them from a JSON array in that order: [`all_rows`]). The
/// write side builds the same row for what it inserts, so a whole config
/// written can be compared with what is stored column for column.
#[derive(Debug, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub(super) struct RouteRow {
    pub name: String,
    pub path: String,
    pub methods: String,
    pub hosts: String,
    /// Booleans are integers (0 or 1) in both databases, so one query
    /// reads them from either.
    pub strip_prefix: i64,
    pub preserve_host: i64,
    pub max_body_bytes: Option<i64>,
    pub timeout_ms: Option<i64>,
    /// `None` for a route that only redirects.
    pub upstream: Option<String>,
    /// The JSON of the route's [`RoutePolicies`] (`{}`: none).
    pub policies: String,
    pub version: i64,
}
pub(super) const ROUTE_COLUMNS: &str = "name, path, methods, hosts, strip_prefix, preserve_host, \
     max_body_bytes, timeout_ms, upstream, policies, version";

pub(super) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("a list of strings serialises")
}

fn parse_list(raw: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(raw)
        .map_err(|e| StoreError::Corrupt(format!("bad JSON list {raw:?}: {e}")))
}

/// Every row of `table`, in `order`, each as a `T` decoded from the JSON
/// array of its `columns` (so `T` takes them in that order: a tuple, or a
/// struct whose fields are in that order).
///
/// The database builds the whole table as one JSON text
/// (`json_group_array` in SQLite, `json_agg` in PostgreSQL), which comes
/// back as one row. Why not `fetch_all`: sqlx runs each SQLite
/// connection on a worker thread and hands every row across to the
/// async task, one wake-up each (and, with the gateway on one core, a
/// context switch each). At 100,000 routes that hand-off was most of a
/// full read (about 0.5 s of `GET /admin/config`, three times in a
/// `PUT`, once at start-up).
///
/// One text holds a whole table, so a table is limited to what one text
/// value may be (about 1 GB in either database): no more than the
/// checkpoint of a revision, which already holds the whole config in one
/// text.
pub(super) async fn all_rows<T: DeserializeOwned>(
    conn: &mut AnyConnection,
    table: &str,
    columns: &str,
    order: &str,
) -> Result<Vec<T>, StoreError> {
    let (array, aggregate) = if is_sqlite(conn) {
        ("json_array", "json_group_array")
    } else {
        ("json_build_array", "json_agg")
    };
    // Over no rows SQLite's aggregate is `[]`, PostgreSQL's is NULL.
    let (json,): (Option<String>,) = sqlx::query_as(&format!(
        "SELECT CAST({aggregate}({array}({columns}) ORDER BY {order}) AS TEXT) FROM {table}"
    ))
    .fetch_one(&mut *conn)
    .await?;
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("bad row in table {table}: {e}")))
}

/// Every route, by name.
pub(super) async fn all_routes(conn: &mut AnyConnection) -> Result<Vec<RouteView>, StoreError> {
    let rows: Vec<RouteRow> = all_rows(conn, "routes", ROUTE_COLUMNS, "name").await?;
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

/// An upstream's columns, in the order of [`UPSTREAM_COLUMNS`].
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
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
    let rows: Vec<(String, i64, String, i64, i64)> = all_rows(
        conn,
        "backends",
        "upstream, id, url, weight, version",
        "upstream, id",
    )
    .await?;
    for (upstream, id, url, weight, version) in rows {
        backends
            .entry(upstream)
            .or_default()
            .push(backend_view((id, url, weight, version)));
    }
    let rows: Vec<UpstreamRow> = all_rows(conn, "upstreams", UPSTREAM_COLUMNS, "name").await?;
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
    let rows: Vec<(i64, String, String, i64)> = all_rows(
        conn,
        "backends",
        "id, upstream, url, weight",
        "upstream, id",
    )
    .await?;
    for (id, upstream, url, weight) in rows {
        backends.entry(upstream).or_default().push(BackendConfig {
            id: id as u64,
            url,
            weight: weight as u32,
        });
    }
    let rows: Vec<UpstreamRow> = all_rows(conn, "upstreams", UPSTREAM_COLUMNS, "name").await?;
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

/// The named routes and upstreams as the export has them (`None`: there
/// is none of that name), read one by one (a query per route, two per
/// upstream).
#[derive(Debug, Default)]
struct Entries {
    routes: BTreeMap<String, Option<RouteConfig>>,
    upstreams: BTreeMap<String, Option<ConfigUpstream>>,
}

async fn entries<'a>(
    conn: &mut AnyConnection,
    routes: impl IntoIterator<Item = &'a String>,
    upstreams: impl IntoIterator<Item = &'a String>,
) -> Result<Entries, StoreError> {
    let mut found = Entries::default();
    for name in routes {
        let route = match route_row(conn, name).await? {
            Some(row) => Some(route_view(row)?.route),
            None => None,
        };
        found.routes.insert(name.clone(), route);
    }
    for name in upstreams {
        let upstream = match get_upstream(conn, name).await {
            Ok(view) => Some(config_upstream(view)),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        found.upstreams.insert(name.clone(), upstream);
    }
    Ok(found)
}

/// The state of the named routes and upstreams in the export format
/// (`None`: there is none of that name).
pub async fn resources(
    conn: &mut AnyConnection,
    routes: &BTreeSet<String>,
    upstreams: &BTreeSet<String>,
) -> Result<Resources, StoreError> {
    fn values<T: Serialize>(items: BTreeMap<String, Option<T>>) -> BTreeMap<String, Option<Value>> {
        items
            .into_iter()
            .map(|(name, item)| {
                let value =
                    item.map(|i| serde_json::to_value(i).expect("a config item serialises"));
                (name, value)
            })
            .collect()
    }
    let found = entries(conn, routes, upstreams).await?;
    Ok(Resources {
        routes: values(found.routes),
        upstreams: values(found.upstreams),
    })
}

/// Up to this many routes and upstreams written, [`export_after`] reads
/// them alone; past it, the whole config.
const SPLICE_NAMES: usize = 256;

/// The export after a whole config was written, from `before` (the export
/// this transaction read before writing) and the routes and upstreams the
/// store `written`: every other entry is as it was, and those are read
/// again and put in their places (names sort bytewise in both databases,
/// as `str` does). At 100,000 routes the whole export is ~0.3 s; a few
/// entries, a few queries. Past [`SPLICE_NAMES`] the whole config is
/// exported again.
pub async fn export_after(
    conn: &mut AnyConnection,
    before: &ConfigView,
    written: &Touched,
) -> Result<ConfigView, StoreError> {
    if written.routes.len() + written.upstreams.len() > SPLICE_NAMES {
        return export(conn).await;
    }
    let version = config_version(conn).await?;
    let found = entries(conn, &written.routes, &written.upstreams).await?;
    Ok(ConfigView {
        version,
        upstreams: splice(&before.upstreams, |u| &u.upstream.name, found.upstreams),
        routes: splice(&before.routes, |r| &r.name, found.routes),
    })
}

/// `before` (sorted by name) with the entries of `fresh` in their places:
/// each name there replaces the entry of that name, or is added where it
/// sorts, or (`None`) removes it.
fn splice<T: Clone>(
    before: &[T],
    name: impl Fn(&T) -> &str,
    fresh: BTreeMap<String, Option<T>>,
) -> Vec<T> {
    debug_assert!(
        before.windows(2).all(|w| name(&w[0]) < name(&w[1])),
        "an export is sorted by name, each name once"
    );
    let mut out = Vec::with_capacity(before.len() + fresh.len());
    let mut fresh = fresh.into_iter().peekable();
    for item in before {
        let current = name(item);
        while let Some((_, new)) = fresh.next_if(|(n, _)| n.as_str() < current) {
            out.extend(new);
        }
        match fresh.next_if(|(n, _)| n == current) {
            Some((_, new)) => out.extend(new),
            None => out.push(item.clone()),
        }
    }
    out.extend(fresh.filter_map(|(_, new)| new));
    out
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor};

    use super::*;
    use crate::store::Store;

    /// One whole-table read both ways, [`all_rows`] and sqlx's rows: the
    /// `Debug` of each.
    async fn read_both_ways<T>(
        conn: &mut AnyConnection,
        table: &str,
        columns: &str,
        order: &str,
    ) -> (String, String)
    where
        T: DeserializeOwned + for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
        T: std::fmt::Debug + Send + Unpin,
    {
        let json: Vec<T> = all_rows(conn, table, columns, order).await.unwrap();
        let rows: Vec<T> =
            sqlx::query_as(&format!("SELECT {columns} FROM {table} ORDER BY {order}"))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        (format!("{json:?}"), format!("{rows:?}"))
    }

    /// Each whole-table read the store makes (here and in
    /// `write::replace_config`), both ways.
    async fn both_ways(conn: &mut AnyConnection) -> Vec<(String, String)> {
        type Backend = (String, i64, String, i64, i64);
        type Config = (i64, String, String, i64);
        type Stored = (String, String, i64, i64, i64, String, Option<String>);
        let backend_columns = "upstream, id, url, weight, version";
        let stored_columns = "name, strategy, connect_timeout_ms, response_header_timeout_ms, \
            body_idle_timeout_ms, policy, owner_route";
        vec![
            read_both_ways::<RouteRow>(conn, "routes", ROUTE_COLUMNS, "name").await,
            read_both_ways::<UpstreamRow>(conn, "upstreams", UPSTREAM_COLUMNS, "name").await,
            read_both_ways::<Backend>(conn, "backends", backend_columns, "upstream, id").await,
            read_both_ways::<Config>(conn, "backends", "id, upstream, url, weight", "id").await,
            read_both_ways::<Stored>(conn, "upstreams", stored_columns, "name").await,
        ]
    }

    /// Empty tables, then rows with what a JSON text could get wrong:
    /// quotes, backslashes, control and non-ASCII characters, JSON (with
    /// escapes) inside a text column, NULLs, the largest integers, names
    /// whose order depends on the collation. Rows are written by SQL, as the store
    /// holds them, not through the model's checks.
    async fn whole_table_reads_match_row_reads(url: &str) {
        let store = Store::open(url).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        for (json, rows) in both_ways(&mut conn).await {
            assert_eq!(json, "[]");
            assert_eq!(json, rows);
        }
        let odd = "a\"b\\c\u{1}\t é 𝄞 ";
        let names = ["Zeta", "alpha", odd, "_x", "ä"];
        for (i, name) in names.iter().enumerate() {
            sqlx::query(
                "INSERT INTO upstreams (name, strategy, connect_timeout_ms,
                 response_header_timeout_ms, body_idle_timeout_ms, policy, owner_route, version)
                 VALUES ($1, 'round_robin', $2, 0, 1, $3, $4, $5)",
            )
            .bind(*name)
            .bind(i64::MAX)
            .bind("{}")
            .bind((i % 2 == 0).then_some(*name))
            .bind(i as i64)
            .execute(&mut *conn)
            .await
            .unwrap();
            for url in [format!("http://h/{name}/2"), format!("http://h/{name}/1")] {
                sqlx::query(
                    "INSERT INTO backends (upstream, url, weight, version) VALUES ($1, $2, $3, $4)",
                )
                .bind(*name)
                .bind(url)
                .bind(i as i64)
                .bind(i64::MAX - i as i64)
                .execute(&mut *conn)
                .await
                .unwrap();
            }
            sqlx::query(
                "INSERT INTO routes (name, path, methods, hosts, strip_prefix, preserve_host,
                 max_body_bytes, timeout_ms, upstream, policies, version)
                 VALUES ($1, $2, $3, $4, 1, 0, $5, $6, $7, '{}', $8)",
            )
            .bind(format!("{name}-route"))
            .bind(format!("/{name}"))
            // JSON inside a text column, with escapes in it.
            .bind(json_list(&["GET".to_string(), name.to_string()]))
            .bind(json_list(&[name.to_string()]))
            .bind((i % 2 == 1).then_some(i64::MAX))
            .bind((i % 3 == 0).then_some(0_i64))
            .bind((i != 1).then_some(*name))
            .bind(-(i as i64))
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        let read = both_ways(&mut conn).await;
        for (json, rows) in &read {
            assert_eq!(json, rows);
        }
        assert!(read[0].0.contains("9223372036854775807"), "{}", read[0].0);
        assert!(read[0].0.contains("upstream: None"), "{}", read[0].0);
        assert_eq!(read[2].0.matches("http://h/").count(), 2 * names.len());
        // What the store builds from them reads the same as before too.
        let config = load_config(&mut conn).await.unwrap();
        assert_eq!(config.routes.len(), names.len());
        let odd_upstream = config.upstreams.iter().find(|u| u.name == odd).unwrap();
        let urls: Vec<&str> = odd_upstream
            .backends
            .iter()
            .map(|b| b.url.as_str())
            .collect();
        assert_eq!(
            urls,
            [format!("http://h/{odd}/2"), format!("http://h/{odd}/1")]
        );
    }

    #[tokio::test]
    async fn sqlite_whole_table_reads_match_row_reads() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("r.db").display());
        whole_table_reads_match_row_reads(&url).await;
    }

    /// Run by `.ci/postgres.sh` (it starts a server and sets
    /// `SWITCHYARD_TEST_POSTGRES`): a new database on it.
    #[tokio::test]
    #[ignore = "needs PostgreSQL: bash .ci/postgres.sh"]
    async fn postgres_whole_table_reads_match_row_reads() {
        let server = std::env::var("SWITCHYARD_TEST_POSTGRES")
            .expect("SWITCHYARD_TEST_POSTGRES is unset: run this test with bash .ci/postgres.sh");
        let db = format!("sy_reads_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
        conn.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
            .await
            .unwrap();
        conn.execute(format!("CREATE DATABASE {db}").as_str())
            .await
            .unwrap();
        let (base, _) = server.rsplit_once('/').unwrap();
        whole_table_reads_match_row_reads(&format!("{base}/{db}")).await;
        conn.execute(format!("DROP DATABASE {db} WITH (FORCE)").as_str())
            .await
            .unwrap();
    }
}
