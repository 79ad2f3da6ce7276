//! Traffic figures from the in-process counters, for the dashboard's live
//! view (`GET /admin/events`): [`Totals`] reads every route's and
//! backend's counters at one moment (relaxed atomic loads, no lock, never
//! on the request path); [`Totals::rates`] turns two readings into
//! requests per second, error ratio and p99 over the time between them.
//!
//! A reading is taken only while someone watches, so the request path
//! pays nothing for this: it only ever increments the counters that
//! `/metrics` exports anyway.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::counters::BUCKETS;
use crate::snapshot::Snapshot;

/// Histogram buckets: [`BUCKETS`] plus +Inf, not cumulative.
type Buckets = [u64; 17];

/// Every counter the rates are made of, read at one moment.
#[derive(Debug, Clone)]
pub struct Totals {
    at: Instant,
    pub config_version: u64,
    routes: Vec<RouteTotals>,
    backends: Vec<BackendTotals>,
    /// Requests that matched no route.
    unrouted: Counted,
}

/// Requests, failures and time-to-headers buckets of one thing.
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    requests: u64,
    failed: u64,
    buckets: Buckets,
}

impl Counted {
    fn since(&self, before: &Counted) -> Counted {
        Counted {
            // Saturating: a route renamed back starts its counters again.
            requests: self.requests.saturating_sub(before.requests),
            failed: self.failed.saturating_sub(before.failed),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(before.buckets[i])),
        }
    }

    fn add(&mut self, other: &Counted) {
        self.requests += other.requests;
        self.failed += other.failed;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }

    fn rate(&self, seconds: f64) -> Rate {
        Rate {
            rps: self.requests as f64 / seconds,
            error_ratio: if self.requests == 0 {
                0.0
            } else {
                self.failed as f64 / self.requests as f64
            },
            p99_ms: quantile(&self.buckets, 0.99).map(|s| s * 1e3),
        }
    }
}

#[derive(Debug, Clone)]
struct RouteTotals {
    name: String,
    upstream: String,
    counted: Counted,
}

#[derive(Debug, Clone)]
struct BackendTotals {
    upstream: String,
    id: u64,
    url: String,
    in_flight: u64,
    state: &'static str,
    counted: Counted,
}

/// Requests per second, the share of them that failed, and the 99th
/// percentile of time to response headers (none without requests).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    pub rps: f64,
    pub error_ratio: f64,
    pub p99_ms: Option<f64>,
}

/// The traffic between two [`Totals`].
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    pub config_version: u64,
    /// Seconds between the two readings.
    pub interval_s: f64,
    /// Every request the proxy answered (routed or not); errors are 5xx.
    pub total: Rate,
    pub routes: Vec<RouteRate>,
    pub backends: Vec<BackendRate>,
}

/// A route's requests: errors are the ones answered 5xx.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRate {
    pub name: String,
    pub upstream: String,
    #[serde(flatten)]
    pub rate: Rate,
}

/// A backend's attempts: errors are failed attempts (connect, timeout,
/// protocol, 5xx); p99 is the time to its response headers; `share` is
/// its part of its upstream's attempts (0 to 1).
#[derive(Debug, Clone, Serialize)]
pub struct BackendRate {
    pub upstream: String,
    pub id: u64,
    pub url: String,
    pub state: &'static str,
    pub in_flight: u64,
    pub share: f64,
    #[serde(flatten)]
    pub rate: Rate,
}

