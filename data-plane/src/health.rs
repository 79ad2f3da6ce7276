//! Active health checking.
//!
//! One [`HealthChecker`] is the scheduler: after every snapshot install it
//! reconciles the set of probe tasks against the snapshot — a backend that
//! appears is probed at once, one that leaves stops being probed, and one
//! that stays (with the same check settings) keeps its schedule. A change
//! of an upstream's check settings restarts its probes but keeps the
//! backends' health. Probes in flight are bounded by one semaphore.
//!
//! Probes go through the upstream's own client, by [`Prober`]
//! (`transport::probe`): the connector that carries its traffic, with its
//! TLS settings and protocol. A change of those settings restarts the
//! upstream's probes on the new client.
//!
//! Health itself lives in the backend's [`BackendState`] in the registry,
//! so it survives every snapshot swap. Initial state is `unknown`, which
//! takes traffic: a new route is usable at once, and the first probe (sent
//! immediately) decides healthy or unhealthy on its own, so a dead backend
//! gets at most the requests that arrive before that probe fails — and
//! passive detection plus retries cover those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::HealthCheck;
use crate::registry::{BackendKey, BackendState, Health};
use crate::snapshot::{CompiledUpstream, Retired, Snapshot};
use crate::transport::client::ClientKey;
use crate::transport::probe::{Probed, Prober};

/// Probes in flight at once, across all upstreams.
pub const MAX_CONCURRENT_PROBES: usize = 64;

#[derive(Debug)]
struct Task {
    /// What it probes with: a change of either restarts it.
    check: HealthCheck,
    client_key: ClientKey,
    handle: JoinHandle<()>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The health-check scheduler.
#[derive(Debug)]
pub struct HealthChecker {
    tasks: Mutex<HashMap<BackendKey, Task>>,
    permits: Arc<Semaphore>,
    /// Where probes run: the runtime the checker was made on (the
    /// proxy's), not the one that installs a snapshot. The control plane
    /// installs from its own threads, which a large change keeps busy for
    /// a second at 100,000 routes; a probe's timeout must not run out
    /// there while its backend answers.
    runtime: Option<Handle>,
}

impl Default for HealthChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthChecker {
    pub fn new() -> Self {
        HealthChecker {
            tasks: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
            runtime: Handle::try_current().ok(),
        }
    }

    /// Make the probe tasks match `snapshot`. Probes run on the runtime
    /// the checker was made on; a checker made outside one spawns them on
    /// the caller's, which must then be inside a tokio runtime when the
    /// snapshot has health checks.
    pub fn reconcile(&self, snapshot: &Snapshot) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted = HashMap::new();
        for u in snapshot.upstreams() {
            wanted_probes(u, &tasks, &mut wanted);
        }
        tasks.retain(|key, task| wanted.get(key).is_some_and(|w| w.keeps(task)));
        self.spawn_missing(&mut tasks, wanted);
    }

    /// The incremental [`HealthChecker::reconcile`] after a
    /// [`Snapshot::patch`]: only the upstreams it changed and the backends
    /// it retired are looked at.
    pub fn reconcile_retired(&self, snapshot: &Snapshot, retired: &Retired) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for key in &retired.backends {
            tasks.remove(key);
        }
        for name in &retired.upstreams {
            tasks.retain(|key, _| key.upstream != **name);
        }
        let mut wanted = HashMap::new();
        for name in &retired.changed_upstreams {
            let Some(u) = snapshot.upstream_named(name) else {
                continue;
            };
            wanted_probes(u, &tasks, &mut wanted);
            tasks.retain(|key, task| {
                key.upstream != **name || wanted.get(key).is_some_and(|w| w.keeps(task))
            });
        }
        self.spawn_missing(&mut tasks, wanted);
    }

    fn spawn_missing(&self, tasks: &mut HashMap<BackendKey, Task>, wanted: Wanted) {
        for (key, want) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let (check, client_key) = (want.check.clone(), want.client_key);
            let probe = Probe {
                key: key.clone(),
                check: want.check,
                state: want.state,
                prober: want.prober,
                permits: Arc::clone(&self.permits),
            };
            let handle = match &self.runtime {
                Some(runtime) => runtime.spawn(probe.run()),
                None => tokio::spawn(probe.run()),
            };
            tasks.insert(
                key,
                Task {
                    check,
                    client_key,
                    handle,
                },
            );
        }
    }
}

