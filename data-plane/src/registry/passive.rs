//! The passive side of a backend's live state: the failure streak seen on
//! real traffic, ejection, and `failing` (a streak at the threshold that
//! could not eject it); and the [`Condition`] that folds every signal into
//! the one state the status views and metrics show. What a request's
//! result means for its upstream is decided in `crate::outlier`; this is
//! the state it leaves.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{BackendState, Health, availability_changed};
use crate::clock::now_ns;

/// A backend's state with every signal folded in: the `state` of the
/// status views, and what `switchyard_backend_healthy` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Passing active checks.
    Healthy,
    /// Not probed (or no health check), and nothing seen against it.
    Unknown,
    /// Failing active checks: takes no traffic (unless failing open).
    Unhealthy,
    /// Kept out for now by passive outlier detection.
    Ejected,
    /// Its passive failure streak reached `consecutive_failures`, but it
    /// is not ejected (detection is off, or `max_ejection_percent` would be
    /// passed): it still takes traffic.
    Failing,
}

impl Condition {
    /// Every condition, in declaration order (the slots of
    /// `BackendStats::transitions`).
    pub const ALL: [Condition; 5] = [
        Condition::Healthy,
        Condition::Unknown,
        Condition::Unhealthy,
        Condition::Ejected,
        Condition::Failing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Healthy => "healthy",
            Condition::Unknown => "unknown",
            Condition::Unhealthy => "unhealthy",
            Condition::Ejected => "ejected",
            Condition::Failing => "failing",
        }
    }

    /// Healthy or unknown: nothing known against it.
    pub fn is_up(self) -> bool {
        matches!(self, Condition::Healthy | Condition::Unknown)
    }
}

/// What one more failure of a backend that cannot be ejected means for
/// the log (see [`BackendState::mark_failing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failing {
    /// It has just become `failing`.
    Started,
    /// Still failing, and the last line about it is [`FAILING_LOG_EVERY`]
    /// old: `failures` were seen since.
    Repeat { failures: u64 },
    /// Still failing; a line was written recently.
    Quiet,
}

/// At most one log line per backend this often while it stays `failing`.
pub const FAILING_LOG_EVERY: Duration = Duration::from_secs(10);

impl BackendState {
    /// Its state, every signal folded in (for status views and metrics).
    pub fn condition(&self) -> Condition {
        match self.health() {
            Health::Unhealthy => Condition::Unhealthy,
            _ if self.is_ejected() => Condition::Ejected,
            _ if self.failing.load(Ordering::Relaxed) => Condition::Failing,
            Health::Healthy => Condition::Healthy,
            Health::Unknown => Condition::Unknown,
        }
    }

    /// A request failed (connect error, timeout or 5xx). Returns the new
    /// length of the failure streak.
    pub fn record_failure(&self) -> u32 {
        self.passive_failures.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A request got a good answer: clears the passive failure streak.
    /// Returns whether that ended `failing`. One atomic load when there was
    /// no streak.
    pub fn record_success(&self) -> bool {
        let mut recovered = false;
        if self.passive_failures.load(Ordering::SeqCst) != 0 {
            self.passive_failures.store(0, Ordering::SeqCst);
            recovered = self.end_failing();
        }
        if self.ejection_streak.load(Ordering::Relaxed) != 0 && !self.is_ejected() {
            self.ejection_streak.store(0, Ordering::Relaxed);
        }
        recovered
    }

    /// The failure streak reached the threshold but it stays in: it is
    /// (or stays) `failing`. Says what to log: the change once, then at
    /// most a line per [`FAILING_LOG_EVERY`] with the failures since.
    pub fn mark_failing(&self) -> Failing {
        self.mark_failing_at(now_ns())
    }

    /// [`BackendState::mark_failing`] at `now` (on [`now_ns`]'s clock).
    fn mark_failing_at(&self, now: u64) -> Failing {
        if !self.failing.load(Ordering::SeqCst) {
            // The lock only when it may start failing: a transition.
            let mut live = self.live();
            // Before the change: an ejection that ran out ended in the
            // state it left, not in `failing`.
            self.settle(&mut live);
            if !self.failing.swap(true, Ordering::SeqCst) {
                // A success between the failure and here cleared the
                // streak (and found nothing to clear): undo, or nothing
                // would.
                let streak = self.passive_failures.load(Ordering::SeqCst);
                if streak == 0 {
                    self.failing.store(false, Ordering::SeqCst);
                    return Failing::Quiet;
                }
                self.failing_logged_ns.store(now, Ordering::Relaxed);
                self.failing_unlogged.store(0, Ordering::Relaxed);
                self.stats.flips[3].fetch_add(1, Ordering::Relaxed);
                self.noted(
                    &mut live,
                    format!("{streak} consecutive failures (not ejected)"),
                );
                return Failing::Started;
            }
        }
        self.failing_unlogged.fetch_add(1, Ordering::Relaxed);
        let last = self.failing_logged_ns.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= FAILING_LOG_EVERY.as_nanos() as u64;
        if due
            && self
                .failing_logged_ns
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let failures = self.failing_unlogged.swap(0, Ordering::Relaxed);
            return Failing::Repeat { failures };
        }
        Failing::Quiet
    }

