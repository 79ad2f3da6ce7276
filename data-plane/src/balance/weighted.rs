//! Smooth weighted round robin, as nginx does it: weights 5:1:1 give
//! `a a b a c a a`, interleaved, never a long run of one backend.
//!
//! The sequence is the [`Plan`]'s (computed once per set of backends out),
//! so a pick is one atomic increment and an index, and a backend that is
//! out leaves its turns to the others in proportion to their weights.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backends, Balancer, Candidate, OutSet, PickContext, Plan};

#[derive(Debug)]
pub struct SmoothWeighted {
    weights: Box<[u32]>,
    next: AtomicUsize,
}

impl SmoothWeighted {
    pub fn new(candidates: &[Candidate<'_>]) -> Self {
        SmoothWeighted {
            weights: candidates.iter().map(|c| c.weight).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Balancer for SmoothWeighted {
    fn plan(&self, out: &OutSet) -> Plan {
        Plan::new(&self.weights, out)
    }

    fn pick(&self, plan: &Plan, backends: &dyn Backends, _ctx: &PickContext) -> Option<usize> {
        plan.walk(self.next.fetch_add(1, Ordering::Relaxed), backends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fake::{Fake, build, counts, pick, picks};

    fn wrr(ws: &[u32]) -> SmoothWeighted {
        build(ws, SmoothWeighted::new)
    }

    #[test]
    fn five_one_one_is_nginx_sequence() {
        // a a b a c a a, then again.
        assert_eq!(
            picks(&wrr(&[5, 1, 1]), &Fake::new(3), 14),
            [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn shares_follow_weights_and_interleave() {
        let p = picks(&wrr(&[3, 2, 0, 1]), &Fake::new(4), 600);
        assert_eq!(counts(&p, 4), [300, 200, 0, 100]);
        // Never more than 2 picks of the heaviest in a row for 3:2:1.
        assert!(
            p.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
            "{p:?}"
        );
    }

    #[test]
    fn equal_weights_are_round_robin() {
        assert_eq!(picks(&wrr(&[7, 7]), &Fake::new(2), 4), [0, 1, 0, 1]);
    }

    #[test]
    fn an_out_backend_leaves_its_turns_in_proportion() {
        let mut f = Fake::new(3);
        f.eligible[2] = false;
        // 3:1 of what is left, interleaved (not a b a a a, as c's turn
        // falling to its neighbour a would give).
        assert_eq!(picks(&wrr(&[3, 1, 1]), &f, 8), [0, 0, 1, 0, 0, 0, 1, 0]);
        f.eligible = vec![false; 3];
        assert_eq!(pick(&wrr(&[5, 1, 1]), &f, &PickContext::default()), None);
    }
}
