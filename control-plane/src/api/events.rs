//! `GET /admin/events`: a Server-Sent Events stream of what the dashboard
//! shows live.
//!
//! - `hello` first, to each new subscriber: the config version and the
//!   traffic interval;
//! - `config` when a new config version is live (`config_version`,
//!   `previous`);
//! - `health` when a backend's state changes: its upstream, id, url,
//!   state, and the transitions its history recorded since the last look
//!   (time, from, to, reason);
//! - `traffic` once a second: requests/s, error ratio and p99 in total,
//!   per route and per backend (with its share of its upstream's
//!   attempts), from the in-process counters
//!   ([`data_plane::status::traffic`]).
//!
//! One sampler task makes every event once and hands it to all
//! subscribers through a bounded broadcast channel (a subscriber that
//! falls behind skips what it missed, never holding memory). The task
//! runs only while somebody listens: the first subscriber starts it, and
//! it ends at its next look after the last has gone. The request path
//! never knows: it only bumps the counters `/metrics` exports anyway.
//! At most [`MAX_SUBSCRIBERS`] follow at once; one more is a 503.
//!
//! Each subscriber's stream is built with `futures_util::stream::unfold`
//! (futures-util: the Rust async project's stream combinators; axum's
//! `Sse` takes a `Stream`, which tokio alone does not make).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use data_plane::DataPlane;
use data_plane::status::UpstreamStatus;
use data_plane::status::traffic::{self, Totals};
use futures_util::Stream;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::AdminState;
use super::error::ApiError;

/// Subscribers served at once.
pub const MAX_SUBSCRIBERS: usize = 64;
/// How often the sampler looks for config changes (health transitions
/// wake it at once).
const LOOK: Duration = Duration::from_millis(250);
/// Looks per traffic event (one a second).
const LOOKS_PER_TRAFFIC: u32 = 4;
/// Events a subscriber may fall behind by before it skips.
const BACKLOG: usize = 64;

/// One event, serialised once for every subscriber.
#[derive(Debug, Clone)]
struct Message {
    name: &'static str,
    data: Arc<str>,
}

/// The event hub of one gateway.
#[derive(Debug)]
pub struct Events {
    plane: Arc<DataPlane>,
    max: usize,
    tx: broadcast::Sender<Message>,
    /// Whether the sampler runs; subscribing and the sampler's decision
    /// to stop are made under this lock, so neither misses the other.
    sampling: Mutex<bool>,
    closed: watch::Sender<bool>,
}

impl Events {
    /// A hub serving at most `max` subscribers at once.
    pub fn new(plane: Arc<DataPlane>, max: usize) -> Arc<Events> {
        Arc::new(Events {
            plane,
            max,
            tx: broadcast::channel(BACKLOG).0,
            sampling: Mutex::new(false),
            closed: watch::channel(false).0,
        })
    }

