//! Live per-backend state, kept outside the immutable snapshot.
//!
//! Entries are keyed by upstream name + backend URL. Compiling a snapshot
//! asks the registry for the state of each backend, so a backend that
//! survives a config change (a weight PATCH, another route added) keeps its
//! counters; only backends that left the config are dropped
//! ([`Registry::retain`]). The registry's lock is taken only while a
//! snapshot is compiled or installed, never on the request path: requests
//! reach the state through the `Arc` the snapshot holds. The passive side
//! of a backend's state (failure streaks, ejection, `failing`) is in
//! `passive`.

use crate::config::policies::RateLimit;
use crate::policy::rate::RateLimiter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::clock::{now_ns, unix_ms};
use crate::counters::{BackendStats, RequestStats};
use crate::transport::client::{self, ClientError, ClientKey, UpstreamClient};

pub(crate) mod history;
mod passive;
use history::History;
pub use history::{HISTORY_LEN, Transition};
pub use passive::{Condition, FAILING_LOG_EVERY, Failing};

/// Stable identity of a backend across snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub upstream: String,
    pub url: String,
}

/// Bumped after every change of whether some backend takes traffic (a
/// health flip, an ejection or its early end), so that a cached view of
/// which backends are out knows it is stale (see `crate::available`).
/// One counter for the process: flips are rare, and a cache that finds
/// the epoch moved but its own backends unchanged keeps its plan.
static AVAILABILITY_EPOCH: AtomicU64 = AtomicU64::new(0);

/// The current availability epoch.
pub fn availability_epoch() -> u64 {
    AVAILABILITY_EPOCH.load(Ordering::Acquire)
}

/// Say that some backend's availability changed (after the change is
/// stored).
fn availability_changed() {
    AVAILABILITY_EPOCH.fetch_add(1, Ordering::Release);
}

/// Active health state of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not probed yet (or no health check): takes traffic.
    Unknown = 0,
    Healthy = 1,
    Unhealthy = 2,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }
}

/// Details of active checking, for status pages (never read per request).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProbeRecord {
    /// Unix milliseconds of the last health flip (or first sight).
    pub since_unix_ms: u64,
    pub last_probe_unix_ms: Option<u64>,
    /// `"ok 200"`, `"status 503"`, `"timeout"`, `"error: …"`.
    pub last_result: Option<String>,
    pub last_latency_ms: Option<f64>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
}

/// Initial peak-EWMA latency of a backend never measured: low, so new
/// backends are tried and measured.
const EWMA_INITIAL_NS: u64 = 1_000_000;
/// Decay time constant of the latency EWMA.
const EWMA_TAU_NS: f64 = 10e9;

/// Live state of one backend, shared by every snapshot that contains it.
#[derive(Debug)]
pub struct BackendState {
    in_flight: AtomicU64,
    requests: AtomicU64,
    health: AtomicU8,
    /// `now_ns()` until which passive detection keeps it out; 0 = not.
    ejected_until_ns: AtomicU64,
    /// Consecutive failures seen on real traffic.
    passive_failures: AtomicU32,
    /// Ejections in a row (reset by a success or a passing probe).
    ejection_streak: AtomicU32,
    /// The streak reached the threshold but it was not ejected. Only ever
    /// set while `passive_failures` is above 0, so a success that finds the
    /// streak at 0 need not look at it.
    failing: AtomicBool,
    /// `now_ns()` of the last log line about it failing, and the failures
    /// seen since.
    failing_logged_ns: AtomicU64,
    failing_unlogged: AtomicU64,
    ejections_total: AtomicU64,
    ewma_ns: AtomicU64,
    ewma_stamp_ns: AtomicU64,
    /// The probe record and the transition history: taken by probes, by
    /// transitions and by status reads, never by a request that changes
    /// nothing.
    live: Mutex<Live>,
    stats: BackendStats,
    /// Idle keep-alive connections (plain HTTP/1.1 backends).
    pool: crate::transport::pool::ConnPool,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState {
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            health: AtomicU8::new(Health::Unknown as u8),
            ejected_until_ns: AtomicU64::new(0),
            passive_failures: AtomicU32::new(0),
            ejection_streak: AtomicU32::new(0),
            failing: AtomicBool::new(false),
            failing_logged_ns: AtomicU64::new(0),
            failing_unlogged: AtomicU64::new(0),
            ejections_total: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(EWMA_INITIAL_NS),
            ewma_stamp_ns: AtomicU64::new(0),
            live: Mutex::new(Live {
                record: ProbeRecord {
                    since_unix_ms: unix_ms(),
                    ..ProbeRecord::default()
                },
                history: History::default(),
            }),
            stats: BackendStats::default(),
            pool: Default::default(),
        }
    }
}

