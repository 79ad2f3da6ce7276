//! The control plane's own runtime.
//!
//! The admin API, the store, the publisher and the shared-database
//! follower run on a runtime of their own, on threads of their own
//! (`switchyard-control`), apart from the runtime that carries proxied
//! traffic. A large change is CPU work measured in seconds at 100,000
//! routes (reading a 17 MB document, comparing it with the stored rows,
//! compiling the snapshot, exporting the answer, writing a checkpoint).
//! On the proxy's runtime it held proxied requests behind it: at 2,000
//! requests/s with `--workers 1`, p99 0.35-0.44 s while such configs were
//! written (bench/scale.sh), and up to 54 ms with two workers. On threads
//! of their own the kernel shares the cores between them, and a proxied
//! request waits no longer than a time slice (p99 ~4 ms in the same
//! bench). Envoy's main thread keeps configuration off its workers the
//! same way.
//!
//! Two workers: a change being compiled on one does not hold the admin
//! API's reads (`/admin/status`, the dashboard's feed) on the other. Idle,
//! they cost their stacks; what the control plane allocates on them comes
//! from glibc arenas of their own, which made the import of 100,000
//! routes ~10% slower and its peak RSS larger (BENCHMARKS.md).
//!
//! What the control plane makes for the data plane runs where the data
//! plane lives: health probes go to the runtime the plane was made on
//! (`HealthChecker`), not to the thread that installed the snapshot.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};

/// How long the runtime waits at the end for blocking work still running
/// there (a checkpoint being serialised: the store is closed by then, so
/// it cannot be written) before it lets go of it.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Worker threads of the control plane's runtime.
const WORKERS: usize = 2;

/// The name of its threads (`top -H`, a debugger, the tests).
const THREAD_NAME: &str = "switchyard-control";

/// The runtime. Dropping this, or [`ControlRuntime::stop`], ends it,
/// cancelling its tasks (a blocking one still running runs to its end).
#[derive(Debug)]
pub(crate) struct ControlRuntime {
    /// Until `stop` or drop.
    runtime: Option<Runtime>,
}

impl ControlRuntime {
    pub(crate) fn start() -> io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .enable_all()
            .thread_name(THREAD_NAME)
            .build()?;
        Ok(ControlRuntime {
            runtime: Some(runtime),
        })
    }

    /// A handle to the runtime: [`Handle::enter`] makes a listener there,
    /// [`Handle::spawn`] a task.
    pub(crate) fn handle(&self) -> &Handle {
        self.runtime
            .as_ref()
            .expect("the runtime runs until stop or drop")
            .handle()
    }

    /// Run `work` on the control runtime and wait for its result. A panic
    /// there is a panic here.
    pub(crate) async fn run<F>(&self, work: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handle().spawn(work).await {
            Ok(output) => output,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only `stop` and drop cancel its tasks, and neither can run
            // while this borrows `self`.
            Err(e) => unreachable!("control runtime task cancelled: {e}"),
        }
    }

    /// End the runtime and wait for its threads (off the caller's
    /// runtime: a runtime cannot be shut down from a task).
    pub(crate) async fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ =
                tokio::task::spawn_blocking(move || runtime.shutdown_timeout(SHUTDOWN_WAIT)).await;
        }
    }
}

impl Drop for ControlRuntime {
    /// Without waiting: a gateway may be dropped on a runtime's thread.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
