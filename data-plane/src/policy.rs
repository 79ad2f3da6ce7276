//! A route's policies, compiled for the proxy (README.md, "Policies"):
//! [`CompiledPolicies::check`] runs the request's side in the fixed order —
//! IP rules → redirect → CORS preflight → auth → rate limit — and either
//! lets the request through (with the request's CORS fields for its
//! response) or answers it ([`Verdict`]); the request-field and
//! response-field edits are `http1`'s ([`RequestEdits`] in the forwarding
//! edits, [`Decoration`] on the response).
//!
//! A route without policies has none compiled (`CompiledRoute::policies`
//! is `None`): it pays one pointer test per request.
//!
//! - [`cors`]: origins, the preflight's answer, the response's fields;
//! - [`rate`]: the token buckets, kept across snapshots by the registry.

pub mod cors;
pub mod rate;

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::policies::{self, Piece, Problem, RateKey, RoutePolicies};
use crate::counters::Denied;
use crate::http1::fields::Fields;
use crate::http1::forward::RequestEdits;
use crate::http1::headers::{self, X_FORWARDED_FOR};
use crate::http1::response::{Decoration, ResponseEdits};
use cors::{CorsCheck, CorsPolicy};
use rate::RateLimiter;

/// One route's policies, ready to run.
#[derive(Debug)]
pub struct CompiledPolicies {
    ip_allow: Vec<IpNet>,
    ip_deny: Vec<IpNet>,
    redirect: Option<(StatusCode, Vec<Piece>)>,
    cors: Option<CorsPolicy>,
    auth: Option<AuthGate>,
    rate: Option<(RateKey, Arc<RateLimiter>)>,
    /// The request's field edits (given to the forwarding edits).
    pub request: Option<Arc<RequestEdits>>,
    response: Option<Arc<ResponseEdits>>,
    /// The policies that can deny a request (the metric's series).
    pub can_deny: Vec<Denied>,
}

#[derive(Debug)]
struct AuthGate {
    header: HeaderName,
    /// `Authorization`: the token follows `Bearer `.
    bearer: bool,
    hashes: Vec<[u8; 32]>,
}

/// What the policies need to know of a request.
#[derive(Debug)]
pub struct PolicyRequest<'a, F> {
    pub method: &'a Method,
    pub fields: &'a F,
    /// The connection's peer, and the proxies trusted to say who the
    /// client is (`--trusted-proxies`).
    pub peer: IpAddr,
    pub trusted: &'a [IpNet],
    pub tls: bool,
    /// The request's host, without port.
    pub host: Option<&'a str>,
    /// The path as routed (normalised), and the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Now, on [`crate::clock::now_ns`]'s clock.
    pub now_ns: u64,
}

/// The gateway's own answer to a request its route's policies stop.
#[derive(Debug)]
pub enum Verdict {
    Denied(Denial),
    Redirect {
        status: StatusCode,
        location: HeaderValue,
    },
    /// A CORS preflight, answered `204` with these fields.
    Preflight(Vec<(HeaderName, HeaderValue)>),
}

/// A request a policy refused.
#[derive(Debug)]
pub struct Denial {
    pub by: Denied,
    pub status: StatusCode,
    /// The error code and message of the answer (the gateway's JSON error
    /// shape).
    pub code: &'static str,
    pub message: &'static str,
    /// Fields the answer carries (`WWW-Authenticate`, `Retry-After`, the
    /// rate-limit fields, CORS fields).
    pub fields: Vec<(HeaderName, HeaderValue)>,
}

/// A request the policies let through.
#[derive(Debug, Default)]
pub struct Passed {
    /// Its response's CORS fields (with a `cors` policy).
    pub cors: Option<Vec<(HeaderName, HeaderValue)>>,
}

static RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static BEARER_REALM: HeaderValue = HeaderValue::from_static("Bearer realm=\"switchyard\"");
static BEARER_INVALID: HeaderValue =
    HeaderValue::from_static("Bearer realm=\"switchyard\", error=\"invalid_token\"");

