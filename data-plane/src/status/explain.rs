//! "Which route would take this request, and why": the live snapshot's own
//! router asked about one request, with what it looked at and passed over,
//! the winner's upstream and the backends it would choose from.
//!
//! Nothing here is a second router: the winner is [`Snapshot::find`]'s,
//! the candidates are the walk it makes ([`Snapshot::considered`]), the path
//! is normalised by the proxy's own [`path::normalize`], a `consistent_hash`
//! key is looked up in the upstream's own table. No counter moves and no
//! balancer takes a turn (a hash lookup is a read).

use http::Method;
use serde::Serialize;

use super::upstream_shares;
use crate::balance::{ConsistentHash, PickContext};
use crate::config::HashOn;
use crate::routing::path;
use crate::snapshot::Snapshot;

/// The request to explain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: Method,
    /// Without a port, any case.
    pub host: Option<String>,
    /// As the client sends it (not yet normalised).
    pub path: String,
    pub query: Option<String>,
    /// Header fields (for a `header:` or `cookie:` hash key).
    pub headers: Vec<(String, String)>,
    /// The client address (for a `client_ip` hash key).
    pub client_ip: Option<std::net::IpAddr>,
}

/// What the router made of it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub config_version: u64,
    pub method: String,
    pub host: Option<String>,
    /// The path routing sees, or why the proxy would refuse it (400).
    pub normalized_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_error: Option<String>,
    /// The routes the lookup looked at, in its order: those naming the
    /// host, then those for any host, shortest prefix first.
    pub considered: Vec<ConsideredRoute>,
    /// The route that takes the request (`null`: none, a 404).
    pub winner: Option<Winner>,
}

/// A route the lookup looked at, and why it won or lost.
#[derive(Debug, Clone, Serialize)]
pub struct ConsideredRoute {
    pub route: String,
    pub path: String,
    pub hosts: Vec<String>,
    pub methods: Vec<String>,
    /// `host` (it names the request's host) or `any`.
    pub host_match: &'static str,
    /// The length of the path prefix it sits at.
    pub prefix_len: usize,
    /// Its prefix ends on a segment boundary of the path (`false`: it ends
    /// inside a segment, as `/api` in `/apix`, and cannot match).
    pub segment_match: bool,
    pub method_match: bool,
    pub wins: bool,
    pub reason: String,
}

/// The winner, and where the request would go.
#[derive(Debug, Clone, Serialize)]
pub struct Winner {
    pub route: String,
    /// `null` for a route that only redirects.
    pub upstream: Option<String>,
    /// The path and query sent upstream (the route's prefix stripped if it
    /// says so).
    pub upstream_path: String,
    pub strategy: Option<&'static str>,
    pub backends: Vec<BackendChoice>,
    /// For `consistent_hash`: the key's backend, when the request has the
    /// key (else it would be spread in weighted turn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_backend: Option<String>,
}

/// One backend of the winner's upstream.
#[derive(Debug, Clone, Serialize)]
pub struct BackendChoice {
    pub url: String,
    pub weight: u32,
    pub state: &'static str,
    /// It would take requests now (weight above 0, not unhealthy or
    /// ejected; or all, when none would and the upstream fails open).
    pub eligible: bool,
    pub expected_share: f64,
}

