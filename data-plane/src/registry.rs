//! Live per-backend state, kept outside the immutable snapshot.
//!
//! Entries are keyed by upstream name + backend URL. Compiling a snapshot
//! asks the registry for the state of each backend, so a backend that
//! survives a config change (a weight PATCH, another route added) keeps its
//! counters; only backends that left the config are dropped
//! ([`Registry::retain`]). The registry's lock is taken only while a
//! snapshot is compiled or installed, never on the request path: requests
//! reach the state through the `Arc` the snapshot holds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::proxy::client::{self, UpstreamClient};

/// Stable identity of a backend across snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub upstream: String,
    pub url: String,
}

/// Counters of one backend, shared by every snapshot that contains it.
#[derive(Debug, Default)]
pub struct BackendState {
    in_flight: AtomicU64,
    requests: AtomicU64,
}

impl BackendState {
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
}

/// One request in flight to a backend; decrements the count on drop.
#[derive(Debug)]
pub struct InFlight(Arc<BackendState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Owner of all live state that must outlive a snapshot.
#[derive(Debug, Default)]
pub struct Registry {
    backends: Mutex<HashMap<BackendKey, Arc<BackendState>>>,
    /// Upstream HTTP clients (connection pools) by connect timeout, so pools
    /// survive snapshot swaps.
    clients: Mutex<HashMap<Duration, UpstreamClient>>,
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

    /// A pooled client whose connections time out after `connect`.
    pub fn client(&self, connect: Duration) -> UpstreamClient {
        lock(&self.clients)
            .entry(connect)
            .or_insert_with(|| client::new(connect))
            .clone()
    }

    /// Forget every backend not in `live`. Requests still running against
    /// a dropped backend keep its state alive until they finish.
    pub fn retain(&self, live: &HashSet<BackendKey>) {
        lock(&self.backends).retain(|k, _| live.contains(k));
    }

    /// Number of backends tracked (for tests and status).
    pub fn len(&self) -> usize {
        lock(&self.backends).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
