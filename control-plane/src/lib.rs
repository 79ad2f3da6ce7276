//! Switchyard's control plane: the admin API and the config store.
//!
//! - [`model`]: request DTOs and their validation into domain values;
//! - [`store`]: the SQLite store (sqlx), typed [`store::Change`]s, and
//!   loading the whole config as a `GatewayConfig`;
//! - [`publish`]: store → compile snapshot → commit → swap, serialised;
//! - [`api`]: the axum admin router with problem+json errors;
//! - [`view`]: the representations the API returns.
//!
//! [`ControlPlane::start`] opens the store, publishes the committed config
//! to the data plane and returns what [`api::app`] needs.

#![forbid(unsafe_code)]

pub mod api;
pub mod model;
pub mod publish;
pub mod store;
pub mod view;

use std::sync::Arc;

use data_plane::DataPlane;

pub use api::{AdminState, app};
pub use publish::{PublishError, Publisher};
pub use store::{Store, StoreError};

/// A started control plane bound to one data plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub publisher: Arc<Publisher>,
}

impl ControlPlane {
    /// Open (create, migrate) the database and put its config in force on
    /// `plane`. Returns once the snapshot is live.
    pub async fn start(database_url: &str, plane: Arc<DataPlane>) -> Result<Self, PublishError> {
        let store = Store::open(database_url).await?;
        let publisher = Arc::new(Publisher::new(store, plane));
        let version = publisher.publish_current().await?;
        tracing::info!(version, "config loaded and published");
        Ok(ControlPlane { publisher })
    }

    /// The admin router, with `token` required when given.
    pub fn router(&self, token: Option<&str>) -> axum::Router {
        api::app(AdminState {
            publisher: Arc::clone(&self.publisher),
            token: token.map(Arc::from),
        })
    }
}
