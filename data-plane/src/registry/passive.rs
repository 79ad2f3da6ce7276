//! The passive side of a backend's live state: the failure streak seen on
//! real traffic, ejection, and `failing` (a streak at the threshold that
//! could not eject it); and the [`Condition`] that folds every signal into
//! the one state the status views and metrics show. What a request's
//! result means for its upstream is decided in `crate::outlier`; this is
//! the state it leaves.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{BackendState, Health, availability_changed};
use crate::clock::{now_ns, unix_ms};

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
        if !self.failing.load(Ordering::SeqCst) && !self.failing.swap(true, Ordering::SeqCst) {
            // A success between the failure and here cleared the streak
            // (and found nothing to clear): undo, or nothing would.
            if self.passive_failures.load(Ordering::SeqCst) == 0 {
                self.failing.store(false, Ordering::SeqCst);
                return Failing::Quiet;
            }
            self.failing_logged_ns.store(now, Ordering::Relaxed);
            self.failing_unlogged.store(0, Ordering::Relaxed);
            self.stats.flips[3].fetch_add(1, Ordering::Relaxed);
            self.changed_now();
            return Failing::Started;
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

    /// End `failing`; whether it was.
    fn end_failing(&self) -> bool {
        let was = self.failing.swap(false, Ordering::SeqCst);
        if was {
            self.changed_now();
        }
        was
    }

    /// Eject for `base` × (ejections in a row), at most `max`. Returns how
    /// long.
    pub fn eject(&self, base: Duration, max: Duration) -> Duration {
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
        self.changed_now();
        period
    }

    /// Note the time of a state change for the status views.
    fn changed_now(&self) {
        self.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since_unix_ms = unix_ms();
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
}
