//! The real binary: CLI flags, refusal to start, demo backend.

use std::process::Command;

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

#[test]
fn help_documents_every_flag() {
    let out = switchyard().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--proxy-listen",
        "--admin-listen",
        "--database-url",
        "--admin-token",
        "--log-format",
        "--workers",
        "SWITCHYARD_ADMIN_TOKEN",
        "demo-backend",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn public_admin_listener_without_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = switchyard()
        .args([
            "--admin-listen",
            "0.0.0.0:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ])
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.path().join("x.db").display()))
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].contains("--admin-token"), "{err}");
}

#[test]
fn bad_flag_values_are_one_line_errors() {
    let out = switchyard().args(["--workers", "0"]).output().unwrap();
    assert!(!out.status.success());
    let out = switchyard()
        .args(["--proxy-listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--proxy-listen"));
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    use crate::common::{Backend, Process, eventually};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("gw.db").display());
    let mut gw = Process::start(&db, &["--drain-seconds", "10"]);
    let slow = Backend::named("slow")
        .delay(Duration::from_millis(700))
        .start()
        .await;
    gw.create_route(serde_json::json!({"name": "s", "path": "/", "backends": [{"url": slow.url}]}))
        .await;

    let url = format!("http://{}/in-flight", gw.proxy_addr);
    let in_flight = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    assert!(
        eventually(Duration::from_secs(5), || async {
            (slow.hits() == 1).then_some(())
        })
        .await
        .is_some()
    );
    gw.signal("TERM");
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    let status = gw.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn demo_backend_on_port_zero_logs_the_port_it_took() {
    use crate::common::{KillOnDrop, logged_addr, raw_request};
    use std::io::BufRead;

    let mut child = switchyard()
        .args(["demo-backend", "--port", "0", "--name", "zero"])
        .env("SWITCHYARD_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _child = KillOnDrop(Some(child));
    let line = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("demo backend listening"))
        .expect("the listening line");
    let addr = logged_addr(&line, "addr");
    assert_ne!(addr.port(), 0, "{line}");
    let (status, _) = raw_request(
        addr,
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
}
