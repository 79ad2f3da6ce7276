//! Keeps `openapi/openapi.yaml` and the router in step: the same set of
//! paths, and on each path the same set of methods.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use tower::ServiceExt;

use super::config::OPENAPI_YAML;
use super::{AdminState, app};

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

/// Paths and methods the document describes.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let doc: serde_json::Value = serde_norway::from_str(OPENAPI_YAML).expect("openapi.yaml parses");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths is a map");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| m.to_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// Paths registered in the router: every `.route("...")` in `app()`.
fn routed_paths() -> BTreeSet<String> {
    let source = include_str!("../api.rs");
    let app_fn = &source[source.find("pub fn app(").unwrap()..];
    let app_fn = &app_fn[..app_fn.find("\n}\n").unwrap()];
    app_fn
        .split(".route(")
        .skip(1)
        .map(|rest| {
            let start = rest.find('"').unwrap() + 1;
            let end = start + rest[start..].find('"').unwrap();
            rest[start..end].to_string()
        })
        .collect()
}

#[test]
fn the_document_has_exactly_the_routed_paths() {
    let doc: BTreeSet<String> = documented().into_keys().collect();
    assert_eq!(doc, routed_paths());
}

#[tokio::test]
async fn every_path_serves_exactly_the_documented_methods() {
    let dir = tempfile::tempdir().unwrap();
    let (_, plane, publisher) = crate::publish::tests::started(&dir).await;
    let router = app(AdminState {
        publisher: Arc::new(publisher),
        token: None,
        events: super::events::Events::new(plane, 4),
        node: Arc::from("test"),
    });
    for (path, methods) in documented() {
        let concrete = path.replace("{name}", "x").replace("{id}", "1");
        for m in METHODS {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let req = Request::builder()
                .method(method.clone())
                .uri(&concrete)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let status = router.clone().oneshot(req).await.unwrap().status();
            let served = status != StatusCode::METHOD_NOT_ALLOWED;
            assert_eq!(
                served,
                methods.contains(method.as_str()),
                "{method} {path}: router answered {status}, document lists {methods:?}"
            );
        }
    }
}
