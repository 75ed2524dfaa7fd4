//! Command-line flags of `candle_model_server`, with `tensorflow_model_server`'s names and
//! meanings so existing launch scripts keep working. Both `--flag=value` and
//! `--flag value` are accepted; boolean flags may be given bare (`--enable_batching`).
//! Flags only: `server::ServerOptions::from_args` turns them into settings; nothing here
//! reads a file or starts anything.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "candle_model_server",
    about = "A TensorFlow-Serving-compatible model server for Candle models",
    version
)]
pub struct ServerArgs {
    /// gRPC port (0 picks a free one; the log says which).
    #[arg(long = "port", default_value_t = 8500)]
    pub port: u16,

    /// REST port; 0 disables the REST API.
    #[arg(long = "rest_api_port", default_value_t = 8501)]
    pub rest_api_port: u16,

    /// Address to listen on.
    #[arg(long = "host", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// models.config (ModelServerConfig in text format). Default: ./models.config when
    /// neither this nor --model_base_path is given.
    #[arg(long = "model_config_file")]
    pub model_config_file: Option<PathBuf>,

    /// Single-model mode: the model's name.
    #[arg(long = "model_name", default_value = "default")]
    pub model_name: String,

    /// Single-model mode: the folder holding the model's version folders.
    #[arg(long = "model_base_path")]
    pub model_base_path: Option<PathBuf>,

    /// Re-read --model_config_file this often (seconds); 0 reads it once.
    #[arg(long = "model_config_file_poll_wait_seconds", default_value_t = 0)]
    pub model_config_file_poll_wait_seconds: u64,

    /// Scan base paths this often (seconds) besides file-system events; 0 disables polling.
    #[arg(long = "file_system_poll_wait_seconds", default_value_t = 1)]
    pub file_system_poll_wait_seconds: u64,

    /// Where versions of models in object storage (`base_path: "s3://..."`, `gs://`,
    /// `az://`) are downloaded before they load. One server process per folder.
    #[arg(long = "model_cache_dir")]
    pub model_cache_dir: Option<PathBuf>,

    /// Allow version labels on versions that are not AVAILABLE (yet).
    #[arg(long = "allow_version_labels_for_unavailable_models", num_args = 0..=1,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub allow_version_labels_for_unavailable_models: bool,

    /// Batch requests together on the server.
    #[arg(long = "enable_batching", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = ArgAction::Set)]
    pub enable_batching: bool,

    /// BatchingParameters in text format.
    #[arg(long = "batching_parameters_file")]
    pub batching_parameters_file: Option<PathBuf>,

    /// Models (comma-separated names) whose BERT encoders load with int8 dense layers (VNNI
    /// dot products where the CPU has them): faster and smaller, with slightly different
    /// outputs (cosine ≥ 0.999 to fp32 on MiniLM).
    #[arg(long = "int8_models", value_delimiter = ',')]
    pub int8_models: Vec<String>,

    /// MonitoringConfig in text format (Prometheus endpoint).
    #[arg(long = "monitoring_config_file")]
    pub monitoring_config_file: Option<PathBuf>,

    /// Retries of a failed load before the version ends in error.
    #[arg(long = "max_num_load_retries", default_value_t = 5)]
    pub max_num_load_retries: u32,

    /// Wait between load retries, in microseconds. (TF Serving's default is one minute;
    /// one second suits folders that are still being copied.)
    #[arg(long = "load_retry_interval_micros", default_value_t = 1_000_000)]
    pub load_retry_interval_micros: u64,

    /// Threads that load models, apart from those that serve.
    #[arg(long = "num_load_threads", default_value_t = 2)]
    pub num_load_threads: usize,

    /// SSLConfig in text format: serve gRPC and REST over TLS (mutual TLS with client_verify).
    #[arg(long = "ssl_config_file")]
    pub ssl_config_file: Option<PathBuf>,

    /// Deadline of a REST request in milliseconds (0: none).
    #[arg(long = "rest_api_timeout_in_ms", default_value_t = 30_000)]
    pub rest_api_timeout_in_ms: u64,

    /// Largest REST request body in bytes (JSON spells bytes out, so it may exceed
    /// --max_request_bytes; what the body decodes to may not).
    #[arg(long = "rest_api_max_body_bytes", default_value_t = 8 * 1024 * 1024)]
    pub rest_api_max_body_bytes: usize,

    /// Accepted for compatibility and ignored: tokio sizes its own pool.
    #[arg(long = "grpc_max_threads")]
    pub grpc_max_threads: Option<u64>,

    /// Accepted for compatibility and ignored.
    #[arg(long = "rest_api_num_threads")]
    pub rest_api_num_threads: Option<u64>,

    /// Threads that tokenise and run models (default: one per core).
    #[arg(long = "inference_threads")]
    pub inference_threads: Option<usize>,

