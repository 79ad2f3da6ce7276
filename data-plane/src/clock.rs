//! The clocks the data plane reads: a monotonic nanosecond count for
//! request timing (one `Instant` read, no conversion per use), and wall
//! time in milliseconds for what operators see (health `since`).

use std::sync::LazyLock;
use std::time::Instant;

/// Monotonic nanoseconds since the first call in this process.
pub fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// [`now_ns`]'s reading of the instant `at` (0 before its first call).
pub fn ns_at(at: Instant) -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    at.saturating_duration_since(*EPOCH).as_nanos() as u64
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
