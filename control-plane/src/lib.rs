//! Switchyard's control plane: the admin API and the config store.
//!
//! - [`model`]: request DTOs and their validation into domain values;
//! - [`store`]: the config store on SQLite or PostgreSQL (sqlx), typed
//!   [`store::Change`]s, and loading the whole config as a `GatewayConfig`;
//! - [`shared`]: following a PostgreSQL database other gateways write to;
//! - [`cache`]: the last-known-good config file of such a gateway;
//! - [`publish`]: store → compile snapshot → commit → swap, serialised;
//! - [`api`]: the axum admin router with problem+json errors;
//! - [`view`]: the representations the API returns;
//! - [`metrics`]: the `/metrics` registry.
//!
//! [`ControlPlane::start`] opens the store, publishes the committed config
//! to the data plane and returns what [`api::app`] needs;
//! [`read_bootstrap`] checks a `--bootstrap` document before any of that.

#![forbid(unsafe_code)]

pub mod api;
pub mod cache;
pub mod metrics;
pub mod model;
pub mod publish;
pub mod shared;
pub mod store;
pub mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use data_plane::DataPlane;
use tokio::sync::watch;

pub use api::{AdminState, app};
pub use cache::{CacheError, CacheFile};
pub use publish::{PublishError, Publisher};
pub use store::{Database, DatabaseFile, OpenError, Store, StoreError};

/// Why a bootstrap document was not applied.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("not valid JSON: {0}")]
    Malformed(String),
    #[error("{}", .0.iter().map(|e| format!("{}: {}", if e.pointer.is_empty() { "/" } else { &e.pointer }, e.detail)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<model::FieldError>),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl From<StoreError> for BootstrapError {
    fn from(e: StoreError) -> Self {
        BootstrapError::Publish(PublishError::Store(e))
    }
}

/// Read and validate a whole-config document (JSON, the format of `GET
/// /admin/config`) for [`ControlPlane::bootstrap`]. Pure: nothing is
/// opened or written, so a bad file stops a start before it creates a
/// database.
pub fn read_bootstrap(document: &str) -> Result<model::Config, BootstrapError> {
    let value = model::read_json(document.as_bytes()).map_err(|e| match e {
        model::JsonError::Syntax(reason) => BootstrapError::Malformed(reason),
        model::JsonError::DuplicateKey(member) => BootstrapError::Invalid(vec![member]),
    })?;
    model::parse::<model::ConfigSpec>(value)
        .map_err(BootstrapError::Invalid)?
        .validate()
        .map_err(|e| match e {
            model::DocumentError::Invalid(errors) => BootstrapError::Invalid(errors),
            model::DocumentError::Conflict(error) => BootstrapError::Invalid(vec![error]),
        })
}

/// How a gateway on a shared database (PostgreSQL) keeps up with it.
#[derive(Debug, Clone)]
pub struct SharedOptions {
    /// The last-known-good config (`--cache-file`).
    pub cache_file: PathBuf,
    /// How often to compare the live version with the database's, for
    /// notifications that never came (`--store-check-ms`).
    pub check: Duration,
}

impl Default for SharedOptions {
    fn default() -> Self {
        SharedOptions {
            cache_file: PathBuf::from(DEFAULT_CACHE_FILE),
            check: shared::DEFAULT_CHECK,
        }
    }
}

/// Default of `--cache-file`.
pub const DEFAULT_CACHE_FILE: &str = "switchyard-cache.json";

/// Why the control plane did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(
        "cannot reach the config database {database}, and there is no cache file {cache} to start from (start the database or correct --database-url; a node writes its cache once it has run with the database)"
    )]
    NothingToServe { database: String, cache: String },
    #[error("cannot reach the config database {database}, and {error}")]
    Cache { database: String, error: CacheError },
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        StartError::Publish(PublishError::Store(e))
    }
}

