//! How a draining listener tells its connections to stop taking
//! requests — every connection, whichever server drives it (the inline
//! server, hyper's after a hand-off, TLS ones): one flag, and the wakers of
//! connections waiting for it.
//!
//! A `watch` channel costs a lock to register a waiter every time a
//! connection starts waiting; an inline connection waits once per request.
//! Here a connection registers once, for its life, and a wait costs an
//! atomic waker update and a flag read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// The listener's side: [`Stop::stop`] once, when draining starts.
#[derive(Debug, Default)]
pub struct Stop {
    stopping: AtomicBool,
    next_id: AtomicU64,
    watching: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
}

impl Stop {
    pub fn new() -> Arc<Self> {
        Arc::new(Stop::default())
    }

    /// Tell every connection, now and later, to stop.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
        for waker in watching.values() {
            waker.wake();
        }
    }

    /// A connection's registration, until dropped.
    pub fn watch(self: &Arc<Self>) -> StopWatch {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(AtomicWaker::new());
        self.watching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&waker));
        StopWatch {
            stop: Arc::clone(self),
            id,
            waker,
            registered: AtomicBool::new(false),
        }
    }
}

/// One connection's view of [`Stop`].
#[derive(Debug)]
pub struct StopWatch {
    stop: Arc<Stop>,
    id: u64,
    waker: Arc<AtomicWaker>,
    /// The connection's task registered its waker: a task's waker wakes it
    /// whichever poll it came from, so once is enough.
    registered: AtomicBool,
}

impl StopWatch {
    pub fn is_stopped(&self) -> bool {
        self.stop.stopping.load(Ordering::SeqCst)
    }

    /// Ready once the listener stops; the task polling it is woken then.
    pub fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the flag is read: a stop between the two still
        // wakes this task.
        if !self.registered.swap(true, Ordering::Relaxed) {
            self.waker.register(cx.waker());
        }
        if self.is_stopped() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        self.stop
            .watching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_connection_is_woken_and_later_ones_see_it() {
        let stop = Stop::new();
        let watch = stop.watch();
        let waiting = tokio::spawn(async move {
            std::future::poll_fn(|cx| watch.poll_stopped(cx)).await;
            watch
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        stop.stop();
        let watch = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert!(watch.is_stopped() && stop.watch().is_stopped());
        drop(watch);
        assert_eq!(stop.watching.lock().unwrap().len(), 0);
    }
}
