//! Upstream policy in a request body: the DTOs and their validation into
//! the data plane's [`UpstreamPolicy`] (which is also how the store keeps
//! it, as JSON, and how the API shows it). The DTOs give every member as an
//! `Option`, so that each bad member is reported with the API's own message
//! and the defaults are `UpstreamPolicy`'s, written once in
//! `data_plane::config`.
//!
//! Limits (documented in openapi.yaml): timeouts: `connect_ms` 1–60000,
//! `response_header_ms` and `body_idle_ms` 1–3600000; `retries` 0–5
//! (default 1); `health_check.interval_ms` 100–3600000, `timeout_ms`
//! 1–60000 and not above the interval, thresholds 1–100,
//! `expected_statuses` 100–599 (at most 32);
//! `outlier_detection.consecutive_failures` 1–1000, `base_ejection_ms`
//! 100–300000, `max_ejection_percent` 0–100.

use data_plane::config::{
    HashOn, HealthCheck, MAX_EJECTION_MS, MAX_RETRIES, OutlierDetection, Strategy, Timeouts,
    UpstreamPolicy, UpstreamTls,
};
use serde::Deserialize;

use super::Errors;

pub const MAX_CONNECT_MS: u64 = 60_000;
pub const MAX_RESPONSE_HEADER_MS: u64 = 3_600_000;

/// `timeouts` in a request body.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    pub connect_ms: Option<u64>,
    pub response_header_ms: Option<u64>,
    pub body_idle_ms: Option<u64>,
}

/// `tls` in a request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

/// `health_check` in a request body; omitted fields take their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    pub path: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub expected_statuses: Option<Vec<u16>>,
}

/// `outlier_detection` in a request body.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSpec {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<u32>,
    pub base_ejection_ms: Option<u64>,
    pub max_ejection_percent: Option<u32>,
}

/// The policy fields of an upstream body, before validation.
#[derive(Debug, Clone, Default)]
pub struct PolicySpec {
    pub timeouts: Option<TimeoutsSpec>,
    pub hash_on: Option<String>,
    pub health_check: Option<HealthCheckSpec>,
    pub outlier_detection: Option<OutlierSpec>,
    pub retries: Option<u32>,
    pub fail_open: Option<bool>,
    pub tls: Option<TlsSpec>,
    pub http2: Option<bool>,
}

fn check_tls(e: &mut Errors, spec: TlsSpec) -> UpstreamTls {
    if let Some(path) = &spec.ca_file
        && (path.is_empty() || path.len() > 4096 || !path.starts_with('/') || path.contains('\0'))
    {
        e.add("/tls/ca_file", "must be an absolute file path");
    }
    if let Some(name) = &spec.server_name
        && !super::is_host_name(&name.to_ascii_lowercase())
        && name.parse::<std::net::IpAddr>().is_err()
    {
        e.add("/tls/server_name", "must be a DNS name or IP address");
    }
    UpstreamTls {
        ca_file: spec.ca_file,
        server_name: spec.server_name.map(|n| n.to_ascii_lowercase()),
        insecure_skip_verify: spec.insecure_skip_verify.unwrap_or(false),
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    e: &mut Errors,
    pointer: &str,
    value: T,
    lo: T,
    hi: T,
) -> T {
    if value < lo || value > hi {
        e.add(pointer, format!("must be between {lo} and {hi}"));
    }
    value
}

fn check_timeouts(errors: &mut Errors, spec: TimeoutsSpec) -> Timeouts {
    let d = Timeouts::default();
    let connect_ms = spec.connect_ms.unwrap_or(d.connect_ms);
    if !(1..=MAX_CONNECT_MS).contains(&connect_ms) {
        errors.add(
            "/timeouts/connect_ms",
            format!("must be between 1 and {MAX_CONNECT_MS}"),
        );
    }
    let response_header_ms = spec.response_header_ms.unwrap_or(d.response_header_ms);
    if !(1..=MAX_RESPONSE_HEADER_MS).contains(&response_header_ms) {
        errors.add(
            "/timeouts/response_header_ms",
            format!("must be between 1 and {MAX_RESPONSE_HEADER_MS}"),
        );
    }
    let body_idle_ms = spec.body_idle_ms.unwrap_or(d.body_idle_ms);
    if !(1..=MAX_RESPONSE_HEADER_MS).contains(&body_idle_ms) {
        errors.add(
            "/timeouts/body_idle_ms",
            format!("must be between 1 and {MAX_RESPONSE_HEADER_MS}"),
        );
    }
    Timeouts {
        connect_ms,
        response_header_ms,
        body_idle_ms,
    }
}

fn check_health(e: &mut Errors, spec: HealthCheckSpec) -> HealthCheck {
    let d = HealthCheck::default();
    let path = spec.path.unwrap_or(d.path);
    if !path.starts_with('/')
        || path.len() > 1024
        || path.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'#')
    {
        e.add(
            "/health_check/path",
            "must start with '/', be at most 1024 bytes and contain no whitespace, control characters or '#'",
        );
    }
    let interval_ms = in_range(
        e,
        "/health_check/interval_ms",
        spec.interval_ms.unwrap_or(d.interval_ms),
        100,
        3_600_000,
    );
    let timeout_ms = in_range(
        e,
        "/health_check/timeout_ms",
        spec.timeout_ms.unwrap_or(d.timeout_ms),
        1,
        60_000,
    );
    if timeout_ms > interval_ms {
        e.add(
            "/health_check/timeout_ms",
            "must not be longer than interval_ms",
        );
    }
    let healthy_threshold = in_range(
        e,
        "/health_check/healthy_threshold",
        spec.healthy_threshold.unwrap_or(d.healthy_threshold),
        1,
        100,
    );
    let unhealthy_threshold = in_range(
        e,
        "/health_check/unhealthy_threshold",
        spec.unhealthy_threshold.unwrap_or(d.unhealthy_threshold),
        1,
        100,
    );
    let expected_statuses = spec.expected_statuses.unwrap_or_default();
    if expected_statuses.len() > 32 {
        e.add(
            "/health_check/expected_statuses",
            "must list at most 32 statuses",
        );
    }
    for (i, s) in expected_statuses.iter().enumerate() {
        in_range(
            e,
            &format!("/health_check/expected_statuses/{i}"),
            *s,
            100,
            599,
        );
    }
    HealthCheck {
        path,
        interval_ms,
        timeout_ms,
        healthy_threshold,
        unhealthy_threshold,
        expected_statuses,
    }
}