/// The probe a backend should have.
struct Want {
    check: HealthCheck,
    client_key: ClientKey,
    prober: Prober,
    state: Arc<BackendState>,
}

impl Want {
    /// Whether `task` already probes this way.
    fn keeps(&self, task: &Task) -> bool {
        self.check == task.check && self.client_key == task.client_key
    }
}

/// The probes each backend should have.
type Wanted = HashMap<BackendKey, Want>;

/// Add the probes `u`'s backends should have to `wanted`; a backend whose
/// checking was switched off forgets what it found.
fn wanted_probes(u: &CompiledUpstream, tasks: &HashMap<BackendKey, Task>, wanted: &mut Wanted) {
    for b in u.backends.iter() {
        let key = BackendKey {
            upstream: u.name.to_string(),
            url: b.url.to_string(),
        };
        match &u.health_check {
            Some(check) => {
                let uri = Uri::builder()
                    .scheme(b.scheme.clone())
                    .authority(b.authority.clone())
                    .path_and_query(check.path.as_str())
                    .build();
                match uri {
                    Ok(uri) => {
                        let want = Want {
                            check: check.clone(),
                            client_key: u.client_key(),
                            prober: Prober {
                                client: u.client.clone(),
                                uri,
                            },
                            state: Arc::clone(&b.state),
                        };
                        wanted.insert(key, want);
                    }
                    Err(e) => {
                        tracing::error!(upstream = %u.name, error = %e, "bad health check path")
                    }
                }
            }
            None if tasks.contains_key(&key) => b.state.reset_health(),
            None => {}
        }
    }
}

struct Probe {
    key: BackendKey,
    check: HealthCheck,
    state: Arc<BackendState>,
    /// Through the upstream's client: its TLS settings and protocol.
    prober: Prober,
    permits: Arc<Semaphore>,
}

impl Probe {
    async fn run(self) {
        let interval = Duration::from_millis(self.check.interval_ms);
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::time::sleep_until(next).await;
            next += interval;
            let (passed, result, latency) = {
                let Ok(_permit) = self.permits.acquire().await else {
                    return;
                };
                self.probe_once().await
            };
            let flips = self.state.record_probe(
                passed,
                result.clone(),
                latency,
                self.check.healthy_threshold,
                self.check.unhealthy_threshold,
            );
            let (upstream, backend) = (&self.key.upstream, &self.key.url);
            match flips.health {
                Some(Health::Unhealthy) => {
                    tracing::warn!(%upstream, %backend, to = "unhealthy", reason = %result, "backend health changed")
                }
                Some(to) => {
                    tracing::info!(%upstream, %backend, to = to.as_str(), reason = %result, "backend health changed")
                }
                None => {}
            }
            if flips.failing_ended {
                let to = self.state.condition().as_str();
                tracing::info!(%upstream, %backend, to, reason = %format_args!("a health probe passed: {result}"), "backend recovered");
            }
        }
    }

    /// One probe: pass/fail, a short description, latency.
    async fn probe_once(&self) -> (bool, String, Duration) {
        let timeout = Duration::from_millis(self.check.timeout_ms);
        let (probed, latency) = self.prober.probe(timeout).await;
        match probed {
            Probed::TimedOut => (
                false,
                format!("timeout after {} ms", self.check.timeout_ms),
                latency,
            ),
            Probed::Failed(e) => (false, format!("error: {e}"), latency),
            Probed::Status(status) if self.check.passes(status) => {
                (true, format!("ok {status}"), latency)
            }
            Probed::Status(status) => (false, format!("status {status}"), latency),
        }
    }
}
