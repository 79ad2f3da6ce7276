//! Wiring of the Switchyard process: both planes in one process.
//!
//! [`start`] takes the admin and proxy addresses, opens the store and
//! publishes the committed config, and only then lets the listeners
//! accept (the proxy takes traffic only once a snapshot is live); it
//! returns a [`Gateway`] handle, and [`Gateway::shutdown`] stops accepting
//! and drains. A failed start says why in one line ([`StartError`]) and
//! leaves no database (nor access log file) behind that it created. `main.rs` adds the CLI and
//! signals; the end-to-end tests call [`start`] directly with ephemeral
//! ports.
//!
//! The proxy runs on the runtime [`start`] is called on; the control plane
//! (store, publisher, admin API) on a runtime and threads of its own
//! (`control_runtime.rs`), so that a large change does not hold proxied
//! requests.

#![forbid(unsafe_code)]

mod control_runtime;
pub mod demo;
pub mod healthcheck;
pub mod probe;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use control_plane::ControlPlane;
use control_runtime::ControlRuntime;
use data_plane::DataPlane;
pub use data_plane::access_log;
pub use data_plane::proxy::ProxySettings;
pub use data_plane::server::ServerConfig;

use data_plane::access_log::AccessLog;
use data_plane::proxy::Proxy;
use data_plane::server::{self, Drained};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the process needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub proxy_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The metrics listener (`/metrics`, `/healthz`, `/readyz`), if any.
    pub metrics_listen: Option<SocketAddr>,
    pub database_url: String,
    pub admin_token: Option<String>,
    /// How long in-flight requests may take to finish at shutdown.
    pub drain: Duration,
    /// A whole-config document applied only to a never-configured database.
    pub bootstrap: Option<std::path::PathBuf>,
    /// Revisions kept in the config history.
    pub revision_retention: u64,
    /// This gateway's name among several (`/admin/status` shows it).
    pub node_name: String,
    /// On a shared database: the cache file and the version check.
    pub shared: control_plane::SharedOptions,
    /// Forwarding headers, request limits, tunnels.
    pub proxy: ProxySettings,
    /// Where each proxied request's line goes (none: no access log).
    pub access_log: Option<data_plane::access_log::Settings>,
    /// Proxy listener limits and TLS.
    pub server: ServerConfig,
}

/// Why the gateway could not start: each says what is wrong and what to
/// do, in one line. None returns its cause as `source()`; each message
/// already holds it, so a chain printed whole says it once.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "--admin-listen {0} is not a loopback address: set --admin-token (or SWITCHYARD_ADMIN_TOKEN) to expose the admin API"
    )]
    TokenRequired(SocketAddr),
    #[error("--admin-token must not be empty")]
    EmptyToken,
    #[error("{0} ({fix}pass --database-url sqlite:///path/to/file.db)", fix = .0.fix().map(|f| format!("{f}, or ")).unwrap_or_default())]
    Database(control_plane::OpenError),
    #[error("cannot load the config: {0}")]
    Config(control_plane::PublishError),
    /// A shared database that cannot be reached, with no cache to serve.
    #[error("{0}")]
    Unreachable(control_plane::StartError),
    #[error("{0}")]
    AccessLog(data_plane::access_log::OpenError),
    #[error(
        "cannot start the control plane's threads: {0} (the process may be at its limit of threads: raise `ulimit -u`)"
    )]
    ControlRuntime(std::io::Error),
    #[error("bootstrap file {path}: {reason}")]
    Bootstrap { path: String, reason: String },
    #[error("cannot listen on {addr}: {}", bind_failure(error, flag))]
    Bind {
        addr: SocketAddr,
        /// The flag that sets the address.
        flag: &'static str,
        error: std::io::Error,
    },
}

fn bind_failure(error: &std::io::Error, flag: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "the address is already in use (stop what listens there, or choose another address with {flag})"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("no interface of this machine has that address (choose another with {flag})")
        }
        _ => format!("{error} (check {flag})"),
    }
}

impl From<control_plane::StartError> for StartError {
    fn from(e: control_plane::StartError) -> Self {
        match e {
            control_plane::StartError::Publish(e) => e.into(),
            other => StartError::Unreachable(other),
        }
    }
}

impl From<control_plane::PublishError> for StartError {
    fn from(e: control_plane::PublishError) -> Self {
        use control_plane::{PublishError, StoreError};
        match e {
            PublishError::Store(StoreError::Open(e)) => StartError::Database(e),
            other => StartError::Config(other),
        }
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub plane: Arc<DataPlane>,
    probe: Arc<probe::Probe>,
    /// Ends the `/admin/events` streams at shutdown.
    events: Arc<control_plane::api::events::Events>,
    /// Stops following a shared database at shutdown.
    control: ControlPlane,
    /// Written to the end at shutdown; reopened on SIGHUP.
    access_log: Option<AccessLog>,
    stop: watch::Sender<bool>,
    proxy: JoinHandle<Drained>,
    admin: JoinHandle<()>,
    /// The metrics listener's stop and task.
    metrics: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// Where the control plane and the admin API run.
    control_runtime: ControlRuntime,
}

/// The default `--node-name`: the host name as the kernel has it (a
/// container's is its own), else `switchyard`.
pub fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchyard".to_string())
}

