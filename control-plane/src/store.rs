//! The config store: every SQL statement of Switchyard lives here.
//!
//! Two databases hold it, behind one set of queries (sqlx's `Any` driver,
//! with `$N` parameters, which both take):
//!
//! - **SQLite** (the default, `sqlite://FILE`): WAL mode with foreign keys
//!   on and `synchronous = FULL`, so a write acknowledged to a client has
//!   been fsynced and survives `kill -9` and power loss alike. Writers take
//!   `BEGIN IMMEDIATE` transactions with a busy timeout, so concurrent
//!   writers queue instead of failing.
//! - **PostgreSQL** (`postgres://…`), shared by several gateways: a writer
//!   locks the one version row (`UPDATE meta … RETURNING`) as its first
//!   statement, so writes from every node are serialised by the database
//!   and each sees the last commit. After commit the writer's `NOTIFY`
//!   tells the other nodes (see [`postgres`]).
//!
//! Every mutation bumps the single global config version inside its
//! transaction ([`bump_version`]). Integers (booleans included, as 0 or 1)
//! are 64-bit in both schemas, so a row reads the same from either.

mod file;
pub mod postgres;
mod read;
pub mod revisions;
mod write;

use data_plane::config::GatewayConfig;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Transaction};

use crate::model::{Config, NewBackend, Route, Upstream};
use crate::view::{BackendView, ConfigView, RouteView, UpstreamView};

pub use file::{DatabaseFile, OpenError};
pub use postgres::PostgresUrl;
pub use read::export as export_in;
use read::{all_routes, all_upstreams, export, get_backend, get_route, get_upstream};
pub use read::{export_after, load_config, load_route, load_upstream, resources};
#[cfg(test)]
pub(crate) use write::ROUTE_EDITS;
pub use write::apply;

/// Where the config lives: a `--database-url` read and checked.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(DatabaseFile),
    Postgres(PostgresUrl),
}

impl Database {
    /// Read `url`: `postgres://…` (or `postgresql://…`) selects PostgreSQL;
    /// anything else is read as SQLite ([`DatabaseFile::parse`]).
    pub fn parse(url: &str) -> Result<Database, OpenError> {
        if PostgresUrl::is_postgres(url) {
            return PostgresUrl::parse(url).map(Database::Postgres);
        }
        DatabaseFile::parse(url).map(Database::Sqlite)
    }

    /// What to log about it (a PostgreSQL password is left out).
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(file) => file.path().display().to_string(),
            Database::Postgres(url) => url.to_string(),
        }
    }

    /// Whether several gateways may share it.
    pub fn is_shared(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Why a store operation failed. A variant that wraps another error says
/// its message in its own and does not also return it as `source()`, so a
/// chain printed whole (`{:#}`) says each thing once.
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
    /// The database cannot be reached (PostgreSQL down, the network
    /// between, the pool's wait for a connection ran out).
    #[error("the config database is unreachable; the live config keeps serving: retry later")]
    Unavailable,
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error(transparent)]
    Open(#[from] OpenError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if unreachable(&e) {
            tracing::warn!(error = %e, "config database unreachable");
            return StoreError::Unavailable;
        }
        StoreError::Database(e)
    }
}

/// Whether `e` says the database cannot be reached (rather than that it
/// refused a statement): no connection, or PostgreSQL's connection
/// exceptions (class 08) and operator interventions (57P: shutting down,
/// starting up). A TLS failure is not one: a certificate that does not
/// verify is a setting to fix, said as it is (the TLS stack reports it as
/// invalid data on the socket).
fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::InvalidData,
        sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(e) if unreachable(&e) => StoreError::Unavailable,
            e => StoreError::Migrate(e),
        }
    }
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
    /// `expect`: the upstream's version (a backend joins the upstream as
    /// the client saw it).
    AddBackend {
        upstream: String,
        backend: NewBackend,
        expect: Option<u64>,
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

/// The routes and upstreams a change may alter, by name (other upstreams
/// it may alter are those the named routes used before it).
#[derive(Debug, Clone, Default)]
pub struct Touched {
    pub routes: Vec<String>,
    pub upstreams: Vec<String>,
}

impl Touched {
    /// Both lists, each name once.
    pub fn merged(self, other: Touched) -> Touched {
        let join = |a: Vec<String>, b: Vec<String>| {
            let set: std::collections::BTreeSet<String> = a.into_iter().chain(b).collect();
            set.into_iter().collect()
        };
        Touched {
            routes: join(self.routes, other.routes),
            upstreams: join(self.upstreams, other.upstreams),
        }
    }
}

impl Change {
    /// What this change may alter; `None` when it may alter anything
    /// (replacing the whole config).
    pub fn touched(&self) -> Option<Touched> {
        let (routes, upstreams) = match self {
            Change::CreateRoute(route) | Change::ReplaceRoute { route, .. } => {
                (vec![route.name.clone()], vec![])
            }
            Change::DeleteRoute { name, .. } => (vec![name.clone()], vec![]),
            Change::CreateUpstream(u) | Change::ReplaceUpstream { upstream: u, .. } => {
                (vec![], vec![u.name.clone()])
            }
            Change::DeleteUpstream { name, .. } => (vec![], vec![name.clone()]),
            Change::AddBackend { upstream, .. }
            | Change::UpdateBackend { upstream, .. }
            | Change::RemoveBackend { upstream, .. } => (vec![], vec![upstream.clone()]),
            Change::ReplaceConfig { .. } => return None,
        };
        Some(Touched { routes, upstreams })
    }
}

/// What a change produced: the resource as it now is, nothing (delete),
/// or, for a whole config, what was written (`Replaced`) or that it was
/// the stored one already. One is made per
/// admin change and moved once, so its size (a route's policies make
/// `Route` the largest) does not matter.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Applied {
    Route(RouteView),
    Upstream(UpstreamView),
    Backend(BackendView),
    Config(ConfigView),
    Deleted,
    /// A whole config written: the routes and upstreams whose rows were
    /// written (only theirs can have changed; [`export_after`] reads the
    /// config as it now is from the export before and those).
    Replaced(Touched),
    /// A whole config written that is the stored one already, row for row:
    /// nothing was written (the transaction holds its version bump only).
    Unchanged,
}

