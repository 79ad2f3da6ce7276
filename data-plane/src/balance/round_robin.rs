//! Plain round robin: every backend in turn, one atomic counter per
//! upstream. Weight 0 drains a backend; other weights are ignored (use
//! `weighted_round_robin` for weights). The turn goes round the backends
//! that take traffic (the [`Plan`]'s), so one that is out does not double
//! its neighbour's share.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backends, Balancer, Candidate, OutSet, PickContext, Plan};

#[derive(Debug)]
pub struct RoundRobin {
    /// 1 for every backend but those of weight 0.
    weights: Box<[u32]>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(candidates: &[Candidate<'_>]) -> Self {
        RoundRobin {
            weights: candidates.iter().map(|c| u32::from(c.weight > 0)).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Balancer for RoundRobin {
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
    use crate::balance::fake::{Fake, build, pick, picks};

    fn rr(n: usize) -> RoundRobin {
        build(&vec![1; n], RoundRobin::new)
    }

    #[test]
    fn cycles_in_order() {
        assert_eq!(picks(&rr(3), &Fake::new(3), 7), [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn the_others_share_an_out_backends_turns_equally() {
        let mut f = Fake::new(3);
        f.eligible[1] = false;
        // Not 0 2 2 0 (1's turn falling to 2).
        assert_eq!(picks(&rr(3), &f, 4), [0, 2, 0, 2]);
    }

    #[test]
    fn weights_other_than_zero_are_ignored() {
        let b = build(&[5, 0, 1], RoundRobin::new);
        assert_eq!(picks(&b, &Fake::new(3), 4), [0, 2, 0, 2]);
    }

    #[test]
    fn nothing_to_pick() {
        let ctx = PickContext::default();
        assert_eq!(pick(&rr(0), &Fake::new(0), &ctx), None);
        let mut f = Fake::new(2);
        f.eligible = vec![false, false];
        assert_eq!(pick(&rr(2), &f, &ctx), None);
    }
}
