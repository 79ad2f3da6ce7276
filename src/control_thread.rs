//! The control plane's own thread.
//!
//! The admin API, the store, the publisher and the shared-database
//! follower run on a current-thread runtime of their own, on one OS
//! thread, apart from the runtime that carries proxied traffic. A large
//! change is CPU work measured in seconds at 100,000 routes (reading a
//! 9 MB document, comparing it with the stored rows, compiling the
//! snapshot, exporting the answer, writing a checkpoint). On the proxy's
//! runtime it held proxied requests up to 0.7 s behind it with
//! `--workers 1`, and up to 54 ms with two workers; on its own thread the
//! kernel shares the CPUs between them, and a proxied request waits no
//! longer than a time slice. Envoy's main thread and nginx's master process
//! keep configuration off their workers the same way.
//!
//! What the control plane makes for the data plane runs where the data
//! plane lives: health probes go to the runtime the plane was made on
//! (`HealthChecker`), not to the thread that installed the snapshot.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// How long the thread's runtime waits at the end for blocking work it
/// started (a checkpoint being written, the cache file) before it lets
/// go of it.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The thread and a handle to spawn on its runtime. Dropping it, or
/// [`ControlThread::stop`], ends the thread; its runtime cancels any task
/// still there.
#[derive(Debug)]
pub(crate) struct ControlThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlThread {
    pub(crate) fn start() -> io::Result<Self> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .thread_name("switchyard-control")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("switchyard-control".into())
            .spawn(move || {
                // Sent or dropped: either ends it.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(SHUTDOWN_WAIT);
            })?;
        Ok(ControlThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The thread's runtime: [`Handle::enter`] makes a listener there,
    /// [`Handle::spawn`] a task.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Run `work` on the thread and wait for its result. A panic there is
    /// a panic here.
    pub(crate) async fn run<F>(&self, work: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handle.spawn(work).await {
            Ok(output) => output,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only `stop` cancels its tasks, and it takes `self`.
            Err(e) => unreachable!("control thread task cancelled: {e}"),
        }
    }

    /// End the thread and wait for it (off the caller's runtime).
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
