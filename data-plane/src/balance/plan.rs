//! The rotation every strategy picks from: a smooth weighted sequence over
//! the backends that take traffic, precomputed for one set of backends out
//! ([`OutSet`]).
//!
//! A backend that is out (unhealthy, ejected) must not hand its turn to a
//! neighbour: with weights 3:1:1 and the third out, "skip to the next entry
//! of the full sequence" gives its turns to whoever follows it and the
//! others run 80/20 instead of 75/25. So each set of available backends
//! gets its own sequence, computed once when that set changes (see
//! `crate::available`), never per pick.
//!
//! The sequence is nginx's smooth weighted round robin: weights 5:1:1 give
//! `a a b a c a a`, interleaved, never a long run of one backend. nginx
//! keeps a mutable "current weight" per backend and updates it under a lock
//! on every pick; the sequence is periodic, so here it is run once for a
//! whole period and a pick is one atomic increment and an index. The period
//! is the sum of the weights divided by their gcd; it is capped at
//! [`MAX_PERIOD`] by scaling the weights down proportionally (each stays at
//! least 1).

use super::{Backends, first_eligible_from};

/// Longest precomputed sequence (entries of 4 bytes).
pub const MAX_PERIOD: u64 = 1 << 16;

/// Backends out of rotation by their live state, one bit per index.
/// (Weight 0 is not here: a balancer knows its weights when it is built.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutSet {
    words: Vec<u64>,
}

impl OutSet {
    /// The set of `i < n` for which `out(i)`.
    pub fn from_fn(n: usize, mut out: impl FnMut(usize) -> bool) -> Self {
        let mut set = OutSet::default();
        for i in (0..n).filter(|&i| out(i)) {
            set.insert(i);
        }
        set
    }

    pub fn insert(&mut self, i: usize) {
        let w = i / 64;
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (i % 64);
    }

    pub fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}

/// What a balancer precomputed for one set of available backends.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One period of the smooth weighted sequence over the available
    /// backends.
    sequence: Box<[u32]>,
    /// The available backends (weight above 0, not out), in index order.
    members: Box<[u32]>,
}

impl Plan {
    /// The plan for backends of these `weights` (0 = never picked) but
    /// those in `out`.
    pub fn new(weights: &[u32], out: &OutSet) -> Self {
        let live: Vec<u32> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| if out.contains(i) { 0 } else { w })
            .collect();
        Plan {
            sequence: smooth_sequence(&live).into_boxed_slice(),
            members: (0..live.len() as u32)
                .filter(|&i| live[i as usize] > 0)
                .collect(),
        }
    }

    pub fn sequence(&self) -> &[u32] {
        &self.sequence
    }

    pub fn members(&self) -> &[u32] {
        &self.members
    }

    /// The backend whose turn is `at` (a counter the caller advances), or,
    /// when that one cannot take this request (a retry already tried it, or
    /// it went out since the plan was made), the next in the sequence that
    /// can; after a bounded scan, any eligible backend at all.
    pub fn walk(&self, at: usize, backends: &dyn Backends) -> Option<usize> {
        let len = self.sequence.len();
        if len > 0 {
            let at = at % len;
            let scan = len.min(2 * self.members.len() + 2);
            let found = (0..scan)
                .map(|k| self.sequence[(at + k) % len] as usize)
                .find(|&i| backends.eligible(i));
            if found.is_some() {
                return found;
            }
        }
        first_eligible_from(backends, at)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fake::Fake;

    #[test]
    fn out_sets_of_any_size() {
        let s = OutSet::from_fn(130, |i| i % 64 == 3);
        assert!(s.contains(3) && s.contains(67));
        assert!(!s.contains(4) && !s.contains(131) && !s.contains(500));
        assert!(!s.is_empty());
        assert!(OutSet::from_fn(3, |_| false).is_empty());
        assert_eq!(OutSet::from_fn(3, |_| false), OutSet::default());
    }

    #[test]
    fn a_plan_leaves_out_what_is_out_and_keeps_the_others_weights() {
        let out = OutSet::from_fn(3, |i| i == 2);
        let p = Plan::new(&[3, 1, 1], &out);
        assert_eq!(p.sequence(), [0, 0, 1, 0]);
        assert_eq!(p.members(), [0, 1]);
        let p = Plan::new(&[3, 0, 1], &OutSet::default());
        assert_eq!(p.members(), [0, 2]);
        assert!(
            Plan::new(&[1, 1], &OutSet::from_fn(2, |_| true))
                .sequence()
                .is_empty()
        );
    }

    #[test]
    fn a_walk_skips_what_cannot_take_the_request() {
        let p = Plan::new(&[1, 1, 1], &OutSet::default());
        let mut f = Fake::new(3);
        f.tried[1] = true;
        assert_eq!(p.walk(1, &f), Some(2));
        // Out since the plan was made, and everything else tried: nothing.
        f.eligible[0] = false;
        f.tried[2] = true;
        assert_eq!(p.walk(0, &f), None);
        // A backend back since the plan was made is found by the scan.
        let stale = Plan::new(&[1, 1, 1], &OutSet::from_fn(3, |_| true));
        assert_eq!(stale.walk(0, &Fake::new(3)), Some(0));
    }

    #[test]
    fn huge_weights_are_capped_proportionally() {
        let seq = smooth_sequence(&[1000, 999, 1, 997]);
        assert!(seq.len() as u64 <= MAX_PERIOD + 4);
        assert!(seq.contains(&2), "a weight-1 backend keeps a slot");
    }

    #[test]
    fn gcd_reduces_the_period() {
        assert_eq!(smooth_sequence(&[500, 250]).len(), 3);
    }
}
