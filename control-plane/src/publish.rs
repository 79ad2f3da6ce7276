//! The publisher: the one path from the store to the live snapshot.
//!
//! A change runs as: take the write gate → `BEGIN IMMEDIATE` → bump the
//! config version → apply the change → load the whole config inside the
//! transaction → compile the snapshot → commit → install the snapshot. The
//! snapshot is compiled *before* commit, so a config the data plane cannot
//! run (e.g. two routes matching the same requests) is rolled back and
//! never stored; and the admin response is sent only after the new
//! snapshot is live. The gate serialises publishing, so versions go live in
//! commit order (the data plane also refuses to go backwards).

use std::sync::Arc;
use std::time::Instant;

use data_plane::{BuildError, DataPlane};
use tokio::sync::Mutex;

use crate::metrics::Metrics;
use crate::store::{self, Applied, Change, Store, StoreError};

/// Why a change was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change would produce a config the data plane refuses.
    #[error("{0}")]
    Rejected(BuildError),
}

/// Owns store → snapshot → swap.
#[derive(Debug)]
pub struct Publisher {
    store: Store,
    plane: Arc<DataPlane>,
    gate: Mutex<()>,
    metrics: Metrics,
}

impl Publisher {
    pub fn new(store: Store, plane: Arc<DataPlane>, metrics: Metrics) -> Self {
        Publisher {
            store,
            plane,
            gate: Mutex::new(()),
            metrics,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn plane(&self) -> &Arc<DataPlane> {
        &self.plane
    }

    /// Load the committed config and put it in force (used at start-up).
    pub async fn publish_current(&self) -> Result<u64, PublishError> {
        let _gate = self.gate.lock().await;
        let config = self.store.load().await?;
        let snapshot = self
            .plane
            .compile(&config)
            .map_err(PublishError::Rejected)?;
        let version = snapshot.version();
        // Under the gate nothing newer can be live: install cannot be stale.
        let _ = self.plane.install(snapshot);
        Ok(version)
    }

    /// Apply `change` and publish the result; returns the new version and
    /// what the change produced.
    pub async fn apply(&self, change: Change) -> Result<(u64, Applied), PublishError> {
        let _gate = self.gate.lock().await;
        let started = Instant::now();
        let result = self.apply_locked(change).await;
        let elapsed = started.elapsed();
        self.metrics.publish_seconds.observe(elapsed.as_secs_f64());
        if let Ok((version, _)) = &result {
            tracing::debug!(
                version,
                elapsed_us = elapsed.as_micros() as u64,
                "config published"
            );
        }
        let label = match &result {
            Ok(_) => "ok",
            Err(PublishError::Store(
                StoreError::Database(_) | StoreError::Migrate(_) | StoreError::Corrupt(_),
            )) => "error",
            Err(_) => "rejected",
        };
        self.metrics.publish_total.with_label_values(&[label]).inc();
        result
    }

    async fn apply_locked(&self, change: Change) -> Result<(u64, Applied), PublishError> {
        let mut tx = self.store.begin_write().await?;
        let version = store::bump_version(&mut tx).await?;
        let applied = store::apply(&mut tx, change, version).await?;
        let config = store::load_config(&mut tx).await?;
        // On error `tx` is dropped and rolls back: nothing is written.
        let snapshot = self
            .plane
            .compile(&config)
            .map_err(PublishError::Rejected)?;
        tx.commit().await.map_err(StoreError::from)?;
        let _ = self.plane.install(snapshot);
        Ok((version, applied))
    }
}
