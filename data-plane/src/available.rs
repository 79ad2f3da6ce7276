//! Which of an upstream's backends take traffic now, and the balancer's
//! [`Plan`] for them, cached without a lock.
//!
//! A plan is worth computing only when the set of backends out changes
//! (a health flip, an ejection, its end), which is rare next to picks. So
//! each compiled upstream keeps the current set and its plan behind an
//! `ArcSwap`, stamped with the registry's availability epoch (one counter
//! for the process, bumped by every flip; see
//! [`registry::availability_epoch`]). A pick loads the epoch and the cached
//! entry and compares: equal means nothing flipped since the entry was
//! made. Ejections also end by time alone, so an entry with a backend
//! ejected carries the time that ends it, and is good only until then.
//! When the entry is stale one request rescans the backends (O(backends))
//! and makes a new plan only if the set really changed; requests that
//! arrive meanwhile use the old entry, which stays safe because a pick
//! checks each backend it chooses. The usual case — nothing out, nothing
//! flipped since it was seen — skips even the `ArcSwap` load: two atomic
//! loads and a compare give the plan made when the snapshot was built.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};

use crate::balance::{Balancer, OutSet, Plan};
use crate::registry::{self, BackendState};

/// The backends out, and the plan for the others, as of one epoch.
#[derive(Debug)]
pub struct Current {
    epoch: u64,
    /// [`crate::clock::now_ns`] at which an ejection in `out` ends; `u64::MAX`
    /// when none is ejected.
    until_ns: u64,
    out: OutSet,
    plan: Arc<Plan>,
}

/// The plan a pick uses, as [`Availability::current`] found it.
pub enum Now<'a> {
    /// Nothing out and nothing flipped since that was seen: the full plan.
    AllIn(&'a Plan),
    /// The cached entry.
    Cached(Guard<Arc<Current>>),
}

impl Now<'_> {
    pub fn plan(&self) -> &Plan {
        match self {
            Now::AllIn(plan) => plan,
            Now::Cached(current) => &current.plan,
        }
    }
}

/// The cache of one compiled upstream.
#[derive(Debug)]
pub struct Availability {
    /// The plan with nothing out: for failing open, and shared by every
    /// entry with nothing out.
    full: Arc<Plan>,
    /// The epoch at which a scan last found every backend in; `u64::MAX`
    /// when the last scan found some out. Equal to the epoch now: nothing
    /// is out (an ejection would have moved the epoch).
    all_in: AtomicU64,
    current: ArcSwap<Current>,
    /// Held by the one request that rescans.
    refreshing: AtomicBool,
}

impl Availability {
    /// The cache for `balancer` over backends with these live `states`
    /// (indexes as the balancer's), filled now: compiling a snapshot pays
    /// for the first plan, not a request.
    pub fn new<'a>(
        balancer: &dyn Balancer,
        states: impl Iterator<Item = &'a BackendState> + Clone,
    ) -> Self {
        let full = Arc::new(balancer.plan(&OutSet::default()));
        let epoch = registry::availability_epoch();
        let current = scan(epoch, states, &full, None, balancer);
        Availability {
            full,
            all_in: AtomicU64::new(if current.out.is_empty() {
                epoch
            } else {
                u64::MAX
            }),
            current: ArcSwap::from_pointee(current),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The plan with nothing out.
    pub fn full(&self) -> &Plan {
        &self.full
    }

    /// The plan for the backends in now. Two atomic loads when nothing is
    /// out; else an `ArcSwap` load more and (only while a backend is
    /// ejected) a clock read, unless something flipped since the last call.
    pub fn current<'a>(
        &self,
        balancer: &dyn Balancer,
        states: impl Iterator<Item = &'a BackendState> + Clone,
    ) -> Now<'_> {
        let epoch = registry::availability_epoch();
        if self.all_in.load(Ordering::Relaxed) == epoch {
            return Now::AllIn(&self.full);
        }
        let cur = self.current.load();
        let fresh = cur.epoch == epoch
            && (cur.until_ns == u64::MAX || crate::clock::now_ns() < cur.until_ns);
        if fresh || self.refreshing.swap(true, Ordering::Acquire) {
            // Fresh, or another request is refreshing it: picks check each
            // backend they choose, so a stale entry is still safe.
            return Now::Cached(cur);
        }
        // Let go of the flag however this ends (a panic included), or the
        // entry would never be refreshed again.
        let _release = Release(&self.refreshing);
        let next = scan(epoch, states, &self.full, Some(&cur), balancer);
        let all_in = next.out.is_empty();
        self.current.store(Arc::new(next));
        self.all_in
            .store(if all_in { epoch } else { u64::MAX }, Ordering::Relaxed);
        Now::Cached(self.current.load())
    }
}

