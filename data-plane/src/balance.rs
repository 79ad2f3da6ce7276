//! Backend selection. Each strategy is a small type behind [`Balancer`],
//! one file each; everything expensive happens in its constructor when a
//! snapshot is compiled, so a pick is O(1) and takes no lock.

mod round_robin;

pub use round_robin::RoundRobin;

use crate::config::Strategy;

/// What a balancer knows of one backend when it is built.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub weight: u32,
}

/// Picks the index of the backend for the next request.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// `None` when no backend can take traffic (all drained, or none).
    fn pick(&self) -> Option<usize>;
}

/// Build the balancer of `strategy` over `backends` (indexes are positions
/// in this slice).
pub fn build(strategy: Strategy, backends: &[Candidate]) -> Box<dyn Balancer> {
    match strategy {
        Strategy::RoundRobin => Box::new(RoundRobin::new(backends)),
    }
}
