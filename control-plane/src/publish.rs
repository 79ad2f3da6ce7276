//! The publisher: the one path from the store to the live snapshot.
//!
//! A change runs as: take the write gate → `BEGIN IMMEDIATE` → bump the
//! config version → apply the change → read back what it touched inside
//! the transaction → patch the live snapshot with it → commit → install
//! the snapshot. The snapshot is compiled *before* commit, so a config the
//! data plane cannot run (e.g. two routes matching the same requests) is
//! rolled back and never stored; and the admin response is sent only after
//! the new snapshot is live. The gate serialises publishing, so versions go
//! live in commit order (the data plane also refuses to go backwards).
//!
//! A change costs in proportion to what it touches, not to the size of the
//! config: one route or upstream is read back and compiled, the rest of the
//! snapshot is shared with the live one ([`data_plane::Snapshot::patch`]).
//! Replacing the whole config (and start-up) loads and compiles it all.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use data_plane::{BuildError, DataPlane, Patch, PatchOutcome};
use sqlx::sqlite::SqliteConnection;
use tokio::sync::Mutex;

use crate::metrics::Metrics;
use crate::store::{self, Applied, Change, Store, StoreError, Touched};

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
        let touched = change.touched();
        let applied = store::apply(&mut tx, change, version).await?;
        // On error `tx` is dropped and rolls back: nothing is written.
        let patched = match touched {
            Some(touched) => self.patch(&mut tx, version, touched).await?,
            None => PatchOutcome::Rebuild,
        };
        match patched {
            PatchOutcome::Patched(snapshot, retired) => {
                tx.commit().await.map_err(StoreError::from)?;
                let _ = self.plane.install_patched(snapshot, &retired);
            }
            PatchOutcome::Refused(e) => return Err(PublishError::Rejected(e)),
            PatchOutcome::Rebuild => {
                let config = store::load_config(&mut tx).await?;
                let snapshot = self
                    .plane
                    .compile(&config)
                    .map_err(PublishError::Rejected)?;
                tx.commit().await.map_err(StoreError::from)?;
                let _ = self.plane.install(snapshot);
            }
        }
        Ok((version, applied))
    }

    /// Read back what a change touched and patch the live snapshot with it
    /// ([`PatchOutcome::Rebuild`] when the live snapshot is not the version
    /// before: then the whole config is compiled).
    async fn patch(
        &self,
        conn: &mut SqliteConnection,
        version: u64,
        touched: Touched,
    ) -> Result<PatchOutcome, StoreError> {
        let live = self.plane.snapshot();
        let mut upstreams: BTreeSet<String> = touched.upstreams.into_iter().collect();
        let mut patches = Vec::new();
        for name in touched.routes {
            if let Some(before) = live.route_named(&name) {
                upstreams.extend(before.config().upstream.clone());
            }
            match store::load_route(conn, &name).await? {
                Some(route) => {
                    upstreams.extend(route.upstream.clone());
                    patches.push(Patch::Route(route));
                }
                None => patches.push(Patch::RemoveRoute(name)),
            }
        }
        for name in upstreams {
            patches.push(match store::load_upstream(conn, &name).await? {
                Some(upstream) => Patch::Upstream(upstream),
                None => Patch::RemoveUpstream(name),
            });
        }
        Ok(self.plane.compile_patch(version, &patches))
    }
}

#[cfg(test)]
mod tests {
    use data_plane::config::{Strategy, UpstreamPolicy};
    use data_plane::{Registry, Snapshot};
    use http::Method;

    use super::*;
    use crate::model::{NewBackend, Route, RouteTarget, Upstream};

    fn backends(rng: &mut fastrand::Rng) -> Vec<NewBackend> {
        // Distinct URLs: an upstream lists each backend once.
        (0..rng.usize(1..=3))
            .map(|i| NewBackend {
                url: format!("http://10.0.{}.{}:80", rng.u8(1..4), i),
                weight: rng.u32(0..3),
            })
            .collect()
    }

    fn upstream(name: &str, rng: &mut fastrand::Rng) -> Upstream {
        Upstream {
            name: name.into(),
            strategy: [Strategy::RoundRobin, Strategy::LeastConnections][rng.usize(..2)],
            backends: backends(rng),
            policy: UpstreamPolicy::default(),
        }
    }