/// Clears the refresh flag when dropped.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The entry for `epoch` (read before the states): the plan of `previous`
/// or the full one when the set of backends out is the same, else a new
/// plan.
fn scan<'a>(
    epoch: u64,
    states: impl Iterator<Item = &'a BackendState> + Clone,
    full: &Arc<Plan>,
    previous: Option<&Current>,
    balancer: &dyn Balancer,
) -> Current {
    let now = crate::clock::now_ns();
    let mut until_ns = u64::MAX;
    let mut out = OutSet::default();
    for (i, s) in states.enumerate() {
        let ejected_until = s.ejected_until(now);
        if let Some(until) = ejected_until {
            until_ns = until_ns.min(until);
        }
        if ejected_until.is_some() || !s.is_available_by_health() {
            out.insert(i);
        }
    }
    let plan = match previous {
        Some(p) if p.out == out => Arc::clone(&p.plan),
        _ if out.is_empty() => Arc::clone(full),
        _ => Arc::new(balancer.plan(&out)),
    };
    Current {
        epoch,
        until_ns,
        out,
        plan,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::{self, Candidate, PickContext};
    use crate::config::Strategy;

    fn setup(n: usize) -> (Box<dyn Balancer>, Vec<Arc<BackendState>>) {
        let c: Vec<Candidate> = (0..n)
            .map(|_| Candidate {
                weight: 1,
                key: "k",
            })
            .collect();
        let states = (0..n).map(|_| Arc::new(BackendState::default())).collect();
        (balance::build(Strategy::RoundRobin, &c), states)
    }

    fn members(a: &Availability, b: &dyn Balancer, s: &[Arc<BackendState>]) -> Vec<u32> {
        a.current(b, s.iter().map(|s| &**s))
            .plan()
            .members()
            .to_vec()
    }

    #[test]
    fn a_flip_is_seen_at_the_next_pick_and_the_plan_is_reused_until_then() {
        let (b, s) = setup(3);
        let a = Availability::new(&*b, s.iter().map(|s| &**s));
        assert_eq!(members(&a, &*b, &s), [0, 1, 2]);
        // Other tests flip their backends too, which moves the process's
        // epoch: the fast path is taken once it stands still for a moment.
        let fast =
            (0..1000).any(|_| matches!(a.current(&*b, s.iter().map(|s| &**s)), Now::AllIn(_)));
        assert!(fast, "nothing out: the full plan, without the cache");
        s[1].record_probe(false, "status 503".into(), Duration::ZERO, 1, 1);
        assert_eq!(members(&a, &*b, &s), [0, 2]);
        s[1].record_probe(true, "ok 200".into(), Duration::ZERO, 1, 1);
        assert_eq!(members(&a, &*b, &s), [0, 1, 2]);
    }

    #[test]
    fn an_ejection_ends_by_time_alone() {
        let (b, s) = setup(2);
        let a = Availability::new(&*b, s.iter().map(|s| &**s));
        s[0].eject(Duration::from_millis(30), Duration::from_secs(1));
        assert_eq!(members(&a, &*b, &s), [1]);
        // No flip ends it: the entry knows when it goes stale.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while members(&a, &*b, &s) != [0, 1] {
            assert!(std::time::Instant::now() < deadline, "never readmitted");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// How a backend is kept out.
    #[derive(Debug, Clone, Copy)]
    enum Out {
        Unhealthy,
        Ejected,
        WeightZero,
    }

    /// 1,000 picks through a compiled upstream of `strategy` over 3
    /// backends of `weights`, with backend `out` kept out `how`.
    fn counts(strategy: Strategy, weights: [u32; 3], out: usize, how: Out) -> Vec<usize> {
        let backends: Vec<_> = (0..3)
            .map(|i| {
                let weight = match how {
                    Out::WeightZero if i == out => 0,
                    _ => weights[i],
                };
                serde_json::json!({"id": i + 1, "url": format!("http://127.0.0.1:{}", 9001 + i), "weight": weight})
            })
            .collect();
        let snap = crate::snapshot::one_upstream(
            serde_json::json!({"strategy": strategy.as_str(), "backends": backends}),
        );
        let u = snap.upstream_named("u").unwrap();
        let state = &u.backends[out].state;
        match how {
            Out::Unhealthy => {
                state.record_probe(false, "status 503".into(), Duration::ZERO, 1, 1);
            }
            Out::Ejected => {
                state.eject(Duration::from_secs(60), Duration::from_secs(60));
            }
            Out::WeightZero => {}
        }
        let mut c = vec![0; 3];
        for _ in 0..1000 {
            c[u.pick(&PickContext::default(), &[]).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn weights_hold_whichever_way_a_backend_is_out() {
        let cases = [
            (Strategy::WeightedRoundRobin, [3, 1, 1]),
            (Strategy::WeightedRoundRobin, [5, 1, 1]),
            (Strategy::LeastConnections, [3, 1, 1]),
            (Strategy::P2cEwma, [3, 1, 1]),
            (Strategy::ConsistentHash, [3, 1, 1]),
            (Strategy::RoundRobin, [1, 1, 1]),
        ];
        for (strategy, ws) in cases {
            for how in [Out::Unhealthy, Out::Ejected, Out::WeightZero] {
                for out in 0..3 {
                    let c = counts(strategy, ws, out, how);
                    let live: u32 = (0..3).filter(|&i| i != out).map(|i| ws[i]).sum();
                    for i in 0..3 {
                        let want = if i == out {
                            0.0
                        } else {
                            ws[i] as f64 / live as f64
                        };
                        assert!(
                            (c[i] as f64 / 1000.0 - want).abs() <= 0.02,
                            "{strategy:?} {ws:?}, {out} {how:?}: {c:?}"
                        );
                    }
                }
            }
        }
    }
}