fn check_outlier(e: &mut Errors, spec: OutlierSpec) -> OutlierDetection {
    let d = OutlierDetection::default();
    OutlierDetection {
        enabled: spec.enabled.unwrap_or(d.enabled),
        consecutive_failures: in_range(
            e,
            "/outlier_detection/consecutive_failures",
            spec.consecutive_failures.unwrap_or(d.consecutive_failures),
            1,
            1000,
        ),
        base_ejection_ms: in_range(
            e,
            "/outlier_detection/base_ejection_ms",
            spec.base_ejection_ms.unwrap_or(d.base_ejection_ms),
            100,
            MAX_EJECTION_MS,
        ),
        max_ejection_percent: in_range(
            e,
            "/outlier_detection/max_ejection_percent",
            spec.max_ejection_percent
                .unwrap_or(d.max_ejection_percent as u32),
            0,
            100,
        ) as u8,
    }
}

impl PolicySpec {
    /// Validate against the upstream's `strategy`.
    pub(super) fn validate(self, e: &mut Errors, strategy: Strategy) -> UpstreamPolicy {
        let d = UpstreamPolicy::default();
        let timeouts = check_timeouts(e, self.timeouts.unwrap_or_default());
        let hash_on = match self.hash_on {
            None if strategy == Strategy::ConsistentHash => {
                e.add("/hash_on", "is required by the consistent_hash strategy");
                None
            }
            None => None,
            Some(_) if strategy != Strategy::ConsistentHash => {
                e.add("/hash_on", "is only used by the consistent_hash strategy");
                None
            }
            Some(raw) => match HashOn::try_from(raw) {
                Ok(h) => Some(h),
                Err(reason) => {
                    e.add("/hash_on", reason);
                    None
                }
            },
        };
        UpstreamPolicy {
            timeouts,
            hash_on,
            health_check: self.health_check.map(|h| check_health(e, h)),
            outlier_detection: self
                .outlier_detection
                .map_or(d.outlier_detection, |o| check_outlier(e, o)),
            retries: in_range(
                e,
                "/retries",
                self.retries.unwrap_or(d.retries),
                0,
                MAX_RETRIES,
            ),
            fail_open: self.fail_open.unwrap_or(d.fail_open),
            tls: self.tls.map_or(d.tls, |t| check_tls(e, t)),
            http2: self.http2.unwrap_or(d.http2),
        }
    }
}