    /// End every stream (the gateway is shutting down: its admin listener
    /// waits for open connections to finish).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Whether the sampler is running.
    pub fn sampling(&self) -> bool {
        *self.sampling.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscriber's stream, `hello` first.
    fn subscribe(
        self: &Arc<Self>,
    ) -> Result<impl Stream<Item = Result<Event, Infallible>> + use<>, ApiError> {
        let rx = {
            let mut sampling = self.sampling.lock().unwrap_or_else(|e| e.into_inner());
            if self.tx.receiver_count() >= self.max {
                return Err(ApiError::TooManySubscribers(self.max));
            }
            let rx = self.tx.subscribe();
            if !*sampling {
                *sampling = true;
                tokio::spawn(Arc::clone(self).sample());
            }
            rx
        };
        let hello = event(
            "hello",
            &json!({
                "config_version": self.plane.snapshot().version(),
                "traffic_interval_ms": (LOOK * LOOKS_PER_TRAFFIC).as_millis() as u64,
            }),
        );
        let closed = self.closed.subscribe();
        Ok(futures_util::stream::unfold(
            (Some(hello), rx, closed),
            |(first, mut rx, mut closed)| async move {
                if let Some(hello) = first {
                    return Some((Ok(sse(&hello)), (None, rx, closed)));
                }
                loop {
                    if *closed.borrow() {
                        return None;
                    }
                    tokio::select! {
                        got = rx.recv() => match got {
                            Ok(m) => return Some((Ok(sse(&m)), (None, rx, closed))),
                            // Behind: skip to what is current.
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        _ = closed.changed() => {}
                    }
                }
            },
        ))
    }

    /// The sampler: looks at the live snapshot every [`LOOK`] while
    /// anybody listens.
    async fn sample(self: Arc<Self>) {
        let snapshot = self.plane.snapshot();
        let mut version = snapshot.version();
        let mut health = conditions(&snapshot);
        let mut totals = Totals::read(&snapshot, &self.plane.stats().unrouted);
        let mut tick = tokio::time::interval(LOOK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut looks = 0u32;
        loop {
            // A transition is told at once; the rest at the next look.
            let looked = tokio::select! {
                _ = tick.tick() => true,
                () = traffic::transition_recorded() => false,
            };
            {
                let mut sampling = self.sampling.lock().unwrap_or_else(|e| e.into_inner());
                if self.tx.receiver_count() == 0 || *self.closed.borrow() {
                    *sampling = false;
                    return;
                }
            }
            let snapshot = self.plane.snapshot();
            if snapshot.version() != version {
                let now = snapshot.version();
                self.send(
                    "config",
                    &json!({"config_version": now, "previous": version}),
                );
                version = now;
            }
            let now = conditions(&snapshot);
            // Each upstream's status (with its histories) read once a look.
            let mut read: HashMap<&str, Option<UpstreamStatus>> = HashMap::new();
            for (key, (state, seen)) in &now {
                let (before, recorded) = health.get(key).copied().unwrap_or(("", 0));
                if (before, recorded) != (*state, *seen) {
                    let status = read
                        .entry(key.0.as_str())
                        .or_insert_with(|| UpstreamStatus::named(&snapshot, &key.0));
                    self.send(
                        "health",
                        &health_event(status.as_ref(), key, state, seen.saturating_sub(recorded)),
                    );
                }
            }
            health = now;
            looks += u32::from(looked);
            if looked && looks.is_multiple_of(LOOKS_PER_TRAFFIC) {
                let now = Totals::read(&snapshot, &self.plane.stats().unrouted);
                self.send("traffic", &now.rates(&totals));
                totals = now;
            }
        }
    }

    fn send<T: Serialize>(&self, name: &'static str, data: &T) {
        // No receiver is not an error: the next look ends the sampler.
        let _ = self.tx.send(event(name, data));
    }
}

/// Each backend's (state, transitions recorded), by (upstream, id).
fn conditions(snapshot: &data_plane::Snapshot) -> HashMap<(String, u64), (&'static str, u64)> {
    traffic::conditions(snapshot)
        .into_iter()
        .map(|c| ((c.upstream, c.id), (c.state, c.transitions)))
        .collect()
}

/// A backend's state and its `new` latest transitions (at most its whole
/// history), from its upstream's `status`.
fn health_event(
    status: Option<&UpstreamStatus>,
    (upstream, id): &(String, u64),
    state: &str,
    new: u64,
) -> serde_json::Value {
    let backend = status.and_then(|u| u.backends.iter().find(|b| b.id == *id));
    let (url, transitions) = match backend {
        Some(b) => {
            let all = b.transitions.as_deref().unwrap_or_default();
            let keep = all.len().min(new as usize);
            (b.url.as_str(), &all[all.len() - keep..])
        }
        None => ("", &[][..]),
    };
    json!({
        "upstream": upstream,
        "id": id,
        "url": url,
        "state": state,
        "transitions": transitions,
    })
}

fn event<T: Serialize>(name: &'static str, data: &T) -> Message {
    Message {
        name,
        data: serde_json::to_string(data)
            .expect("an event serialises")
            .into(),
    }
}

fn sse(m: &Message) -> Event {
    Event::default().event(m.name).data(&*m.data)
}

/// `GET /admin/events`.
pub async fn events(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let stream = s.events.subscribe()?;
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies in front of the admin API must not hold the stream back.
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp.headers_mut()
        .insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    Ok(resp)
}
