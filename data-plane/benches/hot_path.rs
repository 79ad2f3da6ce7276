//! Criterion micro-benchmarks of Switchyard's hot path and config compile.
//!
//! - `route_lookup/{10,1000,10000,100000}`: normalise a request path and
//!   find its route (hit) in a table of N routes; `route_miss/*` the same
//!   for a path no route matches. The design target is that cost does not
//!   grow with N (10k within 1.5x of 10).
//! - `route_lookup_tenants/{10,100000}`: the same at a multi-tenant shape,
//!   H hosts × 10 paths (1 host, and 10,000 hosts), a request for one host's
//!   path in the middle of the table; the target is 100k within 1.5x of 10
//!   (issue 23; `bench/scale.sh` measures the rest of that scale).
//! - `balancer_pick/<strategy>/<backends>`: one `Balancer::pick` with its
//!   plan made; `upstream_pick/<strategy>/<backends>`: one
//!   `CompiledUpstream::pick`, which also finds the plan for the backends
//!   out now (the cached one, as nothing flips).
//! - `snapshot_build/*`: `Snapshot::build` of a 10k-route config, with one
//!   shared upstream and with one inline upstream per route (what 10k
//!   `POST /admin/routes` with inline backends produce).
//!
//! - `explain/10k_routes`: `GET /admin/explain`'s work — the live router
//!   asked about one request with what it looked at, the winner's upstream
//!   and its backends' expected shares — in a 10k-route snapshot.
//!
//! Run: `cargo bench -p data-plane --bench hot_path`
//! (quick: `cargo bench -p data-plane --bench hot_path -- --quick`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use data_plane::Patch;
use data_plane::balance::{self, Backends, Candidate, OutSet, PickContext};
use data_plane::config::Strategy;
use data_plane::routing::{RouteTable, RouteTableBuilder, path};
use data_plane::{GatewayConfig, Registry, Snapshot};
use http::Method;

/// Route prefixes shaped like a real gateway: `/svc-<i>/v<k>` with a few
/// deeper ones and some host-specific ones, so the trie has fan-out at the
/// first segment and depth below it.
fn route_paths(n: usize) -> Vec<(String, Vec<String>, Vec<Method>)> {
    (0..n)
        .map(|i| {
            let path = match i % 4 {
                0 => format!("/svc-{i}"),
                1 => format!("/svc-{i}/v1"),
                2 => format!("/svc-{i}/v2/items"),
                _ => format!("/api/svc-{i}"),
            };
            let hosts = if i % 10 == 0 {
                vec![format!("h{i}.example.com")]
            } else {
                vec![]
            };
            let methods = if i % 7 == 0 {
                vec![Method::GET, Method::POST]
            } else {
                vec![]
            };
            (path, hosts, methods)
        })
        .collect()
}

fn table(n: usize) -> RouteTable {
    let mut b = RouteTableBuilder::new();
    for (i, (p, hosts, methods)) in route_paths(n).iter().enumerate() {
        b.insert(i, p, hosts, methods).expect("no conflicts");
    }
    b.build()
}

fn route_lookup(c: &mut Criterion) {
    let mut hit = c.benchmark_group("route_lookup");
    hit.throughput(Throughput::Elements(1));
    for n in [10usize, 1_000, 10_000, 100_000] {
        let t = table(n);
        // The same shape of request at every size: a five-segment path
        // under a three-segment route (`/svc-<i>/v2/items`, i % 4 == 2) in
        // the middle of the table.
        let i = n / 2 - (n / 2) % 4 + 2;
        let req = format!("/svc-{i}/v2/items/42/detail");
        assert!(
            t.find(Some("example.org"), &Method::GET, &req).is_some(),
            "{req} must match"
        );
        hit.bench_with_input(BenchmarkId::from_parameter(n), &req, |b, req| {
            b.iter(|| {
                let p = path::normalize(black_box(req)).unwrap();
                black_box(t.find(black_box(Some("example.org")), &Method::GET, &p))
            })
        });
    }
    hit.finish();

    let mut miss = c.benchmark_group("route_miss");
    for n in [10usize, 1_000, 10_000, 100_000] {
        let t = table(n);
        let req = "/nothing/here/at/all";
        assert!(t.find(None, &Method::GET, req).is_none());
        miss.bench_with_input(BenchmarkId::from_parameter(n), &req, |b, req| {
            b.iter(|| {
                let p = path::normalize(black_box(req)).unwrap();
                black_box(t.find(black_box(Some("example.org")), &Method::GET, &p))
            })
        });
    }
    miss.finish();
}

