//! [`DataPlane`]: the live routing state — the snapshot in force in one
//! `ArcSwap` (never replaced by an older config version), the backend
//! registry, the health checker and the plane-wide counters. The control
//! plane's whole interface to a running data plane: compile, patch,
//! install.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::GatewayConfig;
use crate::counters::PlaneStats;
use crate::health::HealthChecker;
use crate::registry::Registry;
use crate::snapshot::{BuildError, Patch, Retired, Snapshot};

/// The live routing state: current snapshot plus the backend registry.
#[derive(Debug)]
pub struct DataPlane {
    current: ArcSwap<Snapshot>,
    registry: Registry,
    health: HealthChecker,
    stats: PlaneStats,
}

/// A snapshot older than the one in force was offered and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("snapshot version {offered} is older than live version {live}")]
pub struct Stale {
    pub offered: u64,
    pub live: u64,
}

impl Default for DataPlane {
    fn default() -> Self {
        Self::new()
    }
}

impl DataPlane {
    /// A data plane with the empty version-0 snapshot in force.
    pub fn new() -> Self {
        DataPlane {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            registry: Registry::new(),
            health: HealthChecker::new(),
            stats: PlaneStats::default(),
        }
    }

    /// The snapshot in force. Requests call this once and keep the result.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Compile `config` against this plane's live state, without installing
    /// it. Cheap to throw away.
    pub fn compile(&self, config: &GatewayConfig) -> Result<Snapshot, BuildError> {
        Snapshot::build(config, &self.registry)
    }

    pub fn stats(&self) -> &PlaneStats {
        &self.stats
    }

    pub fn health(&self) -> &HealthChecker {
        &self.health
    }

    /// Put `snapshot` in force, unless a newer version already is. Backends
    /// that left the config are then dropped from the registry, and health
    /// checks are reconciled (call inside a tokio runtime when the config
    /// has health checks).
    pub fn install(&self, snapshot: Snapshot) -> Result<(), Stale> {
        self.swap(snapshot)?;
        let live = self.snapshot();
        self.registry.retain(&live.live_keys());
        self.health.reconcile(&live);
        Ok(())
    }

    /// The live snapshot with `patches` applied, as `version`, without
    /// installing it: only what the patches name is compiled (see
    /// [`Snapshot::patch`]).
    pub fn compile_patch(&self, version: u64, patches: &[Patch]) -> PatchOutcome {
        let base = self.snapshot();
        if base.version() + 1 != version {
            return PatchOutcome::Rebuild;
        }
        match base.patch(version, patches, &self.registry) {
            Ok((snapshot, retired)) => PatchOutcome::Patched(snapshot, retired),
            Err(e) => {
                // The attempt may have registered state for what it compiled.
                self.registry.retain(&base.live_keys());
                PatchOutcome::Refused(e)
            }
        }
    }

    /// Put a snapshot made by [`DataPlane::compile_patch`] in force, and
    /// forget the live state it `retired`: cost in proportion to the
    /// patch, not to the config.
    pub fn install_patched(&self, snapshot: Snapshot, retired: &Retired) -> Result<(), Stale> {
        self.swap(snapshot)?;
        self.registry
            .forget(&retired.routes, &retired.upstreams, &retired.backends);
        self.health.reconcile_retired(&self.snapshot(), retired);
        Ok(())
    }

    fn swap(&self, snapshot: Snapshot) -> Result<(), Stale> {
        let offered = Arc::new(snapshot);
        let previous = self.current.rcu(|live| {
            if live.version() > offered.version() {
                Arc::clone(live)
            } else {
                Arc::clone(&offered)
            }
        });
        if previous.version() > offered.version() {
            return Err(Stale {
                offered: offered.version(),
                live: previous.version(),
            });
        }
        Ok(())
    }
}

/// What [`DataPlane::compile_patch`] made of a patch.
// Made once per config change and taken apart at once: boxing would buy
// nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PatchOutcome {
    /// The patched snapshot, to put in force with
    /// [`DataPlane::install_patched`], and the live state it leaves behind.
    Patched(Snapshot, Retired),
    /// The live snapshot is not the version right before the patch's, so
    /// the patch cannot apply to it: compile the whole config instead.
    Rebuild,
    /// The patched config cannot run.
    Refused(BuildError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(version: u64) -> GatewayConfig {
        GatewayConfig {
            version,
            ..GatewayConfig::default()
        }
    }

    #[test]
    fn older_versions_never_replace_newer() {
        let plane = DataPlane::new();
        let publish = |version| plane.install(plane.compile(&config(version)).unwrap());
        publish(5).unwrap();
        assert_eq!(
            publish(4),
            Err(Stale {
                offered: 4,
                live: 5
            })
        );
        assert_eq!(plane.snapshot().version(), 5);
        publish(6).unwrap();
        assert_eq!(plane.snapshot().version(), 6);
    }
}
