//! The `switchyard` binary: CLI, logging, runtime, signals.

mod cli;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use data_plane::{access_log, proxy, server};

/// Switchyard: a dynamic HTTP gateway. Routes, upstream pools, backends and
/// weights change live through the admin API; the config lives in SQLite.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about,
    after_help = "The variable of an on/off flag takes 1/0, true/false, yes/no or on/off, in any case."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Address of the proxy listener: IP:PORT, HOST:PORT (resolved at
    /// start) or :PORT (every interface).
    #[arg(long, env = "SWITCHYARD_PROXY_LISTEN", default_value = "0.0.0.0:8080",
          value_parser = cli::listen_addr)]
    proxy_listen: SocketAddr,

    /// Address of the admin API, written like --proxy-listen (a
    /// non-loopback address needs --admin-token).
    #[arg(long, env = "SWITCHYARD_ADMIN_LISTEN", default_value = "127.0.0.1:8081",
          value_parser = cli::listen_addr)]
    admin_listen: SocketAddr,

    /// Address of the metrics listener (GET /metrics, /healthz, /readyz
    /// only; no admin API, so no token needed), written like
    /// --proxy-listen [default: none].
    #[arg(long, env = "SWITCHYARD_METRICS_LISTEN", value_parser = cli::listen_addr)]
    metrics_listen: Option<SocketAddr>,

    /// Database holding the config: sqlite://FILE (created if missing), or
    /// postgres://USER:PASSWORD@HOST:PORT/DB (shared by several gateways;
    /// sslmode and the other libpq parameters go in the query).
    #[arg(
        long,
        env = "SWITCHYARD_DATABASE_URL",
        default_value = "sqlite://switchyard.db"
    )]
    database_url: String,

    /// Bearer token required on every /admin request.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,

    /// Log output format.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Runtime worker threads [default: number of cores].
    #[arg(long, env = "SWITCHYARD_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,

    /// Whole-config JSON document (the format of GET /admin/config) applied
    /// only when the database has never been configured.
    #[arg(long, env = "SWITCHYARD_BOOTSTRAP")]
    bootstrap: Option<std::path::PathBuf>,

    /// Revisions kept in the config history (GET /admin/revisions); older
    /// ones are pruned as new ones are made.
    #[arg(long, env = "SWITCHYARD_REVISION_RETENTION", default_value_t = control_plane::store::revisions::DEFAULT_RETENTION,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    revision_retention: u64,

    /// This gateway's name among several on one config: shown by
    /// /admin/status (default: the host name).
    #[arg(long, env = "SWITCHYARD_NODE_NAME", value_parser = node_name,
          default_value_t = switchyard::default_node_name())]
    node_name: String,

    /// On PostgreSQL: the file this gateway keeps its last-known-good config
    /// in, and starts from when the database cannot be reached.
    #[arg(long, env = "SWITCHYARD_CACHE_FILE", default_value = control_plane::DEFAULT_CACHE_FILE)]
    cache_file: PathBuf,

    /// On PostgreSQL: milliseconds between checks of the database's config
    /// version, which catch changes whose notification was missed.
    #[arg(long, env = "SWITCHYARD_STORE_CHECK_MS", default_value_t = control_plane::shared::DEFAULT_CHECK.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    store_check_ms: u64,

    /// Seconds in-flight requests and open WebSockets may take to finish on
    /// SIGTERM/SIGINT.
    #[arg(long, env = "SWITCHYARD_DRAIN_SECONDS", default_value_t = 30)]
    drain_seconds: u64,

    /// PEM certificate chain: terminate TLS on the proxy listener (needs
    /// --tls-key). ALPN offers h2 and http/1.1.
    #[arg(long, env = "SWITCHYARD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SWITCHYARD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Comma-separated CIDRs of proxies in front of Switchyard whose
    /// X-Forwarded-*, X-Real-IP and Forwarded headers are kept and extended
    /// (default: none — those headers are replaced).
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<ipnet::IpNet>,

    /// Also send an RFC 7239 Forwarded header upstream.
    #[arg(long, env = "SWITCHYARD_FORWARDED_HEADER", value_parser = cli::Boolish::new())]
    forwarded_header: bool,

    /// Largest request head in bytes (431 past it; at least 8192).
    #[arg(long, env = "SWITCHYARD_MAX_HEADER_BYTES", default_value_t = server::DEFAULT_MAX_HEADER_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(8192..=16 * 1024 * 1024))]
    max_header_bytes: u64,

    /// Longest request target (path and query) in bytes (414 past it).
    #[arg(long, env = "SWITCHYARD_MAX_URI_BYTES", default_value_t = proxy::DEFAULT_MAX_URI_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(256..=1024 * 1024))]
    max_uri_bytes: u64,

    /// Request body limit of routes that set no max_body_bytes (413 past it).
    #[arg(long, env = "SWITCHYARD_MAX_BODY_BYTES", default_value_t = proxy::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: u64,

    /// Milliseconds a client has to send a request head; also the longest
    /// idle time of a keep-alive connection between requests.
    #[arg(long, env = "SWITCHYARD_HEADER_READ_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_ms: u64,

    /// Milliseconds a client may pause while sending a request body (408
    /// past it, never held against the backend).
    #[arg(long, env = "SWITCHYARD_CLIENT_BODY_TIMEOUT_MS", default_value_t = proxy::DEFAULT_CLIENT_BODY_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    client_body_timeout_ms: u64,

    /// Milliseconds a client (or a tunnel's backend) may take no byte of
    /// what is written to it before it is disconnected.
    #[arg(long, env = "SWITCHYARD_SEND_TIMEOUT_MS", default_value_t = proxy::DEFAULT_SEND_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    send_timeout_ms: u64,

    /// Most client connections open at once (more wait in the backlog).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,

    /// Seconds without traffic after which a WebSocket (upgraded) connection
    /// is closed.
    #[arg(long, env = "SWITCHYARD_TUNNEL_IDLE_SECONDS", default_value_t = proxy::DEFAULT_TUNNEL_IDLE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    tunnel_idle_seconds: u64,

    /// Do not write one access-log line per proxied request.
    #[arg(long, env = "SWITCHYARD_NO_ACCESS_LOG", value_parser = cli::Boolish::new())]
    no_access_log: bool,

    /// Append the access log to this file instead of stderr (created if
    /// missing; opened again by name on SIGHUP, for logrotate).
    #[arg(
        long,
        env = "SWITCHYARD_ACCESS_LOG",
        value_name = "FILE",
        conflicts_with = "no_access_log"
    )]
    access_log: Option<PathBuf>,

    /// Do not count requests per route and backend (/metrics then has only
    /// config, health and process metrics). For measuring their cost.
    #[arg(long, env = "SWITCHYARD_NO_REQUEST_METRICS", value_parser = cli::Boolish::new())]
    no_request_metrics: bool,

    /// Serve every plain HTTP/1.1 request with hyper's server, not the
    /// inline server (which serves bodiless requests itself and hands the
    /// rest to hyper's). For comparing the two, or working around a client
    /// the inline server mishandles.
    #[arg(long, env = "SWITCHYARD_NO_INLINE_SERVER", value_parser = cli::Boolish::new())]
    no_inline_server: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a small JSON echo server (with /healthz) for demos and tests.
    DemoBackend {
        /// Port to listen on (0: one the system chooses, logged at start).
        #[arg(long)]
        port: u16,
        /// Name reported in every response.
        #[arg(long)]
        name: String,
        /// Address to bind.
        #[arg(long, default_value_t = Ipv4Addr::LOCALHOST.into())]
        host: std::net::IpAddr,
    },
    /// GET an http:// URL and exit 0 if the answer is a 2xx, else 1 (for a
    /// container's HEALTHCHECK: `switchyard healthcheck
    /// http://127.0.0.1:9090/healthz`).
    Healthcheck {
        /// The URL to GET.
        url: String,
        /// Milliseconds to wait for the answer.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

/// A node name: 1 to 64 printable characters.
fn node_name(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > 64 || v.chars().any(char::is_control) {
        return Err("must be 1 to 64 printable characters, such as gw-1".into());
    }
    Ok(v.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Where the access log goes, in the log's format. On stderr it is part of
/// the log, so `SWITCHYARD_LOG` can turn it off (as it could when `tracing`
/// wrote it); a file gets every line.
fn access_log_settings(cli: &Cli) -> Option<access_log::Settings> {
    let format = match cli.log_format {
        LogFormat::Text => access_log::Format::Text,
        LogFormat::Json => access_log::Format::Json,
    };
    let sink = match &cli.access_log {
        _ if cli.no_access_log => return None,
        Some(path) => access_log::Sink::File(path.clone()),
        None if tracing::enabled!(target: "switchyard::access", tracing::Level::INFO) => {
            access_log::Sink::Stderr
        }
        None => return None,
    };
    Some(access_log::Settings { sink, format })
}

/// On SIGHUP (logrotate's signal), open the access log file (`log`, if the
/// log goes to one) again by name; SIGHUP never stops the gateway.
fn reopen_on_hangup(log: Option<access_log::AccessLog>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match &log {
                    Some(log) => log.reopen(),
                    None => tracing::info!("SIGHUP: no access log file to reopen"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = log;
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // One worker: a current-thread runtime, which spares the work-stealing
    // scheduler's cross-thread wake-ups between a client connection and its
    // pooled upstream connection. More: the multi-thread runtime.
    let mut runtime = match cli.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    if let Some(n) = cli.workers.filter(|n| *n > 1) {
        runtime.worker_threads(n.into());
    }
    let runtime = runtime.build().context("cannot start the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Some(Command::Healthcheck { url, timeout_ms }) => {
                let status =
                    switchyard::healthcheck::check(&url, Duration::from_millis(timeout_ms)).await?;
                println!("{url}: {status}");
                Ok(())
            }
            Some(Command::DemoBackend { port, name, host }) => {
                let addr = SocketAddr::new(host, port);
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                // The bound address: with `--port 0` it names the port chosen.
                let addr = listener.local_addr().unwrap_or(addr);
                tracing::info!(%addr, %name, "demo backend listening");
                switchyard::demo::serve(listener, name, termination()).await;
                Ok(())
            }
            None => {
                let access_log = access_log_settings(&cli);
                let log_file = cli.access_log.is_some();
                let tls = match (&cli.tls_cert, &cli.tls_key) {
                    (Some(cert), Some(key)) => Some(server::tls_config(cert, key)?),
                    _ => None,
                };
                let gateway = switchyard::start(switchyard::Settings {
                    proxy_listen: cli.proxy_listen,
                    admin_listen: cli.admin_listen,
                    metrics_listen: cli.metrics_listen,
                    database_url: cli.database_url,
                    admin_token: cli.admin_token,
                    drain: Duration::from_secs(cli.drain_seconds),
                    bootstrap: cli.bootstrap,
                    revision_retention: cli.revision_retention,
                    node_name: cli.node_name,
                    shared: control_plane::SharedOptions {
                        cache_file: cli.cache_file,
                        check: Duration::from_millis(cli.store_check_ms),
                    },
                    proxy: switchyard::ProxySettings {
                        trusted_proxies: cli.trusted_proxies,
                        forwarded_header: cli.forwarded_header,
                        max_uri_bytes: cli.max_uri_bytes as usize,
                        max_body_bytes: cli.max_body_bytes,
                        client_body_timeout: Duration::from_millis(cli.client_body_timeout_ms),
                        tunnel_idle: Duration::from_secs(cli.tunnel_idle_seconds),
                        send_timeout: Duration::from_millis(cli.send_timeout_ms),
                        metrics: !cli.no_request_metrics,
                    },
                    access_log,
                    server: switchyard::ServerConfig {
                        max_header_bytes: cli.max_header_bytes as usize,
                        header_read_timeout: Duration::from_millis(cli.header_read_timeout_ms),
                        max_connections: cli.max_connections as usize,
                        tls,
                        inline: !cli.no_inline_server,
                    },
                })
                .await?;
                reopen_on_hangup(gateway.access_log().filter(|_| log_file).cloned());
                termination().await;
                tracing::info!("shutting down: draining in-flight requests");
                match gateway.shutdown().await {
                    data_plane::server::Drained::Clean => tracing::info!("drained, bye"),
                    data_plane::server::Drained::TimedOut => {
                        tracing::warn!("drain period over, closing remaining connections")
                    }
                }
                Ok(())
            }
        }
    })
}

/// An error and its causes on one line. Switchyard's own errors hold
/// their cause in their message and return none; some libraries' errors
/// do both (sqlx's, rustls' inside `server::TlsError`), so a cause whose
/// text the line already holds is left out rather than said twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Err(e) = run(cli) {
        eprintln!("switchyard: {}", one_line(&e));
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn one_line_says_each_cause_once() {
        let io = || std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(io()).context("cannot start");
        assert_eq!(one_line(&e), "cannot start: disk on fire");
        let e = anyhow::Error::new(Repeats(io())).context("cannot start");
        assert_eq!(one_line(&e), "cannot start: outer: disk on fire");
    }
}
