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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use data_plane::config::GatewayConfig;
use data_plane::status::{UpstreamStatus, expected_shares};
use data_plane::{BuildError, DataPlane, Patch, PatchOutcome};
use serde::Serialize;
use serde_json::Value;
use sqlx::AnyConnection;
use tokio::sync::{Mutex, watch};

use crate::metrics::Metrics;
use crate::store::revisions::{self, ChangeMeta, Checkpoint, Resources, RevisionData, Summary};
use crate::store::{self, Applied, Change, Engine, Store, StoreError, Touched, postgres};
use crate::view::ConfigView;

/// Why a change was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change would produce a config the data plane refuses.
    #[error("{0}")]
    Rejected(BuildError),
}

/// What a change would do, found by making it in a transaction that is
/// then rolled back (`?dry_run=true`).
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub dry_run: bool,
    /// The live config version (a dry run changes none).
    pub config_version: u64,
    /// The change would leave the config as it is.
    pub no_op: bool,
    pub summary: Summary,
    /// RFC 6902 JSON Patch from the live `/admin/config` document (without
    /// its `version`) to the one the change would make.
    pub patch: json_patch::Patch,
    /// Each added, changed or removed upstream's expected split of
    /// requests, before and after.
    pub traffic: Vec<TrafficEffect>,
}

/// One upstream's expected split of requests before and after a change.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficEffect {
    pub upstream: String,
    pub backends: Vec<BackendShare>,
}

/// One backend's expected share of its upstream's requests (0 to 1).
#[derive(Debug, Clone, Serialize)]
pub struct BackendShare {
    pub url: String,
    /// Its live state (`unknown` for a backend the change adds).
    pub state: String,
    pub weight_before: Option<u32>,
    pub weight_after: Option<u32>,
    pub share_before: f64,
    pub share_after: f64,
}

/// Owns store → snapshot → swap.
#[derive(Debug)]
pub struct Publisher {
    store: Store,
    plane: Arc<DataPlane>,
    gate: Mutex<()>,
    metrics: Metrics,
    retention: u64,
    /// Whether the database answered the last time it was asked (a
    /// shared PostgreSQL can go away; changes are then refused at once).
    store_up: AtomicBool,
    /// The version of each snapshot put in force (the cache file's writer
    /// follows it).
    published: watch::Sender<u64>,
    /// A due checkpoint is being written (see [`Publisher::checkpoint_later`]).
    checkpointing: Arc<AtomicBool>,
}

/// The resource a change is about, to read it again after a no-op.
enum Target {
    Route(String),
    Upstream(String),
    Backend(String, u64),
    Config,
}

impl Target {
    fn of(change: &Change) -> Target {
        match change {
            Change::CreateRoute(r) | Change::ReplaceRoute { route: r, .. } => {
                Target::Route(r.name.clone())
            }
            Change::DeleteRoute { name, .. } => Target::Route(name.clone()),
            Change::CreateUpstream(u) | Change::ReplaceUpstream { upstream: u, .. } => {
                Target::Upstream(u.name.clone())
            }
            Change::DeleteUpstream { name, .. } | Change::AddBackend { upstream: name, .. } => {
                Target::Upstream(name.clone())
            }
            Change::UpdateBackend { upstream, id, .. }
            | Change::RemoveBackend { upstream, id, .. } => Target::Backend(upstream.clone(), *id),
            Change::ReplaceConfig { .. } => Target::Config,
        }
    }
}

/// What running a change came to. (One per admin change, moved once:
/// its size does not matter, as for [`Applied`].)
#[allow(clippy::large_enum_variant)]
enum Ran {
    Applied(u64, Applied),
    /// Nothing changed; with the whole config as it is when the change
    /// read it anyway.
    NoOp(Option<ConfigView>),
    Dry(Box<DryRun>),
}

/// How the new snapshot goes live.
enum Install {
    Patched(data_plane::Snapshot, data_plane::Retired),
    Whole(data_plane::Snapshot),
}

