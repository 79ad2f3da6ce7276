//! Every write answered 2xx survives `kill -9`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::common::{Backend, Process, TestGateway, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("gw.db");
    let db = format!("sqlite://{}", db_path.display());
    let a = Backend::named("a").start().await;
    let gw = Process::start(&db, &[]);

    // Stream writes from two writers; record what was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (acked, url, admin) = (Arc::clone(&acked), a.url.clone(), gw.admin_addr);
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            // Bounded: at most 1000 writes each; the kill ends it sooner.
            for i in 0..1000 {
                let name = format!("w{w}-{i}");
                let body = json!({"name": name, "path": format!("/{name}"), "strip_prefix": true, "backends": [{"url": url}]});
                match http.post(format!("http://{admin}/admin/routes")).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::CREATED => acked.lock().unwrap().push(name),
                    Ok(r) => panic!("write {name} refused: {}", r.status()),
                    Err(_) => return, // the gateway is gone
                }
            }
        }));
    }
    let enough = eventually(Duration::from_secs(30), || async {
        (acked.lock().unwrap().len() >= 40).then_some(())
    })
    .await;
    assert!(enough.is_some(), "writes are too slow");
    gw.signal("KILL");
    for w in writers {
        w.await.unwrap();
    }
    drop(gw);
    let acked = acked.lock().unwrap().clone();

    // The database is intact...
    let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
    let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    conn.close().await.unwrap();

    // ...and after a restart every acknowledged write is stored and live.
    let gw = Process::start(&db, &[]);
    let http = reqwest::Client::new();
    let routes = gw.admin_json("/admin/routes").await;
    let stored: Vec<&str> = routes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for name in &acked {
        assert!(stored.contains(&name.as_str()), "acknowledged {name} lost");
        let r = http
            .get(format!("http://{}/{name}/ping", gw.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name} not live");
    }
    // Each stored change has its revision (written in its transaction):
    // one per version, and together they add exactly the stored routes.
    let revisions = gw.admin_json("/admin/revisions?limit=1000").await;
    let items = revisions["items"].as_array().unwrap();
    assert_eq!(
        items.len() as u64,
        revisions["config_version"].as_u64().unwrap()
    );
    let mut added: Vec<&str> = items
        .iter()
        .flat_map(|r| r["summary"]["routes"]["added"].as_array().unwrap())
        .map(|n| n.as_str().unwrap())
        .collect();
    added.sort_unstable();
    let mut stored_sorted = stored.clone();
    stored_sorted.sort_unstable();
    assert_eq!(added, stored_sorted, "a change without its revision");
    eprintln!(
        "{} acknowledged writes, {} stored after kill -9",
        acked.len(),
        stored.len()
    );
    assert!(
        stored.len() <= acked.len() + 2,
        "at most the in-flight writes beyond the acknowledged ones"
    );
}

/// A database the previous release made (schema up to migration 0003)
/// opens with its routes as they were, live, and a routes table that still
/// keeps its key to upstreams (ON DELETE RESTRICT) and its index, now with
/// room for policies and routes without an upstream.
#[tokio::test]
async fn a_database_of_the_previous_schema_keeps_its_routes() {
    let a = Backend::named("a").start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("switchyard.db").display());
    // The previous release's migrations, as the files it embedded.
    let previous = tempfile::tempdir().unwrap();
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&migrations).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() < "0004" {
            std::fs::copy(&path, previous.path().join(&name)).unwrap();
        }
    }
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db)
        .unwrap()
        .create_if_missing(true)
        .foreign_keys(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(previous.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    // Rows as that release wrote them.
    for statement in [
        "UPDATE meta SET config_version = 3".to_string(),
        "INSERT INTO upstreams (name, strategy, connect_timeout_ms, response_header_timeout_ms, owner_route, \
         version, policy, body_idle_timeout_ms) VALUES ('pool', 'round_robin', 2000, 30000, NULL, 1, '{}', 60000)"
            .to_string(),
        format!(
            "INSERT INTO backends (upstream, url, weight, version) VALUES ('pool', '{}', 1, 1)",
            a.url
        ),
        "INSERT INTO routes (name, path, methods, hosts, strip_prefix, upstream, version, preserve_host, \
         max_body_bytes) VALUES ('api', '/api', '[\"GET\"]', '[]', 1, 'pool', 2, 0, 1024), \
         ('web', '/', '[]', '[\"www.example\"]', 0, 'pool', 3, 1, NULL)"
            .to_string(),
    ] {
        sqlx::query(&statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let gw = TestGateway::start_in(dir, None).await;
    let (_, routes) = gw
        .admin_json(reqwest::Method::GET, "/admin/routes", None)
        .await;
    assert_eq!(
        routes,
        json!({"items": [
            {"name": "api", "path": "/api", "methods": ["GET"], "hosts": [], "strip_prefix": true,
             "preserve_host": false, "max_body_bytes": 1024, "upstream": "pool", "version": 2},
            {"name": "web", "path": "/", "methods": [], "hosts": ["www.example"], "strip_prefix": false,
             "preserve_host": true, "upstream": "pool", "version": 3}
        ], "config_version": 3})
    );
    let (status, echo) = gw.get_json("/api/x").await;
    assert_eq!((status, &echo["path"]), (StatusCode::OK, &json!("/x")));
    // The new columns take writes: policies, and no upstream for a redirect.
    let (status, patched) = gw
        .admin_json(
            reqwest::Method::PATCH,
            "/admin/routes/api",
            Some(json!({"timeout_ms": 800, "policies": {"ip_allow": ["127.0.0.0/8"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    gw.create_route(json!({"name": "old", "path": "/old",
        "policies": {"redirect": {"status": 301, "location": "https://x.example{path}"}}}))
        .await;
    let dir = gw.stop().await;

    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let keys: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT \"table\", \"from\", on_delete FROM pragma_foreign_key_list('routes')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        keys,
        [("upstreams".into(), "upstream".into(), "RESTRICT".into())]
    );
    let (index,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pragma_index_list('routes') WHERE name = 'routes_upstream'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(index, 1);
    // The key is enforced: an upstream that routes use cannot go.
    let refused = sqlx::query("DELETE FROM upstreams WHERE name = 'pool'")
        .execute(&mut conn)
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let (nulls,): (i64,) = sqlx::query_as("SELECT count(*) FROM routes WHERE upstream IS NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(nulls, 1);
    conn.close().await.unwrap();
    drop(dir);
}
