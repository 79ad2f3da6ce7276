//! Backend selection. Each strategy is a small type behind [`Balancer`],
//! one file each; everything expensive happens off the request path: hash
//! tables in its constructor when a snapshot is compiled, and the
//! [`Plan`] — the weighted rotation over the backends that take traffic —
//! once per set of backends out ([`Balancer::plan`]), so a pick takes no
//! lock and reads only atomics. Backends that are out never hand their
//! turns to a neighbour: the others keep their relative weights.
//!
//! Balancers are pure: they see the live state of an upstream's backends
//! through [`Backends`], so they are unit-tested with plain vectors.

mod consistent_hash;
mod least_conn;
mod p2c;
mod plan;
mod round_robin;
mod weighted;

pub use consistent_hash::ConsistentHash;
pub use least_conn::LeastConnections;
pub use p2c::P2cEwma;
pub use plan::{OutSet, Plan};
pub use round_robin::RoundRobin;
pub use weighted::SmoothWeighted;

use crate::config::Strategy;

/// What a balancer knows of one backend when it is built.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub weight: u32,
    /// Stable identity (the URL), for hashing.
    pub key: &'a str,
}

/// The live view of an upstream's backends during one pick.
pub trait Backends {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// May take this request: weight above 0, available (or the upstream
    /// fails open), and not already tried by this request.
    fn eligible(&self, i: usize) -> bool;
    fn in_flight(&self, i: usize) -> u64;
    /// Peak-EWMA latency in nanoseconds.
    fn ewma_ns(&self, i: usize) -> u64;
}

/// Per-request input to a pick.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext {
    /// Hash of the request's `hash_on` key, if it has one.
    pub hash: Option<u64>,
}

/// Picks the index of the backend for the next request.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// Precompute the picks among the backends not in `out`: done when a
    /// snapshot is built (nothing out) and when the set of backends out
    /// changes, never per request.
    fn plan(&self, out: &OutSet) -> Plan;

    /// Pick with `plan` (made by this balancer for the backends out now).
    /// `None` when no backend is eligible.
    fn pick(&self, plan: &Plan, backends: &dyn Backends, ctx: &PickContext) -> Option<usize>;
}

