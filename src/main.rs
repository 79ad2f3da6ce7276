//! The `switchyard` binary: CLI, logging, runtime, signals.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// Switchyard: a dynamic HTTP gateway. Routes, upstream pools, backends and
/// weights change live through the admin API; the config lives in SQLite.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Address of the proxy listener.
    #[arg(long, env = "SWITCHYARD_PROXY_LISTEN", default_value = "0.0.0.0:8080")]
    proxy_listen: SocketAddr,

    /// Address of the admin API (a non-loopback address needs --admin-token).
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    admin_listen: SocketAddr,

    /// SQLite database holding the config (created if missing).
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

    /// Seconds in-flight requests may take to finish on SIGTERM/SIGINT.
    #[arg(long, env = "SWITCHYARD_DRAIN_SECONDS", default_value_t = 30)]
    drain_seconds: u64,
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
        /// Port to listen on.
        #[arg(long)]
        port: u16,
        /// Name reported in every response.
        #[arg(long)]
        name: String,
        /// Address to bind.
        #[arg(long, default_value_t = Ipv4Addr::LOCALHOST.into())]
        host: std::net::IpAddr,
    },
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
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.workers {
        runtime.worker_threads(n.into());
    }
    let runtime = runtime.build().context("cannot start the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Some(Command::DemoBackend { port, name, host }) => {
                let addr = SocketAddr::new(host, port);
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                tracing::info!(%addr, %name, "demo backend listening");
                switchyard::demo::serve(listener, name, termination()).await;
                Ok(())
            }
            None => {
                let gateway = switchyard::start(switchyard::Settings {
                    proxy_listen: cli.proxy_listen,
                    admin_listen: cli.admin_listen,
                    database_url: cli.database_url,
                    admin_token: cli.admin_token,
                    drain: Duration::from_secs(cli.drain_seconds),
                    bootstrap: cli.bootstrap,
                })
                .await?;
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

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Err(e) = run(cli) {
        eprintln!("switchyard: {e:#}");
        std::process::exit(1);
    }
}
