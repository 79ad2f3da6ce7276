//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI
//! 2016). Each backend derives a permutation of the table's slots from a
//! hash of its URL; backends take turns claiming their next preferred free
//! slot (a backend of weight w takes w turns per round). A request's key
//! hash indexes the table: O(1) per pick. Adding or removing one of N
//! backends moves about 1/N of the keys, and the table is rebuilt only
//! when a snapshot is compiled.
//!
//! When the chosen backend is not eligible the key is hashed again (up to
//! `PROBES` times) to another slot, so its keys spread over the others
//! while the remaining keys stay put. Each new slot is independent of the
//! first, a draw in proportion to table share, that is to weight: a backend
//! out leaves its keys to the others in proportion to their weights (a test
//! checks the whole table). The next slot of the table would not do: the
//! owners of neighbouring slots are not independent, and 5:1:1 with the
//! heavy one out split its keys 47/53. Requests without the key (no such
//! header or cookie) are spread in weighted turn (the [`Plan`]'s sequence).

use std::sync::atomic::{AtomicUsize, Ordering};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{Backends, Balancer, Candidate, OutSet, PickContext, Plan, first_eligible_from};

/// Table sizes: primes, the first at least 100 × the backend count is used.
const TABLE_SIZES: [usize; 4] = [65_537, 131_071, 262_139, 524_287];
/// Slots tried for a key whose backend is not eligible, before scanning.
const PROBES: u64 = 64;

#[derive(Debug)]
pub struct ConsistentHash {
    table: Box<[u32]>,
    weights: Box<[u32]>,
    next: AtomicUsize,
}

impl ConsistentHash {
    /// Hash of a request key (header value, cookie value, client IP).
    pub fn hash(key: &[u8]) -> u64 {
        xxh3_64_with_seed(key, 0x5357_4954_4348_5944)
    }

