//! [`DataPlane`]: the live routing state — the snapshot in force in one
//! `ArcSwap` (never replaced by an older config version), the backend
//! registry, the health checker and the plane-wide counters. The control
//! plane's whole interface to a running data plane: compile, patch,
//! install.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::GatewayConfig;
use crate::counters::PlaneStats;
use crate::health::HealthChecker;
use crate::registry::{Registry, RouteKey};
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

/// Up to this many backends, an upstream's are scanned for a URL
/// ([`DataPlane::forget_unused`]); past it they are put in a set.
const SCAN_BACKENDS: usize = 16;

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
    /// checks are reconciled: probes run on the runtime the plane was made
    /// on (a plane made outside one spawns them on the caller's runtime).
    pub fn install(&self, snapshot: Snapshot) -> Result<(), Stale> {
        let previous = self.swap(snapshot)?;
        let live = self.snapshot();
        let names: Vec<&str> = live.upstreams().map(|u| &*u.name).collect();
        note_admin_changes(&previous, &live, &names);
        // Released first, so that what only it used (an upstream client
        // whose settings changed) is pruned now, unless a request or a
        // health probe still holds it.
        drop(previous);
        self.forget_unused();
        self.health.reconcile(&live);
        Ok(())
    }

    /// The live snapshot with `patches` applied, as `version`, without
    /// installing it: only what the patches name is compiled (see
    /// [`Snapshot::patch`]). The patches must cover every change between
    /// the live version and `version` (one change, or several when this
    /// gateway catches up with others sharing its database);
    /// [`PatchOutcome::Rebuild`] when the live snapshot is not older.
    pub fn compile_patch(&self, version: u64, patches: &[Patch]) -> PatchOutcome {
        let base = self.snapshot();
        if base.version() >= version {
            return PatchOutcome::Rebuild;
        }
        match base.patch(version, patches, &self.registry) {
            Ok((snapshot, retired)) => PatchOutcome::Patched(snapshot, retired),
            Err(e) => {
                // The attempt may have registered state for what it compiled.
                self.forget_unused();
                PatchOutcome::Refused(e)
            }
        }
    }

    /// Forget the live state of every backend, route and upstream the
    /// snapshot in force does not use: after a whole install, and after
    /// compiles whose snapshot was never put in force (a dry run's, a
    /// refused one's, or one whose change failed before its install).
    /// Requests still running against a dropped one keep its state alive
    /// until they finish. Call it where no other compile is under way (the
    /// publisher's gate).
    ///
    /// Each key is looked up in the snapshot in force rather than in a set
    /// of all its keys: at 100,000 routes, building that set took ~0.2 s.
    /// Rate-limit buckets are set to the live routes' own: a compile that
    /// was not installed may have re-keyed, replaced or dropped a live
    /// route's (a dry run moving the route, or changing or removing its
    /// limit), and the next compile would then start it with full buckets.
    pub fn forget_unused(&self) {
        let live = self.snapshot();
        let large: RefCell<HashMap<&str, HashSet<&str>>> = RefCell::default();
        self.registry.retain(
            |k| {
                live.route_named(&k.route)
                    .is_some_and(|r| k.is_of(r.config()))
            },
            |name| live.upstream_named(name).is_some(),
            |k| {
                live.upstream_named(&k.upstream).is_some_and(|u| {
                    if u.backends.len() <= SCAN_BACKENDS {
                        return u.backends.iter().any(|b| *b.url == *k.url);
                    }
                    // A large upstream's URLs as a set, made once: a scan
                    // for each of its backends would be quadratic.
                    large
                        .borrow_mut()
                        .entry(&*u.name)
                        .or_insert_with(|| u.backends.iter().map(|b| &*b.url).collect())
                        .contains(k.url.as_str())
                })
            },
            live.routes().filter_map(|r| {
                let limiter = r.policies.as_ref()?.rate_limiter()?;
                let limit = r.config().policies.rate_limit.as_deref()?;
                Some((RouteKey::of(r.config()), limit.clone(), Arc::clone(limiter)))
            }),
        );
    }

    /// Put a snapshot made by [`DataPlane::compile_patch`] in force, and
    /// forget the live state it `retired`: cost in proportion to the
    /// patch, not to the config.
    pub fn install_patched(&self, snapshot: Snapshot, retired: &Retired) -> Result<(), Stale> {
        let previous = self.swap(snapshot)?;
        let names: Vec<&str> = retired.changed_upstreams.iter().map(|n| &**n).collect();
        note_admin_changes(&previous, &self.snapshot(), &names);
        drop(previous);
        self.registry
            .forget(&retired.routes, &retired.upstreams, &retired.backends);
        self.health.reconcile_retired(&self.snapshot(), retired);
        Ok(())
    }

    /// Put `snapshot` in force; returns the one it replaced.
    fn swap(&self, snapshot: Snapshot) -> Result<Arc<Snapshot>, Stale> {
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
        Ok(previous)
    }
}