/// Build the balancer of `strategy` over `candidates` (indexes are
/// positions in this slice).
pub fn build(strategy: Strategy, candidates: &[Candidate<'_>]) -> Box<dyn Balancer> {
    match strategy {
        Strategy::RoundRobin => Box::new(RoundRobin::new(candidates)),
        Strategy::WeightedRoundRobin => Box::new(SmoothWeighted::new(candidates)),
        Strategy::LeastConnections => Box::new(LeastConnections::new(candidates)),
        Strategy::P2cEwma => Box::new(P2cEwma::new(candidates)),
        Strategy::ConsistentHash => Box::new(ConsistentHash::new(candidates)),
    }
}

/// The first eligible backend scanning from `start` (wrapping): the common
/// fallback when a strategy's own choice is not eligible.
pub fn first_eligible_from(backends: &dyn Backends, start: usize) -> Option<usize> {
    rotated(backends.len(), start).find(|&i| backends.eligible(i))
}

/// Every index below `n` once, from `start` (taken modulo `n`) wrapping
/// round: one division per scan, not one per index.
fn rotated(n: usize, start: usize) -> impl Iterator<Item = usize> {
    let start = if n == 0 { 0 } else { start % n };
    (start..n).chain(0..start)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A plain-vector [`Backends`] for balancer tests.
    use super::{Backends, Balancer, Candidate, OutSet, PickContext};

    #[derive(Debug, Clone)]
    pub struct Fake {
        /// Available (false: out by health or ejection).
        pub eligible: Vec<bool>,
        /// Already tried by this request.
        pub tried: Vec<bool>,
        pub in_flight: Vec<u64>,
        pub ewma_ns: Vec<u64>,
    }

    impl Fake {
        pub fn new(n: usize) -> Self {
            Fake {
                eligible: vec![true; n],
                tried: vec![false; n],
                in_flight: vec![0; n],
                ewma_ns: vec![1_000_000; n],
            }
        }

        /// The backends out, as the snapshot would see them.
        pub fn out(&self) -> OutSet {
            OutSet::from_fn(self.len(), |i| !self.eligible[i])
        }
    }

    impl Backends for Fake {
        fn len(&self) -> usize {
            self.eligible.len()
        }
        fn eligible(&self, i: usize) -> bool {
            self.eligible[i] && !self.tried[i]
        }
        fn in_flight(&self, i: usize) -> u64 {
            self.in_flight[i]
        }
        fn ewma_ns(&self, i: usize) -> u64 {
            self.ewma_ns[i]
        }
    }

    /// Build a balancer over candidates with these weights and keys `b0`,
    /// `b1`, ….
    pub fn build<B>(ws: &[u32], make: impl FnOnce(&[Candidate<'_>]) -> B) -> B {
        let keys: Vec<String> = (0..ws.len()).map(|i| format!("b{i}")).collect();
        let candidates: Vec<Candidate> = keys
            .iter()
            .zip(ws)
            .map(|(k, &weight)| Candidate { weight, key: k })
            .collect();
        make(&candidates)
    }

    /// One pick, planned for the backends `f` has out (a snapshot caches
    /// the plan; tests make it afresh).
    pub fn pick(b: &dyn Balancer, f: &Fake, ctx: &PickContext) -> Option<usize> {
        b.pick(&b.plan(&f.out()), f, ctx)
    }

    /// `n` picks without a key.
    pub fn picks(b: &dyn Balancer, f: &Fake, n: usize) -> Vec<usize> {
        let plan = b.plan(&f.out());
        (0..n)
            .map(|_| b.pick(&plan, f, &PickContext::default()).unwrap())
            .collect()
    }

    /// How many of `picks` went to each of `n` backends.
    pub fn counts(picks: &[usize], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| picks.iter().filter(|&&x| x == i).count())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! What every strategy owes: the backends left keep their relative
    //! weights when others are out, whichever way they are out.
    use super::fake::{Fake, build as with_weights, counts, pick, picks};
    use super::*;

    /// The strategies that take weights.
    const WEIGHTED: [Strategy; 4] = [
        Strategy::WeightedRoundRobin,
        Strategy::LeastConnections,
        Strategy::P2cEwma,
        Strategy::ConsistentHash,
    ];

    fn strategy(s: Strategy, ws: &[u32]) -> Box<dyn Balancer> {
        with_weights(ws, |c| build(s, c))
    }

    /// 1,000 picks of `s` over weights `ws` with backend `out` out (by
    /// state, or by weight 0): each other backend's share is its weight's
    /// share of what is left, within 2%.
    fn assert_shares_hold(s: Strategy, ws: &[u32], out: usize, by_weight: bool) {
        let mut f = Fake::new(ws.len());
        let mut ws = ws.to_vec();
        if by_weight {
            ws[out] = 0;
        } else {
            f.eligible[out] = false;
        }
        let p = picks(&*strategy(s, &ws), &f, 1000);
        let c = counts(&p, ws.len());
        let live: u32 = (0..ws.len()).filter(|&i| i != out).map(|i| ws[i]).sum();
        for i in 0..ws.len() {
            let want = if i == out {
                0.0
            } else {
                ws[i] as f64 / live as f64
            };
            let got = c[i] as f64 / 1000.0;
            assert!(
                (got - want).abs() <= 0.02,
                "{s:?} {ws:?} with {out} out (by weight: {by_weight}): {c:?}"
            );
        }
    }

    #[test]
    fn weights_hold_when_a_backend_is_out() {
        for s in WEIGHTED {
            for ws in [[3, 1, 1], [5, 1, 1], [1, 1, 1]] {
                for out in 0..3 {
                    assert_shares_hold(s, &ws, out, false);
                    assert_shares_hold(s, &ws, out, true);
                }
            }
        }
        // Round robin takes no weights, but the others share equally.
        for out in 0..3 {
            assert_shares_hold(Strategy::RoundRobin, &[1, 1, 1], out, false);
            assert_shares_hold(Strategy::RoundRobin, &[1, 1, 1], out, true);
        }
    }

    #[test]
    fn with_everything_out_nothing_is_picked() {
        for s in WEIGHTED.into_iter().chain([Strategy::RoundRobin]) {
            let b = strategy(s, &[3, 1, 1]);
            let mut f = Fake::new(3);
            f.eligible = vec![false; 3];
            assert_eq!(pick(&*b, &f, &PickContext::default()), None, "{s:?}");
            let ctx = PickContext { hash: Some(7) };
            assert_eq!(pick(&*b, &f, &ctx), None, "{s:?}");
        }
    }

    #[test]
    fn a_retry_never_gets_a_backend_it_tried() {
        for s in WEIGHTED.into_iter().chain([Strategy::RoundRobin]) {
            let b = strategy(s, &[3, 1, 1]);
            let mut f = Fake::new(3);
            f.eligible[2] = false;
            f.tried[0] = true;
            for k in 0..50u64 {
                let ctx = PickContext {
                    hash: (k % 2 == 0).then_some(k),
                };
                assert_eq!(pick(&*b, &f, &ctx), Some(1), "{s:?}");
            }
            f.tried[1] = true;
            assert_eq!(pick(&*b, &f, &PickContext::default()), None, "{s:?}");
        }
    }
}
