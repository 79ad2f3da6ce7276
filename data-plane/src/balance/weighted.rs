//! Smooth weighted round robin, as nginx does it: weights 5:1:1 give
//! `a a b a c a a`, interleaved, never a long run of one backend.
//!
//! nginx keeps a mutable "current weight" per backend and updates it under
//! a lock on every pick. The sequence is periodic, so here it is computed
//! once when the snapshot is built and a pick is one atomic increment and
//! an index. The period is the sum of the weights divided by their gcd;
//! it is capped at [`MAX_PERIOD`] by scaling the weights down
//! proportionally (each stays at least 1).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backends, Balancer, Candidate, PickContext, first_eligible_from};

/// Longest precomputed sequence (entries of 4 bytes).
pub const MAX_PERIOD: u64 = 1 << 16;

#[derive(Debug)]
pub struct SmoothWeighted {
    sequence: Box<[u32]>,
    next: AtomicUsize,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Weights reduced by their gcd and scaled so their sum fits the cap.
fn reduced(weights: &[u32]) -> Vec<u64> {
    let g = weights
        .iter()
        .filter(|&&w| w > 0)
        .fold(0u64, |g, &w| gcd(g, w as u64));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let mut ws: Vec<u64> = weights.iter().map(|&w| w as u64 / g).collect();
    let total: u64 = ws.iter().sum();
    if total > MAX_PERIOD {
        ws = ws
            .iter()
            .map(|&w| {
                if w == 0 {
                    0
                } else {
                    (w * MAX_PERIOD / total).max(1)
                }
            })
            .collect();
    }
    ws
}

/// nginx's algorithm, run for one full period.
fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let ws = reduced(weights);
    let total: i64 = ws.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; ws.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..ws.len() {
            current[i] += ws[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

impl SmoothWeighted {
    pub fn new(candidates: &[Candidate<'_>]) -> Self {
        let weights: Vec<u32> = candidates.iter().map(|c| c.weight).collect();
        SmoothWeighted {
            sequence: smooth_sequence(&weights).into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Balancer for SmoothWeighted {
    fn pick(&self, backends: &dyn Backends, _ctx: &PickContext) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 {
            return None;
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed);
        // An ineligible backend's turn goes to the next in the sequence,
        // so the others keep their relative weights; after a bounded scan
        // take anything eligible.
        let scan = len.min(2 * backends.len() + 2);
        (0..scan)
            .map(|k| self.sequence[(at + k) % len] as usize)
            .find(|&i| backends.eligible(i))
            .or_else(|| first_eligible_from(backends, self.sequence[at % len] as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fake::{Fake, build};

    fn picks(ws: &[u32], n: usize, f: &Fake) -> Vec<usize> {
        let b = build(ws, SmoothWeighted::new);
        (0..n)
            .map(|_| b.pick(f, &PickContext::default()).unwrap())
            .collect()
    }

    #[test]
    fn five_one_one_is_nginx_sequence() {
        // a a b a c a a, then again.
        assert_eq!(
            picks(&[5, 1, 1], 14, &Fake::new(3)),
            [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn shares_follow_weights_and_interleave() {
        let p = picks(&[3, 2, 0, 1], 600, &Fake::new(4));
        let count = |i| p.iter().filter(|&&x| x == i).count();
        assert_eq!((count(0), count(1), count(2), count(3)), (300, 200, 0, 100));
        // Never more than 2 picks of the heaviest in a row for 3:2:1.
        assert!(
            p.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
            "{p:?}"
        );
    }

    #[test]
    fn equal_weights_are_round_robin_and_gcd_reduces_period() {
        assert_eq!(picks(&[7, 7], 4, &Fake::new(2)), [0, 1, 0, 1]);
        assert_eq!(smooth_sequence(&[500, 250]).len(), 3);
    }

    #[test]
    fn huge_weights_are_capped_proportionally() {
        let seq = smooth_sequence(&[1000, 999, 1, 997]);
        assert!(seq.len() as u64 <= MAX_PERIOD + 4);
        assert!(seq.contains(&2), "a weight-1 backend keeps a slot");
    }

    #[test]
    fn ineligible_backends_are_skipped() {
        let mut f = Fake::new(3);
        f.eligible[0] = false;
        let p = picks(&[5, 1, 1], 20, &f);
        assert!(!p.contains(&0));
        assert!(p.contains(&1) && p.contains(&2));
        f.eligible = vec![false; 3];
        assert_eq!(
            build(&[5, 1, 1], SmoothWeighted::new).pick(&f, &PickContext::default()),
            None
        );
    }
}
