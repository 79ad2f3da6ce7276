//! Power of two choices on peak-EWMA latency (as linkerd and Finagle do):
//! two distinct eligible backends are drawn and the one with the lower
//! cost `ewma × (in_flight ÷ weight + 1)` wins. It shifts load away from a
//! slow or overloaded backend quickly (peak EWMA reacts to a slow answer at
//! once).
//!
//! Weights: the first candidate is the next in weighted turn (the
//! [`Plan`]'s sequence), the second is drawn at random, and equal costs go
//! to the first. So with equal latencies and nothing in flight (sequential
//! requests) the shares are the weights exactly — a cost divided by the
//! weight would instead send everything to the heaviest — and under load
//! in-flight counts are balanced relative to weight. An idle backend's cost
//! is its latency alone, whatever its weight.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backends, Balancer, Candidate, OutSet, PickContext, Plan};

#[derive(Debug)]
pub struct P2cEwma {
    weights: Box<[u32]>,
    next: AtomicUsize,
}

impl P2cEwma {
    pub fn new(candidates: &[Candidate<'_>]) -> Self {
        P2cEwma {
            weights: candidates.iter().map(|c| c.weight).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// `i`'s cost as a fraction `(ewma × (in_flight + weight), weight)`.
    fn cost(&self, backends: &dyn Backends, i: usize) -> (u128, u128) {
        let w = self.weights.get(i).copied().unwrap_or(1).max(1) as u128;
        let load = backends.in_flight(i) as u128 + w;
        (backends.ewma_ns(i) as u128 * load, w)
    }

    /// Whether `b` costs strictly less than `a`.
    fn cheaper(&self, backends: &dyn Backends, a: usize, b: usize) -> bool {
        let ((ca, wa), (cb, wb)) = (self.cost(backends, a), self.cost(backends, b));
        cb * wa < ca * wb
    }
}

impl Balancer for P2cEwma {
    fn plan(&self, out: &OutSet) -> Plan {
        Plan::new(&self.weights, out)
    }

    fn pick(&self, plan: &Plan, backends: &dyn Backends, _ctx: &PickContext) -> Option<usize> {
        let first = plan.walk(self.next.fetch_add(1, Ordering::Relaxed), backends)?;
        let members = plan.members();
        if members.len() < 2 {
            return Some(first);
        }
        // The second: a random other eligible member.
        let r = fastrand::usize(..members.len());
        let second = (0..members.len())
            .map(|k| members[(r + k) % members.len()] as usize)
            .find(|&i| i != first && backends.eligible(i));
        match second {
            Some(s) if self.cheaper(backends, first, s) => Some(s),
            _ => Some(first),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fake::{Fake, build, counts, pick, picks};

    fn p2c(ws: &[u32]) -> P2cEwma {
        build(ws, P2cEwma::new)
    }

    #[test]
    fn with_two_backends_the_cheaper_always_wins() {
        let b = p2c(&[1, 1]);
        let mut f = Fake::new(2);
        f.ewma_ns = vec![50_000_000, 1_000_000];
        for _ in 0..100 {
            assert_eq!(pick(&b, &f, &PickContext::default()), Some(1));
        }
        // Load counts too: the fast one with many in flight loses.
        f.in_flight = vec![0, 100];
        assert_eq!(pick(&b, &f, &PickContext::default()), Some(0));
    }

    #[test]
    fn the_slowest_of_many_is_never_picked() {
        let b = p2c(&[1, 1, 1, 1]);
        let mut f = Fake::new(4);
        f.ewma_ns = vec![1_000_000, 1_000_000, 1_000_000, 100_000_000];
        let slow = picks(&b, &f, 4000).iter().filter(|&&i| i == 3).count();
        // It can only win a draw against itself, which is excluded.
        assert_eq!(slow, 0);
    }

    #[test]
    fn equal_costs_follow_the_weights() {
        let p = picks(&p2c(&[3, 1]), &Fake::new(2), 400);
        assert_eq!(counts(&p, 2), [300, 100]);
    }

    #[test]
    fn in_flight_counts_relative_to_weight() {
        let b = p2c(&[3, 1]);
        let mut f = Fake::new(2);
        // 3 in flight on weight 3 costs what 1 does on weight 1: a tie, so
        // the weighted turn decides.
        f.in_flight = vec![3, 1];
        assert_eq!(counts(&picks(&b, &f, 400), 2), [300, 100]);
        // 4 on weight 3 costs more than 1 on weight 1.
        f.in_flight = vec![4, 1];
        assert_eq!(counts(&picks(&b, &f, 400), 2), [0, 400]);
    }

    #[test]
    fn ineligible_and_single() {
        let b = p2c(&[1, 1, 1]);
        let mut f = Fake::new(3);
        f.eligible = vec![false, true, false];
        for _ in 0..20 {
            assert_eq!(pick(&b, &f, &PickContext::default()), Some(1));
        }
        f.eligible = vec![false; 3];
        assert_eq!(pick(&b, &f, &PickContext::default()), None);
    }
}
