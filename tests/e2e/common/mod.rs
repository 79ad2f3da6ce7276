//! Test harness: a gateway started in-process on ephemeral ports with a
//! temporary database, fake backends, and small HTTP helpers. Everything
//! listens on 127.0.0.1 only.

pub mod backend;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use switchyard::{Gateway, Settings};
use tempfile::TempDir;

pub use backend::Backend;

/// A running gateway plus its database directory.
pub struct TestGateway {
    gateway: Option<Gateway>,
    pub dir: TempDir,
    pub http: reqwest::Client,
    token: Option<String>,
}

pub fn settings(dir: &TempDir) -> Settings {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Settings {
        proxy_listen: any,
        admin_listen: any,
        metrics_listen: None,
        database_url: format!("sqlite://{}", dir.path().join("switchyard.db").display()),
        admin_token: None,
        drain: Duration::from_secs(5),
        bootstrap: None,
        revision_retention: 1000,
        node_name: "e2e".into(),
        shared: Default::default(),
        proxy: Default::default(),
        // Every request's line goes through the writer, to a file here.
        access_log: Some(switchyard::access_log::Settings {
            sink: switchyard::access_log::Sink::File(dir.path().join("access.log")),
            format: switchyard::access_log::Format::Json,
        }),
        server: Default::default(),
    }
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), None).await
    }

    /// Start with settings adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(&dir);
        adjust(&mut s);
        let gateway = switchyard::start(s).await.expect("gateway starts");
        TestGateway {
            gateway: Some(gateway),
            dir,
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// A gateway on the inline server (`inline`) or hyper's alone, with one
    /// route `r` for every path to the backend at `url`.
    pub async fn routing_all_to(url: &str, inline: bool) -> Self {
        let gw = Self::start_with(|s| s.server.inline = inline).await;
        gw.create_route(serde_json::json!({"name": "r", "path": "/", "backends": [{"url": url}]}))
            .await;
        gw
    }

    /// Start on the database in `dir` (reused across restarts).
    pub async fn start_in(dir: TempDir, token: Option<&str>) -> Self {
        let mut s = settings(&dir);
        s.admin_token = token.map(str::to_string);
        let gateway = switchyard::start(s).await.expect("gateway starts");
        TestGateway {
            gateway: Some(gateway),
            dir,
            http: reqwest::Client::new(),
            token: token.map(str::to_string),
        }
    }

    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway().proxy_addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway().admin_addr, path)
    }

    /// GET through the proxy; returns status and body text.
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self.http.get(self.proxy_url(path)).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// GET through the proxy and parse the fake backend's JSON echo.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.get(path).await;
        let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, v)
    }

    /// An admin request with an optional JSON body.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.admin_url(path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// An admin request whose JSON answer is returned with its status.
    pub async fn admin_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let r = self.admin(method, path, body).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, v)
    }

    /// Create a route that must succeed.
    pub async fn create_route(&self, body: Value) -> Value {
        let (status, v) = self
            .admin_json(Method::POST, "/admin/routes", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    /// Create an upstream that must succeed.
    pub async fn create_upstream(&self, body: Value) -> Value {
        let (status, v) = self
            .admin_json(Method::POST, "/admin/upstreams", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    /// The live health of one upstream's backends (`/admin/upstreams/{name}/health`).
    pub async fn health(&self, upstream: &str) -> Value {
        let path = format!("/admin/upstreams/{upstream}/health");
        let (status, v) = self.admin_json(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    /// The health entry of the backend with `url`.
    pub async fn backend_health(&self, upstream: &str, url: &str) -> Value {
        let h = self.health(upstream).await;
        h["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["url"] == url)
            .cloned()
            .unwrap_or_else(|| panic!("{url} not in {h}"))
    }

    /// The backend name answering a GET through the proxy.
    pub async fn backend_of(&self, path: &str) -> String {
        let (status, v) = self.get_json(path).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["backend"].as_str().unwrap().to_string()
    }

    /// Scrape `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    }

    /// Stop the gateway and say how its drain ended.
    pub async fn shutdown(mut self) -> data_plane::server::Drained {
        self.gateway.take().unwrap().shutdown().await
    }

    /// Stop the gateway, keeping the database directory for a restart.
    pub async fn stop(mut self) -> TempDir {
        self.gateway.take().unwrap().shutdown().await;
        self.dir
    }
}

/// Poll `check` until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Read an HTTP response head from `s` (up to the blank line), and no
/// byte more.
pub async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "closed before the head ended: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Everything `s` sends until it closes, which must be `within` this long.
pub async fn read_to_close(s: &mut tokio::net::TcpStream, within: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("closed within {within:?}"))
        .unwrap();
    out
}

/// Send `request` (raw bytes) to `addr` over a fresh connection and return
/// the status code and body of the answer. For bytes that an HTTP client
/// library would rewrite before sending (dot segments, escapes).
pub async fn raw_request(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let out = read_to_close(&mut s, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `GET path` with the path bytes exactly as given.
pub async fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Run `cmd` to its exit, for at most `deadline`: past it the child is
/// killed and the test fails, so a start that should have been refused
/// cannot hang the suite by running.
pub fn output_within(cmd: &mut std::process::Command, deadline: Duration) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = err.read_to_end(&mut bytes);
        bytes
    });
    let end = std::time::Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("still running after {deadline:?}; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The real `switchyard` binary running as a child process.
pub struct Process {
    pub child: std::process::Child,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Every line the process wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Kills and reaps the child it holds when dropped (by its PID), however
/// the test ends.
pub struct KillOnDrop(pub Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The address a log line gives as field `key`: text (`key=…`) or JSON
/// (`"key":"…"` among its fields).
pub fn logged_addr(line: &str, key: &str) -> SocketAddr {
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return v["fields"][key].as_str().unwrap().parse().unwrap();
    }
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{key} in {line}"))
        .parse()
        .unwrap()
}

impl Process {
    /// Start the binary with `args` (listeners on 127.0.0.1:0 unless `args`
    /// name them) and wait for its "listening" log line to learn the ports.
    pub fn start(database_url: &str, args: &[&str]) -> Process {
        Self::start_with_env(database_url, args, &[])
    }

    /// [`Process::start`] with environment variables set (after the
    /// default `SWITCHYARD_LOG=info`, which they may override).
    pub fn start_with_env(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        use std::io::BufRead;
        let listeners = ["--proxy-listen", "--admin-listen"]
            .into_iter()
            .filter(|flag| !args.contains(flag))
            .flat_map(|flag| [flag, "127.0.0.1:0"]);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(listeners)
            .args(["--database-url", database_url])
            .args(args)
            .env("SWITCHYARD_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        // Until the Process exists, this guard owns the child: a start that
        // fails below must not leave the gateway running.
        let mut guard = KillOnDrop(Some(child));
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("switchyard listening")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line.clone());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway did not log its listeners within 30 s (did it exit?)");
        let (proxy_addr, admin_addr) = (
            logged_addr(&line, "proxy_addr"),
            logged_addr(&line, "admin_addr"),
        );
        Process {
            proxy_addr,
            admin_addr,
            child: guard.0.take().expect("the guard still owns the child"),
            log,
        }
    }

    /// Send a signal by PID (`kill -SIG pid`).
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Wait for the process to exit, at most `deadline`.
    pub async fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        eventually(deadline, || {
            let r = child.try_wait().unwrap();
            async move { r }
        })
        .await
        .expect("process exits in time")
    }
}

impl Process {
    /// Create a route through the admin API; it must succeed.
    pub async fn create_route(&self, body: Value) {
        let r = reqwest::Client::new()
            .post(format!("http://{}/admin/routes", self.admin_addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    /// GET an admin path (`/admin/...`) and parse its JSON answer.
    pub async fn admin_json(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.admin_addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the sample `name{labels…}` in a Prometheus text exposition
/// (all given labels must match; others may be present).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name).then_some((rest, value))
        })
        .find(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}