    /// End `failing` after a request succeeded; whether it was.
    fn end_failing(&self) -> bool {
        if !self.failing.load(Ordering::SeqCst) {
            return false;
        }
        let mut live = self.live();
        self.settle(&mut live);
        let was = self.failing.swap(false, Ordering::SeqCst);
        if was {
            self.noted(&mut live, "a request succeeded".to_string());
        }
        was
    }

    /// Eject for `base` × (ejections in a row), at most `max`. Returns how
    /// long.
    pub fn eject(&self, base: Duration, max: Duration) -> Duration {
        let mut live = self.live();
        self.settle(&mut live);
        let failures = self.passive_failures.load(Ordering::SeqCst);
        let streak = self.ejection_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let period = base.saturating_mul(streak).min(max);
        self.ejected_until_ns
            .store(now_ns() + period.as_nanos() as u64, Ordering::Relaxed);
        availability_changed();
        self.passive_failures.store(0, Ordering::SeqCst);
        // Ejected says more than failing, and failing must not outlive the
        // streak it came from.
        self.failing.store(false, Ordering::SeqCst);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        self.stats.flips[2].fetch_add(1, Ordering::Relaxed);
        self.noted(
            &mut live,
            format!(
                "{failures} consecutive failures: ejected for {} ms",
                period.as_millis()
            ),
        );
        period
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ProbeFlips;

    #[test]
    fn failing_is_logged_once_then_at_most_every_interval_and_ends_on_success() {
        let s = BackendState::default();
        let every = FAILING_LOG_EVERY.as_nanos() as u64;
        s.record_failure();
        assert_eq!(s.mark_failing_at(1), Failing::Started);
        assert_eq!(s.condition(), Condition::Failing);
        assert!(!s.condition().is_up());
        for t in 2..100 {
            s.record_failure();
            assert_eq!(s.mark_failing_at(t), Failing::Quiet);
        }
        s.record_failure();
        assert_eq!(
            s.mark_failing_at(1 + every),
            Failing::Repeat { failures: 99 }
        );
        s.record_failure();
        assert_eq!(s.mark_failing_at(2 + every), Failing::Quiet);
        assert_eq!(s.stats().flips[3].load(Ordering::Relaxed), 1);
        assert!(s.record_success(), "a success ends it");
        assert_eq!(s.condition(), Condition::Unknown);
        assert!(!s.record_success(), "once");
    }

    #[test]
    fn a_passing_probe_ends_failing_and_ejection_supersedes_it() {
        let s = BackendState::default();
        s.record_failure();
        s.mark_failing();
        let flips = s.record_probe(true, "ok 200".into(), Duration::ZERO, 2, 2);
        assert_eq!(
            flips,
            ProbeFlips {
                health: Some(Health::Healthy),
                failing_ended: true
            }
        );
        assert_eq!(s.condition(), Condition::Healthy);
        s.record_failure();
        s.mark_failing();
        s.eject(Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(s.condition(), Condition::Ejected);
        // Active health still says more than either.
        s.record_probe(false, "status 503".into(), Duration::ZERO, 1, 1);
        assert_eq!(s.condition(), Condition::Unhealthy);
    }

    #[test]
    fn a_success_racing_the_mark_leaves_nothing_stuck() {
        let s = BackendState::default();
        s.record_failure();
        // The success lands between the failure and its mark.
        assert!(!s.record_success());
        assert_eq!(s.mark_failing(), Failing::Quiet);
        assert_eq!(s.condition(), Condition::Unknown);
    }

    #[test]
    fn transitions_are_recorded_with_their_reasons_and_counted() {
        let s = BackendState::default();
        s.record_probe(true, "ok 200".into(), Duration::ZERO, 2, 2);
        s.record_probe(false, "status 503".into(), Duration::ZERO, 2, 1);
        s.record_probe(true, "ok 200".into(), Duration::ZERO, 1, 2);
        for _ in 0..5 {
            s.record_failure();
        }
        s.eject(Duration::from_millis(20), Duration::from_millis(20));
        let t = s.transitions();
        let seen: Vec<_> = t
            .iter()
            .map(|t| (t.from.as_str(), t.to.as_str(), t.reason.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("unknown", "healthy", "probe: ok 200"),
                ("healthy", "unhealthy", "probe: status 503"),
                ("unhealthy", "healthy", "probe: ok 200"),
                (
                    "healthy",
                    "ejected",
                    "5 consecutive failures: ejected for 20 ms"
                ),
            ]
        );
        // The ejection runs out by itself: recorded when next looked at,
        // at the time it ended.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.is_ejected() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = s.transitions();
        let last = t.last().unwrap();
        assert_eq!(
            (last.from, last.to, last.reason.as_str()),
            (Condition::Ejected, Condition::Healthy, "ejection ended")
        );
        assert!(last.at_unix_ms >= t[3].at_unix_ms);
        assert_eq!(s.transitions().len(), 5, "noted once");
        let counted: Vec<u64> = Condition::ALL
            .iter()
            .map(|c| s.stats().transitions[*c as usize].load(Ordering::Relaxed))
            .collect();
        // healthy, unknown, unhealthy, ejected, failing
        assert_eq!(counted, [3, 0, 1, 1, 0]);
        // Failing and its end by a request; a health check removed.
        s.record_failure();
        s.mark_failing();
        assert!(s.record_success());
        s.reset_health();
        let t = s.transitions();
        let tail: Vec<_> = t[5..]
            .iter()
            .map(|t| (t.from.as_str(), t.to.as_str(), t.reason.as_str()))
            .collect();
        assert_eq!(
            tail,
            [
                ("healthy", "failing", "1 consecutive failures (not ejected)"),
                ("failing", "healthy", "a request succeeded"),
                ("healthy", "unknown", "health check removed"),
            ]
        );
    }

    #[test]
    fn an_ejection_that_ran_out_is_recorded_before_the_next_change() {
        let s = BackendState::default();
        s.record_failure();
        s.eject(Duration::from_millis(10), Duration::from_millis(10));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.is_ejected() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Nobody looked until the next streak made it failing.
        s.record_failure();
        assert_eq!(s.mark_failing(), Failing::Started);
        let seen: Vec<_> = s
            .transitions()
            .iter()
            .map(|t| (t.from, t.to, t.reason.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    Condition::Unknown,
                    Condition::Ejected,
                    "1 consecutive failures: ejected for 10 ms".to_string()
                ),
                (
                    Condition::Ejected,
                    Condition::Unknown,
                    "ejection ended".to_string()
                ),
                (
                    Condition::Unknown,
                    Condition::Failing,
                    "1 consecutive failures (not ejected)".to_string()
                ),
            ]
        );
    }
}
