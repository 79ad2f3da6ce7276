//! Backend selection. Each strategy is a small type behind [`Balancer`],
//! one file each; everything expensive (sequences, hash tables) happens in
//! its constructor when a snapshot is compiled, so a pick takes no lock and
//! reads only atomics.
//!
//! Balancers are pure: they see the live state of an upstream's backends
//! through [`Backends`], so they are unit-tested with plain vectors.

mod consistent_hash;
mod least_conn;
mod p2c;
mod round_robin;
mod weighted;

pub use consistent_hash::ConsistentHash;
pub use least_conn::LeastConnections;
pub use p2c::P2cEwma;
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
    /// `None` when no backend is eligible.
    fn pick(&self, backends: &dyn Backends, ctx: &PickContext) -> Option<usize>;
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
    use super::{Backends, Candidate};

    #[derive(Debug, Clone)]
    pub struct Fake {
        pub eligible: Vec<bool>,
        pub in_flight: Vec<u64>,
        pub ewma_ns: Vec<u64>,
    }

    impl Fake {
        pub fn new(n: usize) -> Self {
            Fake {
                eligible: vec![true; n],
                in_flight: vec![0; n],
                ewma_ns: vec![1_000_000; n],
            }
        }
    }

    impl Backends for Fake {
        fn len(&self) -> usize {
            self.eligible.len()
        }
        fn eligible(&self, i: usize) -> bool {
            self.eligible[i]
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
}
