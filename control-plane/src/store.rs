//! The SQLite config store: every SQL statement of Switchyard lives here.
//!
//! The database runs in WAL mode with foreign keys on and
//! `synchronous = FULL`: a write acknowledged to a client has been fsynced,
//! so it survives `kill -9` and power loss alike. Writers take
//! `BEGIN IMMEDIATE` transactions with a busy timeout, so concurrent
//! writers queue instead of failing. Every mutation bumps the single
//! global config version inside its transaction ([`Store::apply`]).

mod file;
mod read;
pub mod revisions;
mod write;

use std::time::Duration;

use data_plane::config::GatewayConfig;
use sqlx::sqlite::{SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::model::{Config, NewBackend, Route, Upstream};
use crate::view::{BackendView, ConfigView, RouteView, UpstreamView};

pub use file::{DatabaseFile, OpenError};
pub use read::export as export_in;
use read::{all_routes, export, get_backend, get_route, get_upstream};
pub use read::{load_config, load_route, load_upstream, resources};
pub use write::apply;

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
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error(transparent)]
    Open(#[from] OpenError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
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

/// What a change produced: the resource as it now is, or nothing (delete).
/// One is made per admin change and moved once, so its size (a route's
/// policies make `Route` the largest) does not matter.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
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

pub(crate) fn not_found(kind: &'static str, name: impl Into<String>) -> StoreError {
    StoreError::NotFound {
        kind,
        name: name.into(),
    }
}

impl Store {
    /// Open (creating if missing) and migrate the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_file(&DatabaseFile::parse(url)?).await
    }

    /// Open (creating if missing) and migrate `file`. A file that cannot be
    /// opened is an [`OpenError`] naming what to fix.
    pub async fn open_file(file: &DatabaseFile) -> Result<Store, StoreError> {
        file.prepare()?;
        let options = file
            .options()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // SQLite's default page cache is 2 MiB per connection; the
            // config is read whole only at start-up and on `PUT /admin/config`,
            // and the OS caches the file anyway.
            .pragma("cache_size", "-256");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| cannot_open(file, &e))?;
        if let Err(e) = sqlx::migrate!("../migrations").run(&pool).await {
            pool.close().await;
            return Err(e.into());
        }
        Ok(Store { pool })
    }

    /// Close every connection (SQLite checkpoints and removes its `-wal`
    /// and `-shm` files when the last one closes).
    pub async fn close(&self) {
        self.pool.close().await;
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
        let views = all_routes(&mut tx).await?;
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
            "SELECT length(checkpoint), length(delta) FROM revision_data WHERE version = ?",
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
        let mut tx = self.pool.begin().await?;
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
