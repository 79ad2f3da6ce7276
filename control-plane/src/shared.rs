//! Following a database that several gateways share (PostgreSQL): each
//! node puts in force what the others commit.
//!
//! One task per node keeps a session that `LISTEN`s for the writers'
//! `NOTIFY` (see [`crate::store::postgres`]) and runs
//! [`Publisher::catch_up`] when one says a version newer than the live
//! one is committed. Catching up reads the revision log after the live
//! version, so it is the same whether one notification or many were
//! missed; it also runs after every (re)connect of the session and every
//! `check` interval (a version check), which bounds how long a node that
//! missed notifications (its session dropped, the process paused) stays
//! behind.
//!
//! While the database cannot be reached the node keeps serving its live
//! config, `switchyard_store_up` is 0, changes are refused with a 503,
//! and the task retries with backoff (from [`RETRY_MIN`] doubling to
//! [`RETRY_MAX`]). A node that started from its cache file is migrated
//! and caught up by the same loop once the database answers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::publish::{PublishError, Publisher};
use crate::store::StoreError;
use crate::store::postgres::{Heard, Listener, PostgresUrl};

/// Default of `--store-check-ms`.
pub const DEFAULT_CHECK: Duration = Duration::from_secs(2);

/// First wait before connecting again to a database that did not answer.
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// Follow the database at `url` until `stop` says so. `migrated`: whether
/// this node has already migrated it (false after a start from the cache).
pub fn follow(
    publisher: Arc<Publisher>,
    url: PostgresUrl,
    check: Duration,
    migrated: bool,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stopped = stop.clone();
        tokio::select! {
            _ = run(&publisher, &url, check, migrated) => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    })
}

async fn run(publisher: &Publisher, url: &PostgresUrl, check: Duration, mut migrated: bool) {
    let mut retry = RETRY_MIN;
    loop {
        let connected = async {
            if !migrated {
                publisher.store().migrate().await?;
                migrated = true;
            }
            let listener = Listener::connect(url).await?;
            // Whatever was committed while no session listened is in the
            // revision log.
            publisher.catch_up().await?;
            Ok::<_, PublishError>(listener)
        };
        let mut listener = match connected.await {
            Ok(listener) => listener,
            Err(e) => {
                publisher.set_store_up(false);
                tracing::warn!(error = %e, retry_ms = retry.as_millis() as u64, "config database: cannot follow it yet");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        publisher.set_store_up(true);
        retry = RETRY_MIN;
        let mut every = tokio::time::interval(check);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            // `None`: time for the periodic version check.
            let heard = tokio::select! {
                heard = listener.recv() => Some(heard),
                _ = every.tick() => None,
            };
            match heard {
                // This node's own change, or one it already caught up with.
                Some(Ok(Heard::Committed(Some(v))))
                    if v <= publisher.plane().snapshot().version() =>
                {
                    continue;
                }
                // A newer version, a session made again, or the check.
                Some(Ok(_)) | None => {}
                Some(Err(e)) => {
                    publisher.set_store_up(false);
                    tracing::warn!(error = %e, "config database: the listening session is lost");
                    break;
                }
            }
            match publisher.catch_up().await {
                Ok(_) => publisher.set_store_up(true),
                // `catch_up` noted it; the session is likely gone too.
                Err(PublishError::Store(StoreError::Unavailable)) => break,
                Err(e) => {
                    tracing::error!(error = %e, "config database: cannot put its config in force")
                }
            }
        }
    }
}
