//! Token buckets for a route's `rate_limit`, kept as GCRA (the generic
//! cell rate algorithm): one number per key, the time at which its bucket
//! would be full again ("theoretical arrival time"). A bucket that is full
//! is the same as no bucket, so an idle key can be forgotten at any time
//! without changing an answer.
//!
//! One key (`route`) is one atomic, updated lock-free. Many keys (client
//! addresses, a field's values) live in sharded maps of their 64-bit hashes
//! (a short lock per request on one of [`SHARDS`]); each shard holds at
//! most its share of [`MAX_RATE_KEYS`]: when full, idle keys are swept out,
//! and if none is idle a new key shares the shard's overflow bucket.
//!
//! No crate does this with bounded memory and the eviction above
//! (`governor`'s keyed limiter grows until told to shrink); the algorithm
//! itself is a few lines.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::policies::{MAX_RATE_KEYS, RateLimit};

/// Shards of a keyed limiter.
pub const SHARDS: usize = 64;

const NS: u64 = 1_000_000_000;

/// One route's buckets.
#[derive(Debug)]
pub struct RateLimiter {
    /// Nanoseconds one request's token takes to come back.
    interval: u64,
    /// How far ahead of now a bucket's full time may be: `burst` tokens.
    tolerance: u64,
    burst: u32,
    /// The `route` key's bucket.
    single: AtomicU64,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Shard {
    full_at: HashMap<u64, u64>,
    overflow: u64,
}

/// What a request's key was found to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket's size (`RateLimit-Limit`).
    pub limit: u32,
    /// Tokens left after this request (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the bucket is full again (`RateLimit-Reset`).
    pub reset_s: u64,
    /// Seconds until a request would be let through (`Retry-After`), when
    /// this one was not.
    pub retry_after_s: u64,
}

impl RateLimiter {
    pub fn new(limit: &RateLimit) -> Self {
        let interval = (NS / u64::from(limit.requests_per_second.max(1))).max(1);
        RateLimiter {
            interval,
            tolerance: interval * u64::from(limit.burst.max(1)),
            burst: limit.burst.max(1),
            single: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Take a token from `key`'s bucket (`None`: the route's one bucket)
    /// at `now` (nanoseconds on any monotonic clock).
    pub fn check(&self, key: Option<&[u8]>, now: u64) -> Decision {
        let Some(key) = key else {
            let mut stored = self.single.load(Ordering::Relaxed);
            loop {
                let (decision, next) = self.decide(stored, now);
                if !decision.allowed {
                    return decision;
                }
                match self.single.compare_exchange_weak(
                    stored,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return decision,
                    Err(actual) => stored = actual,
                }
            }
        };
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let cap = MAX_RATE_KEYS / SHARDS;
        let slot = if let Some(slot) = shard.full_at.get_mut(&hash) {
            slot
        } else {
            if shard.full_at.len() >= cap {
                // Full buckets are the same as none: forget them.
                shard.full_at.retain(|_, &mut full_at| full_at > now);
            }
            if shard.full_at.len() >= cap {
                &mut shard.overflow
            } else {
                shard.full_at.entry(hash).or_insert(0)
            }
        };
        let (decision, next) = self.decide(*slot, now);
        if decision.allowed {
            *slot = next;
        }
        decision
    }

    /// The answer for a bucket full at `full_at`, and its new full time if
    /// the request is let through.
    fn decide(&self, full_at: u64, now: u64) -> (Decision, u64) {
        let next = full_at.max(now) + self.interval;
        let ahead = next - now;
        let secs = |ns: u64| ns.div_ceil(NS);
        if ahead > self.tolerance {
            let wait = ahead - self.tolerance;
            let decision = Decision {
                allowed: false,
                limit: self.burst,
                remaining: 0,
                reset_s: secs(ahead - self.interval),
                retry_after_s: secs(wait).max(1),
            };
            return (decision, full_at);
        }
        let decision = Decision {
            allowed: true,
            limit: self.burst,
            remaining: ((self.tolerance - ahead) / self.interval) as u32,
            reset_s: secs(ahead),
            retry_after_s: 0,
        };
        (decision, next)
    }

    /// Keys tracked now (for tests and the bound).
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).full_at.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rps: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(&RateLimit {
            key: "route".into(),
            requests_per_second: rps,
            burst,
        })
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limit(10, 5);
        let t0 = 1_000 * NS;
        let allowed = (0..20).filter(|_| l.check(None, t0).allowed).count();
        assert_eq!(allowed, 5, "the burst, at once");
        let d = l.check(None, t0);
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.limit, d.retry_after_s), (0, 5, 1));
        // One token back every 100 ms.
        assert!(l.check(None, t0 + NS / 10).allowed);
        assert!(!l.check(None, t0 + NS / 10).allowed);
        // Over 10 s at 1 ms steps: the rate (plus nothing: the bucket was
        // empty).
        let mut n = 0;
        for ms in 1..=10_000u64 {
            if l.check(None, t0 + NS / 10 + ms * 1_000_000).allowed {
                n += 1;
            }
        }
        assert!((99..=101).contains(&n), "{n}");
    }

    #[test]
    fn keys_are_separate_and_bounded() {
        let l = limit(1, 2);
        let t0 = 5 * NS;
        assert!(l.check(Some(b"a"), t0).allowed);
        assert!(l.check(Some(b"a"), t0).allowed);
        assert!(!l.check(Some(b"a"), t0).allowed);
        assert!(l.check(Some(b"b"), t0).allowed);
        let d = l.check(Some(b"b"), t0);
        assert!(d.allowed && d.remaining == 0, "{d:?}");
        // Many keys: never more than the cap; idle ones swept.
        for i in 0..(MAX_RATE_KEYS as u64 + 5_000) {
            l.check(Some(&i.to_le_bytes()), t0);
        }
        assert!(l.keys() <= MAX_RATE_KEYS, "{}", l.keys());
        // Later, every bucket is full again: the next new keys sweep them.
        let later = t0 + 10 * NS;
        for i in 0..(SHARDS as u64 * 4) {
            assert!(l.check(Some(&(u64::MAX - i).to_le_bytes()), later).allowed);
        }
        assert!(l.keys() < MAX_RATE_KEYS / 2, "{}", l.keys());
    }
}
