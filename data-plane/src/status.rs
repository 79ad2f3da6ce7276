//! What is live right now, as plain values: the config version in force,
//! and each upstream's backends with their health, ejection and load.
//!
//! This is the data plane's read-only status contract (the admin API serves
//! it as `/admin/status` and `/admin/upstreams/{name}/health`). It is read
//! from one snapshot and the live state its backends hold, so a caller
//! needs neither the compiled snapshot's types nor the registry's; the
//! reads are relaxed atomics (and a short lock per backend for its probe
//! record and transition history), never on the request path.

pub mod explain;
pub mod traffic;

use serde::Serialize;

use crate::registry::{Health, Transition};
use crate::snapshot::{CompiledUpstream, Snapshot};

/// The whole live status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub config_version: u64,
    pub routes: usize,
    /// By name.
    pub upstreams: Vec<UpstreamStatus>,
}

/// One live upstream and its backends.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub strategy: &'static str,
    pub health_checked: bool,
    pub fail_open: bool,
    pub backends: Vec<BackendStatus>,
}

/// One backend's live state.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub id: u64,
    pub url: String,
    pub weight: u32,
    /// `healthy`, `unhealthy`, `unknown` (not probed), `ejected` (passive
    /// detection keeps it out for now) or `failing` (its passive failure
    /// streak reached the threshold, but it cannot be ejected).
    pub state: &'static str,
    /// Active health: `healthy`, `unhealthy` or `unknown`.
    pub health: Health,
    pub ejected: bool,
    pub since_unix_ms: u64,
    pub last_probe_unix_ms: Option<u64>,
    pub last_probe_result: Option<String>,
    pub last_probe_latency_ms: Option<f64>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub ejections: u64,
    pub in_flight: u64,
    pub requests: u64,
    pub ewma_ms: f64,
    /// The share of its upstream's requests it can expect now (0 to 1),
    /// from the weights and who is up ([`expected_shares`]).
    pub expected_share: f64,
    /// Its last [`crate::registry::HISTORY_LEN`] state transitions, oldest
    /// first. Only in the one upstream's view
    /// ([`UpstreamStatus::named`]), not in the whole [`Status`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transitions: Option<Vec<Transition>>,
}

impl Status {
    /// The status of `snapshot` (upstreams sorted by name).
    pub fn of(snapshot: &Snapshot) -> Status {
        let mut upstreams: Vec<UpstreamStatus> = snapshot
            .upstreams()
            .map(|u| UpstreamStatus::of(u, false))
            .collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        Status {
            config_version: snapshot.version(),
            routes: snapshot.route_count(),
            upstreams,
        }
    }
}

impl UpstreamStatus {
    /// The status of upstream `name` in `snapshot`, if it is there, with
    /// each backend's transition history.
    pub fn named(snapshot: &Snapshot, name: &str) -> Option<UpstreamStatus> {
        snapshot
            .upstream_named(name)
            .map(|u| UpstreamStatus::of(u, true))
    }

    fn of(u: &CompiledUpstream, history: bool) -> UpstreamStatus {
        let (_, shares) = upstream_shares(u);
        UpstreamStatus {
            name: u.name.to_string(),
            strategy: u.strategy.as_str(),
            health_checked: u.health_check.is_some(),
            fail_open: u.fail_open,
            backends: u
                .backends
                .iter()
                .zip(shares)
                .map(|(b, expected_share)| {
                    // First, so that an ejection that ran out is recorded
                    // before the record is read.
                    let transitions = history.then(|| b.state.transitions());
                    let probes = b.state.probe_record();
                    BackendStatus {
                        id: b.id,
                        url: b.url.to_string(),
                        weight: b.weight,
                        state: b.state.condition().as_str(),
                        health: b.state.health(),
                        ejected: b.state.is_ejected(),
                        since_unix_ms: probes.since_unix_ms,
                        last_probe_unix_ms: probes.last_probe_unix_ms,
                        last_probe_result: probes.last_result,
                        last_probe_latency_ms: probes.last_latency_ms,
                        consecutive_successes: probes.consecutive_successes,
                        consecutive_failures: probes.consecutive_failures,
                        ejections: b.state.ejections(),
                        in_flight: b.state.in_flight(),
                        requests: b.state.requests(),
                        ewma_ms: b.state.ewma_ns() as f64 / 1e6,
                        expected_share,
                        transitions,
                    }
                })
                .collect(),
        }
    }
}