impl CompiledPolicies {
    /// Compile a route's policies; `limiter` is the route's token buckets
    /// when it has a `rate_limit` (from the registry, so that they outlive
    /// the snapshot). `None` when the route has no policy at all.
    pub fn compile(
        p: &RoutePolicies,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Result<Option<Self>, Problem> {
        if p.is_empty() {
            return Ok(None);
        }
        if let Some(problem) = p.problems().into_iter().next() {
            return Err(problem);
        }
        // Checked above: the parses below cannot fail.
        let nets = |list: &[String]| list.iter().filter_map(|c| policies::cidr(c).ok()).collect();
        let auth = p.auth.as_ref().map(|a| AuthGate {
            header: policies::header_name(&a.header).expect("checked"),
            bearer: a.header.eq_ignore_ascii_case("authorization"),
            hashes: a
                .tokens
                .iter()
                .filter_map(|t| policies::token_hash(&t.sha256).ok())
                .collect(),
        });
        let mut request = RequestEdits::default();
        if let (Some(a), Some(gate)) = (&p.auth, &auth)
            && !a.forward
        {
            request.remove.push(gate.header.clone());
            request.remove_aliases.push(gate.header.clone());
        }
        if let Some(edits) = &p.request_headers {
            let (remove, set, add) = compile_edits(edits);
            request.remove.extend(remove);
            request.set = set;
            request.add = add;
        }
        let response = p.response_headers.as_ref().map(|edits| {
            let (remove, set, add) = compile_edits(edits);
            Arc::new(ResponseEdits { remove, set, add })
        });
        let rate = match (&p.rate_limit, limiter) {
            (Some(r), Some(limiter)) => Some((RateKey::parse(&r.key).expect("checked"), limiter)),
            (Some(r), None) => Some((
                RateKey::parse(&r.key).expect("checked"),
                Arc::new(RateLimiter::new(r)),
            )),
            (None, _) => None,
        };
        let mut can_deny = Vec::new();
        if !p.ip_allow.is_empty() {
            can_deny.push(Denied::IpAllow);
        }
        if !p.ip_deny.is_empty() {
            can_deny.push(Denied::IpDeny);
        }
        if p.cors.is_some() {
            can_deny.push(Denied::Cors);
        }
        if auth.is_some() {
            can_deny.push(Denied::Auth);
        }
        if rate.is_some() {
            can_deny.push(Denied::RateLimit);
        }
        Ok(Some(CompiledPolicies {
            ip_allow: nets(&p.ip_allow),
            ip_deny: nets(&p.ip_deny),
            redirect: p.redirect.as_ref().map(|r| {
                (
                    StatusCode::from_u16(r.status).expect("checked"),
                    policies::template(&r.location).expect("checked"),
                )
            }),
            cors: p.cors.as_deref().map(CorsPolicy::compile),
            auth,
            rate,
            request: (request != RequestEdits::default()).then(|| Arc::new(request)),
            response,
            can_deny,
        }))
    }

    /// The route's rate-limit buckets, if it has a limit.
    pub fn rate_limiter(&self) -> Option<&Arc<RateLimiter>> {
        self.rate.as_ref().map(|(_, limiter)| limiter)
    }

    /// Run the request's side of the policies, in order. (Never inlined:
    /// the routes without policies keep their caller small.)
    #[inline(never)]
    pub fn check<F: Fields>(&self, r: &PolicyRequest<'_, F>) -> Result<Passed, Verdict> {
        let client = if self.ip_allow.is_empty()
            && self.ip_deny.is_empty()
            && !matches!(self.rate, Some((RateKey::ClientIp, _)))
        {
            r.peer
        } else {
            client_ip(r)
        };
        if self.ip_deny.iter().any(|n| n.contains(&client)) {
            return Err(deny(
                Denied::IpDeny,
                StatusCode::FORBIDDEN,
                "forbidden",
                "the client's address is not allowed on this route",
            ));
        }
        if !self.ip_allow.is_empty() && !self.ip_allow.iter().any(|n| n.contains(&client)) {
            return Err(deny(
                Denied::IpAllow,
                StatusCode::FORBIDDEN,
                "forbidden",
                "the client's address is not allowed on this route",
            ));
        }
        if let Some((status, pieces)) = &self.redirect {
            return Err(Verdict::Redirect {
                status: *status,
                location: location(pieces, r),
            });
        }
        let mut passed = Passed::default();
        if let Some(cors) = &self.cors {
            match cors.check(r.method, r.fields) {
                CorsCheck::Preflight(fields) => return Err(Verdict::Preflight(fields)),
                CorsCheck::Refused => {
                    return Err(deny(
                        Denied::Cors,
                        StatusCode::FORBIDDEN,
                        "cors_forbidden",
                        "the origin is not allowed on this route",
                    ));
                }
                CorsCheck::Decorate(fields) => passed.cors = Some(fields),
            }
        }
        // Denials from here on carry the CORS fields: a page on an allowed
        // origin can read why.
        let with_cors = |mut v: Verdict, passed: &Passed| {
            if let (Verdict::Denied(d), Some(cors)) = (&mut v, &passed.cors) {
                d.fields.extend(cors.iter().cloned());
            }
            v
        };
        if let Some(gate) = &self.auth
            && let Err(v) = gate.check(r.fields)
        {
            return Err(with_cors(v, &passed));
        }
        if let Some((key, limiter)) = &self.rate {
            let octets;
            let key = match key {
                RateKey::Route => None,
                RateKey::ClientIp => {
                    octets = match client {
                        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                        IpAddr::V6(ip) => ip.octets(),
                    };
                    Some(&octets[..])
                }
                RateKey::Header(name) => Some(r.fields.all(name).next().unwrap_or_default()),
            };
            let d = limiter.check(key, r.now_ns);
            if !d.allowed {
                let mut denial = deny(
                    Denied::RateLimit,
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests on this route: slow down",
                );
                if let Verdict::Denied(denial) = &mut denial {
                    denial.fields.extend([
                        (header::RETRY_AFTER, HeaderValue::from(d.retry_after_s)),
                        (RATE_LIMIT_LIMIT.clone(), HeaderValue::from(d.limit)),
                        (RATE_LIMIT_REMAINING.clone(), HeaderValue::from(d.remaining)),
                        (RATE_LIMIT_RESET.clone(), HeaderValue::from(d.reset_s)),
                    ]);
                }
                return Err(with_cors(denial, &passed));
            }
        }
        Ok(passed)
    }

    /// What the response of a request that `passed` gets, if anything.
    #[inline(never)]
    pub fn decoration(&self, passed: Passed) -> Option<Decoration> {
        if self.response.is_none() && passed.cors.is_none() {
            return None;
        }
        let cors = passed.cors.is_some();
        Some(Decoration {
            edits: self.response.clone(),
            extra: passed.cors.unwrap_or_default(),
            extra_replaces: if cors { &cors::REPLACED } else { &[] },
        })
    }
}

fn deny(by: Denied, status: StatusCode, code: &'static str, message: &'static str) -> Verdict {
    Verdict::Denied(Denial {
        by,
        status,
        code,
        message,
        fields: Vec::new(),
    })
}

impl AuthGate {
    fn check(&self, fields: &impl Fields) -> Result<(), Verdict> {
        let mut values = fields.all(&self.header);
        let (first, second) = (values.next(), values.next());
        let unauthorized = |presented: bool| {
            let mut v = deny(
                Denied::Auth,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid token is required on this route",
            );
            if self.bearer
                && let Verdict::Denied(d) = &mut v
            {
                let value = if presented {
                    &BEARER_INVALID
                } else {
                    &BEARER_REALM
                };
                d.fields.push((header::WWW_AUTHENTICATE, value.clone()));
            }
            v
        };
        let value = match (first, second) {
            (_, Some(_)) => {
                return Err(deny(
                    Denied::Auth,
                    StatusCode::BAD_REQUEST,
                    "ambiguous_credentials",
                    "the credential field is sent more than once",
                ));
            }
            (None, _) => return Err(unauthorized(false)),
            (Some(v), None) => v,
        };
        let token = if self.bearer {
            match value.split_at_checked(7) {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest,
                _ => return Err(unauthorized(true)),
            }
        } else {
            value
        };
        let token = headers::text(token).map(str::trim).unwrap_or_default();
        if token.is_empty() {
            return Err(unauthorized(true));
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every hash is compared, in constant time each.
        let matched = self
            .hashes
            .iter()
            .fold(subtle::Choice::from(0), |found, h| found | h.ct_eq(&hash));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(unauthorized(true))
        }
    }
}

/// The client's address: the peer's, or, from a trusted proxy, the last
/// address in `X-Forwarded-For` that is not a trusted proxy's.
fn client_ip<F: Fields>(r: &PolicyRequest<'_, F>) -> IpAddr {
    let trusted = |ip: &IpAddr| r.trusted.iter().any(|n| n.contains(ip));
    if !trusted(&r.peer) {
        return r.peer;
    }
    let lines: Vec<&[u8]> = r.fields.all(&X_FORWARDED_FOR).collect();
    let mut client = r.peer;
    for item in lines
        .iter()
        .rev()
        .flat_map(|l| headers::list_items(l).rev())
    {
        match item.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// A redirect's `Location` for the request.
fn location<F>(pieces: &[Piece], r: &PolicyRequest<'_, F>) -> HeaderValue {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Scheme => out.push_str(if r.tls { "https" } else { "http" }),
            Piece::Host => out.push_str(r.host.unwrap_or_default()),
            Piece::Path => out.push_str(r.path),
            Piece::Query => {
                if let Some(q) = r.query {
                    out.push('?');
                    out.push_str(q);
                }
            }
        }
    }
    // The pieces are checked text; the request's parts were checked by the
    // parsers (a path and query are visible ASCII, a host an authority).
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("/"))
}