    fn route(name: &str, rng: &mut fastrand::Rng) -> Route {
        let paths = ["/", "/a", "/a/b", "/b", "/c/d"];
        let hosts: [&[&str]; 3] = [&[], &["x.test"], &["y.test", "x.test"]];
        let methods: [&[&str]; 3] = [&[], &["GET"], &["POST"]];
        let target = match rng.usize(..4) {
            0 => Some(RouteTarget::Upstream("u0".into())),
            1 => Some(RouteTarget::Upstream("u1".into())),
            2 => Some(RouteTarget::Inline {
                strategy: Strategy::RoundRobin,
                backends: backends(rng),
            }),
            _ => None,
        };
        // A route without an upstream redirects; others may limit.
        let policies = match (&target, rng.bool()) {
            (None, _) => {
                serde_json::json!({"redirect": {"status": 308, "location": "https://x.test{path}"}})
            }
            (Some(_), true) => {
                serde_json::json!({"rate_limit": {"key": "client_ip", "requests_per_second": rng.u32(1..9), "burst": 3},
                                                   "auth": {"header": "x-token", "tokens": [{"sha256": "ab".repeat(32)}]}})
            }
            (Some(_), false) => serde_json::json!({}),
        };
        Route {
            name: name.into(),
            path: paths[rng.usize(..paths.len())].into(),
            methods: methods[rng.usize(..3)]
                .iter()
                .map(|m| m.to_string())
                .collect(),
            hosts: hosts[rng.usize(..3)]
                .iter()
                .map(|h| h.to_string())
                .collect(),
            strip_prefix: rng.bool(),
            preserve_host: false,
            max_body_bytes: None,
            timeout_ms: rng.bool().then(|| rng.u64(1..5000)),
            target,
            policies: serde_json::from_value(policies).unwrap(),
        }
    }

    /// Which route each of a fixed set of requests reaches.
    fn answers(snap: &Snapshot) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for host in [None, Some("x.test"), Some("y.test")] {
            for method in [Method::GET, Method::POST] {
                for path in ["/", "/a", "/a/b/c", "/b", "/c/d", "/zz", "/f7", "/f299/x"] {
                    out.push(
                        snap.find(host, &method, path)
                            .map(|(_, r)| r.name.to_string()),
                    );
                }
            }
        }
        out
    }

    /// Whatever sequence of changes (accepted or refused), the patched live
    /// snapshot runs exactly the stored config, and routes requests as a
    /// snapshot compiled from scratch would.
    #[tokio::test]
    async fn patched_snapshots_match_a_full_compile_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = Store::open(&url).await.unwrap();
        let plane = Arc::new(DataPlane::new());
        let publisher = Publisher::new(
            store.clone(),
            Arc::clone(&plane),
            Metrics::new(Arc::clone(&plane)),
        );
        publisher.publish_current().await.unwrap();
        let mut rng = fastrand::Rng::with_seed(11);
        for name in ["u0", "u1"] {
            let u = upstream(name, &mut rng);
            publisher.apply(Change::CreateUpstream(u)).await.unwrap();
        }
        // Enough routes that the route table and indexes split into pieces.
        for i in 0..300 {
            let mut filler = route(&format!("f{i}"), &mut rng);
            filler.path = format!("/f{i}");
            filler.target = Some(RouteTarget::Upstream("u0".into()));
            publisher.apply(Change::CreateRoute(filler)).await.unwrap();
        }
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..200 {
            let r = format!("r{}", rng.usize(..8));
            let u = ["u0", "u1", "tmp"][rng.usize(..3)].to_string();
            let change = match rng.usize(..9) {
                0 | 1 => Change::CreateRoute(route(&r, &mut rng)),
                2 | 3 => Change::ReplaceRoute {
                    route: route(&r, &mut rng),
                    expect: None,
                },
                4 => Change::DeleteRoute {
                    name: r,
                    expect: None,
                },
                5 => Change::CreateUpstream(upstream(&u, &mut rng)),
                6 => Change::ReplaceUpstream {
                    upstream: upstream(&u, &mut rng),
                    expect: None,
                },
                7 => Change::DeleteUpstream {
                    name: u,
                    expect: None,
                },
                _ => Change::AddBackend {
                    upstream: u,
                    backend: NewBackend {
                        url: format!("http://10.9.0.{}:80", rng.u8(1..200)),
                        weight: 1,
                    },
                },
            };
            match publisher.apply(change).await {
                Ok(_) => accepted += 1,
                Err(_) => refused += 1,
            }
            let stored = store.load().await.unwrap();
            let live = plane.snapshot();
            assert_eq!(live.config(), stored);
            let fresh = Snapshot::build(&stored, &Registry::new()).unwrap();
            assert_eq!(answers(&live), answers(&fresh));
        }
        assert!(
            accepted > 60 && refused > 10,
            "{accepted} accepted, {refused} refused"
        );
    }
}
