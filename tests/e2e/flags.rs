//! The binary as an operator meets it: listen addresses written as
//! `host:port` or `:port`, boolean environment variables, and log lines
//! whose fields read back as written.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Backend, Process, eventually, output_within};

fn db_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("gw.db").display())
}

/// The first JSON log line of `gw` that `pick` accepts, within 5 s.
async fn json_line(gw: &Process, pick: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(5), || {
        let lines = gw.log.lock().unwrap().clone();
        let found = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| pick(v));
        async move { found }
    })
    .await
    .unwrap_or_else(|| panic!("no such line in {:#?}", gw.log.lock().unwrap()))
}

#[tokio::test]
async fn a_refused_requests_debug_line_has_its_request_id_unquoted() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Process::start_with_env(
        &db_url(&dir),
        &["--log-format", "json"],
        &[("SWITCHYARD_LOG", "info,data_plane=debug")],
    );
    let r = reqwest::Client::new()
        .get(format!("http://{}/no/route/here", gw.proxy_addr))
        .header("x-request-id", "trace-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let line = json_line(&gw, |v| v["fields"]["message"] == "proxy error").await;
    assert_eq!(line["fields"]["request_id"], "trace-7", "{line}");
}

#[tokio::test]
async fn listen_addresses_take_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    // localhost is a loopback name: no admin token needed.
    let gw = Process::start(
        &db_url(&dir),
        &[
            "--admin-listen",
            "localhost:0",
            "--proxy-listen",
            "localhost:0",
        ],
    );
    assert_eq!(gw.admin_addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_eq!(gw.proxy_addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    let r = reqwest::get(format!("http://{}/admin/routes", gw.admin_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn boolean_variables_take_one_yes_on_in_any_case() {
    let a = Backend::named("a").start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Process::start_with_env(
        &db_url(&dir),
        &["--log-format", "json"],
        &[
            ("SWITCHYARD_NO_ACCESS_LOG", "1"),
            ("SWITCHYARD_NO_REQUEST_METRICS", "yes"),
            ("SWITCHYARD_FORWARDED_HEADER", "On"),
            ("SWITCHYARD_NO_INLINE_SERVER", "TRUE"),
        ],
    );
    let http = reqwest::Client::new();
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let echo: Value = http
        .get(format!("http://{}/x", gw.proxy_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(echo["headers"]["forwarded"].is_string(), "{echo}");
    let metrics = http
        .get(format!("http://{}/metrics", gw.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("switchyard_requests_total{"), "{metrics}");
    // The audit line of the POST proves the log is read; no access line.
    json_line(&gw, |v| v["target"] == "switchyard::audit").await;
    let lines = gw.log.lock().unwrap().clone();
    assert!(!lines.iter().any(|l| l.contains("switchyard::access")));
}

#[tokio::test]
async fn a_boolean_variable_set_to_no_leaves_the_flag_off() {
    let a = Backend::named("a").start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Process::start_with_env(
        &db_url(&dir),
        &["--log-format", "json"],
        &[
            ("SWITCHYARD_NO_ACCESS_LOG", "No"),
            ("SWITCHYARD_FORWARDED_HEADER", "0"),
        ],
    );
    let http = reqwest::Client::new();
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let echo: Value = http
        .get(format!("http://{}/x", gw.proxy_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(echo["headers"].get("forwarded").is_none(), "{echo}");
    json_line(&gw, |v| v["target"] == "switchyard::access").await;
}

/// Start the binary on the database in `dir` (listeners on 127.0.0.1:0)
/// with `args` and `env`: it must be refused. Returns its stderr.
fn refused(dir: &tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "--proxy-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--database-url", &db_url(dir)])
            .args(args)
            .envs(env.iter().copied()),
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "{args:?} {env:?} accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_boolean_variable_with_another_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused(&dir, &[], &[("SWITCHYARD_NO_ACCESS_LOG", "maybe")]);
    assert!(
        err.contains("--no-access-log") && err.contains("maybe"),
        "{err}"
    );
}

/// `/admin/status` names the gateway that answers: `--node-name`, else the
/// host name; a name that is blank or has control characters is refused.
#[tokio::test]
async fn the_status_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Process::start(&db_url(&dir), &["--node-name", "gw-east-1"]);
    let status = gw.admin_json("/admin/status").await;
    assert_eq!(status["node"], "gw-east-1");
    drop(gw);
    let gw = Process::start(&db_url(&dir), &[]);
    let status = gw.admin_json("/admin/status").await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(status["node"], host.trim());
    drop(gw);
    for bad in ["", "a\tb"] {
        let err = refused(&dir, &["--node-name", bad], &[]);
        assert!(
            err.contains("--node-name") && err.contains("printable"),
            "{err}"
        );
    }
}

/// An access log file that cannot be opened stops the start in one line
/// naming it (and creates no database); both flags at once are refused.
#[test]
fn an_access_log_file_that_cannot_be_opened_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("access.log");
    let err = refused(&dir, &["--access-log", missing.to_str().unwrap()], &[]);
    let line = format!(
        "cannot open the access log {}: No such file or directory (os error 2) \
         (choose a writable file with --access-log)",
        missing.display()
    );
    assert!(err.trim_end().ends_with(&line), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!dir.path().join("gw.db").exists());
    let err = refused(
        &dir,
        &[
            "--no-access-log",
            "--access-log",
            dir.path().join("a.log").to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        err.contains("--access-log") && err.contains("--no-access-log"),
        "{err}"
    );
}