/// [`expected_shares`] of a live upstream: its strategy, `fail_open`, and
/// each backend's weight and whether it is up now.
pub(crate) fn upstream_shares(u: &CompiledUpstream) -> (Vec<bool>, Vec<f64>) {
    let states: Vec<(u32, bool)> = u
        .backends
        .iter()
        .map(|b| (b.weight, b.state.is_available()))
        .collect();
    let equal = u.strategy == crate::config::Strategy::RoundRobin;
    expected_shares(equal, u.fail_open, &states)
}

/// The share of requests each backend can expect (0 to 1), from its weight
/// and whether it is up: the backends that take traffic — weight above 0
/// and up — share it by weight (`equal`: `round_robin`, which goes round
/// them equally); when none does, a `fail_open` upstream spreads over every
/// backend with a weight, another sends nowhere. Also which take traffic.
pub fn expected_shares(
    equal: bool,
    fail_open: bool,
    backends: &[(u32, bool)],
) -> (Vec<bool>, Vec<f64>) {
    let mut takers: Vec<bool> = backends.iter().map(|&(w, up)| w > 0 && up).collect();
    if !takers.contains(&true) && fail_open {
        takers = backends.iter().map(|&(w, _)| w > 0).collect();
    }
    let part = |w: u32| if equal { 1.0 } else { f64::from(w) };
    let total: f64 = backends
        .iter()
        .zip(&takers)
        .filter(|(_, t)| **t)
        .map(|(&(w, _), _)| part(w))
        .sum();
    let shares = backends
        .iter()
        .zip(&takers)
        .map(|(&(w, _), t)| {
            if *t && total > 0.0 {
                part(w) / total
            } else {
                0.0
            }
        })
        .collect();
    (takers, shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_upstream_is_unknown_and_idle() {
        let snap = crate::snapshot::one_upstream(serde_json::json!({
            "backends": [{"id": 7, "url": "http://127.0.0.1:1", "weight": 2}],
            "fail_open": true,
        }));
        let status = Status::of(&snap);
        assert_eq!((status.config_version, status.routes), (1, 0));
        let u = UpstreamStatus::named(&snap, "u").unwrap();
        assert_eq!(
            (u.strategy, u.health_checked, u.fail_open),
            ("round_robin", false, true)
        );
        let b = &u.backends[0];
        assert_eq!(
            (b.id, b.url.as_str(), b.weight),
            (7, "http://127.0.0.1:1", 2)
        );
        assert_eq!(
            (b.state, b.health, b.in_flight),
            ("unknown", Health::Unknown, 0)
        );
        assert!(UpstreamStatus::named(&snap, "v").is_none());
    }

    /// 3:1:1 with the third out is 75/25; round robin splits equally; with
    /// everything out only a fail-open upstream sends anywhere.
    #[test]
    fn expected_shares_follow_the_weights_of_the_backends_that_are_up() {
        let (takers, shares) = expected_shares(false, false, &[(3, true), (1, true), (1, false)]);
        assert_eq!(takers, [true, true, false]);
        assert_eq!(shares, [0.75, 0.25, 0.0]);
        assert_eq!(
            expected_shares(true, false, &[(3, true), (1, true)]).1,
            [0.5, 0.5]
        );
        assert_eq!(
            expected_shares(false, false, &[(3, false), (0, true)]).1,
            [0.0, 0.0]
        );
        assert_eq!(
            expected_shares(false, true, &[(3, false), (1, false), (0, false)]).1,
            [0.75, 0.25, 0.0]
        );
    }
}