/// Note in the health history of the backends of `upstreams` (as they are
/// in `new`) what an admin change did to them since `old`: added, or a
/// weight set. Runs after the install, so a change refused or rolled back
/// is never noted.
fn note_admin_changes(old: &Snapshot, new: &Snapshot, upstreams: &[&str]) {
    for name in upstreams {
        let Some(u) = new.upstream_named(name) else {
            continue;
        };
        let before = old.upstream_named(name);
        for b in u.backends.iter() {
            let was = before.and_then(|o| o.backends.iter().find(|x| x.url == b.url));
            match was {
                // A state the old snapshot did not hold is a new backend
                // (or one removed and added again).
                Some(w) if Arc::ptr_eq(&w.state, &b.state) => {
                    if w.weight != b.weight {
                        b.state.note_admin_change(format!(
                            "weight set to {} (was {})",
                            b.weight, w.weight
                        ));
                    }
                }
                _ => b.state.note_admin_change("backend added".to_string()),
            }
        }
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
    use crate::config::RouteConfig;

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

    /// The registry keeps the live state of exactly the backends the
    /// snapshot in force uses, in small upstreams (scanned) and large ones
    /// (a set), after a whole install and after a compile not installed.
    #[test]
    fn the_registry_keeps_exactly_the_live_backends() {
        let plane = DataPlane::new();
        let with = |small: usize, large: usize| -> GatewayConfig {
            let backends = |n: usize, port: usize| -> Vec<serde_json::Value> {
                (0..n)
                    .map(|i| serde_json::json!({"id": i + 1, "url": format!("http://127.0.0.{}:{port}", i + 1), "weight": 1}))
                    .collect()
            };
            serde_json::from_value(serde_json::json!({
                "version": 1,
                "routes": [{"name": "s", "path": "/s", "upstream": "small"},
                           {"name": "l", "path": "/l", "upstream": "large"}],
                "upstreams": [{"name": "small", "backends": backends(small, 80)},
                              {"name": "large", "backends": backends(large, 81)}],
            }))
            .unwrap()
        };
        plane.install(plane.compile(&with(3, 40)).unwrap()).unwrap();
        assert_eq!(plane.registry().held().backends, 43);
        let mut fewer = with(2, 39);
        fewer.version = 2;
        plane.install(plane.compile(&fewer).unwrap()).unwrap();
        assert_eq!(plane.registry().held().backends, 41);
        let mut more = with(3, 41);
        more.version = 3;
        drop(plane.compile(&more).unwrap());
        assert_eq!(plane.registry().held().backends, 44);
        plane.forget_unused();
        assert_eq!(plane.registry().held().backends, 41);
    }

    /// A patch removes routes before it puts any, whatever its order: a
    /// route renamed (or moved onto a removed one's path) is accepted. Two
    /// routes trading paths meet each other and are refused (the control
    /// plane then compiles the whole config).
    #[test]
    fn a_patch_removes_routes_before_it_puts_them() {
        let plane = DataPlane::new();
        let route = |name: &str, path: &str| -> RouteConfig {
            serde_json::from_value(serde_json::json!({"name": name, "path": path, "upstream": "u"}))
                .unwrap()
        };
        let base: GatewayConfig = serde_json::from_value(serde_json::json!({
            "version": 1,
            "routes": [{"name": "a", "path": "/a", "upstream": "u"},
                       {"name": "b", "path": "/b", "upstream": "u"}],
            "upstreams": [{"name": "u", "backends": [
                {"id": 1, "url": "http://127.0.0.1:9001", "weight": 1}]}],
        }))
        .unwrap();
        plane.install(plane.compile(&base).unwrap()).unwrap();
        let renamed = [
            Patch::Route(route("a2", "/a")),
            Patch::RemoveRoute("a".into()),
        ];
        let PatchOutcome::Patched(snapshot, _) = plane.compile_patch(2, &renamed) else {
            panic!("a rename is refused");
        };
        let config = snapshot.config();
        let names: Vec<&str> = config.routes.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["a2", "b"]);
        let traded = [
            Patch::Route(route("a", "/b")),
            Patch::Route(route("b", "/a")),
        ];
        assert!(matches!(
            plane.compile_patch(2, &traded),
            PatchOutcome::Refused(BuildError::Conflict(..))
        ));
    }

    #[test]
    fn an_install_notes_added_backends_and_weight_changes_in_their_history() {
        let plane = DataPlane::new();
        let with_weight = |version: u64, weight: u32| -> GatewayConfig {
            serde_json::from_value(serde_json::json!({
                "version": version, "routes": [],
                "upstreams": [{"name": "u", "backends": [
                    {"id": 1, "url": "http://127.0.0.1:9001", "weight": weight}]}],
            }))
            .unwrap()
        };
        let publish = |c: &GatewayConfig| plane.install(plane.compile(c).unwrap()).unwrap();
        publish(&with_weight(1, 1));
        publish(&with_weight(2, 1));
        publish(&with_weight(3, 0));
        let snap = plane.snapshot();
        let t = snap.upstream_named("u").unwrap().backends[0]
            .state
            .transitions();
        let reasons: Vec<&str> = t.iter().map(|t| t.reason.as_str()).collect();
        assert_eq!(reasons, ["backend added", "weight set to 0 (was 1)"]);
        assert!(t.iter().all(|t| t.from == t.to));
    }
}
