//! One timer reused across many waits, each with its own deadline, without
//! being moved for each.
//!
//! Moving a tokio `Sleep` (`reset`) converts the deadline to the timer
//! wheel's ticks and updates its entry: a clock conversion and atomics,
//! per request where a request's wait is timed. A wait here only notes
//! its deadline; the timer keeps the deadline it has unless that is later
//! than the wait's. When it fires early, for an earlier wait, it is moved
//! to the wait's deadline then: at most once per timeout period of a busy
//! connection.
//!
//! It is the data plane's one idle/deadline timer: the inline server's head
//! and idle deadline, the inline client's response-head deadline, the send
//! timeout ([`crate::stall`]), the client body timeout, hyper's path's
//! response-head deadline, the watchdog of hyper's connections (idle and
//! stalled clients) and tunnels' idle check all wait on a `LazyTimer`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

#[derive(Debug, Default)]
pub struct LazyTimer(Option<Pin<Box<Sleep>>>);

impl LazyTimer {
    pub fn new() -> Self {
        LazyTimer(None)
    }

    /// Begin a wait that ends at `deadline`.
    pub fn arm(&mut self, deadline: Instant) {
        match &mut self.0 {
            Some(timer) if timer.deadline() > deadline => timer.as_mut().reset(deadline),
            Some(_) => {}
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Ready once `deadline` (of the wait [`Self::arm`] began) has passed.
    pub fn poll_expired(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timer) = &mut self.0 else {
            self.arm(deadline);
            return self.poll_expired(deadline, cx);
        };
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                return Poll::Ready(());
            }
            // It fired for an earlier wait: on to this one's deadline.
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }

    /// Resolves once `deadline` has passed.
    pub async fn expired(&mut self, deadline: Instant) {
        std::future::poll_fn(|cx| self.poll_expired(deadline, cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Each wait keeps its own deadline: later ones are not cut short by
    /// the timer's earlier deadline, an earlier one moves the timer back.
    #[tokio::test]
    async fn each_wait_keeps_its_own_deadline() {
        let ms = Duration::from_millis;
        let mut timer = LazyTimer::new();
        let start = Instant::now();
        timer.arm(start + ms(50));
        timer.expired(start + ms(50)).await;
        assert!(start.elapsed() >= ms(50));
        // A later deadline, the timer still at the first one.
        let second = Instant::now() + ms(120);
        timer.arm(second);
        timer.expired(second).await;
        assert!(Instant::now() >= second);
        // An earlier deadline than the timer's: moved back.
        let far = Instant::now() + ms(10_000);
        timer.arm(far);
        let near = Instant::now() + ms(30);
        timer.arm(near);
        tokio::time::timeout(ms(5_000), timer.expired(near))
            .await
            .expect("the earlier deadline is kept");
        assert!(Instant::now() >= near);
    }
}
