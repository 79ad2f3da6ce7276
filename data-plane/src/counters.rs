//! The counters behind Switchyard's metrics, cheap enough for every
//! request: plain atomics (a histogram is an array of them), held by live
//! state in the registry so they survive config changes, and reached
//! through the snapshot without a label lookup or hashing. Nothing here
//! knows Prometheus's families or labels; `crate::exporter` turns these
//! into metric families when `/metrics` is scraped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use http::{Method, StatusCode};
use prometheus::proto::{self};

/// Histogram bucket upper bounds in seconds: 100 µs to 10 s.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const BUCKETS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A lock-free duration histogram with [`BUCKETS`].
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    /// Non-cumulative counts; the last slot is +Inf.
    buckets: [AtomicU64; 17],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl AtomicHistogram {
    pub fn observe_ns(&self, ns: u64) {
        let i = BUCKETS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BUCKETS_NS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Its counts now, per bucket (non-cumulative; the last is +Inf).
    pub fn buckets(&self) -> [u64; 17] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    pub(crate) fn to_proto(&self) -> proto::Histogram {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len());
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        h.set_bucket(buckets);
        // Count from the buckets so count and +Inf agree in one scrape.
        h.set_sample_count(cumulative);
        h.set_sample_sum(self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        h
    }
}

/// Method label values; anything else is `OTHER`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];

fn method_slot(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Status codes with a counter slot of their own; others are counted in a
/// small map (a rare path).
const STATUSES: [u16; 32] = [
    101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409,
    410, 413, 414, 415, 422, 429, 431, 500, 501, 502, 503, 504, 505,
];

fn status_slot(s: u16) -> Option<usize> {
    STATUSES.binary_search(&s).ok()
}

/// Requests of one route (or of no route) by method and status, plus the
/// time to response headers.
#[derive(Debug, Default)]
pub struct RequestStats {
    counts: OnceLock<Box<[[AtomicU64; STATUSES.len()]; METHODS.len()]>>,
    rare: Mutex<HashMap<(usize, u16), u64>>,
    pub(crate) duration: OnceLock<Box<AtomicHistogram>>,
    /// Requests denied by each policy (by [`Denied`]).
    denials: [AtomicU64; 5],
}

impl RequestStats {
    /// Count one request. Lock-free except for unusual status codes.
    pub fn record(&self, method: &Method, status: StatusCode, elapsed_ns: u64) {
        let m = method_slot(method);
        match status_slot(status.as_u16()) {
            Some(s) => {
                let counts = self.counts.get_or_init(Box::default);
                counts[m][s].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                *self
                    .rare
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry((m, status.as_u16()))
                    .or_default() += 1;
            }
        }
        self.duration
            .get_or_init(Box::default)
            .observe_ns(elapsed_ns);
    }

    /// Count a request `by` denied.
    pub fn denied(&self, by: Denied) {
        self.denials[by as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests `by` denied so far.
    pub fn denials(&self, by: Denied) -> u64 {
        self.denials[by as usize].load(Ordering::Relaxed)
    }

    /// Requests counted so far, and how many of them were answered 5xx.
    pub fn totals(&self) -> (u64, u64) {
        self.counts()
            .into_iter()
            .fold((0, 0), |(all, failed), (_, status, n)| {
                (all + n, failed + if status >= 500 { n } else { 0 })
            })
    }

    /// The time-to-headers histogram's buckets ([`AtomicHistogram::buckets`]).
    pub fn duration_buckets(&self) -> [u64; 17] {
        self.duration.get().map_or([0; 17], |h| h.buckets())
    }

    /// Every non-zero (method, status, count).
    pub(crate) fn counts(&self) -> Vec<(&'static str, u16, u64)> {
        let mut out = Vec::new();
        if let Some(counts) = self.counts.get() {
            for (m, row) in counts.iter().enumerate() {
                for (s, c) in row.iter().enumerate() {
                    let n = c.load(Ordering::Relaxed);
                    if n > 0 {
                        out.push((METHODS[m], STATUSES[s], n));
                    }
                }
            }
        }
        for ((m, status), n) in self.rare.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push((METHODS[*m], *status, *n));
        }
        out
    }

    /// How many requests with this method and status were counted.
    pub fn count(&self, method: &Method, status: StatusCode) -> u64 {
        let m = METHODS[method_slot(method)];
        self.counts()
            .into_iter()
            .filter(|(mm, s, _)| *mm == m && *s == status.as_u16())
            .map(|(_, _, n)| n)
            .sum()
    }
}

/// Why a request to a backend failed, as the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect = 0,
    Timeout = 1,
    Protocol = 2,
    Status5xx = 3,
}

pub const ERROR_KINDS: [&str; 4] = ["connect", "timeout", "protocol", "status_5xx"];

/// Which of a route's policies denied a request, as the `policy` label of
/// `switchyard_policy_denials_total` and the access log's `policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    IpAllow = 0,
    IpDeny = 1,
    Cors = 2,
    Auth = 3,
    RateLimit = 4,
}

impl Denied {
    pub fn as_str(self) -> &'static str {
        ["ip_allow", "ip_deny", "cors", "auth", "rate_limit"][self as usize]
    }
}