/// Explain `req` against `snapshot`.
pub fn explain(snapshot: &Snapshot, req: &Request) -> Explanation {
    let host = req.host.as_deref().map(str::to_ascii_lowercase);
    let mut out = Explanation {
        config_version: snapshot.version(),
        method: req.method.to_string(),
        host: host.clone(),
        normalized_path: None,
        path_error: None,
        considered: Vec::new(),
        winner: None,
    };
    let normalized = match path::normalize(&req.path) {
        Ok(p) => p.into_owned(),
        Err(e) => {
            out.path_error = Some(e.to_string());
            return out;
        }
    };
    let host = host.as_deref();
    let found = snapshot.find(host, &req.method, &normalized);
    let won = found.map(|(m, _)| m.route);
    let best = found.map(|(m, _)| m);
    let considered = snapshot.considered(host, &req.method, &normalized);
    for c in &considered {
        let route = snapshot.route(c.route);
        let config = route.config();
        let wins = Some(c.route) == won;
        let reason = match best {
            _ if wins => "the longest matching prefix that takes the method".to_string(),
            _ if !c.on_boundary => {
                // The path segment its prefix ends inside.
                let start = normalized[..c.prefix_len].rfind('/').map_or(0, |i| i + 1);
                let end = normalized[c.prefix_len..]
                    .find('/')
                    .map_or(normalized.len(), |i| c.prefix_len + i);
                format!(
                    "{:?} ends inside the path segment {:?}: prefixes match whole segments",
                    config.path,
                    &normalized[start..end]
                )
            }
            _ if !c.method_ok => format!("{} is not one of its methods", req.method),
            Some(b) if b.prefix_len > c.prefix_len => format!(
                "route {:?} matches a longer prefix",
                snapshot.route(b.route).name
            ),
            Some(b) => {
                let winner = &snapshot.route(b.route).name;
                if considered.iter().any(|w| w.route == b.route && w.by_host) && !c.by_host {
                    format!("route {winner:?} names the host, at the same prefix")
                } else {
                    format!("route {winner:?} lists the method, at the same prefix")
                }
            }
            None => "no route takes the request".to_string(),
        };
        out.considered.push(ConsideredRoute {
            route: route.name.to_string(),
            path: config.path.clone(),
            hosts: config.hosts.clone(),
            methods: config.methods.clone(),
            host_match: if c.by_host { "host" } else { "any" },
            prefix_len: c.prefix_len,
            segment_match: c.on_boundary,
            method_match: c.method_ok,
            wins,
            reason,
        });
    }
    out.normalized_path = Some(normalized.clone());
    let Some((m, route)) = found else {
        return out;
    };
    let rest = if route.strip_prefix {
        m.strip(&normalized)
    } else {
        &normalized
    };
    let upstream_path = match &req.query {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let mut winner = Winner {
        route: route.name.to_string(),
        upstream: None,
        upstream_path,
        strategy: None,
        backends: Vec::new(),
        hash_backend: None,
    };
    if let Some(slot) = route.upstream {
        let u = snapshot.upstream(slot);
        winner.upstream = Some(u.name.to_string());
        winner.strategy = Some(u.strategy.as_str());
        let (eligible, shares) = upstream_shares(u);
        winner.backends = u
            .backends
            .iter()
            .zip(eligible.iter().zip(&shares))
            .map(|(b, (e, s))| BackendChoice {
                url: b.url.to_string(),
                weight: b.weight,
                state: b.state.condition().as_str(),
                eligible: *e,
                expected_share: *s,
            })
            .collect();
        if let Some(hash) = u.hash_on.as_ref().and_then(|h| key_hash(h, req)) {
            let ctx = PickContext { hash: Some(hash) };
            winner.hash_backend = u.pick(&ctx, &[]).map(|i| u.backends[i].url.to_string());
        }
    }
    out.winner = Some(winner);
    out
}

/// The hash of the request's `hash_on` key, as the proxy computes it.
fn key_hash(hash_on: &HashOn, req: &Request) -> Option<u64> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    match hash_on {
        HashOn::Header(name) => header(name.as_str()).map(|v| ConsistentHash::hash(v.as_bytes())),
        HashOn::Cookie(name) => header("cookie")?
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| ConsistentHash::hash(v.as_bytes())),
        HashOn::ClientIp => req.client_ip.map(|ip| match ip {
            std::net::IpAddr::V4(ip) => ConsistentHash::hash(&ip.octets()),
            std::net::IpAddr::V6(ip) => ConsistentHash::hash(&ip.octets()),
        }),
    }
}