/// Handle to the config database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// PostgreSQL's URL: migrations run on a connection of their own.
    postgres: Option<PostgresUrl>,
}

type Tx = Transaction<'static, Any>;

pub(crate) fn not_found(kind: &'static str, name: impl Into<String>) -> StoreError {
    StoreError::NotFound {
        kind,
        name: name.into(),
    }
}

/// What each SQLite connection sets when it opens (the `Any` driver takes
/// a URL, which cannot carry pragmas).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -256;";

impl Store {
    /// Open (creating if missing) and migrate the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        match Database::parse(url)? {
            Database::Sqlite(file) => Store::open_file(&file).await,
            Database::Postgres(url) => {
                let store = Store::connect_postgres(&url);
                store.migrate().await?;
                Ok(store)
            }
        }
    }

    /// Open (creating if missing) and migrate `file`. A file that cannot be
    /// opened is an [`OpenError`] naming what to fix.
    pub async fn open_file(file: &DatabaseFile) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        file.prepare()?;
        let url = file.options().to_url_lossy();
        let options = AnyConnectOptions::from_url(&url).map_err(|e| cannot_open(file, &e))?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // SQLite's default page cache is 2 MiB per connection;
                    // the config is read whole only at start-up and on
                    // `PUT /admin/config`, and the OS caches the file anyway.
                    conn.execute(SQLITE_PRAGMAS).await.map(drop)
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| cannot_open(file, &e))?;
        let store = Store {
            pool,
            engine: Engine::Sqlite,
            postgres: None,
        };
        if let Err(e) = store.migrate().await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// A store on the PostgreSQL database at `url`, connecting when first
    /// used (so a gateway can start from its cache while the database is
    /// away). Call [`Store::migrate`] before anything else.
    pub fn connect_postgres(url: &PostgresUrl) -> Store {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(postgres::ACQUIRE_TIMEOUT)
            .connect_lazy(url.as_str())
            .expect("a checked PostgreSQL URL");
        Store {
            pool,
            engine: Engine::Postgres,
            postgres: Some(url.clone()),
        }
    }

    /// Apply the migrations of this store's database that it lacks. For
    /// PostgreSQL, sqlx holds an advisory lock while it migrates, so
    /// gateways starting together against an empty database take turns.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.engine {
            Engine::Sqlite => {
                sqlx::migrate!("../migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Engine::Postgres => {
                // One attempt, bounded: a start must find out soon whether
                // to serve from its cache instead.
                let url = self
                    .postgres
                    .as_ref()
                    .expect("a PostgreSQL store has its URL");
                let mut conn = tokio::time::timeout(
                    postgres::ACQUIRE_TIMEOUT,
                    AnyConnection::connect(url.as_str()),
                )
                .await
                .map_err(|_| StoreError::Unavailable)??;
                let result = sqlx::migrate!("../migrations/postgres")
                    .run_direct(&mut conn)
                    .await;
                let _ = conn.close().await;
                result?
            }
        }
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Close every connection (SQLite checkpoints and removes its `-wal`
    /// and `-shm` files when the last one closes).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Start a write transaction. SQLite: `BEGIN IMMEDIATE` takes the
    /// write lock now, so a concurrent writer waits on the busy timeout.
    /// PostgreSQL: the writer's first statement ([`bump_version`]) locks
    /// the version row, so concurrent writers (on any node) wait there.
    pub async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => self.pool.begin().await?,
        })
    }

    /// Start a read transaction that sees one committed state throughout
    /// (PostgreSQL's default isolation takes a new snapshot per statement).
    pub async fn begin_read(&self) -> Result<Tx, StoreError> {
        Ok(match self.engine {
            Engine::Sqlite => self.pool.begin().await?,
            Engine::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }

    /// The whole config as it is committed now.
    pub async fn load(&self) -> Result<GatewayConfig, StoreError> {
        let mut tx = self.begin_read().await?;
        load_config(&mut tx).await
    }

    pub async fn config_version(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        config_version(&mut conn).await
    }

    pub async fn list_routes(&self) -> Result<(Vec<RouteView>, u64), StoreError> {
        let mut tx = self.begin_read().await?;
        let version = config_version(&mut tx).await?;
        let views = all_routes(&mut tx).await?;
        Ok((views, version))
    }

    pub async fn route(&self, name: &str) -> Result<RouteView, StoreError> {
        let mut conn = self.pool.acquire().await?;
        get_route(&mut conn, name).await
    }

    pub async fn list_upstreams(&self) -> Result<(Vec<UpstreamView>, u64), StoreError> {
        let mut tx = self.begin_read().await?;
        let version = config_version(&mut tx).await?;
        let views = all_upstreams(&mut tx).await?;
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
        let mut tx = self.begin_read().await?;
        export(&mut tx).await
    }

    /// Add `doc` as the checkpoint of revision `version` (see
    /// [`revisions::add_checkpoint`]).
    pub async fn add_checkpoint(&self, version: u64, doc: String) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        revisions::add_checkpoint(&mut conn, version, doc).await
    }

    /// Kept revisions, newest first (see [`revisions::list`]).
    pub async fn revisions(
        &self,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<revisions::RevisionView>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        revisions::list(&mut conn, limit, before).await
    }

    /// Bytes of a revision's stored checkpoint and delta.
    #[cfg(test)]
    pub(crate) async fn revision_data_bytes(
        &self,
        version: u64,
    ) -> Result<(usize, usize), StoreError> {
        let (c, d): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT length(checkpoint), length(delta) FROM revision_data WHERE version = $1",
        )
        .bind(version as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok((c.unwrap_or(0) as usize, d.unwrap_or(0) as usize))
    }

    /// A kept revision and the whole config at its version.
    pub async fn revision(
        &self,
        version: u64,
    ) -> Result<(revisions::RevisionView, revisions::Resources), StoreError> {
        let mut tx = self.begin_read().await?;
        let view = revisions::get(&mut tx, version).await?;
        let state = revisions::state_at(&mut tx, version).await?;
        match (view, state) {
            (Some(view), Some(state)) => Ok((view, state)),
            _ => Err(not_found("revision", version.to_string())),
        }
    }
}

