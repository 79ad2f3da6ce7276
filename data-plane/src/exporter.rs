//! The Prometheus exporter: [`LiveCollector`] turns the snapshot in
//! force and the live state's counters (`crate::counters`) into metric
//! families when `/metrics` is scraped. Nothing on the request path
//! touches the prometheus crate. Series of a deleted route or backend are
//! simply no longer exported, and a renamed route (or a route moved to
//! another upstream) starts fresh series. Labels come from config names, a
//! fixed set of methods and status codes — never request data.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::counters::{AtomicHistogram, ERROR_KINDS, FLIPS, RequestStats};
use crate::plane::DataPlane;
use crate::registry::Condition;

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
const FAMILIES: [(&str, &str); 17] = [
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
    (
        "switchyard_policy_denials_total",
        "Requests a route's policy denied, by route and policy (ip_allow, ip_deny, cors, auth, rate_limit).",
    ),
    (
        "switchyard_backend_transitions_total",
        "Backend state transitions (as in its health history) by the state moved to: healthy, unknown, unhealthy, ejected, failing.",
    ),
    (
        "switchyard_access_log_dropped_total",
        "Access-log lines not written, by reason: queue_full (the sink did not keep up; traffic never waits for it) or write_failed.",
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
        let mut denials = Vec::new();
        for r in snap.routes() {
            let upstream = r.upstream.map_or("", |u| &*snap.upstream(u).name);
            push_route(&r.name, upstream, &r.stats);
            for &by in r.policies.iter().flat_map(|p| &p.can_deny) {
                let labels = vec![label("route", &r.name), label("policy", by.as_str())];
                denials.push(counter(labels, r.stats.denials(by) as f64));
            }
        }

        let mut backend_durations = Vec::new();
        let mut errors = Vec::new();
        let mut retries = Vec::new();
        let mut healthy = Vec::new();
        let mut in_flight = Vec::new();
        let mut probes = Vec::new();
        let mut flips = Vec::new();
        let mut transitions = Vec::new();
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
                // An ejection that ran out since the last look is counted.
                b.state.settle_transitions();
                for to in Condition::ALL {
                    let mut l = ub();
                    l.push(label("to", to.as_str()));
                    let n = st.transitions[to as usize].load(Ordering::Relaxed);
                    transitions.push(counter(l, n as f64));
                }
            }
        }
        let open = self.plane.stats().open_connections.load(Ordering::Relaxed) as f64;
        let dropped = &self.plane.stats().access_log_dropped;
        let access_log_dropped = [
            ("queue_full", &dropped.queue_full),
            ("write_failed", &dropped.write_failed),
        ]
        .into_iter()
        .map(|(reason, n)| {
            counter(
                vec![label("reason", reason)],
                n.load(Ordering::Relaxed) as f64,
            )
        })
        .collect();
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
                vec![counter(vec![], crate::recover::panics() as f64)],
            ),
            (MetricType::COUNTER, denials),
            (MetricType::COUNTER, transitions),
            (MetricType::COUNTER, access_log_dropped),
        ];
        FAMILIES
            .iter()
            .zip(values)
            .filter(|(_, (_, metrics))| !metrics.is_empty())
            .map(|((name, help), (kind, metrics))| family(name, help, kind, metrics))
            .collect()
    }
}
