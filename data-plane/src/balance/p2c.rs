//! Power of two random choices on peak-EWMA latency (as linkerd and
//! Finagle do): draw two distinct eligible backends at random and take the
//! one with the lower cost `ewma × (in_flight + 1) / weight`. Cheap, no
//! shared counter, and it shifts load away from a slow or overloaded
//! backend quickly (peak EWMA reacts to a slow answer at once).

use super::{Backends, Balancer, Candidate, PickContext, first_eligible_from};

#[derive(Debug)]
pub struct P2cEwma {
    weights: Box<[u64]>,
}

impl P2cEwma {
    pub fn new(candidates: &[Candidate<'_>]) -> Self {
        P2cEwma {
            weights: candidates.iter().map(|c| c.weight.max(1) as u64).collect(),
        }
    }

    fn cost(&self, backends: &dyn Backends, i: usize) -> u128 {
        let load = backends.in_flight(i) as u128 + 1;
        // Scale before dividing by weight to keep precision.
        (backends.ewma_ns(i) as u128 * load * 1024) / self.weights[i] as u128
    }
}

impl P2cEwma {
    fn cheaper(&self, backends: &dyn Backends, a: usize, b: usize) -> usize {
        if self.cost(backends, b) < self.cost(backends, a) {
            b
        } else {
            a
        }
    }
}

impl Balancer for P2cEwma {
    fn pick(&self, backends: &dyn Backends, _ctx: &PickContext) -> Option<usize> {
        let n = backends.len().min(self.weights.len());
        match n {
            0 => return None,
            1 => return backends.eligible(0).then_some(0),
            _ => {}
        }
        // Two distinct indices, uniformly.
        let a = fastrand::usize(..n);
        let mut b = fastrand::usize(..n - 1);
        if b >= a {
            b += 1;
        }
        match (backends.eligible(a), backends.eligible(b)) {
            (true, true) => Some(self.cheaper(backends, a, b)),
            // Some are out: compare the first two eligible ones found from a
            // random point instead.
            _ => {
                let x = first_eligible_from(backends, a)?;
                match first_eligible_from(backends, (x + 1) % n) {
                    Some(y) if y != x => Some(self.cheaper(backends, x, y)),
                    _ => Some(x),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fake::{Fake, build};

    fn p2c(ws: &[u32]) -> P2cEwma {
        build(ws, P2cEwma::new)
    }

    #[test]
    fn with_two_backends_the_cheaper_always_wins() {
        let b = p2c(&[1, 1]);
        let mut f = Fake::new(2);
        f.ewma_ns = vec![50_000_000, 1_000_000];
        for _ in 0..100 {
            assert_eq!(b.pick(&f, &PickContext::default()), Some(1));
        }
        // Load counts too: the fast one with many in flight loses.
        f.in_flight = vec![0, 100];
        assert_eq!(b.pick(&f, &PickContext::default()), Some(0));
    }

    #[test]
    fn the_slowest_of_many_is_rarely_picked() {
        let b = p2c(&[1, 1, 1, 1]);
        let mut f = Fake::new(4);
        f.ewma_ns = vec![1_000_000, 1_000_000, 1_000_000, 100_000_000];
        let slow = (0..4000)
            .filter(|_| b.pick(&f, &PickContext::default()) == Some(3))
            .count();
        // It can only win a draw against itself, which is excluded.
        assert_eq!(slow, 0);
    }

    #[test]
    fn ineligible_and_single() {
        let b = p2c(&[1, 1, 1]);
        let mut f = Fake::new(3);
        f.eligible = vec![false, true, false];
        for _ in 0..20 {
            assert_eq!(b.pick(&f, &PickContext::default()), Some(1));
        }
        f.eligible = vec![false; 3];
        assert_eq!(b.pick(&f, &PickContext::default()), None);
    }
}
