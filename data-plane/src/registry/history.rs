//! A backend's recent state transitions: a ring of the last
//! [`HISTORY_LEN`], kept with its live state (so it survives config
//! changes like the rest of it) and written only where a transition
//! already happens: a probe that flips health, a passive failure streak
//! crossing its threshold, an ejection and its end, `failing` ending, a
//! health check removed; and an admin change of the backend (added, its
//! weight set), with `from` = `to`. Never touched by a request that
//! changes nothing.

use std::collections::VecDeque;

use serde::Serialize;

use super::passive::Condition;

/// Woken at every recorded transition, for whoever is waiting (the admin
/// event stream's sampler); with nobody waiting it is one atomic load.
/// Process-wide: a watcher of another data plane in the same process
/// just looks once more.
pub(crate) static RECORDED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Transitions kept per backend.
pub const HISTORY_LEN: usize = 20;

/// One change of a backend's [`Condition`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Unix milliseconds when it happened (for the end of an ejection by
    /// time: when the ejection ran out, not when it was noticed).
    pub at_unix_ms: u64,
    pub from: Condition,
    pub to: Condition,
    /// Why: the probe's result (`probe: status 503`), the passive streak
    /// (`5 consecutive failures`), `ejection ended`, …
    pub reason: String,
}

/// The ring, and the condition its last entry left the backend in.
#[derive(Debug)]
pub(super) struct History {
    pub(super) last: Condition,
    ring: VecDeque<Transition>,
}

impl Default for History {
    fn default() -> Self {
        History {
            last: Condition::Unknown,
            ring: VecDeque::with_capacity(HISTORY_LEN),
        }
    }
}

impl History {
    /// Record a change to `to` (none if it is where the last one left it).
    /// Returns whether one was recorded.
    pub(super) fn push(&mut self, at_unix_ms: u64, to: Condition, reason: String) -> bool {
        if to == self.last {
            return false;
        }
        if self.ring.len() == HISTORY_LEN {
            self.ring.pop_front();
        }
        self.ring.push_back(Transition {
            at_unix_ms,
            from: self.last,
            to,
            reason,
        });
        self.last = to;
        true
    }

    /// Record an admin change that leaves the state as it is (`from` and
    /// `to` both the current one).
    pub(super) fn note(&mut self, at_unix_ms: u64, reason: String) {
        if self.ring.len() == HISTORY_LEN {
            self.ring.pop_front();
        }
        self.ring.push_back(Transition {
            at_unix_ms,
            from: self.last,
            to: self.last,
            reason,
        });
    }

    /// The transitions kept, oldest first.
    pub(super) fn to_vec(&self) -> Vec<Transition> {
        self.ring.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_twenty_oldest_first_and_skips_non_changes() {
        let mut h = History::default();
        assert!(!h.push(1, Condition::Unknown, "nothing".into()));
        assert!(h.to_vec().is_empty());
        for i in 0..25u64 {
            let to = if i % 2 == 0 {
                Condition::Healthy
            } else {
                Condition::Unhealthy
            };
            assert!(h.push(i, to, format!("probe {i}")));
            assert!(!h.push(i, to, "again".into()), "no change, no entry");
        }
        let v = h.to_vec();
        assert_eq!(v.len(), HISTORY_LEN);
        assert_eq!(v[0].at_unix_ms, 5, "the oldest five are gone");
        assert_eq!(v[19].at_unix_ms, 24);
        assert_eq!(v[19].reason, "probe 24");
        assert!(v.windows(2).all(|w| w[0].to == w[1].from), "a chain");
        assert_eq!(
            (v[19].from, v[19].to),
            (Condition::Unhealthy, Condition::Healthy)
        );
    }
}