impl Totals {
    /// Read the counters of every route and backend of `snapshot`, and of
    /// the requests no route matched (`unrouted`, the data plane's own).
    pub fn read(snapshot: &Snapshot, unrouted: &crate::counters::RequestStats) -> Totals {
        let request_stats = |s: &crate::counters::RequestStats| {
            let (requests, failed) = s.totals();
            Counted {
                requests,
                failed,
                buckets: s.duration_buckets(),
            }
        };
        let routes = snapshot
            .routes()
            .map(|r| RouteTotals {
                name: r.name.to_string(),
                upstream: r
                    .upstream
                    .map_or(String::new(), |u| snapshot.upstream(u).name.to_string()),
                counted: request_stats(&r.stats),
            })
            .collect();
        let backends = snapshot
            .upstreams()
            .flat_map(|u| {
                u.backends.iter().map(|b| {
                    let st = b.state.stats();
                    BackendTotals {
                        upstream: u.name.to_string(),
                        id: b.id,
                        url: b.url.to_string(),
                        in_flight: b.state.in_flight(),
                        state: b.state.condition().as_str(),
                        counted: Counted {
                            requests: b.state.requests(),
                            failed: st.failed(),
                            buckets: st.duration.buckets(),
                        },
                    }
                })
            })
            .collect();
        Totals {
            at: Instant::now(),
            config_version: snapshot.version(),
            routes,
            backends,
            unrouted: request_stats(unrouted),
        }
    }

    /// The traffic from `before` to this reading. A route or backend that
    /// was not in `before` counts from zero.
    pub fn rates(&self, before: &Totals) -> Rates {
        let seconds = self
            .at
            .saturating_duration_since(before.at)
            .as_secs_f64()
            .max(1e-3);
        let old_routes: HashMap<(&str, &str), &Counted> = before
            .routes
            .iter()
            .map(|r| ((r.name.as_str(), r.upstream.as_str()), &r.counted))
            .collect();
        let mut total = self.unrouted.since(&before.unrouted);
        let routes = self
            .routes
            .iter()
            .map(|r| {
                let key = (r.name.as_str(), r.upstream.as_str());
                let d = r
                    .counted
                    .since(old_routes.get(&key).copied().unwrap_or(&Counted::default()));
                total.add(&d);
                RouteRate {
                    name: r.name.clone(),
                    upstream: r.upstream.clone(),
                    rate: d.rate(seconds),
                }
            })
            .collect();
        let old_backends: HashMap<(&str, u64), &Counted> = before
            .backends
            .iter()
            .map(|b| ((b.upstream.as_str(), b.id), &b.counted))
            .collect();
        let deltas: Vec<Counted> = self
            .backends
            .iter()
            .map(|b| {
                let old = old_backends.get(&(b.upstream.as_str(), b.id)).copied();
                b.counted.since(old.unwrap_or(&Counted::default()))
            })
            .collect();
        let mut per_upstream: HashMap<&str, u64> = HashMap::new();
        for (b, d) in self.backends.iter().zip(&deltas) {
            *per_upstream.entry(b.upstream.as_str()).or_default() += d.requests;
        }
        let backends = self
            .backends
            .iter()
            .zip(&deltas)
            .map(|(b, d)| {
                let all = per_upstream[b.upstream.as_str()];
                BackendRate {
                    upstream: b.upstream.clone(),
                    id: b.id,
                    url: b.url.clone(),
                    state: b.state,
                    in_flight: b.in_flight,
                    share: if all == 0 {
                        0.0
                    } else {
                        d.requests as f64 / all as f64
                    },
                    rate: d.rate(seconds),
                }
            })
            .collect();
        Rates {
            config_version: self.config_version,
            interval_s: seconds,
            total: total.rate(seconds),
            routes,
            backends,
        }
    }
}

/// One backend's state and how many transitions its history has
/// recorded: what a watcher compares between two looks to see a health
/// change (atomic loads only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub upstream: String,
    pub id: u64,
    pub state: &'static str,
    pub transitions: u64,
}

/// Resolves at the next transition any backend records (see
/// [`Condition`]): a watcher need not wait for its next look.
pub async fn transition_recorded() {
    crate::registry::history::RECORDED.notified().await;
}

