//! Plain round robin: every backend in turn, one atomic counter per
//! upstream. Weight 0 drains a backend; other weights are ignored (use
//! `weighted_round_robin` for weights).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backends, Balancer, Candidate, PickContext, first_eligible_from};

#[derive(Debug)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(_candidates: &[Candidate<'_>]) -> Self {
        RoundRobin {
            next: AtomicUsize::new(0),
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, backends: &dyn Backends, _ctx: &PickContext) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        first_eligible_from(backends, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fake::Fake;

    #[test]
    fn cycles_in_order() {
        let b = RoundRobin::new(&[]);
        let f = Fake::new(3);
        let picks: Vec<_> = (0..7)
            .map(|_| b.pick(&f, &PickContext::default()).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn skips_ineligible() {
        let b = RoundRobin::new(&[]);
        let mut f = Fake::new(3);
        f.eligible[1] = false;
        let picks: Vec<_> = (0..4)
            .map(|_| b.pick(&f, &PickContext::default()).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 2, 0]);
    }

    #[test]
    fn nothing_to_pick() {
        let b = RoundRobin::new(&[]);
        assert_eq!(b.pick(&Fake::new(0), &PickContext::default()), None);
        let mut f = Fake::new(2);
        f.eligible = vec![false, false];
        assert_eq!(b.pick(&f, &PickContext::default()), None);
    }
}