    /// Requests allowed to wait for an inference thread before RESOURCE_EXHAUSTED.
    #[arg(long = "max_queued_requests", default_value_t = 1024)]
    pub max_queued_requests: usize,

    /// Where asynchronous jobs (`:predictAsync`, JobService) wait: `memory` (in this
    /// process) or `redis://host:port/db`, a Redis stream that every server pointed at the
    /// same Redis takes jobs from.
    #[arg(long = "job_queue", default_value = "memory")]
    pub job_queue: String,

    /// A job whose process has not reported for this long (it died) is run by another.
    #[arg(long = "job_visibility_timeout_seconds", default_value_t = 60)]
    pub job_visibility_timeout_seconds: u64,

    /// How long a finished job's result (or error) is kept.
    #[arg(long = "job_result_ttl_seconds", default_value_t = 86_400)]
    pub job_result_ttl_seconds: u64,

    /// Jobs pending or running at once in the queue; beyond, submission is refused with
    /// 429 / RESOURCE_EXHAUSTED.
    #[arg(long = "max_pending_jobs", default_value_t = 10_000)]
    pub max_pending_jobs: usize,

    /// Bytes of the requests of jobs pending or running at once; beyond, submission is
    /// refused with 429 / RESOURCE_EXHAUSTED. Bounds the memory (or Redis) that queued
    /// requests take, whatever their size.
    #[arg(long = "max_pending_job_bytes", default_value_t = 1 << 30)]
    pub max_pending_job_bytes: usize,

    /// Jobs this process runs at once (0: it only submits); they share the inference
    /// threads with interactive requests, behind them.
    #[arg(long = "job_concurrency", default_value_t = 16)]
    pub job_concurrency: usize,

    /// Largest batch (dimension 0) one request may carry.
    #[arg(long = "max_request_batch_size", default_value_t = 256)]
    pub max_request_batch_size: usize,

    /// Largest size of any one dimension of a request input.
    #[arg(long = "max_request_dim", default_value_t = 1 << 16)]
    pub max_request_dim: usize,

    /// Most elements of all inputs of one request together (also bounds the values of a
    /// REST JSON body).
    #[arg(long = "max_request_elements", default_value_t = 1 << 18)]
    pub max_request_elements: usize,

    /// Largest request in bytes: the gRPC message, and what any request decodes to.
    #[arg(long = "max_request_bytes", default_value_t = 4 << 20)]
    pub max_request_bytes: usize,

    /// Longest string input, in characters; longer ones are refused before tokenising.
    #[arg(long = "max_string_length", default_value_t = 1 << 16)]
    pub max_string_length: usize,

    /// Deepest nesting of a REST JSON body.
    #[arg(long = "max_json_depth", default_value_t = 32)]
    pub max_json_depth: usize,

    /// Requests decoded and run at once, gRPC and REST together; 0 for no limit.
    #[arg(long = "max_concurrent_requests", default_value_t = 32)]
    pub max_concurrent_requests: usize,

    /// How long a request beyond --max_concurrent_requests waits for a turn before
    /// RESOURCE_EXHAUSTED / 429 (milliseconds).
    #[arg(long = "admission_wait_ms", default_value_t = 2000)]
    pub admission_wait_ms: u64,

    /// Longest a ReloadConfig waits for new versions to load (seconds) when the client
    /// sets no shorter deadline.
    #[arg(long = "reload_config_timeout_seconds", default_value_t = 60)]
    pub reload_config_timeout_seconds: u64,

    /// Log format.
    #[arg(long = "log_format", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServerArgs {
    /// Parses flags given without the program name (for tests and embedders).
    pub fn parse_args(args: &[String]) -> Self {
        Self::parse_from(
            std::iter::once("candle_model_server".to_string()).chain(args.iter().cloned()),
        )
    }

    pub fn poll(seconds: u64) -> Option<Duration> {
        (seconds > 0).then(|| Duration::from_secs(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tensorflow_model_server_style_flags() {
        let args = ServerArgs::try_parse_from([
            "candle_model_server",
            "--port=9000",
            "--rest_api_port=0",
            "--model_config_file=/models/models.config",
            "--model_config_file_poll_wait_seconds=60",
            "--enable_batching",
            "--allow_version_labels_for_unavailable_models=true",
            "--grpc_max_threads",
            "8",
        ])
        .unwrap();
        assert_eq!(args.port, 9000);
        assert_eq!(args.rest_api_port, 0);
        assert!(args.enable_batching);
        assert!(args.allow_version_labels_for_unavailable_models);
        assert_eq!(args.model_config_file_poll_wait_seconds, 60);
        assert_eq!(args.grpc_max_threads, Some(8));
        let off = ServerArgs::try_parse_from(["x", "--enable_batching=false"]).unwrap();
        assert!(!off.enable_batching);
    }
}
