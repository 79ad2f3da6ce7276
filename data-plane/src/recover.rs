//! When handling a request panics all the same: the client still gets an
//! answer, the panic is logged once with the request's ID and counted
//! (`switchyard_panics_total`), and nothing else is touched — the
//! connection's next request and every other connection go on.
//!
//! A panic is caught where the request is handled ([`catch`], [`poll`]),
//! not where tokio would catch it (the whole connection's task): the
//! catcher knows the request, and answers it (`500`, the gateway's JSON
//! error) if nothing of the response has been sent, or aborts the
//! response if it has. The process-wide panic hook ([`install_hook`])
//! keeps the standard hook from printing a caught panic a second time,
//! without the request ID; a panic outside any catcher (a background task)
//! is logged and counted by the hook itself.
//!
//! Catching costs nothing while nothing panics but a thread-local counter
//! update: `catch_unwind` itself is free on the path that does not unwind.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::HeaderValue;

/// Panics in this process so far (`switchyard_panics_total`).
static PANICS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Catchers entered on this thread: a panic inside one is reported by
    /// its catcher, not by the hook.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    /// What the hook saw of the last panic a catcher on this thread will
    /// report: message and place.
    static SEEN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// How many panics this process has had.
pub fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Install the process's panic hook (once; later calls do nothing): a
/// panic inside a catcher is left to it to report; any other is counted
/// here and logged (target `switchyard::panic`), or printed by the hook
/// that was there before when no `tracing` subscriber is set.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let standard = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.get() > 0 {
                SEEN.set(Some(describe(info)));
                return;
            }
            PANICS.fetch_add(1, Ordering::Relaxed);
            // In the process's log when there is one (the binary sets it
            // up first); else as Rust prints it (a test's failing assert).
            if tracing::dispatcher::has_been_set() {
                let what = describe(info);
                tracing::error!(target: "switchyard::panic", panic = %what, "panic outside request handling");
            } else {
                standard(info);
            }
        }));
    });
}

/// The message and place of a panic.
fn describe(info: &panic::PanicHookInfo<'_>) -> String {
    let message = message(info.payload());
    match info.location() {
        Some(at) => format!("{message} at {}:{}", at.file(), at.line()),
        None => message,
    }
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// A caught panic, to be reported once ([`Panic::report`]).
#[derive(Debug)]
pub struct Panic {
    what: String,
}

impl Panic {
    fn caught(payload: Box<dyn Any + Send>) -> Self {
        let what = SEEN.take().unwrap_or_else(|| message(&*payload));
        Panic { what }
    }

    /// Count it and log it, once, with the ID of the request it broke.
    pub fn report(&self, request_id: &HeaderValue) {
        PANICS.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            target: "switchyard::panic",
            request_id = request_id.to_str().unwrap_or_default(),
            panic = %self.what,
            "request handling panicked"
        );
    }
}

impl std::fmt::Display for Panic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "panicked: {}", self.what)
    }
}

impl std::error::Error for Panic {}

/// One catcher entered on this thread, until dropped.
struct Catching;

impl Catching {
    fn enter() -> Self {
        CATCHING.set(CATCHING.get() + 1);
        Catching
    }
}

impl Drop for Catching {
    fn drop(&mut self) {
        CATCHING.set(CATCHING.get() - 1);
    }
}

/// Run `f`, catching a panic. What `f` touched may be half done: the
/// caller drops it or answers without it.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panic> {
    let _catching = Catching::enter();
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(Panic::caught)
}

/// Poll `fut` once, catching a panic; a future that panicked must not be
/// polled again.
pub fn poll<F: Future>(fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<Result<F::Output, Panic>> {
    match catch(|| fut.poll(cx)) {
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(panic) => Poll::Ready(Err(panic)),
    }
}

/// `fut`, with a panic in any of its polls caught.
pub async fn catching<F: Future>(fut: F) -> Result<F::Output, Panic> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| poll(fut.as_mut(), cx)).await
}

/// If the body error `err` is a caught panic, report it for `request_id`.
pub fn report_body_error(err: &(dyn std::error::Error + 'static), request_id: &HeaderValue) {
    if let Some(panic) = err.downcast_ref::<Panic>() {
        panic.report(request_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_counted_when_reported() {
        install_hook();
        let before = panics();
        let caught = catch(|| -> u32 { panic!("boom {}", 7) }).unwrap_err();
        assert!(caught.what.starts_with("boom 7 at "), "{}", caught.what);
        assert!(caught.what.contains("recover.rs"), "{}", caught.what);
        caught.report(&HeaderValue::from_static("id-1"));
        assert!(panics() > before, "counted when reported");
        assert_eq!(catch(|| 5).unwrap(), 5);
        assert_eq!(CATCHING.get(), 0, "every catcher left");
    }

    #[tokio::test]
    async fn a_panicking_future_is_caught_at_its_poll() {
        let fut = async {
            tokio::task::yield_now().await;
            if CATCHING.get() > 0 {
                panic!("in the second poll");
            }
            1
        };
        let caught = catching(fut).await.unwrap_err();
        assert!(
            caught.to_string().contains("in the second poll"),
            "{caught}"
        );
        assert_eq!(catching(async { 2 }).await.unwrap(), 2);
    }
}
