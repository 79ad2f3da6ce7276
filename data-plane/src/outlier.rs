//! Passive outlier detection: what the result of a request means for its
//! backend.
//!
//! A backend whose streak of failures on real traffic (connect errors,
//! timeouts, 5xx) reaches `outlier_detection.consecutive_failures` is
//! ejected for a while — unless detection is off, or that would take more
//! than `max_ejection_percent` of the upstream out. Then it is `failing`
//! instead: it keeps taking traffic (passive signals alone never take more
//! than that share out, whatever `fail_open` says: it governs only what is
//! out), but the status views and `switchyard_backend_healthy` say so, so
//! a backend that refuses every connection is not "unknown" and "1"
//! forever. A success or a passing probe ends `failing`.
//!
//! Every change is logged once (WARN on the way down, INFO on the way
//! back, with the reason); a backend that keeps failing gets at most one
//! line per [`FAILING_LOG_EVERY`] with the count since, not one per
//! request. A success costs one atomic load when there was no streak.

use std::time::Duration;

use crate::config::MAX_EJECTION_MS;
use crate::registry::{FAILING_LOG_EVERY, Failing};
use crate::snapshot::CompiledUpstream;

impl CompiledUpstream {
    /// Record that backend `i` answered well.
    pub fn report_success(&self, i: usize) {
        let b = &self.backends[i];
        if b.state.record_success() {
            tracing::info!(
                upstream = %self.name, backend = %b.url,
                to = b.state.condition().as_str(), reason = "a request succeeded",
                "backend recovered"
            );
        }
    }

    /// Record a failure of backend `i` (connect error, timeout or 5xx):
    /// when the streak reaches the threshold, eject it, or, when it cannot
    /// be ejected, mark it `failing`.
    pub fn report_failure(&self, i: usize) {
        let od = &self.outlier_detection;
        let b = &self.backends[i];
        let streak = b.state.record_failure();
        if streak < od.consecutive_failures || b.state.is_ejected() {
            return;
        }
        let reason = if !od.enabled {
            "outlier detection is off"
        } else if self.may_eject_one_more() {
            let period = b.state.eject(
                Duration::from_millis(od.base_ejection_ms),
                Duration::from_millis(MAX_EJECTION_MS),
            );
            tracing::warn!(
                upstream = %self.name, backend = %b.url, streak, to = "ejected",
                ejected_for_ms = period.as_millis() as u64,
                "backend ejected after consecutive failures"
            );
            return;
        } else {
            "max_ejection_percent reached"
        };
        match b.state.mark_failing() {
            Failing::Started => tracing::warn!(
                upstream = %self.name, backend = %b.url, streak, to = "failing", reason,
                "backend failing: consecutive failures, not ejected"
            ),
            Failing::Repeat { failures } => tracing::warn!(
                upstream = %self.name, backend = %b.url, failures,
                over_s = FAILING_LOG_EVERY.as_secs(), reason,
                "backend still failing"
            ),
            Failing::Quiet => {}
        }
    }

    /// Whether one more ejection keeps within `max_ejection_percent`.
    fn may_eject_one_more(&self) -> bool {
        let ejected = self
            .backends
            .iter()
            .filter(|x| x.state.is_ejected())
            .count();
        let max = self.outlier_detection.max_ejection_percent as usize;
        (ejected + 1) * 100 <= max * self.backends.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::registry::Condition;
    use crate::snapshot::one_upstream;

    fn backends(n: usize) -> serde_json::Value {
        (0..n)
            .map(|i| json!({"id": i + 1, "url": format!("http://127.0.0.1:{}", 9001 + i), "weight": 1}))
            .collect()
    }

    #[test]
    fn a_streak_that_cannot_eject_makes_it_failing_until_a_success() {
        // One backend of one: ejecting it passes the default 50%.
        let snap = one_upstream(json!({"backends": backends(1)}));
        let u = snap.upstream_named("u").unwrap();
        let state = &u.backends[0].state;
        for _ in 0..4 {
            u.report_failure(0);
        }
        assert_eq!(state.condition(), Condition::Unknown, "below the threshold");
        for _ in 0..20 {
            u.report_failure(0);
        }
        assert_eq!(state.condition(), Condition::Failing);
        assert_eq!(state.ejections(), 0);
        assert_eq!(
            state.stats().flips[3].load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            u.pick(&Default::default(), &[]),
            Some(0),
            "it still takes traffic"
        );
        u.report_success(0);
        assert_eq!(state.condition(), Condition::Unknown);
    }

    #[test]
    fn ejection_up_to_the_cap_then_failing() {
        let snap = one_upstream(json!({"backends": backends(2)}));
        let u = snap.upstream_named("u").unwrap();
        for i in [0, 1] {
            for _ in 0..5 {
                u.report_failure(i);
            }
        }
        assert_eq!(u.backends[0].state.condition(), Condition::Ejected);
        assert_eq!(u.backends[1].state.condition(), Condition::Failing);
    }

    #[test]
    fn with_detection_off_a_streak_is_still_shown() {
        let snap =
            one_upstream(json!({"outlier_detection": {"enabled": false}, "backends": backends(2)}));
        let u = snap.upstream_named("u").unwrap();
        for _ in 0..5 {
            u.report_failure(0);
        }
        assert_eq!(u.backends[0].state.condition(), Condition::Failing);
        assert_eq!(u.backends[0].state.ejections(), 0);
    }
}
