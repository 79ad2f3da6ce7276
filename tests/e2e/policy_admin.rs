//! Route policies through the admin API: every bad member named by its
//! pointer with nothing written, plain auth tokens kept (and shown) only
//! as their SHA-256, a merge patch of one member, routes that only
//! redirect.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{problem, version};
use crate::common::{Backend, TestGateway};

/// A plain token, and its SHA-256 (worked out independently of the code
/// under test).
const TOKEN: &str = "Plain-Token-e2e-7f3a";
const TOKEN_SHA256: &str = "11132863e156a547c14273fbda4f33f66ec5f0aa87e95b27013ed36a77f64638";

/// Every policy member the API takes, once.
fn all_policies() -> Value {
    json!({
        "auth": {"header": "X-Admin-Token", "tokens": [TOKEN], "forward": false},
        "ip_allow": ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1/32"],
        "ip_deny": ["10.0.0.7/32"],
        "rate_limit": {"key": "client_ip", "requests_per_second": 50, "burst": 100},
        "cors": {"allow_origins": ["https://app.example", "https://*.example.org"], "allow_methods": ["GET", "POST"],
                 "allow_headers": ["content-type"], "expose_headers": ["x-request-id"], "allow_credentials": false,
                 "max_age_s": 600},
        "request_headers": {"set": {"x-env": "prod"}, "add": {}, "remove": ["cookie"]},
        "response_headers": {"set": {"strict-transport-security": "max-age=31536000"}, "add": {}, "remove": []}
    })
}

/// [`all_policies`] as they are stored and shown: the token as its hash,
/// every member of an edit list written out.
fn all_policies_shown() -> Value {
    let mut p = all_policies();
    p["auth"]["tokens"] = json!([{ "sha256": TOKEN_SHA256 }]);
    p
}