/// SQLite's answer when the checks of [`DatabaseFile`] passed but it still
/// could not open the file (not a database, locked, its directory not
/// writable for the `-wal` and `-shm` files beside it).
fn cannot_open(file: &DatabaseFile, e: &sqlx::Error) -> OpenError {
    let reason = match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("14") => format!(
            "{} (the file and its directory must be writable: SQLite keeps -wal and -shm files beside it)",
            db.message()
        ),
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    };
    OpenError::Other {
        path: file.path().display().to_string(),
        reason,
    }
}

/// Bump the global config version inside `tx`; returns the new version.
pub async fn bump_version(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let (v,): (i64,) = sqlx::query_as(
        "UPDATE meta SET config_version = config_version + 1 WHERE id = 1 RETURNING config_version",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(v as u64)
}

/// Whether `conn` is SQLite's (the two databases' SQL differs in a few
/// places: parameters, JSON functions).
fn is_sqlite(conn: &AnyConnection) -> bool {
    conn.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME
}

pub async fn config_version(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let (v,): (i64,) = sqlx::query_as("SELECT config_version FROM meta WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pooled SQLite connection runs with the settings durability
    /// rests on (the `Any` driver takes them from `SQLITE_PRAGMAS`, not
    /// from sqlx's SQLite options).
    #[tokio::test]
    async fn sqlite_connections_are_durable_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = Store::open(&url).await.unwrap();
        // More than one connection: each is set up alike.
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(store.pool.acquire().await.unwrap());
        }
        for conn in &mut conns {
            let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(sync, 2, "FULL");
            let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(fk, 1);
            let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(busy, 10_000);
            let (cache,): (i64,) = sqlx::query_as("PRAGMA cache_size")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(cache, -256);
        }
    }
}
