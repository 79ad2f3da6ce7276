//! Prometheus metrics that cost almost nothing per request.
//!
//! Nothing on the request path touches the prometheus crate: per-route and
//! per-backend counters and histograms are plain atomics held by live state
//! in the [`Registry`](crate::registry::Registry) (so they survive config
//! changes), reached through the snapshot without any label lookup or
//! hashing. [`LiveCollector`] turns the snapshot in force and that state
//! into metric families when `/metrics` is scraped: series of a deleted
//! route or backend are simply no longer exported, and a renamed route (or
//! a route moved to another upstream) starts fresh series. Labels come from
//! config names, a fixed set of methods and status codes — never request
//! data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http::{Method, StatusCode};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::DataPlane;

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

    fn to_proto(&self) -> proto::Histogram {
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
    duration: OnceLock<Box<AtomicHistogram>>,
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

    /// Every non-zero (method, status, count).
    fn counts(&self) -> Vec<(&'static str, u16, u64)> {
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
}

impl BackendStats {
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Process-wide counters of the data plane.
#[derive(Debug, Default)]
pub struct PlaneStats {
    pub open_connections: AtomicI64,
    /// Requests that matched no route (404), or were refused before routing.
    pub unrouted: RequestStats,
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut l = proto::LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(labels: Vec<proto::LabelPair>, value: f64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_counter(c);
    m
}

fn gauge(labels: Vec<proto::LabelPair>, value: f64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_gauge(g);
    m
}

fn histogram(labels: Vec<proto::LabelPair>, h: &AtomicHistogram) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_histogram(h.to_proto());
    m
}

/// Exports the live state of a data plane at scrape time.
#[derive(Debug)]
pub struct LiveCollector {
    plane: Arc<DataPlane>,
    descs: Vec<Desc>,
}

/// (name, help) of every family [`LiveCollector`] exports.
const FAMILIES: [(&str, &str); 14] = [
    (
        "switchyard_requests_total",
        "Proxied requests by route, upstream, method and status.",
    ),
    (
        "switchyard_request_duration_seconds",
        "Time from request to response headers, by route.",
    ),
    (
        "switchyard_upstream_request_duration_seconds",
        "Time from sending upstream to response headers, by backend.",
    ),
    (
        "switchyard_upstream_errors_total",
        "Failed upstream attempts by backend and kind.",
    ),
    (
        "switchyard_retries_total",
        "Attempts retried on another backend, by upstream.",
    ),
    (
        "switchyard_backend_healthy",
        "1 if nothing is known against the backend (healthy or unknown), 0 if unhealthy, ejected or failing.",
    ),
    (
        "switchyard_backend_in_flight",
        "Requests in flight to the backend.",
    ),
    (
        "switchyard_health_checks_total",
        "Active health probes by backend and result.",
    ),
    (
        "switchyard_backend_state_changes_total",
        "Backend state flips by the state flipped to.",
    ),
    (
        "switchyard_config_version",
        "Config version of the snapshot in force.",
    ),
    (
        "switchyard_config_routes",
        "Routes in the snapshot in force.",
    ),
    (
        "switchyard_config_upstreams",
        "Upstreams in the snapshot in force.",
    ),
    (
        "switchyard_open_connections",
        "Client connections open on the proxy listener.",
    ),
    (
        "switchyard_panics_total",
        "Panics caught (a request answered 500 or aborted) or seen elsewhere in the process.",
    ),
];

impl LiveCollector {
    pub fn new(plane: Arc<DataPlane>) -> Self {
        let descs = FAMILIES
            .iter()
            .map(|(name, help)| {
                Desc::new(name.to_string(), help.to_string(), vec![], HashMap::new())
                    .expect("metric names are valid")
            })
            .collect();
        LiveCollector { plane, descs }
    }
}

impl Collector for LiveCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snap = self.plane.snapshot();
        let mut requests = Vec::new();
        let mut durations = Vec::new();
        let mut push_route = |route: &str, upstream: &str, stats: &RequestStats| {
            for (method, status, n) in stats.counts() {
                let labels = vec![
                    label("route", route),
                    label("upstream", upstream),
                    label("method", method),
                    label("status", &status.to_string()),
                ];
                requests.push(counter(labels, n as f64));
            }
            if let Some(h) = stats.duration.get() {
                durations.push(histogram(
                    vec![label("route", route), label("upstream", upstream)],
                    h,
                ));
            }
        };
        push_route("", "", &self.plane.stats().unrouted);
        for r in snap.routes() {
            let upstream = &snap.upstream(r.upstream).name;
            push_route(&r.name, upstream, &r.stats);
        }

        let mut backend_durations = Vec::new();
        let mut errors = Vec::new();
        let mut retries = Vec::new();
        let mut healthy = Vec::new();
        let mut in_flight = Vec::new();
        let mut probes = Vec::new();
        let mut flips = Vec::new();
        for u in snap.upstreams() {
            retries.push(counter(
                vec![label("upstream", &u.name)],
                u.stats.retries() as f64,
            ));
            for b in u.backends.iter() {
                let ub = || vec![label("upstream", &u.name), label("backend", &b.url)];
                let st = b.state.stats();
                backend_durations.push(histogram(ub(), &st.duration));
                for (i, kind) in ERROR_KINDS.iter().enumerate() {
                    let mut l = ub();
                    l.push(label("kind", kind));
                    errors.push(counter(l, st.errors[i].load(Ordering::Relaxed) as f64));
                }
                let up = b.state.condition().is_up();
                healthy.push(gauge(ub(), if up { 1.0 } else { 0.0 }));
                in_flight.push(gauge(ub(), b.state.in_flight() as f64));
                for (i, result) in ["pass", "fail"].iter().enumerate() {
                    let mut l = ub();
                    l.push(label("result", result));
                    probes.push(counter(l, st.probes[i].load(Ordering::Relaxed) as f64));
                }
                for (i, to) in FLIPS.iter().enumerate() {
                    let mut l = ub();
                    l.push(label("to", to));
                    flips.push(counter(l, st.flips[i].load(Ordering::Relaxed) as f64));
                }
            }
        }
        let open = self.plane.stats().open_connections.load(Ordering::Relaxed) as f64;
        let values = [
            (MetricType::COUNTER, requests),
            (MetricType::HISTOGRAM, durations),
            (MetricType::HISTOGRAM, backend_durations),
            (MetricType::COUNTER, errors),
            (MetricType::COUNTER, retries),
            (MetricType::GAUGE, healthy),
            (MetricType::GAUGE, in_flight),
            (MetricType::COUNTER, probes),
            (MetricType::COUNTER, flips),
            (
                MetricType::GAUGE,
                vec![gauge(vec![], snap.version() as f64)],
            ),
            (
                MetricType::GAUGE,
                vec![gauge(vec![], snap.route_count() as f64)],
            ),
            (
                MetricType::GAUGE,
                vec![gauge(vec![], snap.upstream_count() as f64)],
            ),
            (MetricType::GAUGE, vec![gauge(vec![], open)]),
            (
                MetricType::COUNTER,
                vec![counter(vec![], crate::proxy::recover::panics() as f64)],
            ),
        ];
        FAMILIES
            .iter()
            .zip(values)
            .filter(|(_, (_, metrics))| !metrics.is_empty())
            .map(|((name, help), (kind, metrics))| family(name, help, kind, metrics))
            .collect()
    }
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