/// `hosts` × 10 paths: route `h * 10 + p` is `/p<p>` on `t<h>.example`.
fn tenant_table(hosts: usize) -> RouteTable {
    let mut b = RouteTableBuilder::new();
    for h in 0..hosts {
        let host = vec![format!("t{h}.example")];
        for p in 0..10 {
            b.insert(h * 10 + p, &format!("/p{p}"), &host, &[])
                .expect("no conflicts");
        }
    }
    b.build()
}

fn route_lookup_tenants(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup_tenants");
    g.throughput(Throughput::Elements(1));
    for hosts in [1usize, 10_000] {
        let t = tenant_table(hosts);
        let h = hosts / 2;
        let host = format!("t{h}.example");
        let req = "/p7/items/42";
        let found = t
            .find(Some(&host), &Method::GET, req)
            .expect("the request has a route");
        assert_eq!(found.route, h * 10 + 7);
        g.bench_with_input(BenchmarkId::from_parameter(hosts * 10), &host, |b, host| {
            b.iter(|| {
                let p = path::normalize(black_box(req)).unwrap();
                black_box(t.find(black_box(Some(host.as_str())), &Method::GET, &p))
            })
        });
    }
    g.finish();
}

/// A plain-vector view of an upstream's backends.
struct Fake {
    eligible: Vec<bool>,
    in_flight: Vec<u64>,
    ewma_ns: Vec<u64>,
}

impl Fake {
    fn new(n: usize) -> Self {
        Fake {
            eligible: vec![true; n],
            in_flight: (0..n as u64).map(|i| i % 3).collect(),
            ewma_ns: (0..n as u64).map(|i| 1_000_000 + i * 10_000).collect(),
        }
    }
}

impl Backends for Fake {
    fn len(&self) -> usize {
        self.eligible.len()
    }
    fn eligible(&self, i: usize) -> bool {
        self.eligible[i]
    }
    fn in_flight(&self, i: usize) -> u64 {
        self.in_flight[i]
    }
    fn ewma_ns(&self, i: usize) -> u64 {
        self.ewma_ns[i]
    }
}

const STRATEGIES: [Strategy; 5] = [
    Strategy::RoundRobin,
    Strategy::WeightedRoundRobin,
    Strategy::LeastConnections,
    Strategy::P2cEwma,
    Strategy::ConsistentHash,
];

