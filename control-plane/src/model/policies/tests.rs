//! Route policies in a body: shape, required members, tokens, and the
//! rules of `RoutePolicies::problems` reported under `/policies`.

use serde_json::{Value, json};

use super::*;
use crate::model::{FieldError, Route, RouteSpec, RouteTarget, parse};

/// sha256("letmein").
const LETMEIN: &str = "1c8bfe8f801d79745c4631d09fff36c82aa37fc4cce4fc946683d7b336b63032";

/// Parse and validate a route body as the API does.
fn route(body: Value) -> Result<Route, Vec<FieldError>> {
    parse::<RouteSpec>(body)?.validate(None)
}

/// A route to upstream `u` with `policies`.
fn with(policies: Value) -> Result<Route, Vec<FieldError>> {
    route(json!({"name": "r", "path": "/", "upstream": "u", "policies": policies}))
}

fn errors(r: Result<Route, Vec<FieldError>>) -> Vec<(String, String)> {
    r.unwrap_err()
        .into_iter()
        .map(|e| (e.pointer, e.detail))
        .collect()
}

fn pointers(r: Result<Route, Vec<FieldError>>) -> Vec<String> {
    errors(r).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn every_member_is_read_and_a_plain_token_is_hashed() {
    let r = with(json!({
        "auth": {"header": "X-Admin-Token", "tokens": ["letmein", {"sha256": "ab".repeat(32)}], "forward": false},
        "ip_allow": ["10.0.0.0/8", "2001:db8::/32"],
        "ip_deny": ["10.0.0.7/32"],
        "rate_limit": {"key": "client_ip", "requests_per_second": 50, "burst": 100},
        "cors": {"allow_origins": ["https://app.example", "https://*.example.org"], "allow_methods": ["GET", "POST"],
                 "allow_headers": ["content-type"], "expose_headers": ["x-request-id"], "allow_credentials": false, "max_age_s": 600},
        "request_headers": {"set": {"x-env": "prod"}, "add": {}, "remove": ["cookie"]},
        "response_headers": {"set": {"strict-transport-security": "max-age=31536000"}, "add": {}, "remove": []},
        "redirect": {"status": 308, "location": "https://example.com{path}{query}"}
    }))
    .unwrap();
    let stored = serde_json::to_value(&r.policies).unwrap();
    assert_eq!(
        stored["auth"],
        json!({"header": "X-Admin-Token", "tokens": [{"sha256": LETMEIN}, {"sha256": "ab".repeat(32)}], "forward": false})
    );
    assert!(!stored.to_string().contains("letmein"));
    assert_eq!(stored["rate_limit"]["burst"], 100);
    assert_eq!(stored["redirect"]["status"], 308);
    assert_eq!(stored["request_headers"]["remove"], json!(["cookie"]));
    assert!(r.policies.problems().is_empty());
    assert_eq!(hash_token("letmein"), LETMEIN);
}

#[test]
fn no_policies_are_empty_policies() {
    for body in [
        json!({"name": "r", "path": "/", "upstream": "u"}),
        json!({"name": "r", "path": "/", "upstream": "u", "policies": null}),
        json!({"name": "r", "path": "/", "upstream": "u", "policies": {}}),
        json!({"name": "r", "path": "/", "upstream": "u", "policies": {"auth": null, "ip_allow": null}}),
    ] {
        assert!(route(body).unwrap().policies.is_empty());
    }
}

/// A required member that is missing is reported once, as required, and
/// not again by the rules its placeholder would break.
#[test]
fn missing_members_are_required_once() {
    assert_eq!(
        errors(with(json!({
            "auth": {"header": "x-token"},
            "rate_limit": {"key": "route", "burst": 0},
            "cors": {},
            "redirect": {"location": "https://x{path}"}
        }))),
        [
            ("/policies/auth/tokens".into(), "is required".into()),
            (
                "/policies/rate_limit/requests_per_second".into(),
                "is required".into()
            ),
            ("/policies/cors/allow_origins".into(), "is required".into()),
            ("/policies/redirect/status".into(), "is required".into()),
            (
                "/policies/rate_limit/burst".into(),
                format!("must be 1 to {}", data_plane::config::policies::MAX_RATE)
            ),
        ]
    );
    assert_eq!(
        pointers(with(json!({"auth": {"tokens": ["t"]}, "rate_limit": {}}))),
        [
            "/policies/auth/header",
            "/policies/rate_limit/key",
            "/policies/rate_limit/requests_per_second",
            "/policies/rate_limit/burst"
        ]
    );
}

/// A plain token is 1-256 bytes of visible ASCII; a refused one is named
/// by its place, never quoted.
#[test]
fn plain_tokens_are_checked_and_never_repeated() {
    let long = "x".repeat(MAX_TOKEN_LEN + 1);
    let bad = ["", "with space", "tab\there", "caf\u{e9}", long.as_str()];
    for token in bad {
        let errs = errors(with(
            json!({"auth": {"header": "x-token", "tokens": ["fine-token", token]}}),
        ));
        assert_eq!(errs.len(), 1, "{token:?}: {errs:?}");
        assert_eq!(errs[0].0, "/policies/auth/tokens/1");
        if !token.is_empty() {
            assert!(!errs[0].1.contains(token), "{token:?} quoted: {errs:?}");
        }
    }
    let longest = "~".repeat(MAX_TOKEN_LEN);
    assert!(with(json!({"auth": {"header": "x-token", "tokens": [longest, "!"]}})).is_ok());
    // A token where the list belongs is not quoted back either.
    let errs = errors(with(
        json!({"auth": {"header": "x-token", "tokens": "s3cret-token"}}),
    ));
    assert_eq!(errs[0].0, "/policies/auth/tokens");
    assert!(!errs[0].1.contains("s3cret-token"), "{errs:?}");
    // Nor printed in a debug dump of the body.
    let spec: RouteSpec = parse(json!({"name": "r", "path": "/", "upstream": "u",
        "policies": {"auth": {"header": "x-token", "tokens": ["s3cret-token"]}}}))
    .unwrap();
    assert!(!format!("{spec:?}").contains("s3cret-token"));
}

#[test]
fn hashed_tokens_have_one_form() {
    for (token, pointer) in [
        (
            json!({"sha256": "AB".repeat(32)}),
            "/policies/auth/tokens/0/sha256",
        ),
        (json!({"sha256": "ab"}), "/policies/auth/tokens/0/sha256"),
        (json!({"sha256": 5}), "/policies/auth/tokens/0/sha256"),
        (json!({"sha512": "ab"}), "/policies/auth/tokens/0"),
        (json!({}), "/policies/auth/tokens/0"),
        (json!(7), "/policies/auth/tokens/0"),
        (json!(["ab"]), "/policies/auth/tokens/0"),
    ] {
        assert_eq!(
            pointers(with(
                json!({"auth": {"header": "x-token", "tokens": [token.clone()]}})
            )),
            [pointer],
            "{token}"
        );
    }
}

#[test]
fn unknown_members_and_wrong_types_name_the_member() {
    for (policies, pointer) in [
        (json!({"auht": {}}), "/policies/auht"),
        (
            json!({"rate_limit": {"key": "route", "requests_per_second": 1, "brust": 1}}),
            "/policies/rate_limit/brust",
        ),
        (
            json!({"rate_limit": {"key": "route", "requests_per_second": 1, "burst": "many"}}),
            "/policies/rate_limit/burst",
        ),
        (
            json!({"rate_limit": {"key": "route", "requests_per_second": 1.5, "burst": 1}}),
            "/policies/rate_limit/requests_per_second",
        ),
        (json!({"cors": ["https://a.example"]}), "/policies/cors"),
        (
            json!({"cors": {"allow_origins": "https://a.example"}}),
            "/policies/cors/allow_origins",
        ),
        (
            json!({"request_headers": {"set": {"x-a": 1}}}),
            "/policies/request_headers/set/x-a",
        ),
        (
            json!({"response_headers": {"delete": ["x-a"]}}),
            "/policies/response_headers/delete",
        ),
        (
            json!({"redirect": {"status": "308", "location": "/"}}),
            "/policies/redirect/status",
        ),
        (
            json!({"auth": {"header": "x-token", "tokens": ["t"], "forward": "yes"}}),
            "/policies/auth/forward",
        ),
        (json!({"ip_allow": "10.0.0.0/8"}), "/policies/ip_allow"),
        (json!([]), "/policies"),
    ] {
        assert_eq!(pointers(with(policies.clone())), [pointer], "{policies}");
    }
    // Integers written with a zero fraction are integers, as elsewhere.
    assert!(
        with(json!({"rate_limit": {"key": "route", "requests_per_second": 5.0, "burst": 1e1}}))
            .is_ok()
    );
}

/// Each rule of `RoutePolicies::problems` reaches the client under
/// `/policies`; a header name is escaped as a JSON pointer token.
#[test]
fn problems_are_reported_under_policies() {
    assert_eq!(
        pointers(with(json!({
            "auth": {"header": "Host", "tokens": ["t"]},
            "ip_deny": ["10.0.0.1/8"],
            "response_headers": {"set": {"a/b": "x"}}
        }))),
        [
            "/policies/auth/header",
            "/policies/ip_deny/0",
            "/policies/response_headers/set/a~1b"
        ]
    );
}

#[test]
fn timeout_ms_is_bounded() {
    let max = data_plane::config::MAX_ROUTE_TIMEOUT_MS;
    for bad in [0, max + 1] {
        assert_eq!(
            pointers(route(
                json!({"name": "r", "path": "/", "upstream": "u", "timeout_ms": bad})
            )),
            ["/timeout_ms"]
        );
    }
    for good in [1, max] {
        let r = route(json!({"name": "r", "path": "/", "upstream": "u", "timeout_ms": good}));
        assert_eq!(r.unwrap().timeout_ms, Some(good));
    }
}

#[test]
fn only_a_redirect_may_go_without_an_upstream() {
    let redirect = json!({"redirect": {"status": 301, "location": "https://example.com{path}"}});
    let r = route(json!({"name": "r", "path": "/old", "policies": redirect})).unwrap();
    assert_eq!(r.target, None);
    // A bad redirect is still a redirect: its own member is at fault.
    assert_eq!(
        pointers(route(
            json!({"name": "r", "path": "/", "policies": {"redirect": {"status": 200, "location": "/"}}})
        )),
        ["/policies/redirect/status"]
    );
    assert_eq!(
        pointers(route(
            json!({"name": "r", "path": "/", "policies": {"ip_allow": ["10.0.0.0/8"]}})
        )),
        ["/upstream"]
    );
    assert_eq!(
        pointers(route(
            json!({"name": "r", "path": "/", "strategy": "round_robin", "policies": redirect})
        )),
        ["/strategy"]
    );
    // With an upstream as well, the route keeps it.
    let r =
        route(json!({"name": "r", "path": "/", "upstream": "u", "policies": redirect})).unwrap();
    assert_eq!(r.target, Some(RouteTarget::Upstream("u".into())));
}