type Edits = (
    Vec<HeaderName>,
    Vec<(HeaderName, HeaderValue)>,
    Vec<(HeaderName, HeaderValue)>,
);

/// `set`, `add` and `remove` as names and values; `set`'s names are
/// removed too (a set field replaces the other side's).
fn compile_edits(e: &policies::HeaderEdits) -> Edits {
    let pair = |(n, v): (&String, &String)| {
        Some((
            policies::header_name(n).ok()?,
            policies::header_value(v).ok()?,
        ))
    };
    let set: Vec<_> = e.set.iter().filter_map(pair).collect();
    let add: Vec<_> = e.add.iter().filter_map(pair).collect();
    let mut remove: Vec<HeaderName> = e
        .remove
        .iter()
        .filter_map(|n| policies::header_name(n).ok())
        .collect();
    remove.extend(set.iter().map(|(n, _)| n.clone()));
    (remove, set, add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn compiled(json: serde_json::Value) -> CompiledPolicies {
        let p: RoutePolicies = serde_json::from_value(json).unwrap();
        CompiledPolicies::compile(&p, None).unwrap().unwrap()
    }

    fn request<'a>(
        fields: &'a HeaderMap,
        peer: &str,
        trusted: &'a [IpNet],
    ) -> PolicyRequest<'a, HeaderMap> {
        PolicyRequest {
            method: &Method::GET,
            fields,
            peer: peer.parse().unwrap(),
            trusted,
            tls: false,
            host: Some("example.com"),
            path: "/a/b",
            query: Some("x=1"),
            now_ns: 1_000_000_000,
        }
    }

    fn sha(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn denied_by(v: Result<Passed, Verdict>) -> Option<(Denied, u16)> {
        match v {
            Err(Verdict::Denied(d)) => Some((d.by, d.status.as_u16())),
            _ => None,
        }
    }

    #[test]
    fn no_policy_compiles_to_nothing() {
        assert!(
            CompiledPolicies::compile(&RoutePolicies::default(), None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn ip_rules_deny_wins_and_trusted_proxies_decide_the_client() {
        let p = compiled(serde_json::json!({
            "ip_allow": ["10.0.0.0/8", "2001:db8::/32"], "ip_deny": ["10.0.0.7/32"]
        }));
        let h = HeaderMap::new();
        assert!(p.check(&request(&h, "10.1.2.3", &[])).is_ok());
        assert!(p.check(&request(&h, "2001:db8::1", &[])).is_ok());
        assert_eq!(
            denied_by(p.check(&request(&h, "10.0.0.7", &[]))),
            Some((Denied::IpDeny, 403))
        );
        assert_eq!(
            denied_by(p.check(&request(&h, "192.0.2.1", &[]))),
            Some((Denied::IpAllow, 403))
        );
        // From a trusted proxy: the address it forwards for.
        let trusted = ["192.0.2.0/24".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, "10.0.0.7, 192.0.2.9".parse().unwrap());
        assert_eq!(
            denied_by(p.check(&request(&h, "192.0.2.1", &trusted))),
            Some((Denied::IpDeny, 403))
        );
        // Not trusted: its X-Forwarded-For is ignored.
        assert_eq!(
            denied_by(p.check(&request(&h, "192.0.3.1", &trusted))),
            Some((Denied::IpAllow, 403))
        );
    }

    #[test]
    fn the_token_gate() {
        let p = compiled(serde_json::json!({
            "auth": {"header": "X-Admin-Token", "tokens": [{"sha256": sha("letmein")}]}
        }));
        let mut h = HeaderMap::new();
        assert_eq!(
            denied_by(p.check(&request(&h, "10.0.0.1", &[]))),
            Some((Denied::Auth, 401))
        );
        h.insert("x-admin-token", "nope".parse().unwrap());
        assert_eq!(
            denied_by(p.check(&request(&h, "10.0.0.1", &[]))),
            Some((Denied::Auth, 401))
        );
        h.insert("x-admin-token", "letmein".parse().unwrap());
        assert!(p.check(&request(&h, "10.0.0.1", &[])).is_ok());
        h.append("x-admin-token", "letmein".parse().unwrap());
        assert_eq!(
            denied_by(p.check(&request(&h, "10.0.0.1", &[]))),
            Some((Denied::Auth, 400))
        );
        let edits = p.request.as_ref().unwrap();
        assert!(edits.drops(b"x-admin-token") && edits.drops(b"x_admin_token"));
        // Bearer.
        let p = compiled(serde_json::json!({
            "auth": {"header": "Authorization", "tokens": [{"sha256": sha("t0k")}], "forward": true}
        }));
        assert!(p.request.is_none());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer t0k".parse().unwrap());
        assert!(p.check(&request(&h, "10.0.0.1", &[])).is_ok());
        h.insert(header::AUTHORIZATION, "t0k".parse().unwrap());
        let Err(Verdict::Denied(d)) = p.check(&request(&h, "10.0.0.1", &[])) else {
            panic!()
        };
        assert_eq!(d.fields[0].0, header::WWW_AUTHENTICATE);
    }

    #[test]
    fn redirects_fill_the_template() {
        let p = compiled(serde_json::json!({
            "redirect": {"status": 308, "location": "https://{host}{path}{query}"}
        }));
        let h = HeaderMap::new();
        let Err(Verdict::Redirect { status, location }) = p.check(&request(&h, "10.0.0.1", &[]))
        else {
            panic!()
        };
        assert_eq!(
            (status.as_u16(), location.to_str().unwrap()),
            (308, "https://example.com/a/b?x=1")
        );
    }

    #[test]
    fn the_rate_limit_answers_with_its_fields() {
        let p = compiled(serde_json::json!({
            "rate_limit": {"key": "client_ip", "requests_per_second": 1, "burst": 2}
        }));
        let h = HeaderMap::new();
        assert!(p.check(&request(&h, "10.0.0.1", &[])).is_ok());
        assert!(p.check(&request(&h, "10.0.0.1", &[])).is_ok());
        let Err(Verdict::Denied(d)) = p.check(&request(&h, "10.0.0.1", &[])) else {
            panic!()
        };
        assert_eq!(d.status, 429);
        let names: Vec<_> = d.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "retry-after",
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset"
            ]
        );
        assert!(
            p.check(&request(&h, "10.0.0.2", &[])).is_ok(),
            "another client"
        );
    }
}
