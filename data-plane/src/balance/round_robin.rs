//! Plain round robin: every backend with a non-zero weight in turn, one
//! atomic counter per upstream. Weight 0 drains a backend.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, Candidate};

#[derive(Debug)]
pub struct RoundRobin {
    eligible: Box<[usize]>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(backends: &[Candidate]) -> Self {
        let eligible = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.weight > 0)
            .map(|(i, _)| i)
            .collect();
        RoundRobin {
            eligible,
            next: AtomicUsize::new(0),
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self) -> Option<usize> {
        if self.eligible.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.eligible[n % self.eligible.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(weights: &[u32]) -> RoundRobin {
        let c: Vec<Candidate> = weights.iter().map(|&weight| Candidate { weight }).collect();
        RoundRobin::new(&c)
    }

    #[test]
    fn cycles_in_order() {
        let b = rr(&[1, 1, 1]);
        let picks: Vec<_> = (0..7).map(|_| b.pick().unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn weight_zero_is_drained() {
        let b = rr(&[1, 0, 5]);
        let picks: Vec<_> = (0..4).map(|_| b.pick().unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[test]
    fn nothing_to_pick() {
        assert_eq!(rr(&[]).pick(), None);
        assert_eq!(rr(&[0, 0]).pick(), None);
    }
}