#[tokio::test]
async fn every_bad_policy_member_is_named_and_nothing_is_written() {
    let gw = TestGateway::start().await;
    gw.create_upstream(json!({"name": "pool"})).await;
    let before_route = gw
        .create_route(json!({"name": "p", "path": "/p", "upstream": "pool"}))
        .await;
    let before = version(&gw).await;
    let auth = |tokens: Value| json!({"auth": {"header": "x-token", "tokens": tokens}});
    let rate = |rps: Value, burst: Value| json!({"rate_limit": {"key": "client_ip", "requests_per_second": rps, "burst": burst}});
    let cors = |extra: Value| {
        let mut c = json!({"allow_origins": ["https://app.example"]});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "cors": c })
    };
    let redirect = |status: Value, location: Value| json!({"redirect": {"status": status, "location": location}});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"auth": {"header": "bad name", "tokens": ["t"]}}),
            "/policies/auth/header",
        ),
        (
            json!({"auth": {"header": "X-Forwarded-For", "tokens": ["t"]}}),
            "/policies/auth/header",
        ),
        (json!({"auth": {"tokens": ["t"]}}), "/policies/auth/header"),
        (auth(json!([])), "/policies/auth/tokens"),
        (auth(json!(["ok", "not ok"])), "/policies/auth/tokens/1"),
        (auth(json!([""])), "/policies/auth/tokens/0"),
        (auth(json!(["x".repeat(257)])), "/policies/auth/tokens/0"),
        (
            auth(json!([{"sha256": "abc"}])),
            "/policies/auth/tokens/0/sha256",
        ),
        (auth(json!([{"sha1": "abc"}])), "/policies/auth/tokens/0"),
        (
            json!({"auth": {"header": "x", "tokens": ["t"], "forward": 1}}),
            "/policies/auth/forward",
        ),
        (json!({"ip_allow": ["10.0.0.1/8"]}), "/policies/ip_allow/0"),
        (json!({"ip_allow": "10.0.0.0/8"}), "/policies/ip_allow"),
        (
            json!({"ip_deny": ["10.0.0.0/8", "nope"]}),
            "/policies/ip_deny/1",
        ),
        (
            json!({"rate_limit": {"key": "cookie:a", "requests_per_second": 1, "burst": 1}}),
            "/policies/rate_limit/key",
        ),
        (
            rate(json!(0), json!(1)),
            "/policies/rate_limit/requests_per_second",
        ),
        (
            rate(json!(1), json!(1_000_001)),
            "/policies/rate_limit/burst",
        ),
        (rate(json!(1), json!(-1)), "/policies/rate_limit/burst"),
        (
            json!({"rate_limit": {"key": "route", "requests_per_second": 1}}),
            "/policies/rate_limit/burst",
        ),
        (
            json!({"cors": {"allow_origins": []}}),
            "/policies/cors/allow_origins",
        ),
        (
            json!({"cors": {"allow_origins": ["app.example"]}}),
            "/policies/cors/allow_origins/0",
        ),
        (
            json!({"cors": {"allow_origins": ["*"], "allow_credentials": true}}),
            "/policies/cors/allow_origins/0",
        ),
        (
            cors(json!({"allow_methods": ["GET", "FETCH"]})),
            "/policies/cors/allow_methods/1",
        ),
        (
            cors(json!({"allow_headers": ["bad name"]})),
            "/policies/cors/allow_headers/0",
        ),
        (
            cors(json!({"expose_headers": ["bad name"]})),
            "/policies/cors/expose_headers/0",
        ),
        (
            cors(json!({"max_age_s": 86_401})),
            "/policies/cors/max_age_s",
        ),
        (
            cors(json!({"allow_credentials": "yes"})),
            "/policies/cors/allow_credentials",
        ),
        (
            json!({"request_headers": {"set": {"Host": "x"}}}),
            "/policies/request_headers/set/Host",
        ),
        (
            json!({"request_headers": {"add": {"x-a": "line\nbreak"}}}),
            "/policies/request_headers/add/x-a",
        ),
        (
            json!({"request_headers": {"remove": ["x-request-id"]}}),
            "/policies/request_headers/remove/0",
        ),
        (
            json!({"response_headers": {"set": {"a/b": "x"}}}),
            "/policies/response_headers/set/a~1b",
        ),
        (
            json!({"response_headers": {"remove": ["access-control-allow-origin"]}}),
            "/policies/response_headers/remove/0",
        ),
        (
            json!({"response_headers": {"replace": {}}}),
            "/policies/response_headers/replace",
        ),
        (
            redirect(json!(200), json!("https://x{path}")),
            "/policies/redirect/status",
        ),
        (
            redirect(json!(301), json!("https://x{port}")),
            "/policies/redirect/location",
        ),
        (
            redirect(json!(301), json!("")),
            "/policies/redirect/location",
        ),
        (json!({"rewrite": {}}), "/policies/rewrite"),
    ];
    for (policies, pointer) in cases {
        let body = json!({"name": "x", "path": "/x", "upstream": "pool", "policies": policies});
        let r = gw.admin(Method::POST, "/admin/routes", Some(body)).await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some(pointer)).await;
        // The same member, merged into an existing route.
        let patch = json!({ "policies": policies });
        let r = gw
            .admin(Method::PATCH, "/admin/routes/p", Some(patch))
            .await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some(pointer)).await;
    }
    for bad in [json!(0), json!(3_600_001), json!("5s")] {
        let r = gw
            .admin(
                Method::PATCH,
                "/admin/routes/p",
                Some(json!({"timeout_ms": bad})),
            )
            .await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("/timeout_ms")).await;
    }
    assert_eq!(version(&gw).await, before, "nothing was written");
    let (_, routes) = gw.admin_json(Method::GET, "/admin/routes", None).await;
    assert_eq!(routes["items"], json!([before_route]));
}