/// A started control plane bound to one data plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub publisher: Arc<Publisher>,
    /// The `/admin/events` hub ([`api::events::Events::close`] ends its
    /// streams at shutdown).
    pub events: Arc<api::events::Events>,
    /// Stops the tasks that follow a shared database (and write the
    /// cache file), which [`ControlPlane::close`] then waits for.
    stop: Arc<watch::Sender<bool>>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl ControlPlane {
    /// Open (create, migrate) the database and put its config in force on
    /// `plane`. Returns once the snapshot is live; on failure the database
    /// is closed again.
    ///
    /// On PostgreSQL it also starts following the database (changes other
    /// gateways make, see [`shared`]) and writing the cache file; and when
    /// the database cannot be reached it starts from the cache file
    /// instead, if there is one.
    pub async fn start(
        database: &Database,
        plane: Arc<DataPlane>,
        revision_retention: u64,
        options: &SharedOptions,
    ) -> Result<Self, StartError> {
        let metrics = metrics::Metrics::new(Arc::clone(&plane));
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let publisher = match database {
            Database::Sqlite(file) => {
                let store = Store::open_file(file).await?;
                tracing::info!(database = %file.path().display(), "config database open");
                let publisher = Arc::new(
                    Publisher::new(store, plane, metrics).with_retention(revision_retention),
                );
                let version = match publisher.publish_current().await {
                    Ok(version) => version,
                    Err(e) => {
                        publisher.store().close().await;
                        return Err(e.into());
                    }
                };
                tracing::info!(version, "config loaded and published");
                publisher
            }
            Database::Postgres(url) => {
                let publisher = Arc::new(
                    Publisher::new(Store::connect_postgres(url), plane, metrics)
                        .with_retention(revision_retention),
                );
                let cache = CacheFile::new(&options.cache_file);
                let from_database = async {
                    publisher.store().migrate().await?;
                    publisher.publish_current().await
                };
                let migrated = match from_database.await {
                    Ok(version) => {
                        tracing::info!(database = %url, version, "config database open: config loaded and published");
                        true
                    }
                    Err(PublishError::Store(StoreError::Unavailable)) => {
                        let described = || url.to_string();
                        let config = match cache.read() {
                            Ok(Some(config)) => config,
                            Ok(None) => {
                                return Err(StartError::NothingToServe {
                                    database: described(),
                                    cache: cache.path().display().to_string(),
                                });
                            }
                            Err(error) => {
                                return Err(StartError::Cache {
                                    database: described(),
                                    error,
                                });
                            }
                        };
                        let version = publisher.publish_config(&config).await?;
                        publisher.set_store_up(false);
                        tracing::warn!(
                            database = %url,
                            cache = %cache.path().display(),
                            version,
                            "config database unreachable: serving the cache file's config until it answers"
                        );
                        false
                    }
                    Err(e) => {
                        publisher.store().close().await;
                        return Err(e.into());
                    }
                };
                tasks.push(shared::follow(
                    Arc::clone(&publisher),
                    url.clone(),
                    options.check,
                    migrated,
                    stop.subscribe(),
                ));
                tasks.push(cache.follow(Arc::clone(&publisher), stop.subscribe()));
                publisher
            }
        };
        let events =
            api::events::Events::new(Arc::clone(publisher.plane()), api::events::MAX_SUBSCRIBERS);
        Ok(ControlPlane {
            publisher,
            events,
            stop: Arc::new(stop),
            tasks: Arc::new(std::sync::Mutex::new(tasks)),
        })
    }

    /// Stop following a shared database, and close it (the gateway stops,
    /// or will not start after all).
    pub async fn close(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("not poisoned"));
        for task in tasks {
            // The cache file's last write; the follower ends at once.
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("a task following the config database did not stop within 10 s");
            }
        }
        self.publisher.store().close().await;
    }

    /// Apply a whole-config document ([`read_bootstrap`]) if the database
    /// has never been configured (config version 0). Returns the new
    /// version, or `None` when the database already had a config and the
    /// document was ignored (or another gateway sharing it applied its
    /// own first), or cannot be reached (a start from the cache file).
    pub async fn bootstrap(&self, config: model::Config) -> Result<Option<u64>, BootstrapError> {
        if !self.publisher.store_up() {
            tracing::warn!("config database unreachable: bootstrap file not applied");
            return Ok(None);
        }
        if self.publisher.store().config_version().await? != 0 {
            return Ok(None);
        }
        let change = store::Change::ReplaceConfig {
            config,
            // Only over the never-configured state, even if a write raced us.
            expect: Some(0),
        };
        let meta = store::revisions::ChangeMeta::internal(
            store::revisions::Source::Bootstrap,
            "--bootstrap",
        );
        match self.publisher.apply(change, &meta).await {
            Ok((version, _)) => Ok(Some(version)),
            Err(PublishError::Store(StoreError::PreconditionFailed { .. })) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The admin router of the node named `node`, with `token` required
    /// when given.
    pub fn router(&self, token: Option<&str>, node: &str) -> axum::Router {
        api::app(AdminState {
            publisher: Arc::clone(&self.publisher),
            token: token.map(Arc::from),
            node: Arc::from(node),
            events: Arc::clone(&self.events),
        })
    }
}
