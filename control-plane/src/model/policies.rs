//! Route policies in a request body: the DTOs and their validation into
//! the data plane's [`RoutePolicies`] (which is also how the store keeps
//! them, as JSON, and how the API shows them).
//!
//! The DTOs read only the shape: which members there are (unknown ones are
//! refused), of which type, and which are required (`"is required"` at the
//! member's pointer). Every rule about the values is
//! [`RoutePolicies::problems`], the one the snapshot checks too: it runs
//! here on the value the DTOs made, its pointers put under `/policies`, so
//! the admin API and the data plane cannot disagree about what is valid.
//!
//! Auth tokens come in plain text (a JSON string: 1–256 bytes of visible
//! ASCII, no spaces) or as their hash (`{"sha256": "<64 lowercase hex>"}`,
//! how they are stored, shown and exported, so an export can be imported
//! again). A plain token is hashed here and only its hash goes on: it is
//! never stored, shown, logged or repeated in an error, even when refused
//! (its `Debug` is redacted, and a refused token is named by its pointer
//! alone).

use std::fmt;

use data_plane::config::policies::{
    Auth, Cors, HeaderEdits, RateLimit, Redirect, RoutePolicies, TokenHash,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

use super::Errors;

/// Longest plain-text auth token, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;

/// `policies` in a route body; absent or `null` members mean none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesSpec {
    pub auth: Option<AuthSpec>,
    pub ip_allow: Option<Vec<String>>,
    pub ip_deny: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitSpec>,
    pub cors: Option<CorsSpec>,
    pub request_headers: Option<HeaderEditsSpec>,
    pub response_headers: Option<HeaderEditsSpec>,
    pub redirect: Option<RedirectSpec>,
}

/// `policies.auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    pub header: Option<String>,
    pub tokens: Option<Tokens>,
    pub forward: Option<bool>,
}

/// `policies.auth.tokens`: a list of tokens. Read by hand so that a plain
/// token given where the list belongs (`"tokens": "secret"`) is not quoted
/// back in the error, as serde's "invalid type" message would.
#[derive(Debug, Clone, Default)]
pub struct Tokens(pub Vec<TokenSpec>);

/// One auth token as a client may write it.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSpec {
    /// In plain text (hashed before it goes anywhere).
    Plain(String),
    /// As its SHA-256 hash (`{"sha256": "…"}`).
    Hash(String),
}

/// A plain token is never printed, not even in a debug dump of a body.
impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSpec::Plain(_) => f.write_str("Plain(<redacted>)"),
            TokenSpec::Hash(h) => f.debug_tuple("Hash").field(h).finish(),
        }
    }
}

/// `policies.rate_limit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub key: Option<String>,
    pub requests_per_second: Option<u32>,
    pub burst: Option<u32>,
}

/// `policies.cors`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSpec {
    pub allow_origins: Option<Vec<String>>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub max_age_s: Option<u32>,
}

/// `policies.request_headers` and `policies.response_headers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEditsSpec {
    pub set: Option<std::collections::BTreeMap<String, String>>,
    pub add: Option<std::collections::BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

/// `policies.redirect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSpec {
    pub status: Option<u16>,
    pub location: Option<String>,
}

impl<'de> Deserialize<'de> for Tokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Tokens;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of tokens")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tokens, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
                while let Some(t) = seq.next_element()? {
                    out.push(t);
                }
                Ok(Tokens(out))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Tokens, E> {
                Err(E::custom(
                    "must be a list of tokens, not a string (write [\"…\"])",
                ))
            }
        }
        d.deserialize_seq(List)
    }
}

