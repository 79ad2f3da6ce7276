//! The binary as an operator meets it: listen addresses written as
//! `host:port` or `:port`, boolean environment variables, and log lines
//! whose fields read back as written.

use std::time::Duration;

use serde_json::Value;

use crate::common::{Process, eventually};

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