fn balancer_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("balancer_pick");
    for n in [4usize, 32] {
        let keys: Vec<String> = (0..n).map(|i| format!("http://10.0.0.{i}:8080")).collect();
        let candidates: Vec<Candidate> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Candidate {
                weight: 1 + (i as u32 % 5),
                key: k,
            })
            .collect();
        let fake = Fake::new(n);
        for strategy in STRATEGIES {
            let balancer = balance::build(strategy, &candidates);
            let plan = balancer.plan(&OutSet::default());
            let ctx = pick_context(strategy);
            g.bench_function(BenchmarkId::new(strategy.as_str(), n), |b| {
                b.iter(|| black_box(balancer.pick(&plan, black_box(&fake), black_box(&ctx))))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("upstream_pick");
    for n in [4usize, 32] {
        for strategy in STRATEGIES {
            let backends: Vec<_> = (0..n)
                .map(|i| serde_json::json!({"id": i + 1, "url": format!("http://10.0.0.{i}:8080"), "weight": 1 + i % 5}))
                .collect();
            let config: GatewayConfig = serde_json::from_value(serde_json::json!({
                "version": 1, "routes": [],
                "upstreams": [{"name": "u", "strategy": strategy.as_str(), "backends": backends}],
            }))
            .expect("bench config deserialises into GatewayConfig");
            let snap = Snapshot::build(&config, &Registry::new()).unwrap();
            let u = snap.upstream_named("u").unwrap();
            let ctx = pick_context(strategy);
            g.bench_function(BenchmarkId::new(strategy.as_str(), n), |b| {
                b.iter(|| black_box(u.pick(black_box(&ctx), &[])))
            });
        }
    }
    g.finish();
}

fn pick_context(strategy: Strategy) -> PickContext {
    PickContext {
        hash: (strategy == Strategy::ConsistentHash).then_some(0x9e37_79b9_7f4a_7c15),
    }
}

/// A config of `n` routes as JSON (so the bench keeps compiling when
/// fields with defaults are added to the config types): one shared
/// upstream, or one two-backend upstream per route.
fn config(n: usize, shared_upstream: bool) -> GatewayConfig {
    let backends = |u: usize| {
        serde_json::json!([
            {"id": 2 * u + 1, "url": format!("http://10.0.{}.{}:8080", u / 250 % 250, u % 250), "weight": 1},
            {"id": 2 * u + 2, "url": format!("http://10.1.{}.{}:8080", u / 250 % 250, u % 250), "weight": 1},
        ])
    };
    let upstreams: Vec<_> = if shared_upstream {
        vec![serde_json::json!({"name": "shared", "backends": backends(0)})]
    } else {
        (0..n)
            .map(|i| serde_json::json!({"name": format!("r{i}"), "backends": backends(i)}))
            .collect()
    };
    let routes: Vec<_> = route_paths(n)
        .into_iter()
        .enumerate()
        .map(|(i, (p, hosts, methods))| {
            let methods: Vec<&str> = methods.iter().map(Method::as_str).collect();
            serde_json::json!({
                "name": format!("r{i}"), "path": p, "hosts": hosts, "methods": methods,
                "upstream": if shared_upstream { "shared".to_string() } else { format!("r{i}") },
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "version": 1, "routes": routes, "upstreams": upstreams,
    }))
    .expect("bench config deserialises into GatewayConfig")
}

fn snapshot_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot_build");
    g.sample_size(20);
    for (label, shared) in [
        ("10k_routes_1_upstream", true),
        ("10k_routes_10k_upstreams", false),
    ] {
        let cfg = config(10_000, shared);
        // Warm registry, as when republishing a live config.
        let registry = Registry::new();
        Snapshot::build(&cfg, &registry).expect("config compiles");
        g.bench_function(label, |b| {
            b.iter(|| black_box(Snapshot::build(black_box(&cfg), &registry).unwrap()))
        });
    }
    // What one admin change costs the data plane: one route added to (or
    // changed in) a live 10k-route snapshot, the rest shared.
    let cfg = config(10_000, true);
    let registry = Registry::new();
    let live = Snapshot::build(&cfg, &registry).expect("config compiles");
    let route = serde_json::from_value(serde_json::json!({
        "name": "added", "path": "/added/route", "upstream": "shared",
    }))
    .expect("route deserialises");
    let patches = [Patch::Route(route)];
    g.bench_function("patch_1_route_at_10k_routes", |b| {
        b.iter(|| black_box(live.patch(2, black_box(&patches), &registry).unwrap()))
    });
    g.finish();
}

fn explain(c: &mut Criterion) {
    let cfg = config(10_000, true);
    let live = Snapshot::build(&cfg, &Registry::new()).expect("config compiles");
    let (p, hosts, methods) = route_paths(10_000).swap_remove(7_777);
    let req = data_plane::status::explain::Request {
        method: methods.first().cloned().unwrap_or(Method::GET),
        host: hosts.first().cloned(),
        path: format!("{p}/item/42"),
        query: Some("id=7".into()),
        ..Default::default()
    };
    let found = data_plane::status::explain::explain(&live, &req);
    assert!(found.winner.is_some(), "the bench request has a route");
    c.bench_function("explain/10k_routes", |b| {
        b.iter(|| black_box(data_plane::status::explain::explain(&live, black_box(&req))))
    });
}

criterion_group!(
    benches,
    route_lookup,
    route_lookup_tenants,
    balancer_pick,
    snapshot_build,
    explain
);
criterion_main!(benches);
