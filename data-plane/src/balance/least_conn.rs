//! Least connections: the eligible backend with the fewest in-flight
//! requests relative to its weight; ties are broken round robin (the scan
//! starts one further each pick). O(backends) per pick, atomics only.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backends, Balancer, Candidate, PickContext, rotated};

#[derive(Debug)]
pub struct LeastConnections {
    weights: Box<[u64]>,
    next: AtomicUsize,
}

impl LeastConnections {
    pub fn new(candidates: &[Candidate<'_>]) -> Self {
        LeastConnections {
            weights: candidates.iter().map(|c| c.weight as u64).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Balancer for LeastConnections {
    fn pick(&self, backends: &dyn Backends, _ctx: &PickContext) -> Option<usize> {
        let n = backends.len().min(self.weights.len());
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64)> = None;
        for i in rotated(n, start) {
            if !backends.eligible(i) {
                continue;
            }
            // Compare (in_flight + 1) / weight without division (eligible
            // backends have a weight above 0; max(1) only guards the math).
            let load = backends.in_flight(i) + 1;
            let w = self.weights[i].max(1);
            let better = match best {
                None => true,
                Some((b, b_load)) => load * self.weights[b].max(1) < b_load * w,
            };
            if better {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fake::{Fake, build};

    fn lc(ws: &[u32]) -> LeastConnections {
        build(ws, LeastConnections::new)
    }

    #[test]
    fn fewest_in_flight_wins() {
        let b = lc(&[1, 1, 1]);
        let mut f = Fake::new(3);
        f.in_flight = vec![5, 2, 9];
        for _ in 0..5 {
            assert_eq!(b.pick(&f, &PickContext::default()), Some(1));
        }
    }

    #[test]
    fn ties_rotate() {
        let b = lc(&[1, 1, 1]);
        let f = Fake::new(3);
        let p: Vec<_> = (0..6)
            .map(|_| b.pick(&f, &PickContext::default()).unwrap())
            .collect();
        assert_eq!(p, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_scale_the_load() {
        let b = lc(&[4, 1]);
        let mut f = Fake::new(2);
        // (3+1)/4 = 1 < (1+1)/1 = 2
        f.in_flight = vec![3, 1];
        assert_eq!(b.pick(&f, &PickContext::default()), Some(0));
        f.in_flight = vec![8, 1];
        assert_eq!(b.pick(&f, &PickContext::default()), Some(1));
    }

    #[test]
    fn ineligible_are_skipped() {
        let b = lc(&[1, 1]);
        let mut f = Fake::new(2);
        f.in_flight = vec![0, 10];
        f.eligible[0] = false;
        assert_eq!(b.pick(&f, &PickContext::default()), Some(1));
        f.eligible[1] = false;
        assert_eq!(b.pick(&f, &PickContext::default()), None);
    }
}