impl<'de> Deserialize<'de> for TokenSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Token;
        impl<'de> Visitor<'de> for Token {
            type Value = TokenSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token (a string) or {\"sha256\": \"<64 lowercase hex digits>\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TokenSpec, E> {
                Ok(TokenSpec::Plain(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<TokenSpec, E> {
                Ok(TokenSpec::Plain(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TokenSpec, A::Error> {
                let mut hash = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "sha256" if hash.is_none() => hash = Some(map.next_value::<String>()?),
                        "sha256" => return Err(de::Error::duplicate_field("sha256")),
                        other => return Err(de::Error::unknown_field(other, &["sha256"])),
                    }
                }
                hash.map(TokenSpec::Hash)
                    .ok_or_else(|| de::Error::missing_field("sha256"))
            }
        }
        d.deserialize_any(Token)
    }
}

/// The hash a plain token is kept as: SHA-256, 64 lowercase hex digits.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A plain token the gateway accepts: 1–256 bytes of visible ASCII.
fn plain_token_ok(token: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Reports a policy's problems under `/policies`, remembering where a
/// member was missing or refused, so that the placeholder standing in for
/// it is not reported again by [`RoutePolicies::problems`].
struct Report<'e> {
    errors: &'e mut Errors,
    reported: Vec<String>,
}

impl Report<'_> {
    /// `pointer` is below `/policies` (`/auth/header`).
    fn add(&mut self, pointer: String, detail: impl Into<String>) {
        self.errors.add(format!("/policies{pointer}"), detail);
        self.reported.push(pointer);
    }

    /// `value`, or (reported) its type's default when it is absent.
    fn required<T: Default>(&mut self, pointer: &str, value: Option<T>) -> T {
        value.unwrap_or_else(|| {
            self.add(pointer.to_string(), "is required");
            T::default()
        })
    }

    /// Token `i` as kept: its hash (a plain token checked, then hashed).
    fn token(&mut self, i: usize, token: TokenSpec) -> TokenHash {
        let sha256 = match token {
            TokenSpec::Hash(h) => h,
            TokenSpec::Plain(plain) => {
                if !plain_token_ok(&plain) {
                    self.add(
                        format!("/auth/tokens/{i}"),
                        format!(
                            "must be 1 to {MAX_TOKEN_LEN} bytes of visible ASCII (no spaces), or {{\"sha256\": \"<64 lowercase hex digits>\"}}"
                        ),
                    );
                }
                hash_token(&plain)
            }
        };
        TokenHash { sha256 }
    }

    /// Whether `pointer` is, or is inside, a member already reported.
    fn covers(&self, pointer: &str) -> bool {
        self.reported.iter().any(|r| {
            pointer
                .strip_prefix(r.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

fn edits(spec: HeaderEditsSpec) -> HeaderEdits {
    HeaderEdits {
        set: spec.set.unwrap_or_default(),
        add: spec.add.unwrap_or_default(),
        remove: spec.remove.unwrap_or_default(),
    }
}

impl PoliciesSpec {
    /// Validate into the stored form (tokens hashed), every problem added
    /// to `e` with its pointer from the body's root.
    pub(super) fn validate(self, e: &mut Errors) -> RoutePolicies {
        let mut r = Report {
            errors: e,
            reported: Vec::new(),
        };
        let auth = self.auth.map(|a| Auth {
            header: r.required("/auth/header", a.header),
            tokens: r
                .required("/auth/tokens", a.tokens)
                .0
                .into_iter()
                .enumerate()
                .map(|(i, t)| r.token(i, t))
                .collect(),
            forward: a.forward.unwrap_or(false),
        });
        let rate_limit = self.rate_limit.map(|l| RateLimit {
            key: r.required("/rate_limit/key", l.key),
            requests_per_second: r
                .required("/rate_limit/requests_per_second", l.requests_per_second),
            burst: r.required("/rate_limit/burst", l.burst),
        });
        let cors = self.cors.map(|c| Cors {
            allow_origins: r.required("/cors/allow_origins", c.allow_origins),
            allow_methods: c.allow_methods.unwrap_or_default(),
            allow_headers: c.allow_headers.unwrap_or_default(),
            expose_headers: c.expose_headers.unwrap_or_default(),
            allow_credentials: c.allow_credentials.unwrap_or(false),
            max_age_s: c.max_age_s,
        });
        let redirect = self.redirect.map(|d| Redirect {
            status: r.required("/redirect/status", d.status),
            location: r.required("/redirect/location", d.location),
        });
        let policies = RoutePolicies {
            auth: auth.map(Box::new),
            ip_allow: self.ip_allow.unwrap_or_default(),
            ip_deny: self.ip_deny.unwrap_or_default(),
            rate_limit: rate_limit.map(Box::new),
            cors: cors.map(Box::new),
            request_headers: self.request_headers.map(|e| Box::new(edits(e))),
            response_headers: self.response_headers.map(|e| Box::new(edits(e))),
            redirect: redirect.map(Box::new),
        };
        for problem in policies.problems() {
            if !r.covers(&problem.pointer) {
                r.errors
                    .add(format!("/policies{}", problem.pointer), problem.detail);
            }
        }
        policies
    }
}

#[cfg(test)]
mod tests;