/// The `to` label of `switchyard_backend_state_changes_total`, by slot of
/// [`BackendStats::flips`].
pub const FLIPS: [&str; 4] = ["healthy", "unhealthy", "ejected", "failing"];

/// Per-backend counters (held by the backend's live state).
#[derive(Debug, Default)]
pub struct BackendStats {
    pub errors: [AtomicU64; 4],
    pub duration: AtomicHistogram,
    /// Health probes passed / failed.
    pub probes: [AtomicU64; 2],
    /// Flips to healthy, unhealthy, ejected, failing (as [`FLIPS`]).
    pub flips: [AtomicU64; 4],
    /// Transitions of its folded state recorded in its history, by the
    /// state moved to (slots in the order of `registry::Condition`).
    pub transitions: [AtomicU64; 5],
}

impl BackendStats {
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed attempts so far, of every kind.
    pub fn failed(&self) -> u64 {
        self.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }
}

/// Process-wide counters of the data plane.
#[derive(Debug, Default)]
pub struct PlaneStats {
    pub open_connections: AtomicI64,
    /// Requests that matched no route (404), or were refused before routing.
    pub unrouted: RequestStats,
    /// Access-log lines not written.
    pub access_log_dropped: std::sync::Arc<crate::access_log::Dropped>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = AtomicHistogram::default();
        h.observe_ns(50_000); // 50 µs → first bucket
        h.observe_ns(3_000_000); // 3 ms → ≤ 5 ms
        h.observe_ns(20_000_000_000); // 20 s → +Inf only
        let p = h.to_proto();
        assert_eq!(p.get_sample_count(), 3);
        let counts: Vec<u64> = p
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[4], 1); // ≤ 2.5 ms
        assert_eq!(counts[5], 2); // ≤ 5 ms
        assert_eq!(counts[15], 2); // ≤ 10 s
        assert!((p.get_sample_sum() - 20.00305).abs() < 1e-9);
    }

    #[test]
    fn request_counts_by_method_and_status() {
        let s = RequestStats::default();
        for _ in 0..3 {
            s.record(&Method::GET, StatusCode::OK, 1);
        }
        s.record(&Method::POST, StatusCode::IM_A_TEAPOT, 1);
        s.record(
            &Method::from_bytes(b"PURGE").unwrap(),
            StatusCode::NOT_FOUND,
            1,
        );
        assert_eq!(s.count(&Method::GET, StatusCode::OK), 3);
        assert_eq!(s.count(&Method::POST, StatusCode::IM_A_TEAPOT), 1);
        assert_eq!(
            s.count(
                &Method::from_bytes(b"MKCOL").unwrap(),
                StatusCode::NOT_FOUND
            ),
            1,
            "other methods share OTHER"
        );
        assert_eq!(s.duration.get().unwrap().count(), 5);
    }

    #[test]
    fn status_table_is_sorted() {
        assert!(STATUSES.windows(2).all(|w| w[0] < w[1]));
    }
}