/// The [`Condition`] of every backend of `snapshot`.
pub fn conditions(snapshot: &Snapshot) -> Vec<Condition> {
    snapshot
        .upstreams()
        .flat_map(|u| {
            u.backends.iter().map(|b| Condition {
                upstream: u.name.to_string(),
                id: b.id,
                state: b.state.condition().as_str(),
                transitions: b
                    .state
                    .stats()
                    .transitions
                    .iter()
                    .map(|t| t.load(std::sync::atomic::Ordering::Relaxed))
                    .sum(),
            })
        })
        .collect()
}

/// The `q` quantile (seconds) of a histogram's counts, interpolated
/// within its bucket as Prometheus's `histogram_quantile` does; beyond
/// the last bound it is that bound. None when the histogram is empty.
fn quantile(buckets: &Buckets, q: f64) -> Option<f64> {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if (below + n) as f64 >= rank && n > 0 {
            let Some(&upper) = BUCKETS.get(i) else {
                return Some(BUCKETS[BUCKETS.len() - 1]);
            };
            let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += n;
    }
    Some(BUCKETS[BUCKETS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, StatusCode};

    #[test]
    fn the_quantile_interpolates_within_its_bucket() {
        let mut b = [0u64; 17];
        assert_eq!(quantile(&b, 0.99), None);
        // 100 requests between 1 and 2.5 ms: p99 is 99% of the way up.
        b[4] = 100;
        let p99 = quantile(&b, 0.99).unwrap();
        assert!((p99 - (0.001 + 0.0015 * 0.99)).abs() < 1e-12, "{p99}");
        // 98 fast and 2 past the last bound: p99 is that bound.
        b = [0; 17];
        b[0] = 98;
        b[16] = 2;
        assert_eq!(quantile(&b, 0.99), Some(10.0));
        assert!(quantile(&b, 0.5).unwrap() <= 0.0001);
    }

    /// Two readings of a live snapshot a moment apart: the requests
    /// counted between them, not before, make the rates, and each
    /// backend's share is its part of its upstream's attempts.
    #[test]
    fn rates_count_what_happened_between_two_readings() {
        let snap = crate::snapshot::one_upstream(serde_json::json!({
            "backends": [
                {"id": 1, "url": "http://127.0.0.1:1", "weight": 3},
                {"id": 2, "url": "http://127.0.0.1:2", "weight": 1},
            ],
        }));
        let unrouted = crate::counters::RequestStats::default();
        let backends: Vec<_> = snap.upstreams().flat_map(|u| u.backends.iter()).collect();
        // Before the first reading: not in the rates.
        drop(backends[0].state.start());
        let first = Totals::read(&snap, &unrouted);
        for _ in 0..3 {
            drop(backends[0].state.start());
        }
        drop(backends[1].state.start());
        backends[1]
            .state
            .stats()
            .error(crate::counters::ErrorKind::Connect);
        for _ in 0..9 {
            unrouted.record(&Method::GET, StatusCode::NOT_FOUND, 300_000);
        }
        unrouted.record(&Method::GET, StatusCode::BAD_GATEWAY, 2_000_000);
        let mut second = Totals::read(&snap, &unrouted);
        second.at = first.at + std::time::Duration::from_secs(2);
        let rates = second.rates(&first);
        assert_eq!(rates.interval_s, 2.0);
        assert_eq!(rates.total.rps, 5.0);
        assert!((rates.total.error_ratio - 0.1).abs() < 1e-12);
        // The 10th of 10 requests took 1–2.5 ms.
        let p99 = rates.total.p99_ms.unwrap();
        assert!((1.0..=2.5).contains(&p99), "{p99}");
        let by_id: HashMap<u64, &BackendRate> = rates.backends.iter().map(|b| (b.id, b)).collect();
        assert_eq!((by_id[&1].rate.rps, by_id[&1].share), (1.5, 0.75));
        assert_eq!((by_id[&2].rate.rps, by_id[&2].share), (0.5, 0.25));
        assert_eq!(by_id[&2].rate.error_ratio, 1.0);
        assert_eq!(by_id[&1].rate.error_ratio, 0.0);
        assert_eq!(by_id[&1].state, "unknown");
    }
}
