//! Which thread does what: a change is applied on the control plane's own
//! runtime and threads, and health probes run on the runtime the gateway
//! was started on, with its proxied traffic (`src/control_runtime.rs`).
//! Seen through the thread each one's log event comes from: the audit
//! line is logged by the admin request's task once the change is applied
//! and answered (the publisher compiles and installs in that task).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::common::backend::dead_url;
use crate::common::{TestGateway, eventually};

/// The control plane's threads, by name.
const CONTROL_THREAD: &str = "switchyard-control";

/// Log targets recorded: the admin API's audit line of each change, and
/// the health checker's events.
const TARGETS: [&str; 2] = ["switchyard::audit", "data_plane::health"];

/// One event: its target, its fields as text, and the thread it came from.
#[derive(Clone, Debug)]
struct Seen {
    target: String,
    fields: String,
    thread: Option<String>,
}

/// Records the events of [`TARGETS`] (from every test in this binary:
/// each test finds its own by the names it made).
struct Record(Arc<Mutex<Vec<Seen>>>);

impl Record {
    fn wanted(metadata: &Metadata<'_>) -> bool {
        TARGETS.contains(&metadata.target())
    }
}

impl<S: tracing::Subscriber> Layer<S> for Record {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if Self::wanted(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        Self::wanted(metadata)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        struct Fields(String);
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={:?} ", field.name(), value);
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Seen {
            target: event.metadata().target().to_string(),
            fields: fields.0,
            thread: std::thread::current().name().map(String::from),
        });
    }
}

/// The events recorded so far; the recorder is installed on first use,
/// for the whole process.
fn recorded() -> Arc<Mutex<Vec<Seen>>> {
    static SEEN: OnceLock<Arc<Mutex<Vec<Seen>>>> = OnceLock::new();
    Arc::clone(SEEN.get_or_init(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Not `try_init`: that would also route the `log` crate's records
        // (rustls, sqlx) through tracing for the whole binary.
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(Record(Arc::clone(&seen))),
        )
        .expect("no other global subscriber in the e2e tests");
        seen
    }))
}

#[tokio::test]
async fn changes_are_applied_on_the_control_thread_and_probes_run_with_the_traffic() {
    let seen = recorded();
    let gw = TestGateway::start().await;
    // Probed at once, found dead at the first probe: the health checker
    // logs the change of health from the probe's task.
    let dead = dead_url().await;
    // The audit line names the change by its comment.
    let created = reqwest::Client::new()
        .post(gw.admin_url("/admin/upstreams"))
        .header("X-Change-Comment", "threads-u")
        .json(&json!({"name": "threads-u",
            "health_check": {"interval_ms": 100, "timeout_ms": 100, "unhealthy_threshold": 1},
            "backends": [{"url": dead}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let find = |target: &str, name: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .find(|s| s.target == target && s.fields.contains(name))
            .cloned()
    };
    let (audit, health) = eventually(Duration::from_secs(10), || async {
        Some((
            find("switchyard::audit", "threads-u")?,
            find("data_plane::health", "threads-u")?,
        ))
    })
    .await
    .expect("the change's audit line and the probe's health change are logged");

    assert_eq!(
        audit.thread.as_deref(),
        Some(CONTROL_THREAD),
        "the change was applied on {:?}",
        audit.thread
    );
    let here = std::thread::current().name().map(String::from);
    assert_ne!(here.as_deref(), Some(CONTROL_THREAD));
    assert_eq!(
        health.thread, here,
        "the probe ran on {:?}, not on the runtime the gateway was started on",
        health.thread
    );
}
