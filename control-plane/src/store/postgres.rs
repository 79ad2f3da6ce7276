//! PostgreSQL as the shared store of several gateways: its URL, and the
//! change feed between them.
//!
//! A writer ends its transaction with [`notify`]: `pg_notify` on
//! [`CHANNEL`] with the new version, which PostgreSQL delivers to every
//! listening session once (and only if) the transaction commits. Each
//! gateway keeps one session listening ([`Listener`], sqlx's
//! `PgListener`) and, on a notification, reads the revisions after its own
//! version and patches its snapshot (`Publisher::catch_up`). Notifications
//! are a wake-up, not the data: one that is lost (the session dropped, the
//! process paused) costs only time, as the reconnect and a periodic
//! version check run the same catch-up.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::postgres::{PgConnectOptions, PgListener};

use super::{OpenError, StoreError};

/// The `LISTEN`/`NOTIFY` channel of config changes.
pub const CHANNEL: &str = "switchyard_config";

/// How long a query waits for a connection before the store counts as
/// unreachable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A checked `postgres://` URL. Its query parameters (TLS among them:
/// `sslmode`, `sslrootcert`, `sslcert`, `sslkey`) go to sqlx's PostgreSQL
/// driver as given.
#[derive(Clone)]
pub struct PostgresUrl {
    url: String,
    options: PgConnectOptions,
}

impl PostgresUrl {
    /// Whether `url` names PostgreSQL (`postgres:` or `postgresql:`).
    pub fn is_postgres(url: &str) -> bool {
        url.split_once(':').is_some_and(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
        })
    }

    pub fn parse(url: &str) -> Result<PostgresUrl, OpenError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| OpenError::BadUrl {
            url: redact(url),
            reason: e.to_string(),
        })?;
        Ok(PostgresUrl {
            url: url.to_string(),
            options,
        })
    }

    /// The URL as given (with its password: not for logs).
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

/// For logs and errors: host, port and database, never the password.
impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        write!(
            f,
            "postgres://{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or_else(|| o.get_username())
        )
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// `url` with any password replaced by `***`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Tell the other gateways that `version` is committed (delivered only if
/// the transaction on `conn` commits).
pub async fn notify(conn: &mut AnyConnection, version: u64) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(version.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One session that `LISTEN`s on [`CHANNEL`].
pub struct Listener {
    inner: PgListener,
}

/// What a [`Listener`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A writer committed this version (`None`: the payload was not a
    /// version, which only a stranger's `NOTIFY` would send).
    Committed(Option<u64>),
    /// The session was lost and is listening again: notifications sent
    /// meanwhile are gone.
    Reconnected,
}

impl Listener {
    /// Connect and listen.
    pub async fn connect(url: &PostgresUrl) -> Result<Listener, StoreError> {
        let mut inner = PgListener::connect(url.as_str()).await?;
        inner.listen(CHANNEL).await?;
        Ok(Listener { inner })
    }

    /// Wait for the next notification or a lost session. An error means
    /// the session is lost and could not be made again.
    pub async fn recv(&mut self) -> Result<Heard, StoreError> {
        Ok(match self.inner.try_recv().await? {
            Some(n) => Heard::Committed(n.payload().parse().ok()),
            None => Heard::Reconnected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_apart_and_passwords_never_shown() {
        assert!(PostgresUrl::is_postgres("postgres://h/db"));
        assert!(PostgresUrl::is_postgres("PostgreSQL://h/db"));
        assert!(!PostgresUrl::is_postgres("sqlite://postgres.db"));
        assert!(!PostgresUrl::is_postgres("postgres.db"));
        let url = PostgresUrl::parse("postgres://app:s3cret@db.internal:6432/conf").unwrap();
        assert_eq!(url.to_string(), "postgres://db.internal:6432/conf");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            redact("postgres://app:s3cret@h/db"),
            "postgres://app:***@h/db"
        );
        let bad = PostgresUrl::parse("postgres://app:s3cret@h:notaport/db").unwrap_err();
        assert!(!bad.to_string().contains("s3cret"), "{bad}");
        assert_eq!(bad.fix(), Some("correct it"));
    }
}