/// The bytes of every file of the gateway's database (the file, its WAL).
fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("switchyard.db") {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_plain_token_is_kept_and_shown_only_as_its_hash() {
    let gw = TestGateway::start().await;
    gw.create_upstream(json!({"name": "pool"})).await;
    let created = gw
        .create_route(
            json!({"name": "x", "path": "/x", "upstream": "pool", "timeout_ms": 2500,
                             "policies": all_policies()}),
        )
        .await;
    assert_eq!(
        created,
        json!({"name": "x", "path": "/x", "methods": [], "hosts": [], "strip_prefix": false,
               "preserve_host": false, "timeout_ms": 2500, "upstream": "pool",
               "policies": all_policies_shown(), "version": 2})
    );
    // Refused bodies do not repeat a token either (a bad one, or a good
    // one beside another member's mistake).
    for body in [
        json!({"name": "y", "path": "/y", "upstream": "pool",
               "policies": {"auth": {"header": "x-t", "tokens": [format!("{TOKEN} x")]}}}),
        json!({"name": "y", "path": "/y", "upstream": "pool",
               "policies": {"auth": {"header": "x-t", "tokens": [TOKEN]}, "ip_allow": ["x"]}}),
        json!({"name": "y", "path": "/y", "upstream": "pool",
               "policies": {"auth": {"header": "x-t", "tokens": TOKEN}}}),
    ] {
        let r = gw.admin(Method::POST, "/admin/routes", Some(body)).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let text = r.text().await.unwrap();
        assert!(!text.contains(TOKEN), "{text}");
    }
    for path in ["/admin/routes/x", "/admin/routes", "/admin/config"] {
        let r = gw.admin(Method::GET, path, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        assert!(!text.contains(TOKEN), "{path}: {text}");
        assert!(text.contains(TOKEN_SHA256), "{path}: {text}");
    }
    let bytes = database_bytes(gw.dir.path());
    assert!(contains(&bytes, TOKEN_SHA256), "the hash is stored");
    assert!(!contains(&bytes, TOKEN), "the token is not");
    // Nor after a clean stop has folded the WAL into the database file.
    let dir = gw.stop().await;
    let bytes = database_bytes(dir.path());
    assert!(contains(&bytes, TOKEN_SHA256));
    assert!(!contains(&bytes, TOKEN));
}

#[tokio::test]
async fn a_patch_changes_one_policy_member() {
    let gw = TestGateway::start().await;
    gw.create_upstream(json!({"name": "pool"})).await;
    let created = gw
        .create_route(
            json!({"name": "x", "path": "/x", "upstream": "pool", "policies": all_policies()}),
        )
        .await;
    let (status, patched) = gw
        .admin_json(
            Method::PATCH,
            "/admin/routes/x",
            Some(json!({"policies": {"rate_limit": {"burst": 7}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let mut expected = created.clone();
    expected["policies"]["rate_limit"]["burst"] = json!(7);
    expected["version"] = json!(3);
    assert_eq!(patched, expected);
    let (_, read) = gw.admin_json(Method::GET, "/admin/routes/x", None).await;
    assert_eq!(read, expected);

    // `null` removes a member, then all of them; a timeout comes and goes.
    let (_, patched) = gw
        .admin_json(
            Method::PATCH,
            "/admin/routes/x",
            Some(json!({"policies": {"auth": null, "cors": null}, "timeout_ms": 900})),
        )
        .await;
    assert!(patched["policies"].get("auth").is_none(), "{patched}");
    assert!(patched["policies"].get("cors").is_none(), "{patched}");
    assert_eq!(patched["policies"]["rate_limit"]["burst"], 7);
    assert_eq!(patched["timeout_ms"], 900);
    let (_, patched) = gw
        .admin_json(
            Method::PATCH,
            "/admin/routes/x",
            Some(json!({"policies": null, "timeout_ms": null})),
        )
        .await;
    assert_eq!(
        patched,
        json!({"name": "x", "path": "/x", "methods": [], "hosts": [], "strip_prefix": false,
               "preserve_host": false, "upstream": "pool", "version": 5})
    );
}

#[tokio::test]
async fn only_a_redirect_may_go_without_an_upstream() {
    let gw = TestGateway::start().await;
    let a = Backend::named("a").start().await;
    let redirect =
        json!({"redirect": {"status": 308, "location": "https://new.example{path}{query}"}});
    let created = gw
        .create_route(json!({"name": "old", "path": "/old", "policies": redirect}))
        .await;
    assert_eq!(
        created,
        json!({"name": "old", "path": "/old", "methods": [], "hosts": [], "strip_prefix": false,
               "preserve_host": false, "policies": redirect, "version": 1})
    );
    let r = gw
        .admin(
            Method::POST,
            "/admin/routes",
            Some(json!({"name": "bad", "path": "/bad", "policies": {"ip_allow": ["10.0.0.0/8"]}})),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("/upstream")).await;
    // Taking the redirect away needs an upstream.
    let r = gw
        .admin(
            Method::PATCH,
            "/admin/routes/old",
            Some(json!({"policies": {"redirect": null}})),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("/upstream")).await;
    assert_eq!(version(&gw).await, 1);

    // A route with inline backends that becomes a redirect lets its
    // upstream go.
    gw.create_route(json!({"name": "shop", "path": "/shop", "backends": [{"url": a.url}]}))
        .await;
    let (status, patched) = gw
        .admin_json(
            Method::PATCH,
            "/admin/routes/shop",
            Some(json!({"upstream": null, "policies": redirect})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert!(patched.get("upstream").is_none(), "{patched}");
    let (status, _) = gw
        .admin_json(Method::GET, "/admin/upstreams/shop", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = gw.admin(Method::DELETE, "/admin/routes/old", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}