    pub fn new(candidates: &[Candidate<'_>]) -> Self {
        ConsistentHash {
            table: maglev_table(candidates),
            weights: candidates.iter().map(|c| c.weight).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

fn maglev_table(candidates: &[Candidate<'_>]) -> Box<[u32]> {
    let live: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].weight > 0)
        .collect();
    if live.is_empty() {
        return Box::new([]);
    }
    let m = *TABLE_SIZES
        .iter()
        .find(|&&m| m >= live.len() * 100)
        .unwrap_or(&TABLE_SIZES[TABLE_SIZES.len() - 1]);
    // (offset, skip, next position in the permutation) per live backend.
    let mut perm: Vec<(usize, usize, usize)> = live
        .iter()
        .map(|&i| {
            let key = candidates[i].key.as_bytes();
            let offset = xxh3_64_with_seed(key, 1) as usize % m;
            let skip = xxh3_64_with_seed(key, 2) as usize % (m - 1) + 1;
            (offset, skip, 0)
        })
        .collect();
    let max_weight = live
        .iter()
        .map(|&i| candidates[i].weight)
        .max()
        .unwrap_or(1);
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    'fill: loop {
        // Weighted rounds: in pass p, backends with weight > p take a turn.
        for pass in 0..max_weight {
            for (k, &i) in live.iter().enumerate() {
                if candidates[i].weight <= pass {
                    continue;
                }
                let (offset, skip, next) = &mut perm[k];
                let mut slot = (*offset + *next * *skip) % m;
                while table[slot] != u32::MAX {
                    *next += 1;
                    slot = (*offset + *next * *skip) % m;
                }
                table[slot] = i as u32;
                *next += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table.into_boxed_slice()
}

impl Balancer for ConsistentHash {
    fn plan(&self, out: &OutSet) -> Plan {
        Plan::new(&self.weights, out)
    }

    fn pick(&self, plan: &Plan, backends: &dyn Backends, ctx: &PickContext) -> Option<usize> {
        let m = self.table.len();
        if m == 0 || backends.is_empty() {
            return None;
        }
        let Some(hash) = ctx.hash else {
            return plan.walk(self.next.fetch_add(1, Ordering::Relaxed), backends);
        };
        let slot = |h: u64| self.table[(h % m as u64) as usize] as usize;
        (0..PROBES)
            .map(|k| slot(if k == 0 { hash } else { rehash(hash, k) }))
            .find(|&i| backends.eligible(i))
            .or_else(|| first_eligible_from(backends, slot(hash)))
    }
}

/// The key's `k`-th other hash (murmur3's 64-bit finaliser over the key's
/// hash and `k`): a slot independent of the first and of each other, so a
/// draw in proportion to table share.
fn rehash(hash: u64, k: u64) -> u64 {
    let mut x = hash ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::fake::{Fake, counts, picks};

    fn build(urls: &[&str]) -> ConsistentHash {
        let c: Vec<Candidate> = urls
            .iter()
            .map(|u| Candidate { weight: 1, key: u })
            .collect();
        ConsistentHash::new(&c)
    }

    fn assign(b: &ConsistentHash, f: &Fake, keys: usize) -> Vec<usize> {
        let plan = b.plan(&f.out());
        (0..keys)
            .map(|k| {
                let ctx = PickContext {
                    hash: Some(ConsistentHash::hash(format!("user-{k}").as_bytes())),
                };
                b.pick(&plan, f, &ctx).unwrap()
            })
            .collect()
    }

    const URLS: [&str; 5] = [
        "http://a:1",
        "http://b:1",
        "http://c:1",
        "http://d:1",
        "http://e:1",
    ];

    #[test]
    fn same_key_same_backend_and_even_spread() {
        let b = build(&URLS);
        let f = Fake::new(5);
        let first = assign(&b, &f, 10_000);
        assert_eq!(first, assign(&b, &f, 10_000));
        for i in 0..5 {
            let share = first.iter().filter(|&&x| x == i).count();
            assert!(
                (1_500..2_500).contains(&share),
                "backend {i} got {share} of 10000"
            );
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let before = assign(&build(&URLS), &Fake::new(5), 10_000);
        // Remove "c" (index 2): the config now lists a, b, d, e.
        let after = assign(
            &build(&["http://a:1", "http://b:1", "http://d:1", "http://e:1"]),
            &Fake::new(4),
            10_000,
        );
        let name = |set: &[&str], i: usize| set[i].to_string();
        let remaining = ["http://a:1", "http://b:1", "http://d:1", "http://e:1"];
        let moved = (0..10_000)
            .filter(|&k| name(&URLS, before[k]) != name(&remaining, after[k]))
            .count();
        let had_c = before.iter().filter(|&&x| x == 2).count();
        // Every key of c moves; of the others only a few (Maglev's small churn).
        assert!(moved >= had_c);
        assert!(
            moved as f64 <= 10_000.0 * (1.0 / 5.0 + 0.05),
            "moved {moved}"
        );
    }

    #[test]
    fn adding_one_moves_about_one_over_n_plus_one() {
        let before = assign(&build(&URLS[..4]), &Fake::new(4), 10_000);
        let after = assign(&build(&URLS), &Fake::new(5), 10_000);
        let moved = (0..10_000).filter(|&k| before[k] != after[k]).count();
        assert!(
            moved as f64 <= 10_000.0 * (1.0 / 5.0 + 0.05),
            "moved {moved}"
        );
    }

    #[test]
    fn an_ineligible_backend_only_moves_its_own_keys() {
        let b = build(&URLS);
        let mut f = Fake::new(5);
        let before = assign(&b, &f, 5_000);
        f.eligible[1] = false;
        let after = assign(&b, &f, 5_000);
        for k in 0..5_000 {
            if before[k] != 1 {
                assert_eq!(before[k], after[k]);
            } else {
                assert_ne!(after[k], 1);
            }
        }
    }

    #[test]
    fn weights_give_more_slots_and_zero_none() {
        let c = [
            Candidate {
                weight: 3,
                key: "http://a:1",
            },
            Candidate {
                weight: 1,
                key: "http://b:1",
            },
            Candidate {
                weight: 0,
                key: "http://c:1",
            },
        ];
        let t = maglev_table(&c);
        let count = |i| t.iter().filter(|&&x| x == i).count() as f64;
        assert_eq!(count(2), 0.0);
        let ratio = count(0) / count(1);
        assert!((2.7..3.3).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn requests_without_a_key_are_spread() {
        assert_eq!(picks(&build(&URLS[..2]), &Fake::new(2), 4), [0, 1, 0, 1]);
    }

    fn weighted(ws: &[u32]) -> ConsistentHash {
        let c: Vec<Candidate> = ws
            .iter()
            .zip(URLS)
            .map(|(&weight, key)| Candidate { weight, key })
            .collect();
        ConsistentHash::new(&c)
    }

    /// The share of the whole key space each backend answers: every slot of
    /// the table looked up once.
    fn table_shares(b: &ConsistentHash, f: &Fake) -> Vec<f64> {
        let plan = b.plan(&f.out());
        let m = b.table.len();
        let picks: Vec<usize> = (0..m as u64)
            .map(|slot| b.pick(&plan, f, &PickContext { hash: Some(slot) }).unwrap())
            .collect();
        counts(&picks, f.eligible.len())
            .into_iter()
            .map(|c| c as f64 / m as f64)
            .collect()
    }

    #[test]
    fn a_backend_out_leaves_its_keys_in_proportion_to_weight() {
        for ws in [[3, 1, 1], [5, 1, 1], [1, 1, 1]] {
            let b = weighted(&ws);
            for out in 0..3 {
                let mut f = Fake::new(3);
                f.eligible[out] = false;
                let live: u32 = (0..3).filter(|&i| i != out).map(|i| ws[i]).sum();
                let shares = table_shares(&b, &f);
                for i in (0..3).filter(|&i| i != out) {
                    let want = ws[i] as f64 / live as f64;
                    assert!(
                        (shares[i] - want).abs() <= 0.02,
                        "{ws:?}, {out} out: {i} has {:.4} of the keys, not {want:.4}",
                        shares[i]
                    );
                }
                assert_eq!(shares[out], 0.0);
            }
        }
    }
}