impl Publisher {
    pub fn new(store: Store, plane: Arc<DataPlane>, metrics: Metrics) -> Self {
        Publisher {
            store,
            plane,
            gate: Mutex::new(()),
            metrics,
            retention: revisions::DEFAULT_RETENTION,
            store_up: AtomicBool::new(true),
            published: watch::Sender::new(0),
            checkpointing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Add the whole config to the newest revision, in a task of its own
    /// (one at a time): reading, serialising and storing a large config
    /// takes long (about a second at 100,000 routes), and the change it
    /// fell due on has been answered already. Until it is stored, each
    /// change finds it still due and calls this again; a failure is logged
    /// and the next change tries again.
    fn checkpoint_later(&self) {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.store.clone();
        let busy = Arc::clone(&self.checkpointing);
        tokio::spawn(async move {
            if let Err(e) = write_checkpoint(&store).await {
                tracing::warn!(error = %e, "revision checkpoint not written (the next change tries again)");
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// Whether the database answered the last time it was asked.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// Record whether the database answers (`switchyard_store_up`).
    pub fn set_store_up(&self, up: bool) {
        if self.store_up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("config database reachable again");
            } else {
                tracing::warn!("config database unreachable: serving the live config");
            }
        }
        self.metrics.store_up.set(i64::from(up));
    }

    /// Follow the version of each snapshot this publisher puts in force.
    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Refuse at once while the database is known to be away; note it
    /// when a call finds it so.
    fn reachable(&self) -> Result<(), StoreError> {
        if self.store_up() {
            Ok(())
        } else {
            Err(StoreError::Unavailable)
        }
    }

    fn note<T>(&self, result: Result<T, PublishError>) -> Result<T, PublishError> {
        if let Err(PublishError::Store(StoreError::Unavailable)) = &result {
            self.set_store_up(false);
        }
        result
    }

    /// Keep the newest `retention` revisions (at least 1).
    pub fn with_retention(mut self, retention: u64) -> Self {
        self.retention = retention.max(1);
        self
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
        self.install_whole(&config)
    }

    /// Put `config` in force as it is (a start from the cache file).
    pub async fn publish_config(&self, config: &GatewayConfig) -> Result<u64, PublishError> {
        let _gate = self.gate.lock().await;
        self.install_whole(config)
    }

    fn install_whole(&self, config: &GatewayConfig) -> Result<u64, PublishError> {
        let mut compiled = Compiled::new(&self.plane);
        let snapshot = self.plane.compile(config).map_err(PublishError::Rejected)?;
        let version = snapshot.version();
        // Under the gate nothing newer can be live: install cannot be stale.
        compiled.installed = true;
        let _ = self.plane.install(snapshot);
        self.published.send_replace(version);
        Ok(version)
    }

    /// Put in force what other gateways sharing the database committed
    /// after the live version: the revisions since name what changed,
    /// which is read in one consistent read and patched into the live
    /// snapshot (the whole config is compiled only when those revisions
    /// are no longer kept, or changed a lot). Returns the version live.
    pub async fn catch_up(&self) -> Result<u64, PublishError> {
        let _gate = self.gate.lock().await;
        let result = self.catch_up_locked().await;
        self.note(result)
    }

    async fn catch_up_locked(&self) -> Result<u64, PublishError> {
        let live = self.plane.snapshot().version();
        let mut tx = self.store.begin_read().await?;
        let version = store::config_version(&mut tx).await?;
        if version <= live {
            if version < live {
                tracing::warn!(
                    database = version,
                    live,
                    "the database is older than the live config (restored from a backup?): keeping the live config"
                );
            }
            return Ok(live);
        }
        let started = Instant::now();
        let mut compiled = Compiled::new(&self.plane);
        let outcome = match revisions::touched_between(&mut tx, live, version).await? {
            Some(touched) => self.patch(&mut tx, version, touched).await?,
            None => PatchOutcome::Rebuild,
        };
        match outcome {
            PatchOutcome::Patched(snapshot, retired) => {
                compiled.installed = true;
                let _ = self.plane.install_patched(snapshot, &retired);
            }
            // What other gateways committed, patched in an order that may
            // meet itself (two routes trading paths): the whole config
            // decides.
            PatchOutcome::Refused(_) | PatchOutcome::Rebuild => {
                let config = store::load_config(&mut tx).await?;
                let snapshot = self
                    .plane
                    .compile(&config)
                    .map_err(PublishError::Rejected)?;
                compiled.installed = true;
                let _ = self.plane.install(snapshot);
            }
        }
        self.published.send_replace(version);
        tracing::debug!(
            from = live,
            version,
            elapsed_us = started.elapsed().as_micros() as u64,
            "caught up with the database"
        );
        Ok(version)
    }

    /// Apply `change` and publish the result with its revision; returns
    /// the new version and what the change produced. A change that leaves
    /// the config as it is writes nothing: the current version and the
    /// resource as it is.
    pub async fn apply(
        &self,
        change: Change,
        meta: &ChangeMeta,
    ) -> Result<(u64, Applied), PublishError> {
        let (version, applied, _) = self.apply_revised(change, meta).await?;
        Ok((version, applied))
    }

    /// [`Publisher::apply`], also saying whether the change made a
    /// revision (`false`: it changed nothing).
    pub async fn apply_revised(
        &self,
        change: Change,
        meta: &ChangeMeta,
    ) -> Result<(u64, Applied, bool), PublishError> {
        let target = Target::of(&change);
        let _gate = self.gate.lock().await;
        let started = Instant::now();
        let result = match self.reachable() {
            Ok(()) => self.note(self.run_locked(change, Some(meta)).await),
            Err(e) => Err(e.into()),
        };
        let elapsed = started.elapsed();
        let result = match result {
            Ok(Ran::Applied(version, applied)) => {
                self.metrics.publish_seconds.observe(elapsed.as_secs_f64());
                tracing::debug!(
                    version,
                    elapsed_us = elapsed.as_micros() as u64,
                    "config published"
                );
                Ok((version, applied, true))
            }
            Ok(Ran::NoOp(now)) => {
                let (version, applied) = match (now, target) {
                    (Some(view), Target::Config) => (view.version, Applied::Config(view)),
                    (_, target) => self.current(target).await?,
                };
                Ok((version, applied, false))
            }
            Ok(Ran::Dry(_)) => unreachable!("not a dry run"),
            Err(e) => Err(e),
        };
        let label = match &result {
            Ok(_) => "ok",
            Err(PublishError::Store(
                StoreError::Database(_)
                | StoreError::Migrate(_)
                | StoreError::Corrupt(_)
                | StoreError::Unavailable,
            )) => "error",
            Err(_) => "rejected",
        };
        self.metrics.publish_total.with_label_values(&[label]).inc();
        result
    }

    /// What `change` would do: validated and compiled as [`Publisher::apply`]
    /// would (so it fails as the real change would), then rolled back.
    pub async fn dry_run(&self, change: Change) -> Result<DryRun, PublishError> {
        self.reachable()?;
        let _gate = self.gate.lock().await;
        match self.note(self.run_locked(change, None).await)? {
            Ran::Dry(dry) => Ok(*dry),
            _ => unreachable!("a dry run"),
        }
    }

    /// The resource a no-op change was about, as it is.
    async fn current(&self, target: Target) -> Result<(u64, Applied), StoreError> {
        let store = &self.store;
        let version = store.config_version().await?;
        let applied = match target {
            Target::Route(name) => Applied::Route(store.route(&name).await?),
            Target::Upstream(name) => Applied::Upstream(store.upstream(&name).await?),
            Target::Backend(upstream, id) => Applied::Backend(store.backend(&upstream, id).await?),
            Target::Config => Applied::Config(store.export().await?),
        };
        Ok((version, applied))
    }

    /// Run `change` in a write transaction: commit it with its revision
    /// (`meta`), or, for a dry run (`None`), report and roll back.
    async fn run_locked(
        &self,
        change: Change,
        meta: Option<&ChangeMeta>,
    ) -> Result<Ran, PublishError> {
        let dry = meta.is_none();
        let mut tx = self.store.begin_write().await?;
        let version = store::bump_version(&mut tx).await?;
        // What other gateways sharing the database committed that this one
        // has not put in force yet (their NOTIFY is on its way): patched
        // in with this change (`None` inside: compile the whole config).
        let live = self.plane.snapshot().version();
        let behind = if live + 1 < version {
            Some(revisions::touched_between(&mut tx, live, version - 1).await?)
        } else {
            None
        };
        let touched = change.touched();
        // The state before of what the change may alter (and, for a dry
        // run, the whole document, for its patch); then after.
        let scope = match &touched {
            Some(t) => Some(self.scope(&mut tx, t).await?),
            None => None,
        };
        let (whole_before, scoped_before) = state(&mut tx, scope.as_ref(), dry).await?;
        let applied = store::apply(&mut tx, change, version).await?;
        // On error `tx` is dropped and rolls back: nothing is written.
        // As it is: as this transaction read it before the change (whose
        // export read the version this transaction bumped).
        let no_op = |whole_before: Option<ConfigView>| {
            Ran::NoOp(whole_before.map(|view| ConfigView {
                version: version - 1,
                ..view
            }))
        };
        if matches!(applied, Applied::Unchanged) && !dry {
            // The stored config written again: the store found every row
            // the same, so nothing else needs comparing.
            return Ok(no_op(whole_before));
        }
        let (applied, written) = match applied {
            Applied::Replaced(written) => {
                let before = whole_before.as_ref().expect("exported without a scope");
                let view = store::export_after(&mut tx, before, &written).await?;
                (Applied::Config(view), Some(written))
            }
            other => (other, None),
        };
        let whole_state = |view: Option<&ConfigView>| {
            Resources::of_export(view.expect("exported without a scope"))
        };
        // A whole config written comes back as its export after (the
        // export before with the entries the store wrote read again): the
        // state after, not read again. Only the routes and upstreams whose
        // rows the store wrote can differ, and only those are compared (not
        // for a dry run: its patch is between the whole documents).
        let read_after;
        let (before, whole_after, after) = match (&applied, written) {
            (Applied::Config(view), Some(written)) if !dry => (
                Resources::of_export_named(
                    whole_before.as_ref().expect("exported without a scope"),
                    &written,
                ),
                Some(view),
                Resources::of_export_named(view, &written),
            ),
            (Applied::Config(view), _) => (
                scoped_before.unwrap_or_else(|| whole_state(whole_before.as_ref())),
                Some(view),
                Resources::of_export(view),
            ),
            (Applied::Unchanged, _) => {
                let before = whole_state(whole_before.as_ref());
                (before.clone(), whole_before.as_ref(), before)
            }
            _ => {
                let (whole, after) = state(&mut tx, scope.as_ref(), dry).await?;
                read_after = whole;
                (
                    scoped_before.expect("a change's own scope"),
                    read_after.as_ref(),
                    after.expect("a change's own scope"),
                )
            }
        };
        let summary = revisions::summary(&before, &after);
        if summary.is_empty() && !dry {
            return Ok(no_op(whole_before));
        }
        // A whole config written (a `PUT`, a rollback) may change a few
        // things only: then those are patched in like any change's, and the
        // rest of the live snapshot stays as it was compiled. A patch that
        // is more than this change's own (a summary's, or merged with other
        // gateways' revisions) may be refused for the order it applies
        // things in (two routes trading paths): then the whole config is
        // compiled, and that decides.
        let own = touched.is_some() && behind.is_none();
        let touched = touched.or_else(|| summary.touched());
        let touched = match (touched, behind) {
            (touched, None) => touched,
            (Some(touched), Some(Some(lag))) => Some(touched.merged(lag)),
            (_, Some(None)) | (None, _) => None,
        };
        // From here a compile may register live state for what it builds:
        // forgotten again unless its snapshot is put in force.
        let mut compiled = Compiled::new(&self.plane);
        let install = match touched {
            Some(touched) => match self.patch(&mut tx, version, touched).await? {
                PatchOutcome::Patched(snapshot, retired) => {
                    Some(Install::Patched(snapshot, retired))
                }
                PatchOutcome::Refused(e) if own => return Err(PublishError::Rejected(e)),
                PatchOutcome::Refused(_) | PatchOutcome::Rebuild => None,
            },
            None => None,
        };
        let install = match install {
            Some(install) => install,
            None => {
                let config = store::load_config(&mut tx).await?;
                let snapshot = self
                    .plane
                    .compile(&config)
                    .map_err(PublishError::Rejected)?;
                Install::Whole(snapshot)
            }
        };
        let Some(meta) = meta else {
            let (before_doc, after_doc) = (
                whole_before.as_ref().expect("exported for a dry run"),
                whole_after.expect("exported for a dry run"),
            );
            let traffic = self.traffic(&before, &after, &summary);
            return Ok(Ran::Dry(Box::new(DryRun {
                dry_run: true,
                config_version: version - 1,
                no_op: summary.is_empty(),
                patch: Resources::of_export(before_doc).patch_to(&Resources::of_export(after_doc)),
                summary,
                traffic,
            })));
        };
        // A whole config written keeps a delta too (the entries of what it
        // changed), like any change: at 100,000 routes a checkpoint is 17 MB.
        // The config's size: the larger of before and after (a whole
        // config written may grow it many times over).
        let (checkpoint, weight) = {
            let live = self.plane.snapshot();
            let before = live.route_count() + live.upstream_count();
            let after = whole_after.map_or(0, |v| v.routes.len() + v.upstreams.len());
            revisions::checkpoint(&mut tx, version, before.max(after), summary.len()).await?
        };
        let data = if checkpoint == Checkpoint::Required {
            // Written as its text (not through a `Value`: at 100,000
            // routes a tree of a few hundred thousand small allocations).
            let doc = match whole_after {
                Some(doc) => serde_json::to_string(doc),
                None => serde_json::to_string(&store::export_in(&mut tx).await?),
            };
            RevisionData::Checkpoint(doc.expect("a config view serialises"))
        } else {
            RevisionData::Delta(revisions::delta(&after, &summary))
        };
        revisions::record(
            &mut tx,
            version,
            meta,
            &summary,
            data,
            weight,
            self.retention,
        )
        .await?;
        if self.store.engine() == Engine::Postgres {
            postgres::notify(&mut tx, version).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        if checkpoint == Checkpoint::Due {
            self.checkpoint_later();
        }
        compiled.installed = true;
        match install {
            Install::Patched(snapshot, retired) => {
                let _ = self.plane.install_patched(snapshot, &retired);
            }
            Install::Whole(snapshot) => {
                let _ = self.plane.install(snapshot);
            }
        }
        self.published.send_replace(version);
        Ok(Ran::Applied(version, applied))
    }

    /// The routes and upstreams a change touching `touched` may alter:
    /// those named, the upstreams the named routes use, and the upstream a
    /// route may own (named after it).
    async fn scope(
        &self,
        conn: &mut AnyConnection,
        touched: &Touched,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), StoreError> {
        let routes: BTreeSet<String> = touched.routes.iter().cloned().collect();
        let mut upstreams: BTreeSet<String> = touched.upstreams.iter().cloned().collect();
        for name in &routes {
            upstreams.insert(name.clone());
            if let Some(route) = store::load_route(conn, name).await? {
                upstreams.extend(route.upstream);
            }
        }
        Ok((routes, upstreams))
    }

    /// Each changed upstream's expected split before and after, from its
    /// strategy, weights and the live health of its backends.
    fn traffic(
        &self,
        before: &Resources,
        after: &Resources,
        summary: &Summary,
    ) -> Vec<TrafficEffect> {
        let live = self.plane.snapshot();
        summary
            .upstreams
            .names()
            .map(|name| {
                let states: Vec<(String, String)> = UpstreamStatus::named(&live, name)
                    .map(|u| {
                        u.backends
                            .into_iter()
                            .map(|b| (b.url, b.state.to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let state_of = |url: &str| {
                    states
                        .iter()
                        .find(|(u, _)| u == url)
                        .map_or("unknown", |(_, s)| s.as_str())
                        .to_string()
                };
                let was = split(before.upstreams.get(name).cloned().flatten(), &state_of);
                let is = split(after.upstreams.get(name).cloned().flatten(), &state_of);
                let mut urls: Vec<&String> = was.iter().map(|(u, ..)| u).collect();
                urls.extend(
                    is.iter()
                        .map(|(u, ..)| u)
                        .filter(|u| !was.iter().any(|(w, ..)| w == *u)),
                );
                let backends = urls
                    .into_iter()
                    .map(|url| {
                        let b = was.iter().find(|(u, ..)| u == url);
                        let a = is.iter().find(|(u, ..)| u == url);
                        BackendShare {
                            url: url.clone(),
                            state: state_of(url),
                            weight_before: b.map(|(_, w, _)| *w),
                            weight_after: a.map(|(_, w, _)| *w),
                            share_before: b.map_or(0.0, |(.., s)| *s),
                            share_after: a.map_or(0.0, |(.., s)| *s),
                        }
                    })
                    .collect();
                TrafficEffect {
                    upstream: name.clone(),
                    backends,
                }
            })
            .collect()
    }

    /// Read back what a change touched and patch the live snapshot with it
    /// ([`PatchOutcome::Rebuild`] when the live snapshot is not the version
    /// before: then the whole config is compiled).
    async fn patch(
        &self,
        conn: &mut AnyConnection,
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

/// A compile under way in the publisher. Dropped before its snapshot is
/// installed (a dry run, a refused config, a change that failed to load
/// or to commit), it forgets the live state the compile registered
/// (counters, health) for routes, upstreams and backends that never went
/// live, and puts the live routes' own rate-limit buckets back. Before,
/// that state stayed in the registry until the next whole install:
/// unbounded with dry runs of new names, and handed to a later change
/// adding the same name; and a dry run that removed or changed a live
/// route's limit dropped its buckets for good. Runs under the gate, where
/// no other compile is under way.
struct Compiled<'a> {
    plane: &'a DataPlane,
    installed: bool,
}

impl<'a> Compiled<'a> {
    fn new(plane: &'a DataPlane) -> Self {
        Compiled {
            plane,
            installed: false,
        }
    }
}

impl Drop for Compiled<'_> {
    fn drop(&mut self) {
        if !self.installed {
            self.plane.forget_unused();
        }
    }
}

/// The state of what a change may alter: with a `scope` (routes and
/// upstreams by name), those as [`Resources`], and the whole export too
/// when `whole` (a dry run's patch); without one (everything), the whole
/// export only (its [`Resources`] are made from it when needed: not for
/// the stored config written again).
async fn state(
    conn: &mut AnyConnection,
    scope: Option<&(BTreeSet<String>, BTreeSet<String>)>,
    whole: bool,
) -> Result<(Option<ConfigView>, Option<Resources>), StoreError> {
    let export = if scope.is_none() || whole {
        Some(store::export_in(conn).await?)
    } else {
        None
    };
    let state = match scope {
        Some((routes, upstreams)) => Some(store::resources(conn, routes, upstreams).await?),
        None => None,
    };
    Ok((export, state))
}

/// The whole config as committed now, added to its revision as a
/// checkpoint (serialised on a blocking thread: at 100,000 routes that is
/// a few hundred milliseconds of CPU).
async fn write_checkpoint(store: &Store) -> Result<(), StoreError> {
    let started = Instant::now();
    let doc = store.export().await?;
    let version = doc.version;
    let doc = tokio::task::spawn_blocking(move || {
        serde_json::to_string(&doc).expect("a config view serialises")
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("serialising a checkpoint: {e}")))?;
    let added = store.add_checkpoint(version, doc).await?;
    tracing::debug!(
        version,
        added,
        ms = started.elapsed().as_millis() as u64,
        "revision checkpoint"
    );
    Ok(())
}

/// An upstream's expected split (url, weight, share), from its config
/// document and its backends' live states ([`expected_shares`]: a backend
/// is up unless `unhealthy` or `ejected`).
pub fn split(
    upstream: Option<Value>,
    state_of: &dyn Fn(&str) -> String,
) -> Vec<(String, u32, f64)> {
    let Some(u) = upstream else {
        return Vec::new();
    };
    let backends: Vec<(String, u32)> = u["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| Some((b["url"].as_str()?.to_string(), b["weight"].as_u64()? as u32)))
        .collect();
    let up: Vec<(u32, bool)> = backends
        .iter()
        .map(|(url, w)| {
            (
                *w,
                !matches!(state_of(url).as_str(), "unhealthy" | "ejected"),
            )
        })
        .collect();
    let (_, shares) = expected_shares(
        u["strategy"].as_str() == Some("round_robin"),
        u["fail_open"].as_bool().unwrap_or(false),
        &up,
    );
    backends
        .into_iter()
        .zip(shares)
        .map(|((url, w), share)| (url, w, share))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use data_plane::config::{Strategy, UpstreamPolicy};
    use data_plane::{Registry, Snapshot};
    use http::Method;

    use super::*;
    use crate::model::{NewBackend, Route, RouteTarget, Upstream};
    use crate::store::revisions::{self, ChangeMeta};

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

    /// A publisher on a new database in `dir`, its (empty) config live.
    pub(crate) async fn started(dir: &tempfile::TempDir) -> (Store, Arc<DataPlane>, Publisher) {
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = Store::open(&url).await.unwrap();
        let plane = Arc::new(DataPlane::new());
        let publisher = Publisher::new(
            store.clone(),
            Arc::clone(&plane),
            Metrics::new(Arc::clone(&plane)),
        );
        publisher.publish_current().await.unwrap();
        (store, plane, publisher)
    }

    /// Whatever sequence of changes (accepted or refused), the patched live
    /// snapshot runs exactly the stored config, and routes requests as a
    /// snapshot compiled from scratch would.
    #[tokio::test]
    async fn patched_snapshots_match_a_full_compile_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, plane, publisher) = started(&dir).await;
        let mut rng = fastrand::Rng::with_seed(11);
        let meta = ChangeMeta::internal(revisions::Source::Api, "test");
        for name in ["u0", "u1"] {
            let u = upstream(name, &mut rng);
            publisher
                .apply(Change::CreateUpstream(u), &meta)
                .await
                .unwrap();
        }
        // Enough routes that the route table and indexes split into pieces.
        for i in 0..300 {
            let mut filler = route(&format!("f{i}"), &mut rng);
            filler.path = format!("/f{i}");
            filler.target = Some(RouteTarget::Upstream("u0".into()));
            publisher
                .apply(Change::CreateRoute(filler), &meta)
                .await
                .unwrap();
        }
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..200 {
            let r = format!("r{}", rng.usize(..8));
            let u = ["u0", "u1", "tmp"][rng.usize(..3)].to_string();
            let change = match rng.usize(..11) {
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
                8 => Change::AddBackend {
                    upstream: u,
                    backend: NewBackend {
                        url: format!("http://10.9.0.{}:80", rng.u8(1..200)),
                        weight: 1,
                    },
                    expect: None,
                },
                // The whole config as stored, written back with a few
                // things changed (patched in) or with every filler route
                // moved (more than a patch takes: compiled whole).
                few => replace(stored_with_changes(&store, few == 9, &mut rng).await),
            };
            match publisher.apply(change, &meta).await {
                Ok(_) => accepted += 1,
                Err(_) => refused += 1,
            }
            // The revision of the version in force rebuilds the stored
            // config (checkpoints and deltas alike).
            if accepted % 7 == 0 {
                let export = serde_json::to_value(store.export().await.unwrap()).unwrap();
                let version = export["version"].as_u64().unwrap();
                let (_, state) = store.revision(version).await.unwrap();
                assert_eq!(
                    revisions::Resources::of_document(export),
                    state,
                    "at {version}"
                );
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

    /// Make the whole config `config`, whatever the version.
    fn replace(config: crate::model::Config) -> Change {
        Change::ReplaceConfig {
            config,
            expect: None,
        }
    }

    /// The stored config as a document to write back: with a route removed,
    /// one renamed, two trading paths and a backend reweighed (`few`), or
    /// every filler route (`f{i}`) moved between `/f{i}` and `/g{i}`.
    async fn stored_with_changes(
        store: &Store,
        few: bool,
        rng: &mut fastrand::Rng,
    ) -> crate::model::Config {
        let mut doc = serde_json::to_value(store.export().await.unwrap()).unwrap();
        let routes = doc["routes"].as_array_mut().unwrap();
        if few {
            routes.remove(rng.usize(..routes.len()));
            let renamed = rng.usize(..routes.len());
            let name = format!("{}n", routes[renamed]["name"].as_str().unwrap());
            routes[renamed]["name"] = name.into();
            let (a, b) = (rng.usize(..routes.len()), rng.usize(..routes.len()));
            let path = routes[a]["path"].take();
            routes[a]["path"] = routes[b]["path"].take();
            routes[b]["path"] = path;
            let upstreams = doc["upstreams"].as_array_mut().unwrap();
            let u = rng.usize(..upstreams.len());
            if let Some(b) = upstreams[u]["backends"].get_mut(0) {
                b["weight"] = rng.u32(1..5).into();
            }
        } else {
            for r in routes.iter_mut() {
                let name = r["name"].as_str().unwrap().to_string();
                if let Some(i) = name.strip_prefix('f') {
                    let moved = r["path"] == format!("/f{i}");
                    r["path"] = format!("/{}{i}", if moved { 'g' } else { 'f' }).into();
                }
            }
        }
        let spec: crate::model::ConfigSpec = crate::model::parse(doc).unwrap();
        spec.validate().unwrap()
    }

    /// Import `n` routes over one upstream `shop` with backends 1 and 2;
    /// the version it made.
    async fn import_routes(publisher: &Publisher, n: usize) -> u64 {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut shop = upstream("shop", &mut rng);
        shop.backends = vec![
            NewBackend {
                url: "http://10.0.0.1:80".into(),
                weight: 1,
            },
            NewBackend {
                url: "http://10.0.0.2:80".into(),
                weight: 1,
            },
        ];
        let routes = (0..n)
            .map(|i| {
                let mut r = route(&format!("r{i}"), &mut rng);
                r.path = format!("/t{}/p{}", i / 10, i % 10);
                r.hosts = vec![];
                r.methods = vec![];
                r.target = Some(RouteTarget::Upstream("shop".into()));
                r.policies = Default::default();
                r
            })
            .collect();
        let config = crate::model::Config {
            upstreams: vec![crate::model::ConfigUpstream {
                upstream: shop,
                owner_route: None,
            }],
            routes,
        };
        let meta = ChangeMeta::internal(revisions::Source::Import, "test");
        let (version, _) = publisher.apply(replace(config), &meta).await.unwrap();
        version
    }

    /// A whole config in which two routes trade paths and one is renamed
    /// is accepted, as a whole compile accepts it, although patching it in
    /// meets itself (the first route put finds the second on its path).
    #[tokio::test]
    async fn a_whole_config_with_routes_trading_paths_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (store, plane, publisher) = started(&dir).await;
        let meta = ChangeMeta::internal(revisions::Source::Import, "test");
        publisher
            .apply(replace(numbered_config(1, 3)), &meta)
            .await
            .unwrap();
        let mut config = numbered_config(1, 3);
        config.routes[0].path = "/p1".into();
        config.routes[1].path = "/p0".into();
        config.routes[2].name = "r2n".into();
        let (version, _) = publisher.apply(replace(config), &meta).await.unwrap();
        let live = plane.snapshot();
        assert_eq!(live.version(), version);
        assert_eq!(live.config(), store.load().await.unwrap());
        assert_eq!(live.route_named("r0").unwrap().config().path, "/p1");
        assert!(live.route_named("r2").is_none());
        assert!(live.route_named("r2n").is_some());
    }

    /// A compile whose snapshot never goes live leaves no live state in the
    /// registry: a dry run patched in, a dry run of a whole config
    /// (compiled whole), a refused change. The same route applied for real
    /// does register its state, so the checks can fail. Dry runs of that
    /// live rate-limited route leave its buckets as they are.
    #[tokio::test]
    async fn compiles_never_installed_leave_nothing_in_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, plane, publisher) = started(&dir).await;
        let meta = ChangeMeta::internal(revisions::Source::Import, "test");
        publisher
            .apply(replace(numbered_config(2, 4)), &meta)
            .await
            .unwrap();
        let held = plane.registry().held();
        let mut rng = fastrand::Rng::with_seed(9);
        let mut new = route("dry", &mut rng);
        new.path = "/dry".into();
        new.target = Some(RouteTarget::Inline {
            strategy: Strategy::RoundRobin,
            backends: vec![NewBackend {
                url: "http://10.9.9.9:80".into(),
                weight: 1,
            }],
        });
        new.policies = serde_json::from_value(serde_json::json!(
            {"rate_limit": {"key": "client_ip", "requests_per_second": 5, "burst": 3}}
        ))
        .unwrap();
        let dry = publisher
            .dry_run(Change::CreateRoute(new.clone()))
            .await
            .unwrap();
        assert!(!dry.no_op);
        assert_eq!(plane.registry().held(), held, "a dry run patched in");

        // New connection settings make a new client (pool, TLS roots):
        // dropped with the dry run's snapshot.
        let mut slow_connect = upstream("u1", &mut rng);
        slow_connect.policy.timeouts.connect_ms = 1234;
        let slow_connect = Change::ReplaceUpstream {
            upstream: slow_connect,
            expect: None,
        };
        publisher.dry_run(slow_connect.clone()).await.unwrap();
        assert_eq!(
            plane.registry().held(),
            held,
            "new connection settings' dry run"
        );

        // 600 names: more than a summary patches in, so compiled whole.
        publisher
            .dry_run(replace(numbered_config(300, 300)))
            .await
            .unwrap();
        assert_eq!(plane.registry().held(), held, "a whole config's dry run");

        // On the path, hosts and methods of r0: refused.
        let mut clash = new.clone();
        clash.name = "clash".into();
        clash.path = "/p0".into();
        clash.hosts = vec![];
        clash.methods = vec![];
        assert!(
            publisher
                .apply(Change::CreateRoute(clash), &meta)
                .await
                .is_err()
        );
        assert_eq!(plane.registry().held(), held, "a refused change");

        publisher
            .apply(Change::CreateRoute(new.clone()), &meta)
            .await
            .unwrap();
        publisher.apply(slow_connect, &meta).await.unwrap();
        let live = plane.registry().held();
        assert!(
            live.routes > held.routes
                && live.upstreams > held.upstreams
                && live.backends > held.backends
                && live.rate_limits > held.rate_limits
                && live.clients > held.clients,
            "{live:?} after the route and the settings went live, {held:?} before"
        );

        // Dry runs that move the live limited route to another upstream,
        // change its limit, or remove it: its buckets stay its own, and a
        // real change that keeps its limit keeps them.
        let buckets = |plane: &DataPlane| {
            let snap = plane.snapshot();
            let route = snap.route_named("dry").expect("live");
            Arc::clone(route.policies.as_ref().unwrap().rate_limiter().unwrap())
        };
        let before = buckets(&plane);
        let mut moved = new.clone();
        moved.target = Some(RouteTarget::Upstream("u0".into()));
        let mut other_limit = new.clone();
        other_limit.policies = serde_json::from_value(serde_json::json!(
            {"rate_limit": {"key": "client_ip", "requests_per_second": 7, "burst": 3}}
        ))
        .unwrap();
        let mut unlimited = new.clone();
        unlimited.policies = Default::default();
        for dry in [moved, other_limit, unlimited] {
            publisher
                .dry_run(Change::ReplaceRoute {
                    route: dry,
                    expect: None,
                })
                .await
                .unwrap();
            assert_eq!(plane.registry().held(), live, "a dry run of the live route");
        }
        let mut slower = new;
        slower.timeout_ms = Some(4321);
        publisher
            .apply(
                Change::ReplaceRoute {
                    route: slower,
                    expect: None,
                },
                &meta,
            )
            .await
            .unwrap();
        assert!(
            Arc::ptr_eq(&before, &buckets(&plane)),
            "the route's rate-limit buckets were replaced"
        );

        // The settings changed back: the other client, used by nothing
        // else, is pruned by that change.
        let mut default_connect = upstream("u1", &mut rng);
        default_connect.policy = Default::default();
        let change = Change::ReplaceUpstream {
            upstream: default_connect,
            expect: None,
        };
        publisher.apply(change, &meta).await.unwrap();
        assert_eq!(
            plane.registry().held().clients,
            held.clients,
            "the replaced client was kept"
        );
    }

    /// A config of `upstreams` upstreams (`u{i}`, two backends each) and
    /// `routes` routes (`r{j}` on `/p{j}`, over `u{j % upstreams}`).
    fn numbered_config(upstreams: usize, routes: usize) -> crate::model::Config {
        let mut rng = fastrand::Rng::with_seed(5);
        crate::model::Config {
            upstreams: (0..upstreams)
                .map(|i| {
                    let mut u = upstream(&format!("u{i}"), &mut rng);
                    u.strategy = Strategy::RoundRobin;
                    u.backends = (1..=2)
                        .map(|b| NewBackend {
                            url: format!("http://10.{b}.{}.{}:80", i / 250, i % 250),
                            weight: 1,
                        })
                        .collect();
                    crate::model::ConfigUpstream {
                        upstream: u,
                        owner_route: None,
                    }
                })
                .collect(),
            routes: (0..routes)
                .map(|j| {
                    let mut r = route(&format!("r{j}"), &mut rng);
                    r.path = format!("/p{j}");
                    r.hosts = vec![];
                    r.methods = vec![];
                    r.target = Some(RouteTarget::Upstream(format!("u{}", j % upstreams)));
                    r.policies = Default::default();
                    r
                })
                .collect(),
        }
    }

    /// A whole config written over a stored one: what stays keeps its
    /// backends' ids and versions, what changed is written, every upstream
    /// and route gets the new version. With more rows of each table than
    /// one of its batched inserts takes (30,000 parameters: 2,727 routes,
    /// 3,750 upstreams, 7,500 backends). The same document again (in
    /// another order) writes nothing; one weight changed is written; every
    /// route changed (past `ROUTE_EDITS`) is written in batches.
    #[tokio::test]
    async fn a_config_replaced_keeps_what_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (store, plane, publisher) = started(&dir).await;
        let meta = ChangeMeta::internal(revisions::Source::Import, "test");
        let (n_up, n_routes) = (3_800, 2_800);
        let (v1, _) = publisher
            .apply(replace(numbered_config(n_up, n_routes)), &meta)
            .await
            .unwrap();
        let by_name = |list: Vec<crate::view::UpstreamView>| {
            list.into_iter()
                .map(|u| (u.upstream.name.clone(), u))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let before = by_name(store.list_upstreams().await.unwrap().0);
        assert_eq!(before.len(), n_up);
        let ids = |u: &crate::view::UpstreamView| -> Vec<(String, u64)> {
            u.upstream
                .backends
                .iter()
                .map(|b| (b.url.clone(), b.id))
                .collect()
        };
        let max_id = before
            .values()
            .flat_map(&ids)
            .map(|(_, id)| id)
            .max()
            .unwrap();
        assert_eq!(max_id, 2 * n_up as u64, "ids given in the document's order");
        assert_eq!(before["u7"].upstream.backends[1].id, 16);

        // u0 goes (its routes move to u1), u1 reweighs a backend, u2
        // swaps one, u3 changes strategy; a route goes, one comes, one
        // changes its path (each route written on its own: a few).
        let second = || {
            let mut config = numbered_config(n_up, n_routes);
            config.upstreams.remove(0);
            config.upstreams[0].upstream.backends[0].weight = 5;
            config.upstreams[1].upstream.backends[1].url = "http://10.9.0.2:80".into();
            config.upstreams[2].upstream.strategy = Strategy::LeastConnections;
            for r in &mut config.routes {
                if r.target == Some(RouteTarget::Upstream("u0".into())) {
                    r.target = Some(RouteTarget::Upstream("u1".into()));
                }
            }
            config.routes.pop();
            let mut extra = config.routes[5].clone();
            extra.name = "new".into();
            extra.path = "/new".into();
            config.routes.push(extra);
            config.routes[9].path = "/moved".into();
            config
        };
        let (v2, _) = publisher.apply(replace(second()), &meta).await.unwrap();
        assert_eq!(v2, v1 + 1);

        let after = by_name(store.list_upstreams().await.unwrap().0);
        assert_eq!(after.len(), n_up - 1);
        assert!(!after.contains_key("u0"));
        assert!(
            after.values().all(|u| u.version == v2),
            "every upstream is written"
        );
        let backends = |name: &str| after[name].upstream.backends.clone();
        let (b1, b2, b3, b9) = (
            backends("u1"),
            backends("u2"),
            backends("u3"),
            backends("u9"),
        );
        assert_eq!(ids(&after["u1"]), ids(&before["u1"]));
        assert_eq!((b1[0].weight, b1[0].version), (5, v2));
        assert_eq!((b1[1].weight, b1[1].version), (1, v1));
        assert_eq!(
            (b2[0].id, b2[0].version),
            (before["u2"].upstream.backends[0].id, v1)
        );
        assert_eq!(b2[1].url, "http://10.9.0.2:80");
        assert_eq!((b2[1].id, b2[1].version), (max_id + 1, v2));
        assert_eq!(after["u3"].upstream.strategy, Strategy::LeastConnections);
        assert_eq!(ids(&after["u3"]), ids(&before["u3"]));
        assert!(b3.iter().chain(&b9).all(|b| b.version == v1));
        assert_eq!(ids(&after["u9"]), ids(&before["u9"]));

        let (routes, _) = store.list_routes().await.unwrap();
        assert_eq!(routes.len(), n_routes);
        assert!(routes.iter().all(|r| r.version == v2));
        let r0 = routes.iter().find(|r| r.route.name == "r0").unwrap();
        assert_eq!(r0.route.upstream.as_deref(), Some("u1"));
        assert!(
            routes
                .iter()
                .any(|r| r.route.name == "new" && r.route.path == "/new")
        );
        assert!(
            !routes
                .iter()
                .any(|r| r.route.name == format!("r{}", n_routes - 1))
        );
        let r9 = routes.iter().find(|r| r.route.name == "r9").unwrap();
        assert_eq!(r9.route.path, "/moved");
        // And it is what runs.
        assert_eq!(plane.snapshot().config(), store.load().await.unwrap());
        // Its revision: what changed (the names the store wrote whose
        // entries differ), kept as a delta, from which the config at v2 is
        // rebuilt as it is.
        let (revision, state) = store.revision(v2).await.unwrap();
        let s = &revision.summary;
        let last = format!("r{}", n_routes - 1);
        assert_eq!(
            (&s.routes.added, &s.routes.changed, &s.routes.removed),
            (
                &vec!["new".to_string()],
                &vec!["r0".to_string(), "r9".to_string()],
                &vec![last]
            )
        );
        assert_eq!(
            (
                &s.upstreams.added,
                &s.upstreams.changed,
                &s.upstreams.removed
            ),
            (
                &vec![],
                &vec!["u1".to_string(), "u2".into(), "u3".into()],
                &vec!["u0".to_string()]
            )
        );
        let (checkpoint, delta) = store.revision_data_bytes(v2).await.unwrap();
        assert!(
            checkpoint == 0 && delta > 0 && delta < 10_000,
            "{checkpoint} {delta}"
        );
        assert_eq!(state, Resources::of_export(&store.export().await.unwrap()));

        // The same document again, in another order (routes and backends
        // reversed): nothing is written, every version stays.
        let exported = store.export().await.unwrap();
        let mut again = second();
        again.routes.reverse();
        for u in &mut again.upstreams {
            u.upstream.backends.reverse();
        }
        let (v, applied, revised) = publisher
            .apply_revised(replace(again), &meta)
            .await
            .unwrap();
        assert_eq!((v, revised), (v2, false));
        assert!(matches!(applied, Applied::Config(view) if view == exported));
        assert_eq!(store.config_version().await.unwrap(), v2);
        assert_eq!(store.export().await.unwrap(), exported);
        let (routes, _) = store.list_routes().await.unwrap();
        assert!(routes.iter().all(|r| r.version == v2));

        // Only a weight changed, the routes as stored: written.
        let mut reweighed = second();
        reweighed.upstreams[5].upstream.backends[0].weight = 7;
        let (v3, _) = publisher.apply(replace(reweighed), &meta).await.unwrap();
        assert_eq!(v3, v2 + 1);
        let u6 = store.upstream("u6").await.unwrap();
        assert_eq!(
            (
                u6.upstream.backends[0].weight,
                u6.upstream.backends[0].version
            ),
            (7, v3)
        );

        // Every route moved (more than are written one by one): all
        // deleted and inserted again, each with its new path.
        let mut moved = second();
        for r in &mut moved.routes {
            r.path = format!("{}/v2", r.path);
        }
        assert!(moved.routes.len() > store::ROUTE_EDITS);
        let (v4, _) = publisher.apply(replace(moved), &meta).await.unwrap();
        let (routes, _) = store.list_routes().await.unwrap();
        assert_eq!(routes.len(), n_routes);
        assert!(
            routes
                .iter()
                .all(|r| r.version == v4 && r.route.path.ends_with("/v2"))
        );
        // Its revision names every route, and rebuilds the config as it is.
        let (revision, state) = store.revision(v4).await.unwrap();
        assert_eq!(revision.summary.routes.changed.len(), n_routes);
        assert_eq!(state, Resources::of_export(&store.export().await.unwrap()));
        assert_eq!(plane.snapshot().config(), store.load().await.unwrap());
    }

    /// The store itself finds a whole config written to be the stored one
    /// (`Applied::Unchanged`: nothing written, no export read back) only
    /// when every row is, in whatever order the document lists routes,
    /// upstreams and backends. Any one column of any row changed alone, a
    /// row added or removed, is written and named as written
    /// (`Applied::Replaced`); so is a route
    /// moved onto a new upstream while its old one goes (the route is
    /// written before that upstream is deleted, which it still held).
    #[tokio::test]
    async fn a_whole_config_is_unchanged_only_when_every_row_is() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, publisher) = started(&dir).await;
        // r0..r5 over u0..u3 (r{j} on u{j % 4}); u3 owned by r3; an
        // upstream no route uses; r5 only redirects.
        let base = || {
            let mut config = numbered_config(4, 6);
            config.upstreams[3].owner_route = Some("r3".into());
            let mut spare = config.upstreams[0].clone();
            spare.upstream.name = "spare".into();
            for (i, b) in spare.upstream.backends.iter_mut().enumerate() {
                b.url = format!("http://10.8.0.{i}:80");
            }
            config.upstreams.push(spare);
            config.routes[5].target = None;
            config.routes[5].policies = serde_json::from_value(serde_json::json!(
                {"redirect": {"status": 308, "location": "https://x.test{path}"}}
            ))
            .unwrap();
            config
        };
        let meta = ChangeMeta::internal(revisions::Source::Import, "test");
        publisher.apply(replace(base()), &meta).await.unwrap();
        type Edit = fn(&mut crate::model::Config);
        // The routes and upstreams the store says it wrote.
        type Written = (&'static [&'static str], &'static [&'static str]);
        fn upstream(c: &mut crate::model::Config, name: &str) {
            let mut u = c.upstreams[0].clone();
            u.upstream.name = name.into();
            u.upstream.backends[0].url = "http://10.7.0.1:80".into();
            u.upstream.backends.truncate(1);
            c.upstreams.push(u);
        }
        fn route(c: &mut crate::model::Config, name: &str, path: &str) {
            let mut r = c.routes[0].clone();
            r.name = name.into();
            r.path = path.into();
            c.routes.push(r);
        }
        let cases: Vec<(&str, Edit, Written)> = vec![
            ("as stored", |_| {}, (&[], &[])),
            (
                "reordered",
                |c| {
                    c.routes.reverse();
                    c.upstreams.reverse();
                    for u in &mut c.upstreams {
                        u.upstream.backends.reverse();
                    }
                },
                (&[], &[]),
            ),
            (
                "owner route",
                |c| c.upstreams[3].owner_route = None,
                (&[], &["u3"]),
            ),
            (
                "a timeout",
                |c| c.upstreams[1].upstream.policy.timeouts.connect_ms += 1,
                (&[], &["u1"]),
            ),
            (
                "a policy",
                |c| c.upstreams[1].upstream.policy.fail_open ^= true,
                (&[], &["u1"]),
            ),
            (
                "a strategy",
                |c| c.upstreams[1].upstream.strategy = Strategy::LeastConnections,
                (&[], &["u1"]),
            ),
            (
                "a weight",
                |c| c.upstreams[2].upstream.backends[1].weight += 1,
                (&[], &["u2"]),
            ),
            (
                "a backend's URL",
                |c| c.upstreams[2].upstream.backends[1].url = "http://10.9.9.9:80".into(),
                (&[], &["u2"]),
            ),
            (
                "a backend removed",
                |c| {
                    c.upstreams[2].upstream.backends.pop();
                },
                (&[], &["u2"]),
            ),
            (
                "an unused upstream removed",
                |c| {
                    c.upstreams.pop();
                },
                (&[], &["spare"]),
            ),
            (
                "an upstream added",
                |c| upstream(c, "extra"),
                (&[], &["extra"]),
            ),
            (
                "an upstream added between two",
                |c| upstream(c, "u15"),
                (&[], &["u15"]),
            ),
            (
                "a path",
                |c| c.routes[0].path = "/elsewhere".into(),
                (&["r0"], &[]),
            ),
            (
                "methods",
                |c| c.routes[0].methods = vec!["DELETE".into()],
                (&["r0"], &[]),
            ),
            (
                "hosts",
                |c| c.routes[0].hosts = vec!["z.test".into()],
                (&["r0"], &[]),
            ),
            (
                "strip_prefix",
                |c| c.routes[1].strip_prefix ^= true,
                (&["r1"], &[]),
            ),
            (
                "preserve_host",
                |c| c.routes[1].preserve_host ^= true,
                (&["r1"], &[]),
            ),
            (
                "max_body_bytes",
                |c| c.routes[1].max_body_bytes = Some(10),
                (&["r1"], &[]),
            ),
            (
                "timeout_ms",
                |c| c.routes[1].timeout_ms = Some(c.routes[1].timeout_ms.unwrap_or(0) + 1),
                (&["r1"], &[]),
            ),
            (
                "policies",
                |c| {
                    c.routes[0].policies = serde_json::from_value(serde_json::json!(
                        {"rate_limit": {"key": "client_ip", "requests_per_second": 5, "burst": 3}}
                    ))
                    .unwrap()
                },
                (&["r0"], &[]),
            ),
            (
                "a redirect given an upstream",
                |c| {
                    c.routes[5].target = Some(RouteTarget::Upstream("u1".into()));
                    c.routes[5].policies = Default::default();
                },
                (&["r5"], &[]),
            ),
            (
                "a route removed",
                |c| {
                    c.routes.remove(4);
                },
                (&["r4"], &[]),
            ),
            ("a route added", |c| route(c, "r9", "/p9"), (&["r9"], &[])),
            (
                "a route added between two",
                |c| route(c, "r35", "/p35"),
                (&["r35"], &[]),
            ),
            (
                "a route moved onto a new upstream, its old one gone",
                |c| {
                    upstream(c, "fresh");
                    c.routes[2].target = Some(RouteTarget::Upstream("fresh".into()));
                    c.upstreams.remove(2);
                },
                (&["r2"], &["fresh", "u2"]),
            ),
        ];
        for (what, edit, (routes, upstreams)) in cases {
            let mut config = base();
            edit(&mut config);
            let mut tx = store.begin_write().await.unwrap();
            let version = store::bump_version(&mut tx).await.unwrap();
            let before = store::export_in(&mut tx).await.unwrap();
            let change = Change::ReplaceConfig {
                config,
                expect: None,
            };
            let applied = store::apply(&mut tx, change, version)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            match applied {
                Applied::Replaced(written) => {
                    assert_eq!(written.routes, routes, "{what}");
                    assert_eq!(written.upstreams, upstreams, "{what}");
                    // The export before with what was written read again
                    // is the export after.
                    let spliced = store::export_after(&mut tx, &before, &written)
                        .await
                        .unwrap();
                    let exported = store::export_in(&mut tx).await.unwrap();
                    assert_eq!(spliced, exported, "{what}");
                }
                Applied::Unchanged => assert!(routes.is_empty() && upstreams.is_empty(), "{what}"),
                other => panic!("{what}: {other:?}"),
            }
            // Rolled back.
            drop(tx);
        }
    }

    /// A checkpoint every 64 revisions for a small config; for a large one
    /// every eighth of its size in revisions, so that the deltas to replay
    /// stay a fraction of one checkpoint. The revision it falls due on
    /// stores its delta, and gets the checkpoint after its change.
    #[tokio::test]
    async fn checkpoints_follow_the_size_of_the_config() {
        // 10 routes: at 64; 2,000 routes and their upstream: at 2,001 / 8.
        for (routes, at) in [(10, 64), (2_000, 250)] {
            let dir = tempfile::tempdir().unwrap();
            let (store, _, publisher) = started(&dir).await;
            let whole = import_routes(&publisher, routes).await;
            let (size, _) = store.revision_data_bytes(whole).await.unwrap();
            let meta = ChangeMeta::internal(revisions::Source::Api, "test");
            let mut deltas = 0;
            for k in 1..=at {
                let change = Change::UpdateBackend {
                    upstream: "shop".into(),
                    id: 2,
                    backend: NewBackend {
                        url: "http://10.0.0.2:80".into(),
                        weight: 2 + (k % 2) as u32,
                    },
                    expect: None,
                };
                let (version, _) = publisher.apply(change, &meta).await.unwrap();
                assert_eq!(version, whole + k);
                let (mut checkpoint, delta) = store.revision_data_bytes(version).await.unwrap();
                assert!(delta > 0, "every change stores its delta");
                if k == at {
                    // Added after the change, by a task of its own.
                    let deadline = Instant::now() + std::time::Duration::from_secs(10);
                    while checkpoint == 0 && Instant::now() < deadline {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        checkpoint = store.revision_data_bytes(version).await.unwrap().0;
                    }
                }
                assert_eq!(checkpoint > 0, k == at, "{routes} routes, revision {k}");
                deltas += delta;
            }
            // Versions on either side of it rebuild from it, or from the
            // one before, alike.
            let (_, state) = store.revision(whole + at).await.unwrap();
            assert_eq!(state.routes.len(), routes);
            assert_eq!(
                state.upstreams["shop"].as_ref().unwrap()["backends"][1]["weight"],
                2 + (at % 2)
            );
            if at > revisions::CHECKPOINT_EVERY {
                // Replaying them costs well under one checkpoint (each
                // delta here is an upstream with two backends).
                assert!(
                    deltas < size / 2,
                    "{routes} routes: {deltas} bytes of deltas, checkpoint {size}"
                );
            }
        }
    }

    /// A whole config written keeps a delta of what it changed, and those
    /// count towards the next checkpoint by their entries: at 2,001 routes
    /// and upstreams one falls due after 250 of them. Three writes of 100
    /// changed routes each bring it on the third; one of 300 stores the
    /// whole config at once. Every version rebuilds as it was stored.
    #[tokio::test]
    async fn whole_configs_written_bring_checkpoints_forward_by_what_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, publisher) = started(&dir).await;
        let meta = ChangeMeta::internal(revisions::Source::Import, "test");
        let (v0, _) = publisher
            .apply(replace(numbered_config(1, 2_000)), &meta)
            .await
            .unwrap();
        assert!(
            store.revision_data_bytes(v0).await.unwrap().0 > 0,
            "the first"
        );
        let mut exports = vec![(v0, store.export().await.unwrap())];
        // Round k moves `moved` routes' paths (each round other paths).
        for (k, moved, due) in [
            (1, 100, false),
            (2, 100, false),
            (3, 100, true),
            (4, 300, true),
        ] {
            let mut config = numbered_config(1, 2_000);
            for r in config.routes.iter_mut().take(moved) {
                r.path = format!("{}/{k}", r.path);
            }
            let (v, _) = publisher.apply(replace(config), &meta).await.unwrap();
            let (revision, _) = store.revision(v).await.unwrap();
            assert_eq!(revision.summary.len(), moved, "round {k}");
            let (mut checkpoint, delta) = store.revision_data_bytes(v).await.unwrap();
            if k == 4 {
                assert!(checkpoint > 0 && delta == 0, "round {k}: stored whole");
            } else {
                assert!(delta > 0, "round {k}: a delta");
                // A checkpoint due is added after the change.
                let deadline = Instant::now() + std::time::Duration::from_secs(10);
                while due && checkpoint == 0 && Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    checkpoint = store.revision_data_bytes(v).await.unwrap().0;
                }
                assert_eq!(checkpoint > 0, due, "round {k}");
            }
            exports.push((v, store.export().await.unwrap()));
        }
        for (v, export) in exports {
            let (_, state) = store.revision(v).await.unwrap();
            assert_eq!(state, Resources::of_export(&export), "version {v}");
        }
    }

    /// What a revision stores (issue 20's bar: not the whole config when
    /// one backend weight changes): at 10,000 routes, the checkpoint a
    /// whole-config change writes, and the delta of one weight change.
    #[tokio::test]
    async fn a_weight_change_stores_one_upstream_not_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, publisher) = started(&dir).await;
        let whole = import_routes(&publisher, 10_000).await;
        let change = Change::UpdateBackend {
            upstream: "shop".into(),
            id: 2,
            backend: NewBackend {
                url: "http://10.0.0.2:80".into(),
                weight: 3,
            },
            expect: None,
        };
        let meta = ChangeMeta::internal(revisions::Source::Api, "test");
        let (one, _) = publisher.apply(change, &meta).await.unwrap();
        let (checkpoint, _) = store.revision_data_bytes(whole).await.unwrap();
        let (_, delta) = store.revision_data_bytes(one).await.unwrap();
        eprintln!(
            "10,000 routes: checkpoint {checkpoint} bytes, weight-change delta {delta} bytes"
        );
        assert!(checkpoint > 1_000_000, "{checkpoint}");
        assert!(delta < 2_000, "{delta}");
        let (_, state) = store.revision(one).await.unwrap();
        assert_eq!(
            state.upstreams["shop"].as_ref().unwrap()["backends"][1]["weight"],
            3
        );
        assert_eq!(state.routes.len(), 10_000);
    }
}
