//! Switchyard's control plane: the admin API and the config store.
//!
//! - [`model`]: request DTOs and their validation into domain values;
//! - [`store`]: the SQLite store (sqlx), typed [`store::Change`]s, and
//!   loading the whole config as a `GatewayConfig`;
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
pub mod metrics;
pub mod model;
pub mod publish;
pub mod store;
pub mod view;

use std::sync::Arc;

use data_plane::DataPlane;

pub use api::{AdminState, app};
pub use publish::{PublishError, Publisher};
pub use store::{DatabaseFile, OpenError, Store, StoreError};

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

/// A started control plane bound to one data plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub publisher: Arc<Publisher>,
    /// The `/admin/events` hub ([`api::events::Events::close`] ends its
    /// streams at shutdown).
    pub events: Arc<api::events::Events>,
}

impl ControlPlane {
    /// Open (create, migrate) the database and put its config in force on
    /// `plane`. Returns once the snapshot is live; on failure the database
    /// is closed again.
    pub async fn start(
        database: &DatabaseFile,
        plane: Arc<DataPlane>,
        revision_retention: u64,
    ) -> Result<Self, PublishError> {
        let store = Store::open_file(database).await?;
        tracing::info!(database = %database.path().display(), "config database open");
        let metrics = metrics::Metrics::new(Arc::clone(&plane));
        let publisher =
            Arc::new(Publisher::new(store, plane, metrics).with_retention(revision_retention));
        let version = match publisher.publish_current().await {
            Ok(version) => version,
            Err(e) => {
                publisher.store().close().await;
                return Err(e);
            }
        };
        tracing::info!(version, "config loaded and published");
        let events =
            api::events::Events::new(Arc::clone(publisher.plane()), api::events::MAX_SUBSCRIBERS);
        Ok(ControlPlane { publisher, events })
    }

    /// Close the database (the gateway will not start after all).
    pub async fn close(&self) {
        self.publisher.store().close().await;
    }

    /// Apply a whole-config document ([`read_bootstrap`]) if the database
    /// has never been configured (config version 0). Returns the new
    /// version, or `None` when the database already had a config and the
    /// document was ignored.
    pub async fn bootstrap(&self, config: model::Config) -> Result<Option<u64>, BootstrapError> {
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
        let (version, _) = self.publisher.apply(change, &meta).await?;
        Ok(Some(version))
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
