//! Every write answered 2xx survives `kill -9`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::common::{Backend, Process, eventually};

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
    let routes: serde_json::Value = http
        .get(format!("http://{}/admin/routes", gw.admin_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
