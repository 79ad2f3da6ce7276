//! Test builds only (feature `fault-injection`): a request asks for a
//! panic at one stage of its own handling, so that the end-to-end tests
//! can show what [`crate::recover`] does with one. Production builds have
//! none of this: the module, the field it sets and its checks are
//! compiled out.

use http::HeaderName;

use crate::http1::fields::Fields;

/// `x-switchyard-test-panic: route | send | body`.
static FAULT: HeaderName = HeaderName::from_static("x-switchyard-test-panic");

/// Where the request wants to panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// While its head is checked and routed.
    Route,
    /// While its attempts are made.
    Send,
    /// While its response body streams.
    Body,
}

/// The stage the request asks to panic at, if any.
pub fn requested(fields: &impl Fields) -> Option<Stage> {
    match fields.all(&FAULT).next()? {
        b"route" => Some(Stage::Route),
        b"send" => Some(Stage::Send),
        b"body" => Some(Stage::Body),
        _ => None,
    }
}

/// Panic, as asked.
pub fn panic_at(stage: Stage) -> ! {
    panic!("fault injected at {stage:?}, as the request asked")
}
