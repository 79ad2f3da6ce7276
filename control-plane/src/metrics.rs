//! The `/metrics` registry of the admin listener: the data plane's live
//! collector, process metrics (Linux), config publishing and admin
//! requests. Admin metrics are labelled by the route template
//! (`/admin/routes/{name}`), never by the raw path.

use std::sync::Arc;

use data_plane::DataPlane;
use data_plane::counters::BUCKETS;
use data_plane::exporter::LiveCollector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokio::sync::Semaphore;

/// Metrics of the control plane, plus the registry that exports them all.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// One render at a time ([`crate::api::exposition`]).
    renders: Arc<Semaphore>,
    pub admin_requests: IntCounterVec,
    pub publish_seconds: Histogram,
    pub publish_total: IntCounterVec,
    pub store_up: IntGauge,
}

impl Metrics {
    pub fn new(plane: Arc<DataPlane>) -> Self {
        let registry = Registry::new();
        let admin_requests = IntCounterVec::new(
            Opts::new(
                "switchyard_admin_requests_total",
                "Admin API requests by method, endpoint and status.",
            ),
            &["method", "endpoint", "status"],
        )
        .expect("valid metric");
        let publish_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "switchyard_config_publish_duration_seconds",
                "Time to apply a config change: transaction, compile and swap.",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let publish_total = IntCounterVec::new(
            Opts::new(
                "switchyard_config_publish_total",
                "Config changes by result (ok, rejected, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let store_up = IntGauge::new(
            "switchyard_store_up",
            "Whether the config database answered the last time it was asked (0: serving the live config, or the cache file's, until it returns).",
        )
        .expect("valid metric");
        store_up.set(1);
        for c in [
            Box::new(admin_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(store_up.clone()),
            Box::new(publish_seconds.clone()),
            Box::new(publish_total.clone()),
            Box::new(LiveCollector::new(plane)),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::new(
                    std::process::id() as i32,
                    "switchyard",
                ),
            ))
            .expect("process metrics register once");
        Metrics {
            registry,
            renders: Arc::new(Semaphore::new(1)),
            admin_requests,
            publish_seconds,
            publish_total,
            store_up,
        }
    }

    /// The turns to [`Metrics::render`] for [`crate::api::exposition`]:
    /// one at a time.
    pub fn renders(&self) -> &Arc<Semaphore> {
        &self.renders
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> (String, Vec<u8>) {
        let encoder = TextEncoder::new();
        let mut out = Vec::new();
        encoder
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics cannot fail");
        (encoder.format_type().to_string(), out)
    }
}