/// Take `addr` (bound, not yet listening: connections are refused until
/// [`listen`]), so that an address in use stops the start before the
/// database is touched.
fn reserve(addr: SocketAddr, flag: &'static str) -> Result<TcpSocket, StartError> {
    let failed = |error| StartError::Bind { addr, flag, error };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(failed)?;
    // As TcpListener::bind does: a restart need not wait out TIME_WAIT.
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(addr).map_err(failed)?;
    Ok(socket)
}

/// Start accepting on a [`reserve`]d address.
fn listen(socket: TcpSocket, flag: &'static str) -> Result<TcpListener, StartError> {
    let addr = socket.local_addr().expect("a bound socket has an address");
    socket
        .listen(1024)
        .map_err(|error| StartError::Bind { addr, flag, error })
}

/// Read and check the `--bootstrap` file.
fn read_bootstrap(path: &Path) -> Result<control_plane::model::Config, StartError> {
    let failed = |reason: String| StartError::Bootstrap {
        path: path.display().to_string(),
        reason,
    };
    let document = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    control_plane::read_bootstrap(&document).map_err(|e| failed(e.to_string()))
}

/// Start both planes. Returns once both listeners accept connections and
/// the stored config is live.
///
/// Order: everything that can be checked without side effects (token,
/// bootstrap file, database URL), then both addresses are taken, then the
/// database is opened and its config published, and only then do the
/// listeners accept. A start that fails after creating the database
/// removes it again, so a failed start leaves no files behind.
pub async fn start(settings: Settings) -> Result<Gateway, StartError> {
    match settings.admin_token.as_deref() {
        Some("") => return Err(StartError::EmptyToken),
        None if !settings.admin_listen.ip().is_loopback() => {
            return Err(StartError::TokenRequired(settings.admin_listen));
        }
        _ => {}
    }
    // A panic while handling a request is answered and logged once, with
    // the request's ID; any other is logged through `tracing` too.
    data_plane::recover::install_hook();
    let bootstrap = match &settings.bootstrap {
        Some(path) => Some((path, read_bootstrap(path)?)),
        None => None,
    };
    let database =
        control_plane::Database::parse(&settings.database_url).map_err(StartError::Database)?;
    let admin_socket = reserve(settings.admin_listen, "--admin-listen")?;
    let proxy_socket = reserve(settings.proxy_listen, "--proxy-listen")?;
    let metrics_socket = match settings.metrics_listen {
        Some(addr) => Some(reserve(addr, "--metrics-listen")?),
        None => None,
    };
    // Every listener stops when `stop` says so, or is dropped (a start
    // that fails from here on).
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The metrics listener answers at once: /healthz that the process is
    // up, /readyz that it is not ready yet.
    // It stops last, after the drain: until then /readyz says "draining".
    let probe = Arc::new(probe::Probe::default());
    let (metrics_stop, metrics_stopped) = watch::channel(false);
    let (metrics, metrics_addr) = match metrics_socket {
        Some(socket) => {
            let listener = listen(socket, "--metrics-listen")?;
            let addr = listener.local_addr().expect("bound socket has an address");
            let app = probe::router(Arc::clone(&probe));
            let stopped = wait(metrics_stopped);
            let task = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
            (Some(task), Some(addr))
        }
        None => (None, None),
    };

    // A SQLite file this start creates goes again if the start fails.
    let created = match &database {
        control_plane::Database::Sqlite(file) if !file.exists() => Some(file),
        _ => None,
    };
    let plane = Arc::new(DataPlane::new());
    // An access log file this start creates goes again if the start fails.
    let log_file = match &settings.access_log {
        Some(access_log::Settings {
            sink: access_log::Sink::File(path),
            ..
        }) if !path.exists() => Some(path.clone()),
        _ => None,
    };
    let access_log = match &settings.access_log {
        Some(s) => Some(
            AccessLog::start(s, Arc::clone(&plane.stats().access_log_dropped))
                .map_err(StartError::AccessLog)?,
        ),
        None => None,
    };
    let remove_created = || {
        if let Some(file) = created {
            file.remove();
        }
        if let Some(path) = &log_file {
            let _ = std::fs::remove_file(path);
        }
    };
    // The control plane runs on its own runtime (`control_runtime`): from
    // opening the store to the admin listener and the tasks they start.
    let control_runtime = match ControlRuntime::start() {
        Ok(runtime) => runtime,
        Err(e) => {
            remove_created();
            return Err(StartError::ControlRuntime(e));
        }
    };
    let started = control_runtime.run({
        let database = database.clone();
        let plane = Arc::clone(&plane);
        let retention = settings.revision_retention;
        let shared = settings.shared.clone();
        async move { ControlPlane::start(&database, plane, retention, &shared).await }
    });
    let control = match started.await {
        Ok(control) => control,
        Err(e) => {
            remove_created();
            return Err(e.into());
        }
    };
    probe.publishing(Arc::clone(&control.publisher));
    let ready = async {
        if let Some((path, config)) = bootstrap {
            let applied = control_runtime
                .run({
                    let control = control.clone();
                    async move { control.bootstrap(config).await }
                })
                .await
                .map_err(|e| StartError::Bootstrap {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            match applied {
                Some(version) => {
                    tracing::info!(path = %path.display(), version, "bootstrap config applied")
                }
                None => {
                    tracing::info!(path = %path.display(), "database already configured: bootstrap file ignored")
                }
            }
        }
        // The admin listener is the control runtime's: its connections
        // are polled there.
        let admin = {
            let _on_control = control_runtime.handle().enter();
            listen(admin_socket, "--admin-listen")?
        };
        Ok((admin, listen(proxy_socket, "--proxy-listen")?))
    };
    let (admin_listener, proxy_listener) = match ready.await {
        Ok(listeners) => listeners,
        Err(e) => {
            close_control(&control_runtime, &control).await;
            remove_created();
            return Err(e);
        }
    };
    let admin_addr = admin_listener
        .local_addr()
        .expect("bound socket has an address");
    let proxy_addr = proxy_listener
        .local_addr()
        .expect("bound socket has an address");

    let router = control.router(settings.admin_token.as_deref(), &settings.node_name);
    let events = Arc::clone(&control.events);
    let admin_stop = wait(stopped.clone());
    let admin = control_runtime.handle().spawn(async move {
        // With the client's address: revisions and audit lines record it.
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(admin_listener, app)
            .with_graceful_shutdown(admin_stop)
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    let proxy = tokio::spawn(server::serve(
        proxy_listener,
        Proxy::new(Arc::clone(&plane), settings.proxy, access_log.clone()),
        settings.server,
        wait(stopped),
        settings.drain,
    ));
    probe.set(probe::Stage::Ready);
    match metrics_addr {
        Some(metrics_addr) => {
            tracing::info!(%proxy_addr, %admin_addr, %metrics_addr, "switchyard listening")
        }
        None => tracing::info!(%proxy_addr, %admin_addr, "switchyard listening"),
    }
    Ok(Gateway {
        proxy_addr,
        admin_addr,
        metrics_addr,
        plane,
        probe,
        events,
        control,
        access_log,
        stop,
        proxy,
        admin,
        metrics: metrics.map(|task| (metrics_stop, task)),
        control_runtime,
    })
}

/// Close the control plane on its own runtime (its store's connections
/// are that runtime's).
async fn close_control(runtime: &ControlRuntime, control: &ControlPlane) {
    let control = control.clone();
    runtime.run(async move { control.close().await }).await;
}

impl Gateway {
    /// Stop accepting, let in-flight requests finish (bounded by the drain
    /// period), and wait for both listeners to close.
    pub async fn shutdown(self) -> Drained {
        self.probe.set(probe::Stage::Draining);
        let _ = self.stop.send(true);
        self.events.close();
        let drained = self.proxy.await.unwrap_or(Drained::TimedOut);
        let _ = self.admin.await;
        if let Some((stop, task)) = self.metrics {
            let _ = stop.send(true);
            let _ = task.await;
        }
        close_control(&self.control_runtime, &self.control).await;
        self.control_runtime.stop().await;
        if let Some(log) = self.access_log {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
        drained
    }

    /// The access log, if there is one (to reopen its file on SIGHUP).
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    /// The `/admin/events` hub (its subscribers, whether it samples).
    pub fn events(&self) -> &control_plane::api::events::Events {
        &self.events
    }

    /// Where the process stands, as `/readyz` says.
    pub fn stage(&self) -> probe::Stage {
        self.probe.stage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control_plane::{PublishError, StoreError};

    /// An error and its `source()` chain as `{:#}` would print it.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut line = e.to_string();
        let mut next = e.source();
        while let Some(cause) = next {
            line = format!("{line}: {cause}");
            next = cause.source();
        }
        line
    }

    #[test]
    fn a_start_error_says_its_cause_once() {
        // sqlx's own Io error both prints and returns its io::Error.
        let sqlx = sqlx::Error::Io(std::io::Error::other("disk on fire"));
        let e = StartError::from(PublishError::Store(StoreError::Database(sqlx)));
        assert_eq!(
            chain(&e).matches("disk on fire").count(),
            1,
            "{}",
            chain(&e)
        );
        let e = StartError::Bind {
            addr: "127.0.0.1:8080".parse().unwrap(),
            flag: "--proxy-listen",
            error: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            chain(&e),
            "cannot listen on 127.0.0.1:8080: the address is already in use \
             (stop what listens there, or choose another address with --proxy-listen)"
        );
    }
}
