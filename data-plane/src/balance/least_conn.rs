//! Least connections, as nginx weighs it: the eligible backend with the
//! fewest in-flight requests relative to its weight (`in_flight ÷
//! weight`); ties are broken in weighted turn (the [`Plan`]'s smooth
//! sequence). So sequential requests, where every count is 0, follow the
//! weights exactly, and under load a backend of weight 3 holds three times
//! the requests of one of weight 1. O(backends) per pick, atomics only.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backends, Balancer, Candidate, OutSet, PickContext, Plan};

#[derive(Debug)]
pub struct LeastConnections {
    weights: Box<[u32]>,
    next: AtomicUsize,
}

impl LeastConnections {
    pub fn new(candidates: &[Candidate<'_>]) -> Self {
        LeastConnections {
            weights: candidates.iter().map(|c| c.weight).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// `i`'s load as a fraction `(in_flight, weight)`.
    fn load(&self, backends: &dyn Backends, i: usize) -> (u128, u128) {
        // Eligible backends have a weight above 0; max(1) only guards the
        // math against a caller that breaks that.
        let w = self.weights.get(i).copied().unwrap_or(1).max(1);
        (backends.in_flight(i) as u128, w as u128)
    }

    /// The least load among the eligible of `candidates`, and how many
    /// have it (with one of them).
    fn least(
        &self,
        backends: &dyn Backends,
        candidates: impl Iterator<Item = usize>,
    ) -> Option<((u128, u128), usize, usize)> {
        let mut best: Option<((u128, u128), usize, usize)> = None;
        for i in candidates.filter(|&i| backends.eligible(i)) {
            let (f, w) = self.load(backends, i);
            best = match best {
                // Compare f/w with bf/bw without dividing.
                Some(((bf, bw), _, _)) if f * bw < bf * w => Some(((f, w), i, 1)),
                Some((b, one, ties)) if f * b.1 == b.0 * w => Some((b, one, ties + 1)),
                Some(b) => Some(b),
                None => Some(((f, w), i, 1)),
            };
        }
        best
    }
}

impl Balancer for LeastConnections {
    fn plan(&self, out: &OutSet) -> Plan {
        Plan::new(&self.weights, out)
    }

    fn pick(&self, plan: &Plan, backends: &dyn Backends, _ctx: &PickContext) -> Option<usize> {
        let at = self.next.fetch_add(1, Ordering::Relaxed);
        let members = plan.members().iter().map(|&i| i as usize);
        // Nothing among the plan's: it is stale (a backend came back since),
        // so look at them all.
        let ((bf, bw), one, ties) = self
            .least(backends, members)
            .or_else(|| self.least(backends, 0..backends.len()))?;
        if ties == 1 {
            return Some(one);
        }
        // Ties in weighted turn: the first of them in the sequence from
        // `at`, within a bounded walk (then the one found first).
        let seq = plan.sequence();
        let tied = |i: usize| {
            backends.eligible(i) && {
                let (f, w) = self.load(backends, i);
                f * bw == bf * w
            }
        };
        let walk = seq.len().min(2 * plan.members().len() + 2);
        Some(
            (0..walk)
                .map(|k| seq[(at + k) % seq.len()] as usize)
                .find(|&i| tied(i))
                .unwrap_or(one),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fake::{Fake, build, counts, pick, picks};

    fn lc(ws: &[u32]) -> LeastConnections {
        build(ws, LeastConnections::new)
    }

    #[test]
    fn fewest_in_flight_wins() {
        let b = lc(&[1, 1, 1]);
        let mut f = Fake::new(3);
        f.in_flight = vec![5, 2, 9];
        for _ in 0..5 {
            assert_eq!(pick(&b, &f, &PickContext::default()), Some(1));
        }
    }

    #[test]
    fn ties_rotate() {
        assert_eq!(picks(&lc(&[1, 1, 1]), &Fake::new(3), 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn sequential_requests_follow_the_weights() {
        // Every count is 0: all tie, and the turn is weighted.
        let p = picks(&lc(&[3, 1]), &Fake::new(2), 400);
        assert_eq!(counts(&p, 2), [300, 100]);
    }

    #[test]
    fn weights_scale_the_load() {
        let b = lc(&[4, 1]);
        let mut f = Fake::new(2);
        // 3/4 < 1/1
        f.in_flight = vec![3, 1];
        assert_eq!(pick(&b, &f, &PickContext::default()), Some(0));
        f.in_flight = vec![8, 1];
        assert_eq!(pick(&b, &f, &PickContext::default()), Some(1));
        // 4/4 = 1/1: a tie, taken in weighted turn (4 of every 5 to 0).
        f.in_flight = vec![4, 1];
        assert_eq!(counts(&picks(&b, &f, 500), 2), [400, 100]);
    }

    #[test]
    fn ineligible_are_skipped() {
        let b = lc(&[1, 1]);
        let mut f = Fake::new(2);
        f.in_flight = vec![0, 10];
        f.eligible[0] = false;
        assert_eq!(pick(&b, &f, &PickContext::default()), Some(1));
        f.eligible[1] = false;
        assert_eq!(pick(&b, &f, &PickContext::default()), None);
    }
}
