//! Exhaustive tests of route matching semantics.

use super::*;

fn m(s: &str) -> Method {
    Method::from_bytes(s.as_bytes()).unwrap()
}

/// Build a table from `(prefix, hosts, methods)`; route index = position.
fn table(routes: &[(&str, &[&str], &[&str])]) -> RouteTable {
    let mut b = RouteTableBuilder::new();
    for (i, (prefix, hosts, methods)) in routes.iter().enumerate() {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let methods: Vec<Method> = methods.iter().map(|x| m(x)).collect();
        b.insert(i, prefix, &hosts, &methods).unwrap();
    }
    b.build()
}

fn find(t: &RouteTable, host: Option<&str>, method: &str, path: &str) -> Option<usize> {
    t.find(host, &m(method), path).map(|r| r.route)
}

#[test]
fn prefix_matches_on_segment_boundaries() {
    let t = table(&[("/api", &[], &[])]);
    assert_eq!(find(&t, None, "GET", "/api"), Some(0));
    assert_eq!(find(&t, None, "GET", "/api/"), Some(0));
    assert_eq!(find(&t, None, "GET", "/api/x"), Some(0));
    assert_eq!(find(&t, None, "GET", "/api/x/y/z"), Some(0));
    assert_eq!(find(&t, None, "GET", "/apix"), None);
    assert_eq!(find(&t, None, "GET", "/ap"), None);
    assert_eq!(find(&t, None, "GET", "/"), None);
    assert_eq!(find(&t, None, "GET", "/other/api"), None);
}

#[test]
fn longest_prefix_wins() {
    let t = table(&[("/", &[], &[]), ("/api", &[], &[]), ("/api/v2", &[], &[])]);
    assert_eq!(find(&t, None, "GET", "/"), Some(0));
    assert_eq!(find(&t, None, "GET", "/x"), Some(0));
    assert_eq!(find(&t, None, "GET", "/api"), Some(1));
    assert_eq!(find(&t, None, "GET", "/api/v1"), Some(1));
    assert_eq!(find(&t, None, "GET", "/api/v2"), Some(2));
    assert_eq!(find(&t, None, "GET", "/api/v2/users"), Some(2));
    assert_eq!(find(&t, None, "GET", "/api/v22"), Some(1));
}

#[test]
fn insertion_order_does_not_matter() {
    let t = table(&[("/api/v2", &[], &[]), ("/api", &[], &[]), ("/", &[], &[])]);
    assert_eq!(find(&t, None, "GET", "/api/v2/x"), Some(0));
    assert_eq!(find(&t, None, "GET", "/api/v1"), Some(1));
    assert_eq!(find(&t, None, "GET", "/z"), Some(2));
}

#[test]
fn trailing_slash_in_route_prefix_is_a_boundary() {
    let t = table(&[("/api/", &[], &[])]);
    assert_eq!(find(&t, None, "GET", "/api"), Some(0));
    assert_eq!(find(&t, None, "GET", "/api/x"), Some(0));
    assert_eq!(find(&t, None, "GET", "/apix"), None);
}

#[test]
fn hosts_restrict_and_are_case_insensitive() {
    let t = table(&[
        ("/", &["example.com"], &[]),
        ("/", &["other.org", "www.other.org"], &[]),
    ]);
    assert_eq!(find(&t, Some("example.com"), "GET", "/a"), Some(0));
    assert_eq!(find(&t, Some("EXAMPLE.com"), "GET", "/a"), Some(0));
    assert_eq!(find(&t, Some("www.other.org"), "GET", "/a"), Some(1));
    assert_eq!(find(&t, Some("other.org"), "GET", "/a"), Some(1));
    assert_eq!(find(&t, Some("nope.net"), "GET", "/a"), None);
    assert_eq!(find(&t, None, "GET", "/a"), None);
}

#[test]
fn host_specific_beats_hostless_on_equal_prefix_but_not_longer() {
    let t = table(&[
        ("/api", &[], &[]),
        ("/api", &["example.com"], &[]),
        ("/api/v2", &[], &[]),
    ]);
    assert_eq!(find(&t, Some("example.com"), "GET", "/api/x"), Some(1));
    assert_eq!(find(&t, Some("elsewhere"), "GET", "/api/x"), Some(0));
    // A longer host-less prefix still wins: longest prefix is the first rule.
    assert_eq!(find(&t, Some("example.com"), "GET", "/api/v2/x"), Some(2));
}

#[test]
fn methods_restrict_and_specific_list_beats_any() {
    let t = table(&[
        ("/api", &[], &["GET", "HEAD"]),
        ("/api", &[], &["POST"]),
        ("/api", &[], &[]),
    ]);
    assert_eq!(find(&t, None, "GET", "/api"), Some(0));
    assert_eq!(find(&t, None, "HEAD", "/api/x"), Some(0));
    assert_eq!(find(&t, None, "POST", "/api"), Some(1));
    assert_eq!(find(&t, None, "DELETE", "/api"), Some(2));
}

#[test]
fn method_mismatch_falls_back_to_shorter_prefix() {
    let t = table(&[("/", &[], &[]), ("/api", &[], &["POST"])]);
    assert_eq!(find(&t, None, "POST", "/api/x"), Some(1));
    assert_eq!(find(&t, None, "GET", "/api/x"), Some(0));
    let t = table(&[("/api", &[], &["POST"])]);
    assert_eq!(find(&t, None, "GET", "/api"), None);
}

