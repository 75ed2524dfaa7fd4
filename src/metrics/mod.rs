//! Prometheus metrics, on by default: TF Serving's names for requests
//! (`:tensorflow:serving:request_count`, `request_latency`, `runtime_latency`, with a
//! `model_version` label added), plus what TF Serving does not tell operators: model load
//! latency and failures, versions by state, the inference queue, and process
//! metrics. Each server has its own registry (no global state), so tests and embedders can
//! run several servers in one process.
//! It records what the other layers report and renders it; it reads no manager or request
//! state itself (the serving core sets the gauges before each render).

use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Which API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Predict,
    Classify,
    Regress,
    MultiInference,
    GetModelMetadata,
    GetModelStatus,
    ReloadConfig,
    /// The Open Inference Protocol's calls.
    ModelInfer,
    ModelMetadata,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Predict => "predict",
            Api::Classify => "classify",
            Api::Regress => "regress",
            Api::MultiInference => "multi_inference",
            Api::GetModelMetadata => "get_model_metadata",
            Api::GetModelStatus => "get_model_status",
            Api::ReloadConfig => "reload_config",
            Api::ModelInfer => "model_infer",
            Api::ModelMetadata => "model_metadata",
        }
    }
}

/// Which transport a request came through (TF Serving's `entrypoint` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entrypoint {
    Grpc,
    Rest,
}

impl Entrypoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Entrypoint::Grpc => "GRPC",
            Entrypoint::Rest => "REST",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    request_count: IntCounterVec,
    request_latency: HistogramVec,
    runtime_latency: HistogramVec,
    load_latency: HistogramVec,
    load_failures: IntCounterVec,
    pub(crate) versions: IntGaugeVec,
    pub(crate) inference_queue: IntGauge,
    pub(crate) requests_in_flight: IntGauge,
    batch_size: HistogramVec,
}

/// One finished request, as the transports report it.
#[derive(Debug, Clone, Copy)]
pub struct RequestOutcome<'a> {
    pub model: &'a str,
    /// `None` when the request never reached a version.
    pub version: Option<i64>,
    pub api: Api,
    pub entrypoint: Entrypoint,
    /// The canonical code's name (`OK`, `NOT_FOUND`, ...).
    pub status: &'a str,
    pub took: Duration,
}

/// Microsecond buckets from 10 µs up by ×1.8, as TF Serving's latency histograms.
fn micros_buckets() -> Vec<f64> {
    exponential_buckets(10.0, 1.8, 33).expect("valid bucket parameters")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let request_count = IntCounterVec::new(
            Opts::new(
                ":tensorflow:serving:request_count",
                "The total number of requests.",
            ),
            &["model_name", "model_version", "API", "entrypoint", "status"],
        )
        .expect("valid metric");
        let request_latency = HistogramVec::new(
            HistogramOpts::new(
                ":tensorflow:serving:request_latency",
                "Distribution of wall time (in microseconds) for a request, from arrival to the response.",
            )
            .buckets(micros_buckets()),
            &["model_name", "model_version", "API", "entrypoint"],
        )
        .expect("valid metric");
        let runtime_latency = HistogramVec::new(
            HistogramOpts::new(
                ":tensorflow:serving:runtime_latency",
                "Distribution of wall time (in microseconds) in the model runtime, queueing included.",
            )
            .buckets(micros_buckets()),
            &["model_name", "model_version", "API", "runtime"],
        )
        .expect("valid metric");
        let load_latency = HistogramVec::new(
            HistogramOpts::new(
                ":candle_serving:model_load_latency_seconds",
                "Time to load a model version, retries included, in seconds.",
            )
            .buckets(exponential_buckets(0.01, 2.0, 14).expect("valid bucket parameters")),
            &["model_name", "model_version"],
        )
        .expect("valid metric");
        let load_failures = IntCounterVec::new(
            Opts::new(
                ":candle_serving:model_load_failures",
                "Model versions that failed to load (after retries).",
            ),
            &["model_name", "model_version"],
        )
        .expect("valid metric");
        let versions = IntGaugeVec::new(
            Opts::new(
                ":candle_serving:model_versions",
                "Model versions by state (START, LOADING, AVAILABLE, UNLOADING, END).",
            ),
            &["model_name", "state"],
        )
        .expect("valid metric");
        let inference_queue = IntGauge::new(
            ":candle_serving:inference_queue_depth",
            "Requests waiting for an inference thread.",
        )
        .expect("valid metric");
        let requests_in_flight = IntGauge::new(
            ":candle_serving:requests_in_flight",
            "Requests admitted and not yet answered (gRPC and REST; health and metrics excluded).",
        )
        .expect("valid metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new(
                ":candle_serving:batch_size",
                "Rows in each batch that server-side batching ran.",
            )
            .buckets(exponential_buckets(1.0, 2.0, 11).expect("valid bucket parameters")),
            &["model_name", "model_version"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(request_count.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(batch_size.clone()),
            Box::new(request_latency.clone()),
            Box::new(runtime_latency.clone()),
            Box::new(load_latency.clone()),
            Box::new(load_failures.clone()),
            Box::new(versions.clone()),
            Box::new(inference_queue.clone()),
            Box::new(requests_in_flight.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        Metrics {
            registry,
            request_count,
            request_latency,
            runtime_latency,
            load_latency,
            load_failures,
            versions,
            inference_queue,
            requests_in_flight,
            batch_size,
        }
    }

    /// One batch run by server-side batching.
    pub fn batch(&self, model: &str, version: i64, rows: usize) {
        self.batch_size
            .with_label_values(&[model, &version.to_string()])
            .observe(rows as f64);
    }

    /// One finished request.
    pub fn request(&self, r: &RequestOutcome) {
        let version = r.version.map(|v| v.to_string()).unwrap_or_default();
        let (api, entrypoint) = (r.api.as_str(), r.entrypoint.as_str());
        self.request_count
            .with_label_values(&[r.model, &version, api, entrypoint, r.status])
            .inc();
        self.request_latency
            .with_label_values(&[r.model, &version, api, entrypoint])
            .observe(r.took.as_secs_f64() * 1e6);
    }

    /// Time a request spent in the model runtime (its queue included).
    pub fn runtime(&self, model: &str, version: i64, api: Api, took: Duration) {
        self.runtime_latency
            .with_label_values(&[model, &version.to_string(), api.as_str(), "Candle"])
            .observe(took.as_secs_f64() * 1e6);
    }

    pub fn load(&self, model: &str, version: i64, ok: bool, took: Duration) {
        let version = version.to_string();
        self.load_latency
            .with_label_values(&[model, &version])
            .observe(took.as_secs_f64());
        if !ok {
            self.load_failures
                .with_label_values(&[model, &version])
                .inc();
        }
    }

    /// The registry, for parts of the server that keep metrics of their own (rollouts).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