impl BackendState {
    /// The backend's idle keep-alive connections.
    pub fn pool(&self) -> &crate::transport::pool::ConnPool {
        &self.pool
    }

    /// Requests sent to this backend whose response has not finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests ever sent to this backend (since it entered the config).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Count a request as started; it ends when the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &BackendStats {
        &self.stats
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Whether passive detection has it ejected right now.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ns.load(Ordering::Relaxed);
        until != 0 && now_ns() < until
    }

    /// When the ejection in force at `now` (on [`now_ns`]'s clock) ends;
    /// `None` when it is not ejected then.
    pub fn ejected_until(&self, now: u64) -> Option<u64> {
        let until = self.ejected_until_ns.load(Ordering::Relaxed);
        (until != 0 && now < until).then_some(until)
    }

    /// Whether active health lets it take traffic (not unhealthy).
    pub fn is_available_by_health(&self) -> bool {
        self.health() != Health::Unhealthy
    }

    /// Whether it may take new requests: not unhealthy, not ejected.
    /// Two atomic loads (and a clock read only while ejected).
    pub fn is_available(&self) -> bool {
        self.is_available_by_health() && !self.is_ejected()
    }

    pub fn ejections(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Peak-EWMA latency to response headers, in nanoseconds.
    pub fn ewma_ns(&self) -> u64 {
        self.ewma_ns.load(Ordering::Relaxed)
    }

    /// Fold one observed latency into the peak EWMA: a slower observation
    /// is taken at once, faster ones decay in with time constant 10 s.
    /// Lock-free; concurrent updates may lose one sample, which is fine for
    /// an estimate. `now` is [`now_ns`] when the answer came.
    pub fn observe_latency(&self, rtt_ns: u64, now: u64) {
        let prev = self.ewma_ns.load(Ordering::Relaxed);
        let stamp = self.ewma_stamp_ns.swap(now, Ordering::Relaxed);
        let next = if rtt_ns >= prev {
            rtt_ns
        } else {
            let w = (-(now.saturating_sub(stamp) as f64) / EWMA_TAU_NS).exp();
            (prev as f64 * w + rtt_ns as f64 * (1.0 - w)) as u64
        };
        self.ewma_ns.store(next.max(1), Ordering::Relaxed);
    }

    /// Record one active probe. Returns what it changed. From `Unknown`
    /// the first probe decides at once; afterwards the thresholds apply. A
    /// passing probe also ends an ejection and `failing`.
    pub fn record_probe(
        &self,
        passed: bool,
        result: String,
        latency: Duration,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> ProbeFlips {
        self.stats.probes[usize::from(!passed)].fetch_add(1, Ordering::Relaxed);
        let mut live = self.live();
        self.settle(&mut live);
        let reason = format!("probe: {result}");
        let flips = self.probe_changes(
            &mut live.record,
            passed,
            result,
            latency,
            healthy_threshold,
            unhealthy_threshold,
        );
        self.noted(&mut live, reason);
        flips
    }

    /// [`BackendState::record_probe`]'s changes, under its lock.
    fn probe_changes(
        &self,
        rec: &mut ProbeRecord,
        passed: bool,
        result: String,
        latency: Duration,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> ProbeFlips {
        rec.last_probe_unix_ms = Some(unix_ms());
        rec.last_result = Some(result);
        rec.last_latency_ms = Some(latency.as_secs_f64() * 1e3);
        let mut failing_ended = false;
        if passed {
            rec.consecutive_successes += 1;
            rec.consecutive_failures = 0;
            if self.ejected_until_ns.swap(0, Ordering::Relaxed) != 0 {
                availability_changed();
            }
            self.ejection_streak.store(0, Ordering::Relaxed);
            self.passive_failures.store(0, Ordering::SeqCst);
            // (Not end_failing: this holds the lock it takes.)
            failing_ended = self.failing.swap(false, Ordering::SeqCst);
            if failing_ended {
                rec.since_unix_ms = unix_ms();
            }
        } else {
            rec.consecutive_failures += 1;
            rec.consecutive_successes = 0;
        }
        let current = self.health();
        let next = match (current, passed) {
            (Health::Unknown, true) => Health::Healthy,
            (Health::Unknown, false) => Health::Unhealthy,
            (Health::Unhealthy, true) if rec.consecutive_successes >= healthy_threshold => {
                Health::Healthy
            }
            (Health::Healthy, false) if rec.consecutive_failures >= unhealthy_threshold => {
                Health::Unhealthy
            }
            (h, _) => h,
        };
        if next == current {
            return ProbeFlips {
                health: None,
                failing_ended,
            };
        }
        self.health.store(next as u8, Ordering::Relaxed);
        availability_changed();
        rec.since_unix_ms = unix_ms();
        let flip = if next == Health::Healthy { 0 } else { 1 };
        self.stats.flips[flip].fetch_add(1, Ordering::Relaxed);
        ProbeFlips {
            health: Some(next),
            failing_ended,
        }
    }

    /// Forget active health (the upstream stopped health checking).
    pub fn reset_health(&self) {
        let mut live = self.live();
        self.settle(&mut live);
        if self.health.swap(Health::Unknown as u8, Ordering::Relaxed) != Health::Unknown as u8 {
            availability_changed();
            live.record.since_unix_ms = unix_ms();
            self.noted(&mut live, "health check removed".to_string());
        }
    }

    /// A copy of the probe record, for status pages.
    pub fn probe_record(&self) -> ProbeRecord {
        self.live().record.clone()
    }

    /// Its last [`HISTORY_LEN`] transitions, oldest first (an ejection
    /// that ran out since the last look is recorded first).
    pub fn transitions(&self) -> Vec<Transition> {
        let mut live = self.live();
        self.settle(&mut live);
        live.history.to_vec()
    }

    /// Record an ejection that ran out since the last look, if any, so
    /// that the next entry does not hide it (and so that
    /// `switchyard_backend_transitions_total` counts it). Cheap: one
    /// comparison when it was not ejected.
    pub fn settle_transitions(&self) {
        self.settle(&mut self.live());
    }

    /// Record an admin change of this backend (`backend added`, `weight
    /// set to 0 (was 1)`): an entry whose `from` and `to` are its state
    /// now, not counted as a transition in the metrics.
    pub fn note_admin_change(&self, reason: String) {
        let mut live = self.live();
        self.settle(&mut live);
        live.history.note(unix_ms(), reason);
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        lock(&self.live)
    }

    /// Under the lock, before a change: if the history left it ejected and
    /// the ejection has run out, record that, at the time it ran out.
    fn settle(&self, live: &mut Live) {
        if live.history.last != Condition::Ejected {
            return;
        }
        let now = now_ns();
        let until = self.ejected_until_ns.load(Ordering::Relaxed);
        if until != 0 && now < until {
            return;
        }
        // (`until` is only cleared under this lock, and noted then.)
        let ago_ms = if until == 0 {
            0
        } else {
            now.saturating_sub(until) / 1_000_000
        };
        let at = unix_ms().saturating_sub(ago_ms);
        let to = self.condition();
        if live.history.push(at, to, "ejection ended".to_string()) {
            self.stats.transitions[to as usize].fetch_add(1, Ordering::Relaxed);
            live.record.since_unix_ms = at;
            history::RECORDED.notify_waiters();
        }
    }

    /// Under the lock, after a change: record it if its condition moved.
    fn noted(&self, live: &mut Live, reason: String) {
        let to = self.condition();
        let at = unix_ms();
        if live.history.push(at, to, reason) {
            self.stats.transitions[to as usize].fetch_add(1, Ordering::Relaxed);
            live.record.since_unix_ms = at;
            history::RECORDED.notify_waiters();
        }
    }
}

/// What a backend's lock guards.
#[derive(Debug)]
struct Live {
    record: ProbeRecord,
    history: History,
}

/// What one probe changed (see [`BackendState::record_probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeFlips {
    /// The new active health, if it flipped.
    pub health: Option<Health>,
    /// Whether it ended `failing`.
    pub failing_ended: bool,
}

/// One request in flight to a backend; decrements the count on drop.
#[derive(Debug)]
pub struct InFlight(Arc<BackendState>);

impl InFlight {
    /// The backend's live state.
    pub fn state(&self) -> &BackendState {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters of one upstream.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    retries: AtomicU64,
}

impl UpstreamStats {
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// Identity of a route's request counters: a route moved to another
/// upstream, or renamed, starts fresh series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub route: String,
    /// Empty for a route that only redirects.
    pub upstream: String,
}

impl RouteKey {
    pub fn of(route: &crate::config::RouteConfig) -> Self {
        RouteKey {
            route: route.name.clone(),
            upstream: route.upstream.clone().unwrap_or_default(),
        }
    }

    /// Whether this is `route`'s key (as [`RouteKey::of`] would make it,
    /// without allocating one).
    pub fn is_of(&self, route: &crate::config::RouteConfig) -> bool {
        self.route == route.name && self.upstream == route.upstream.as_deref().unwrap_or_default()
    }
}

/// What a [`Registry`] holds live state for ([`Registry::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub backends: usize,
    pub routes: usize,
    pub upstreams: usize,
    pub rate_limits: usize,
    /// Upstream clients by their settings: those in use, and those no
    /// longer used that the next compile or patch prunes.
    pub clients: usize,
}

/// Owner of all live state that must outlive a snapshot, and finder of
/// the upstream clients in use.
#[derive(Debug, Default)]
pub struct Registry {
    backends: Mutex<HashMap<BackendKey, Arc<BackendState>>>,
    routes: Mutex<HashMap<RouteKey, Arc<RequestStats>>>,
    upstreams: Mutex<HashMap<String, Arc<UpstreamStats>>>,
    /// Upstream HTTP clients (connection pools) by their settings, so pools
    /// survive snapshot swaps. Held weakly: the snapshots (and health
    /// probes) using a client keep it; one no snapshot uses any more (its
    /// settings changed or were only in a dry run) is dropped with its
    /// pool and its TLS roots, and its entry goes at the next prune.
    clients: Mutex<HashMap<ClientKey, Weak<UpstreamClient>>>,
    /// Routes' rate-limit buckets, by route name: kept while the route
    /// keeps the same limit, whatever else changes (its other policies, its
    /// upstream, other routes).
    rate_limits: Mutex<HashMap<String, RateEntry>>,
}

#[derive(Debug)]
struct RateEntry {
    /// The route's key when the buckets were last handed out.
    key: RouteKey,
    limit: RateLimit,
    limiter: Arc<RateLimiter>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State behind these locks stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of a backend, created on first sight.
    pub fn backend(&self, key: &BackendKey) -> Arc<BackendState> {
        let mut map = lock(&self.backends);
        if let Some(s) = map.get(key) {
            return Arc::clone(s);
        }
        let s = Arc::new(BackendState::default());
        map.insert(key.clone(), Arc::clone(&s));
        s
    }

    /// The request counters of a route, created on first sight.
    pub fn route(&self, key: &RouteKey) -> Arc<RequestStats> {
        Arc::clone(lock(&self.routes).entry(key.clone()).or_default())
    }

    /// The counters of an upstream, created on first sight.
    pub fn upstream(&self, name: &str) -> Arc<UpstreamStats> {
        Arc::clone(lock(&self.upstreams).entry(name.to_string()).or_default())
    }

    /// The rate-limit buckets of the route `key` counting by `limit`: the
    /// same as before if its limit is the same, new ones if it changed;
    /// none (and the old ones forgotten) when it has no limit.
    pub fn rate_limiter(
        &self,
        key: &RouteKey,
        limit: Option<&RateLimit>,
    ) -> Option<Arc<RateLimiter>> {
        let mut map = lock(&self.rate_limits);
        let Some(limit) = limit else {
            map.remove(&key.route);
            return None;
        };
        if let Some(e) = map.get_mut(&key.route)
            && e.limit == *limit
        {
            e.key = key.clone();
            return Some(Arc::clone(&e.limiter));
        }
        let limiter = Arc::new(RateLimiter::new(limit));
        map.insert(
            key.route.clone(),
            RateEntry {
                key: key.clone(),
                limit: limit.clone(),
                limiter: Arc::clone(&limiter),
            },
        );
        Some(limiter)
    }

    /// The pooled client for these connection settings (called when a
    /// snapshot is compiled): the one in use (by a snapshot, a health probe
    /// or a request), else a new one. A client in use keeps the CA file it
    /// read, but the file must still be there: a config naming a file that
    /// is gone is refused now as it would be at the next start. A new
    /// client reads the file again.
    pub fn client(&self, key: &ClientKey) -> Result<Arc<UpstreamClient>, ClientError> {
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(key).and_then(Weak::upgrade) {
            if let Some(path) = &key.tls.ca_file
                && let Err(e) = std::fs::metadata(path)
            {
                return Err(ClientError::CaFile {
                    path: path.clone(),
                    reason: e.to_string(),
                });
            }
            return Ok(c);
        }
        let c = Arc::new(client::new(key)?);
        prune_clients(&mut clients);
        clients.insert(key.clone(), Arc::downgrade(&c));
        Ok(c)
    }

    /// Keep only the backends, routes and upstreams the predicates call
    /// live, and exactly the rate-limit buckets given (`route`, its limit,
    /// its buckets): what the snapshot in force uses (see
    /// `DataPlane::forget_unused`). Requests still running against a
    /// dropped one keep its state alive until they finish. Clients no
    /// longer used are pruned.
    pub fn retain(
        &self,
        route: impl Fn(&RouteKey) -> bool,
        upstream: impl Fn(&str) -> bool,
        backend: impl Fn(&BackendKey) -> bool,
        rate_limits: impl Iterator<Item = (RouteKey, RateLimit, Arc<RateLimiter>)>,
    ) {
        lock(&self.backends).retain(|k, _| backend(k));
        lock(&self.routes).retain(|k, _| route(k));
        lock(&self.upstreams).retain(|k, _| upstream(k));
        prune_clients(&mut lock(&self.clients));
        *lock(&self.rate_limits) = rate_limits
            .map(|(key, limit, limiter)| {
                let entry = RateEntry {
                    key,
                    limit,
                    limiter,
                };
                (entry.key.route.clone(), entry)
            })
            .collect();
    }

    /// How many backends, routes, upstreams and rate-limited routes hold
    /// live state here, and how many upstream clients are known (tests:
    /// what a compile left behind).
    pub fn held(&self) -> Held {
        Held {
            backends: lock(&self.backends).len(),
            routes: lock(&self.routes).len(),
            upstreams: lock(&self.upstreams).len(),
            rate_limits: lock(&self.rate_limits).len(),
            clients: lock(&self.clients).len(),
        }
    }

    /// Forget what a snapshot patch retired: the incremental
    /// [`Registry::retain`] (clients no longer used are pruned too).
    pub fn forget(&self, routes: &[RouteKey], upstreams: &[String], backends: &[BackendKey]) {
        if !backends.is_empty() {
            let mut live = lock(&self.backends);
            for key in backends {
                live.remove(key);
            }
        }
        if !routes.is_empty() {
            let mut live = lock(&self.routes);
            for key in routes {
                live.remove(key);
            }
            drop(live);
            // A route moved to another upstream has already taken its
            // buckets under its new key.
            lock(&self.rate_limits).retain(|_, e| !routes.contains(&e.key));
        }
        if !upstreams.is_empty() {
            let mut live = lock(&self.upstreams);
            for name in upstreams {
                live.remove(name);
            }
        }
        prune_clients(&mut lock(&self.clients));
    }
}

/// Drop the entries of clients no snapshot or probe holds any more.
fn prune_clients(clients: &mut HashMap<ClientKey, Weak<UpstreamClient>>) {
    clients.retain(|_, c| c.strong_count() > 0);
}