#[test]
fn conflicts_are_refused() {
    let mut b = RouteTableBuilder::new();
    b.insert(0, "/api", &[], &[]).unwrap();
    assert_eq!(
        b.insert(1, "/api/", &[], &[]),
        Err(Conflict {
            existing: 0,
            new: 1
        })
    );
    b.insert(2, "/api", &[], &[m("GET"), m("POST")]).unwrap();
    assert!(b.insert(3, "/api", &[], &[m("POST")]).is_err());
    b.insert(4, "/api", &[], &[m("PUT")]).unwrap();
    // Same path on a different host is a different route.
    b.insert(5, "/api", &["a.example".into()], &[]).unwrap();
    assert!(b.insert(6, "/api", &["A.example".into()], &[]).is_err());
}

#[test]
fn strip_prefix_edge_cases() {
    let t = table(&[("/api", &[], &[]), ("/", &[], &[]), ("/a/b", &[], &[])]);
    let strip = |path: &str| {
        t.find(None, &Method::GET, path)
            .unwrap()
            .strip(path)
            .to_string()
    };
    assert_eq!(strip("/api"), "/");
    assert_eq!(strip("/api/"), "/");
    assert_eq!(strip("/api/x"), "/x");
    assert_eq!(strip("/api/x/y/"), "/x/y/");
    assert_eq!(strip("/a/b/c"), "/c");
    // Root prefix strips nothing.
    assert_eq!(strip("/z"), "/z");
    assert_eq!(strip("/"), "/");
}

#[test]
fn normalised_tricks_do_not_reach_a_route_the_plain_path_would_not() {
    let t = table(&[("/pub", &[], &[]), ("/admin", &[], &["POST"])]);
    for trick in [
        "/pub/../admin",
        "/pub/%2e%2e/admin",
        "/pub/%2E%2e/admin",
        "//admin",
        "/./admin",
        "/%61dmin",
    ] {
        let p = path::normalize(trick).unwrap();
        // GET on /admin is not routable, whatever the spelling.
        assert_eq!(find(&t, None, "GET", &p), None, "{trick}");
        // And the normalised form is exactly what the plain path would give.
        assert_eq!(
            find(&t, None, "POST", &p),
            find(&t, None, "POST", "/admin"),
            "{trick}"
        );
    }
    assert_eq!(find(&t, None, "POST", "/admin;x"), None);
    assert!(path::normalize("/admin%2f").is_err());
}

#[test]
fn lookup_cost_does_not_depend_on_route_count() {
    // Not a timing test: checks the structure. 10k sibling routes live in one
    // hash map level, so finding any of them walks exactly one node.
    let mut b = RouteTableBuilder::new();
    for i in 0..10_000 {
        b.insert(i, &format!("/svc{i}/api"), &[], &[]).unwrap();
    }
    let t = b.build();
    assert_eq!(t.any_host.children.len(), 10_000);
    assert_eq!(find(&t, None, "GET", "/svc9999/api/x"), Some(9_999));
    assert_eq!(find(&t, None, "GET", "/svc9999"), None);
}

/// A table changed route by route answers exactly like one built from
/// scratch with the same routes, and the table it was cloned from keeps
/// answering as before.
#[test]
fn changing_a_clone_matches_a_fresh_build_and_leaves_the_original() {
    let prefixes = ["/", "/a", "/a/b", "/a/b/c", "/b", "/b/a", "/c/d/e"];
    let hosts: [&[&str]; 3] = [&[], &["x.test"], &["x.test", "Y.test"]];
    let methods: [&[&str]; 3] = [&[], &["GET"], &["POST", "PUT"]];
    let probes = [
        "/", "/a", "/a/x", "/a/b", "/a/b/c/d", "/b", "/b/a/z", "/c/d", "/c/d/e/f", "/zz",
    ];
    let answers = |t: &RouteTable| {
        let mut out = Vec::new();
        for host in [None, Some("x.test"), Some("y.test"), Some("other")] {
            for method in ["GET", "POST", "DELETE"] {
                for path in probes {
                    out.push(find(t, host, method, path));
                }
            }
        }
        out
    };
    let mut rng = fastrand::Rng::with_seed(7);
    // Live routes: index → (prefix, hosts, methods).
    type Spec<'a> = (&'a str, &'a [&'a str], &'a [&'a str]);
    let mut live: Vec<Option<Spec>> = vec![None; 12];
    let mut table = RouteTable::default();
    for _ in 0..400 {
        let before = table.clone();
        let before_answers = answers(&before);
        let i = rng.usize(..live.len());
        let hosts_of = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match live[i] {
            Some((prefix, h, _)) => {
                table.remove(i, prefix, &hosts_of(h));
                live[i] = None;
            }
            None => {
                let spec = (
                    prefixes[rng.usize(..prefixes.len())],
                    hosts[rng.usize(..hosts.len())],
                    methods[rng.usize(..methods.len())],
                );
                let ms: Vec<Method> = spec.2.iter().map(|x| m(x)).collect();
                if table.insert(i, spec.0, &hosts_of(spec.1), &ms).is_ok() {
                    live[i] = Some(spec);
                }
            }
        }
        assert_eq!(answers(&before), before_answers, "the original changed");
        let mut fresh = RouteTableBuilder::new();
        for (j, spec) in live.iter().enumerate() {
            if let Some((prefix, h, ms)) = spec {
                let ms: Vec<Method> = ms.iter().map(|x| m(x)).collect();
                fresh.insert(j, prefix, &hosts_of(h), &ms).unwrap();
            }
        }
        assert_eq!(answers(&table), answers(&fresh.build()));
    }
    // Removing everything leaves an empty table.
    for (i, spec) in live.iter().enumerate() {
        if let Some((prefix, h, _)) = spec {
            let h: Vec<String> = h.iter().map(|s| s.to_string()).collect();
            table.remove(i, prefix, &h);
        }
    }
    assert!(table.is_empty());
}
