//! Several gateways on one PostgreSQL database: writes on any node go
//! live everywhere, conflicting writes on two nodes have one winner, a
//! node starts from its cache file while the database is away, a
//! database restart loses no acknowledged write, a node that missed
//! notifications catches up by its periodic version check, and a large
//! config written again keeps the ids of the backends that stay.
//!
//! They need a PostgreSQL server: `.ci/postgres.sh` (run by `.ci/run`)
//! starts a throwaway one and runs them with `--ignored`, one at a time
//! (one of them restarts the server). Each test makes its own database.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

use crate::common::{Backend, TestGateway, eventually, sample};

/// A version check that never comes within a test: what converges then
/// came by `NOTIFY`.
const NO_CHECK: u64 = 3_600_000;

/// The test server's URL (set by `.ci/postgres.sh`).
fn server() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES")
        .expect("SWITCHYARD_TEST_POSTGRES is unset: run these tests with bash .ci/postgres.sh")
}

/// A new, empty database on the test server; its URL.
async fn fresh_database(name: &str) -> String {
    let server = server();
    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
    let db = format!("sy_{name}_{}", std::process::id());
    conn.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
        .await
        .unwrap();
    conn.execute(format!("CREATE DATABASE {db}").as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// Run the cluster's `pg_ctl` with `action` (`stop -m fast`, `start`).
fn pg_ctl(action: &str) {
    let command = std::env::var("SWITCHYARD_TEST_PG_CTL").expect("set by .ci/postgres.sh");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{command} {action}"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {action}");
}

/// A gateway named `name` on the database at `url`, its cache file in
/// `dir`, checking the database's version every `check_ms`.
async fn node(url: &str, name: &str, dir: &Path, check_ms: u64) -> TestGateway {
    node_with(url, name, dir, check_ms, None).await
}

/// Two gateways, `a` and `b`, started together (see [`node`]).
async fn pair(url: &str, dir: &Path, check_ms: u64) -> (TestGateway, TestGateway) {
    tokio::join!(node(url, "a", dir, check_ms), node(url, "b", dir, check_ms))
}

/// [`node`] with a `--bootstrap` file.
async fn node_with(
    url: &str,
    name: &str,
    dir: &Path,
    check_ms: u64,
    bootstrap: Option<&Path>,
) -> TestGateway {
    let (url, cache) = (url.to_string(), dir.join(format!("{name}.json")));
    let bootstrap = bootstrap.map(Path::to_path_buf);
    TestGateway::start_with(move |s| {
        s.bootstrap = bootstrap;
        s.database_url = url;
        s.node_name = name.into();
        s.shared.cache_file = cache;
        s.shared.check = Duration::from_millis(check_ms);
        s.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

async fn config(node: &TestGateway) -> Value {
    let (status, v) = node.admin_json(Method::GET, "/admin/config", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Wait until every node serves the same config, and return it.
async fn converged(nodes: &[&TestGateway]) -> Value {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut seen = Vec::new();
        for node in nodes {
            let (_, status) = node.admin_json(Method::GET, "/admin/status", None).await;
            seen.push((status["config_version"].clone(), config(node).await));
        }
        if seen.windows(2).all(|w| w[0] == w[1]) && seen[0].0 == seen[0].1["version"] {
            return seen.swap_remove(0).1;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the nodes did not converge: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn store_up(node: &TestGateway) -> Option<f64> {
    sample(&node.metrics().await, "switchyard_store_up", &[])
}

/// Three gateways start together on an empty database, each with the
/// same bootstrap file (the migrations run once, the file is applied
/// once), each takes writes, and every one of them ends with the same
/// config, which each proxies; the node that took a write serves it as
/// soon as it answers.
#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh runs these"]
async fn three_gateways_on_one_database_converge() {
    let url = fresh_database("converge").await;
    let dir = tempfile::tempdir().unwrap();
    let seed = Backend::named("seed").start().await;
    let bootstrap = dir.path().join("bootstrap.json");
    let doc = json!({
        "upstreams": [{"name": "seed", "backends": [{"url": seed.url}]}],
        "routes": [{"name": "seed", "path": "/seed", "upstream": "seed"}]
    });
    std::fs::write(&bootstrap, doc.to_string()).unwrap();
    let (a, b, c) = tokio::join!(
        node_with(&url, "a", dir.path(), NO_CHECK, Some(&bootstrap)),
        node_with(&url, "b", dir.path(), NO_CHECK, Some(&bootstrap)),
        node_with(&url, "c", dir.path(), NO_CHECK, Some(&bootstrap)),
    );
    let doc = converged(&[&a, &b, &c]).await;
    assert_eq!(doc["version"], 1, "bootstrapped once: {doc}");
    let (_, revisions) = a.admin_json(Method::GET, "/admin/revisions", None).await;
    assert_eq!(
        revisions["items"].as_array().unwrap().len(),
        1,
        "{revisions}"
    );
    for node in [&a, &b, &c] {
        assert_eq!(node.backend_of("/seed").await, "seed");
    }
    let (one, two) = (
        Backend::named("one").start().await,
        Backend::named("two").start().await,
    );
    a.create_upstream(json!({"name": "pool", "backends": [{"url": one.url}]}))
        .await;
    // `b` may not have put `pool` in force yet: its write brings it along.
    b.create_route(json!({"name": "api", "path": "/api", "upstream": "pool"}))
        .await;
    assert_eq!(
        b.backend_of("/api/x").await,
        "one",
        "live on the node that took it"
    );
    let (status, added) = c
        .admin_json(
            Method::POST,
            "/admin/upstreams/pool/backends",
            Some(json!({"url": two.url, "weight": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let doc = converged(&[&a, &b, &c]).await;
    assert_eq!(doc["version"], 4);
    assert_eq!(doc["routes"][0]["name"], "api");
    for node in [&a, &b, &c] {
        // Every node proxies the route, to both backends.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            seen.insert(node.backend_of("/api/y").await);
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }
    // Each node names itself.
    for (node, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let (_, status) = node.admin_json(Method::GET, "/admin/status", None).await;
        assert_eq!(status["node"], name);
    }
    // A removal made on one node goes from all.
    let (status, _) = a
        .admin_json(Method::DELETE, "/admin/routes/api", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let doc = converged(&[&a, &b, &c]).await;
    assert_eq!(
        doc["routes"].as_array().unwrap().len(),
        1,
        "only seed: {doc}"
    );
    for node in [&a, &b, &c] {
        assert_eq!(node.get("/api/z").await.0, StatusCode::NOT_FOUND);
    }
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// Two nodes change the same route with the same ETag at the same time:
/// each time exactly one wins, the other gets a 412, and both nodes end
/// with the winner's route.
#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh runs these"]
async fn conflicting_writes_on_two_nodes_have_one_winner() {
    let url = fresh_database("conflict").await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&url, dir.path(), NO_CHECK).await;
    let backend = Backend::named("one").start().await;
    let created = a
        .create_route(json!({"name": "r", "path": "/r0", "backends": [{"url": backend.url}]}))
        .await;
    let mut etag = created["version"].as_u64().unwrap();
    converged(&[&a, &b]).await;
    for i in 0..10 {
        let put = |node: &TestGateway, path: String| {
            let req = node
                .http
                .put(node.admin_url("/admin/routes/r"))
                .header("if-match", format!("\"{etag}\""))
                .json(&json!({"path": path, "backends": [{"url": backend.url}]}));
            async move {
                let r = req.send().await.unwrap();
                let status = r.status();
                (status, r.json::<Value>().await.unwrap())
            }
        };
        let ((sa, va), (sb, vb)) =
            tokio::join!(put(&a, format!("/a{i}")), put(&b, format!("/b{i}")));
        let (winner, path) = match (sa, sb) {
            (StatusCode::OK, StatusCode::PRECONDITION_FAILED) => (va, format!("/a{i}")),
            (StatusCode::PRECONDITION_FAILED, StatusCode::OK) => (vb, format!("/b{i}")),
            other => panic!("round {i}: {other:?}: {va} {vb}"),
        };
        etag = winner["version"].as_u64().unwrap();
        let doc = converged(&[&a, &b]).await;
        assert_eq!(doc["routes"][0]["path"], path.as_str());
        for node in [&a, &b] {
            assert_eq!(node.get(&format!("{path}/x")).await.0, StatusCode::OK);
        }
    }
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// A document of `upstreams` upstreams (`u{i}`, two backends each) and
/// `routes` routes (`r{j}` on `/p{j}`).
fn numbered(upstreams: usize, routes: usize) -> Value {
    let backends = |i: usize| {
        json!([{"url": format!("http://10.1.{}.{}:80", i / 250, i % 250)},
               {"url": format!("http://10.2.{}.{}:80", i / 250, i % 250)}])
    };
    json!({
        "upstreams": (0..upstreams).map(|i| json!({"name": format!("u{i}"), "backends": backends(i)})).collect::<Vec<_>>(),
        "routes": (0..routes)
            .map(|j| json!({"name": format!("r{j}"), "path": format!("/p{j}"), "upstream": format!("u{}", j % upstreams)}))
            .collect::<Vec<_>>(),
    })
}

/// A whole config with more rows of each table than one of its batched
/// inserts takes, written and then written again with changes on
/// PostgreSQL (numbered parameters): the backends that stay keep their
/// ids, the same document again writes nothing, a few routes changed are
/// written, and the other node follows.
#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh runs these"]
async fn a_large_config_written_again_keeps_backend_ids() {
    let url = fresh_database("large").await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&url, dir.path(), NO_CHECK).await;
    let (n_up, n_routes) = (3_800, 2_800);
    let mut doc = numbered(n_up, n_routes);
    let (status, v) = a
        .admin_json(Method::PUT, "/admin/config", Some(doc.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let upstream = |name: &'static str| {
        let a = &a;
        async move {
            a.admin_json(Method::GET, &format!("/admin/upstreams/{name}"), None)
                .await
                .1
        }
    };
    let u7 = upstream("u7").await;
    assert_eq!(u7["backends"][1]["id"], 16, "ids in the document's order");
    doc["upstreams"][7]["backends"][1]["weight"] = json!(4);
    doc["upstreams"][8]["backends"][1]["url"] = json!("http://10.9.0.8:8080");
    let (status, v) = a
        .admin_json(Method::PUT, "/admin/config", Some(doc.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let version = v["version"].as_u64().unwrap();
    let again = upstream("u7").await;
    assert_eq!(again["backends"][0], u7["backends"][0]);
    assert_eq!(again["backends"][1]["id"], u7["backends"][1]["id"]);
    assert_eq!(again["backends"][1]["weight"], 4);
    let u8 = upstream("u8").await;
    assert_eq!(u8["backends"][1]["url"], "http://10.9.0.8:8080");
    assert_eq!(u8["backends"][1]["id"], 2 * n_up + 1);
    // The same document again: nothing is written.
    let (status, same) = a
        .admin_json(Method::PUT, "/admin/config", Some(doc.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same["version"], version);
    // Three routes changed (a path; an upstream; one moved onto a new
    // upstream while its old one goes): written one by one, each before
    // the upstream it left is deleted.
    doc["routes"][9]["path"] = json!("/moved");
    doc["routes"][10]["upstream"] = json!("u11");
    doc["routes"][12]["upstream"] = json!("fresh");
    let upstreams = doc["upstreams"].as_array_mut().unwrap();
    assert_eq!(upstreams.remove(12)["name"], "u12");
    upstreams.push(json!({"name": "fresh", "backends": [{"url": "http://10.7.0.1:80"}]}));
    let (status, v) = a.admin_json(Method::PUT, "/admin/config", Some(doc)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"], version + 1);
    let seen = converged(&[&a, &b]).await;
    assert_eq!(seen["upstreams"].as_array().unwrap().len(), n_up);
    assert_eq!(seen["routes"].as_array().unwrap().len(), n_routes);
    let route = |name: &str| {
        seen["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(route("r9")["path"], "/moved");
    assert_eq!(route("r10")["upstream"], "u11");
    assert_eq!(route("r12")["upstream"], "fresh");
    let names: Vec<&Value> = seen["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["name"])
        .collect();
    assert!(names.contains(&&json!("fresh")) && !names.contains(&&json!("u12")));
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// A node restarted while the database is stopped serves the config of
/// its cache file, says so on /readyz and in `switchyard_store_up`,
/// refuses changes with a 503 while reads of live state work, and catches
/// up (with what another node wrote while it was away) once the database
/// is back.
#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh runs these"]
async fn a_node_starts_from_its_cache_while_the_database_is_down() {
    let url = fresh_database("cache").await;
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::named("one").start().await;
    let a = node(&url, "a", dir.path(), 500).await;
    a.create_route(json!({"name": "api", "path": "/api", "backends": [{"url": backend.url}]}))
        .await;
    let cache = dir.path().join("a.json");
    let cached = eventually(Duration::from_secs(10), || async {
        let doc: Value = serde_json::from_slice(&std::fs::read(&cache).ok()?).ok()?;
        (doc["config"]["version"] == 1).then_some(())
    })
    .await;
    assert!(cached.is_some(), "the cache file has version 1");
    a.shutdown().await;
    // Another node changes the config while `a` is away.
    let b = node(&url, "b", dir.path(), 500).await;
    b.create_route(json!({"name": "web", "path": "/web", "backends": [{"url": backend.url}]}))
        .await;
    b.shutdown().await;

    pg_ctl("stop -m fast");
    let a = node(&url, "a", dir.path(), 500).await;
    assert_eq!(a.get("/api/x").await.0, StatusCode::OK, "the cached route");
    assert_eq!(
        a.get("/web").await.0,
        StatusCode::NOT_FOUND,
        "not in its cache"
    );
    assert_eq!(store_up(&a).await, Some(0.0));
    let metrics = a.gateway().metrics_addr.unwrap();
    let ready = a
        .http
        .get(format!("http://{metrics}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body = ready.text().await.unwrap();
    assert!(
        body.contains("version 1") && body.contains("unreachable"),
        "{body}"
    );
    let r = a
        .admin(
            Method::POST,
            "/admin/routes",
            Some(json!({"name": "new", "path": "/new", "backends": [{"url": backend.url}]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "a problem"
    );
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:switchyard:problem:store-unavailable");
    let (status, live) = a.admin_json(Method::GET, "/admin/status", None).await;
    assert_eq!(status, StatusCode::OK, "live state still reads");
    assert_eq!(live["config_version"], 1);
    // The stored config cannot be read: a 503 too, once the wait for a
    // connection runs out.
    let (status, problem) = a.admin_json(Method::GET, "/admin/routes", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");

    pg_ctl("start");
    let back = eventually(Duration::from_secs(20), || async {
        (store_up(&a).await == Some(1.0) && a.get("/web").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert!(back.is_some(), "caught up once the database returned");
    a.create_route(json!({"name": "new", "path": "/new", "backends": [{"url": backend.url}]}))
        .await;
    assert_eq!(a.get("/new").await.0, StatusCode::OK);
    a.shutdown().await;
}

/// Two nodes keep writing while the database restarts: every write that
/// was acknowledged is in the config every node ends with.
#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh runs these"]
async fn a_database_restart_loses_no_acknowledged_write() {
    let url = fresh_database("restart").await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&url, dir.path(), 500).await;
    let backend = Backend::named("one").start().await;
    a.create_upstream(json!({"name": "pool", "backends": [{"url": backend.url}]}))
        .await;
    converged(&[&a, &b]).await;
    let stop = tokio::sync::watch::channel(false);
    let writer = |node: &TestGateway, name: &'static str| {
        let (http, admin) = (node.http.clone(), node.admin_url("/admin/routes"));
        let mut stopped = stop.0.subscribe();
        async move {
            let (mut acked, mut refused) = (Vec::new(), 0);
            for i in 0..2000 {
                if *stopped.borrow_and_update() {
                    break;
                }
                let route = format!("{name}-{i}");
                let r = http
                    .post(&admin)
                    .json(&json!({"name": route, "path": format!("/{route}"), "upstream": "pool"}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                if status == StatusCode::CREATED {
                    acked.push(route);
                } else {
                    // While the database is away: a 503 problem, nothing else.
                    let problem: Value = r.json().await.unwrap();
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
                    assert_eq!(problem["type"], "urn:switchyard:problem:store-unavailable");
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (acked, refused)
        }
    };
    let restart = async {
        // Writes before, during and after the restart.
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg_ctl("stop -m fast");
        tokio::time::sleep(Duration::from_millis(300)).await;
        pg_ctl("start");
        let back = eventually(Duration::from_secs(20), || async {
            (store_up(&a).await == Some(1.0) && store_up(&b).await == Some(1.0)).then_some(())
        })
        .await;
        assert!(back.is_some(), "both nodes see the database again");
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.0.send_replace(true);
    };
    let ((acked_a, refused_a), (acked_b, refused_b), ()) =
        tokio::join!(writer(&a, "a"), writer(&b, "b"), restart);
    eprintln!(
        "acknowledged {} + {}, refused {refused_a} + {refused_b} around the restart",
        acked_a.len(),
        acked_b.len()
    );
    assert!(acked_a.len() > 5 && acked_b.len() > 5);
    let doc = converged(&[&a, &b]).await;
    let names: std::collections::BTreeSet<&str> = doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for route in acked_a.iter().chain(&acked_b) {
        assert!(names.contains(route.as_str()), "{route} was acknowledged");
    }
    // And each is proxied by both nodes.
    for node in [&a, &b] {
        for route in acked_a.iter().chain(&acked_b).step_by(7) {
            assert_eq!(
                node.get(&format!("/{route}")).await.0,
                StatusCode::OK,
                "{route}"
            );
        }
    }
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// A change committed without a notification (as when a node's
/// listening session was down when it was sent) reaches every node by
/// the periodic version check.
#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh runs these"]
async fn a_missed_notification_is_caught_up_by_the_periodic_check() {
    let url = fresh_database("check").await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&url, dir.path(), 300).await;
    let backend = Backend::named("one").start().await;
    a.create_upstream(json!({"name": "pool", "backends": [{"url": backend.url}]}))
        .await;
    converged(&[&a, &b]).await;
    // The change a writer makes, and its revision, but no NOTIFY.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let (v,): (i64,) = sqlx::query_as(
        "UPDATE meta SET config_version = config_version + 1 RETURNING config_version",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    for statement in [
        "UPDATE backends SET weight = 7, version = $1 WHERE upstream = 'pool'",
        "UPDATE upstreams SET version = $1 WHERE name = 'pool'",
        "INSERT INTO revisions (version, at_unix_ms, source, endpoint, summary) VALUES ($1, 0, 'api', 'test', \
         '{\"routes\":{\"added\":[],\"changed\":[],\"removed\":[]},\"upstreams\":{\"added\":[],\"changed\":[\"pool\"],\"removed\":[]}}')",
    ] {
        sqlx::query(statement)
            .bind(v)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    conn.close().await.unwrap();
    for node in [&a, &b] {
        let seen = eventually(Duration::from_secs(5), || async {
            let (_, u) = node.admin_json(Method::GET, "/admin/status", None).await;
            let weight = &u["upstreams"][0]["backends"][0]["weight"];
            (u["config_version"] == v && weight == 7).then_some(())
        })
        .await;
        assert!(seen.is_some(), "the node caught up without a notification");
    }
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// Two routes trading paths in one whole config reach the other node. Its
/// catch-up patch meets itself (the first route put finds the other on
/// its path), so it compiles the whole config instead; before, it refused
/// the patch and stayed behind.
#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh runs these"]
async fn routes_trading_paths_reach_the_other_node() {
    let url = fresh_database("trade").await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(&url, dir.path(), NO_CHECK).await;
    let (one, two) = (
        Backend::named("one").start().await,
        Backend::named("two").start().await,
    );
    a.create_upstream(json!({"name": "one", "backends": [{"url": one.url}]}))
        .await;
    a.create_upstream(json!({"name": "two", "backends": [{"url": two.url}]}))
        .await;
    a.create_route(json!({"name": "x", "path": "/x", "upstream": "one"}))
        .await;
    a.create_route(json!({"name": "y", "path": "/y", "upstream": "two"}))
        .await;
    let mut doc = converged(&[&a, &b]).await;
    let routes = doc["routes"].as_array_mut().unwrap();
    routes[0]["path"] = json!("/y");
    routes[1]["path"] = json!("/x");
    let (status, body) = a.admin_json(Method::PUT, "/admin/config", Some(doc)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let now = converged(&[&a, &b]).await;
    assert_eq!(now["routes"][0]["path"], "/y");
    for node in [&a, &b] {
        assert_eq!(node.backend_of("/y").await, "one");
        assert_eq!(node.backend_of("/x").await, "two");
    }
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// TLS settings in the URL reach the driver: `sslmode=verify-full` with
/// the server's CA connects over TLS (PostgreSQL says so for the
/// gateway's sessions); without that CA the start is refused, naming the
/// certificate, rather than taken for a database that is away.
#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/postgres.sh runs these"]
async fn tls_settings_in_the_url_reach_the_driver() {
    let url = fresh_database("tls").await;
    let ca = std::env::var("SWITCHYARD_TEST_POSTGRES_CA").expect("set by .ci/postgres.sh");
    let dir = tempfile::tempdir().unwrap();
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let a = node(&verified, "a", dir.path(), NO_CHECK).await;
    let backend = Backend::named("one").start().await;
    a.create_route(json!({"name": "r", "path": "/r", "backends": [{"url": backend.url}]}))
        .await;
    let db = url.rsplit_once('/').unwrap().1.to_string();
    let mut conn = sqlx::PgConnection::connect(&server()).await.unwrap();
    let (tls, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1",
    )
    .bind(&db)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert!(
        tls >= 1 && plain == 0,
        "{tls} TLS and {plain} plain sessions"
    );
    a.shutdown().await;

    let mut s = crate::common::settings(&dir);
    s.database_url = format!("{url}?sslmode=verify-full");
    s.shared.cache_file = dir.path().join("a.json");
    let e = switchyard::start(s).await.unwrap_err().to_string();
    assert!(
        e.contains("certificate") || e.contains("UnknownIssuer"),
        "refused naming the certificate: {e}"
    );
    assert!(
        !e.contains("unreachable") && !e.contains("cannot reach"),
        "{e}"
    );
}
