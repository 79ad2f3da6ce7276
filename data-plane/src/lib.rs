//! Switchyard's data plane: everything that runs while requests flow.
//!
//! The modules stand on floors, and a module uses only modules on its own
//! floor or below (`ARCHITECTURE.md` draws them; `tests/layers.rs` checks
//! every `crate::` and `super::` path against this list):
//!
//! 0. ground — [`config`] (`GatewayConfig`, the serde types the data plane
//!    runs on), [`clock`], [`persist`] (containers shared between snapshot
//!    versions), [`lazy_timer`] (one timer reused across waits), [`stall`]
//!    (the send timeout), [`counters`] (the atomics behind the metrics),
//!    [`access_log`] (each request's line, written by a thread of its own),
//!    [`recover`] (a request's panic caught and answered), [`routing`]
//!    (the pure route table and path normalisation), [`balance`] (backend
//!    selection strategies behind one trait);
//! 1. [`http1`] — what HTTP/1 means for both halves: fields and their
//!    forwarding policy, heads parsed and written, body framing;
//! 2. [`transport`] — talking to backends: the per-backend HTTP/1 pool and
//!    exchange, hyper's clients for TLS and HTTP/2, the request body, the
//!    health prober; and beside it [`policy`] — a route's policies
//!    compiled and run (IP rules, redirect, CORS, auth, rate limit);
//! 3. live state — [`registry`] (per-backend state that outlives
//!    snapshots), [`available`] (which backends take traffic now),
//!    [`outlier`] (passive detection), [`snapshot`] (a config compiled
//!    into an immutable [`Snapshot`]), [`health`] (the active-check
//!    scheduler), [`status`] (the read-only view the admin API shows);
//! 4. [`plane`] — [`DataPlane`]: the snapshot in force, the registry and
//!    the health checker, and the API the control plane changes them by;
//! 5. [`proxy`] (the request handler: route, pick, forward, stream) and
//!    [`exporter`] (the Prometheus collector);
//! 6. [`server`] — the listener: the inline HTTP/1.1 server, hyper's for
//!    the rest (HTTP/1.1, h2c, TLS), graceful drain.
//!
//! `fuzzing` (tests and feature `fuzzing`) stands above them all: the
//! checks the fuzz targets in `fuzz/` run on the hand-written parsers.
//! The data plane knows nothing of SQL or of the admin API.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod available;
pub mod balance;
pub mod clock;
pub mod config;
pub mod counters;
pub mod exporter;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod health;
pub mod http1;
pub mod lazy_timer;
pub mod outlier;
pub mod persist;
pub mod plane;
pub mod policy;
pub mod proxy;
pub mod recover;
pub mod registry;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod stall;
pub mod status;
pub mod transport;

/// An error of any kind, sendable across tasks: what hyper's bodies and
/// connections fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use config::GatewayConfig;
pub use plane::{DataPlane, PatchOutcome, Stale};
pub use registry::{Held, Registry};
pub use snapshot::{BuildError, Patch, Retired, Snapshot};
