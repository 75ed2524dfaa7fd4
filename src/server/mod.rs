//! Assembles a running server from its options: manager, source, core, the gRPC listener
//! (and REST), the config-file poller, and graceful shutdown. Tests start servers through
//! [`Server::start`] on port 0 and read the bound addresses back.
//! Wiring only: request handling lives in `transport` and `serving`, version decisions in
//! `manager`; nothing here reads a request's contents.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admission::{GateLayer, Limits};
use crate::config::ssl::SslSettings;
use crate::config::BatchingOptions;
use crate::config::{ModelsConfig, ServerArgs};
use crate::jobs::{JobOptions, Jobs};
use crate::manager::{Manager, ManagerOptions};
use crate::metrics::Metrics;
use crate::proto::candle_serving::jobs::v1::job_service_server::JobServiceServer;
use crate::proto::candle_serving::rollout::v1::rollout_service_server::RolloutServiceServer;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::proto::tensorflow::serving::MonitoringConfig;
use crate::proto::tensorflow::serving::{
    model_service_server::ModelServiceServer, prediction_service_server::PredictionServiceServer,
};
use crate::serving::{Core, CoreOptions};
use crate::source::{FileSystemSource, RemoteMirror, ScanCallback};
use crate::transport::grpc::GrpcServices;
use crate::transport::grpc_scan::WireScanLayer;
use crate::transport::jobs::{JobGrpc, PredictExecutor};
use crate::transport::rest::{self, RestOptions, DEFAULT_METRICS_PATH};
use crate::transport::rollout::RolloutGrpc;
use crate::transport::v2::grpc::{is_probe, OipService};

mod in_flight;
mod tls;
pub use in_flight::InFlight;

/// Largest gRPC response: answers are the server's own, bounded by the request limits.
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// Longest a shutdown waits for requests in flight before it stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Longest a shutdown waits, once nothing is in flight, for the connections to write out the
/// last responses and close by themselves before it closes them.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

/// Everything a server needs, already validated.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub host: IpAddr,
    pub grpc_port: u16,
    /// `None` disables REST.
    pub rest_port: Option<u16>,
    pub models: ModelsConfig,
    /// The file `models` came from, re-read when `config_poll` is set.
    pub config_file: Option<PathBuf>,
    pub config_poll: Option<Duration>,
    pub fs_poll: Option<Duration>,
    pub manager: ManagerOptions,
    pub core: CoreOptions,
    pub rest: RestOptions,
    pub reload_wait: Duration,
    /// `--ssl_config_file`: TLS on both ports.
    pub tls: Option<SslSettings>,
    /// `--job_queue` and the other job flags.
    pub jobs: JobOptions,
}

impl ServerOptions {
    /// Options for `models`, listening on loopback on free ports: what tests use.
    pub fn local(models: ModelsConfig) -> Self {
        ServerOptions {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            grpc_port: 0,
            rest_port: Some(0),
            models,
            config_file: None,
            config_poll: None,
            fs_poll: Some(Duration::from_secs(1)),
            manager: ManagerOptions::default(),
            core: CoreOptions::default(),
            rest: RestOptions::default(),
            reload_wait: Duration::from_secs(60),
            tls: None,
            jobs: JobOptions::default(),
        }
    }

    /// Reads the flags: which models (config file, single model, or ./models.config) and
    /// every setting.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<Self> {
        if let Some(threads) = args.grpc_max_threads {
            tracing::info!(
                threads,
                "--grpc_max_threads is accepted for compatibility and ignored"
            );
        }
        let tls = args
            .ssl_config_file
            .as_deref()
            .map(SslSettings::from_file)
            .transpose()?;
        let (models, config_file) = match (&args.model_config_file, &args.model_base_path) {
            (Some(_), Some(_)) => anyhow::bail!(
                "give either --model_config_file or --model_base_path (with --model_name), not both"
            ),
            (Some(file), None) => (ModelsConfig::from_file(file)?, Some(file.clone())),
            (None, Some(base)) => (ModelsConfig::single(&args.model_name, base)?, None),
            (None, None) => {
                let default = PathBuf::from("models.config");
                if !default.is_file() {
                    anyhow::bail!(
                        "no models to serve: pass --model_config_file, or --model_name and --model_base_path (./models.config does not exist)"
                    );
                }
                (ModelsConfig::from_file(&default)?, Some(default))
            }
        };
        let mut core = CoreOptions {
            max_queued: args.max_queued_requests,
            limits: Limits {
                max_batch: args.max_request_batch_size,
                max_dim: args.max_request_dim,
                max_elements: args.max_request_elements,
                max_bytes: args.max_request_bytes,
                max_string_chars: args.max_string_length,
                max_json_depth: args.max_json_depth,
                max_concurrent: args.max_concurrent_requests,
                max_wait: Duration::from_millis(args.admission_wait_ms),
            },
            ..CoreOptions::default()
        };
        if let Some(threads) = args.inference_threads {
            core.inference_threads = threads.max(1);
        }
        match (args.enable_batching, &args.batching_parameters_file) {
            (true, Some(file)) => core.batching = Some(BatchingOptions::from_file(file)?),
            (true, None) => core.batching = Some(BatchingOptions::default()),
            (false, Some(file)) => tracing::warn!(
                file = %file.display(),
                "--batching_parameters_file is ignored without --enable_batching"
            ),
            (false, None) => {}
        }
        if let Some(batching) = &core.batching {
            tracing::info!(?batching, "server-side batching is on");
        }
        Ok(ServerOptions {
            host: args.host,
            grpc_port: args.port,
            rest_port: (args.rest_api_port != 0).then_some(args.rest_api_port),
            models,
            config_poll: config_file
                .as_ref()
                .and(ServerArgs::poll(args.model_config_file_poll_wait_seconds)),
            config_file,
            fs_poll: ServerArgs::poll(args.file_system_poll_wait_seconds),
            manager: ManagerOptions {
                max_load_retries: args.max_num_load_retries,
                load_retry_interval: Duration::from_micros(args.load_retry_interval_micros),
                allow_labels_for_unavailable: args.allow_version_labels_for_unavailable_models,
                load_threads: args.num_load_threads.max(1),
                int8_models: args.int8_models.iter().cloned().collect(),
                model_cache_dir: args
                    .model_cache_dir
                    .clone()
                    .unwrap_or_else(crate::source::remote::default_cache_dir),
            },
            core,
            rest: RestOptions {
                timeout: (args.rest_api_timeout_in_ms > 0)
                    .then(|| Duration::from_millis(args.rest_api_timeout_in_ms)),
                max_body_bytes: args.rest_api_max_body_bytes,
                metrics_path: metrics_path(args.monitoring_config_file.as_deref())?,
            },
            reload_wait: Duration::from_secs(args.reload_config_timeout_seconds),
            tls,
            jobs: JobOptions {
                queue: args.job_queue.clone(),
                visibility_timeout: Duration::from_secs(args.job_visibility_timeout_seconds),
                result_ttl: Duration::from_secs(args.job_result_ttl_seconds),
                max_pending: args.max_pending_jobs,
                max_pending_bytes: args.max_pending_job_bytes,
                concurrency: args.job_concurrency,
            },
        })
    }

    /// Relative base paths in reloaded configs are relative to the config file's folder.
    fn config_dir(&self) -> PathBuf {
        let dir = self
            .config_file
            .as_deref()
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        std::path::absolute(&dir).unwrap_or(dir)
    }
}

/// Where Prometheus metrics are served: TF Serving's path unless `--monitoring_config_file`
/// says otherwise (`prometheus_config { enable: false }` turns them off).
fn metrics_path(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(file) = file else {
        return Ok(Some(DEFAULT_METRICS_PATH.to_string()));
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let config: MonitoringConfig = crate::config::text_format::parse(
        "tensorflow.serving.MonitoringConfig",
        &text,
        &file.display().to_string(),
    )?;
    let prometheus = config.prometheus_config.unwrap_or_default();
    if !prometheus.enable {
        return Ok(None);
    }
    let path = if prometheus.path.is_empty() {
        DEFAULT_METRICS_PATH.to_string()
    } else {
        prometheus.path
    };
    if !path.starts_with('/') {
        anyhow::bail!(
            "{}: prometheus_config.path must start with /",
            file.display()
        );
    }
    Ok(Some(path))
}

/// A running server.
pub struct Server {
    pub grpc_addr: SocketAddr,
    pub rest_addr: Option<SocketAddr>,
    pub core: Core,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    in_flight: InFlight,
    jobs: Arc<Jobs>,
    _source: FileSystemSource,
    _mirror: RemoteMirror,
}

impl Server {
    /// Binds the ports and starts serving. Models load in the background; their status
    /// (GetModelStatus, /readyz) says when they are AVAILABLE.
    pub async fn start(options: ServerOptions) -> anyhow::Result<Server> {
        crate::install_crypto_provider();
        let metrics = Arc::new(Metrics::new());
        let manager = Manager::new(&options.models, options.manager.clone(), metrics.clone());
        let weak = Arc::downgrade(&manager);
        let on_scan: ScanCallback = Arc::new(move |model, scan| {
            if let Some(manager) = weak.upgrade() {
                manager.on_scan(model, scan);
            }
        });
        let source =
            FileSystemSource::start(manager.watch_list(), options.fs_poll, on_scan.clone());
        let weak = Arc::downgrade(&manager);
        let mirror = RemoteMirror::start(
            manager.watch_list(),
            options.manager.model_cache_dir.clone(),
            options.fs_poll,
            Arc::new(move |model| {
                weak.upgrade()
                    .map(|m| m.versions_in_use(model))
                    .unwrap_or_default()
            }),
            on_scan,
        )
        .map_err(anyhow::Error::msg)?;
        let mut core_options = options.core.clone();
        if let Some(file) = &options.config_file {
            // Rollouts are kept beside the config (models.config -> models.rollouts.json),
            // and a promotion rewrites the config's label.
            core_options
                .rollouts_file
                .get_or_insert_with(|| file.with_extension("rollouts.json"));
            core_options.config_file.get_or_insert_with(|| file.clone());
        }
        let jobs =
            Jobs::new(options.jobs.clone(), metrics.registry()).map_err(anyhow::Error::msg)?;
        let core = Core::new(manager.clone(), core_options, metrics);
        let (shutdown, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let ready = {
            let core = core.clone();
            Box::new(move || core.readiness().iter().all(|m| m.problem.is_none()))
        };
        let workers = jobs.start_workers(
            PredictExecutor::new(core.clone()),
            ready,
            shutdown.subscribe(),
        );
        tasks.push(tokio::spawn(async move {
            workers.await.context("the job workers panicked")
        }));
        tracing::info!(queue = %jobs.describe(), "asynchronous jobs");
        let in_flight = InFlight::default();

        let listener = TcpListener::bind((options.host, options.grpc_port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen for gRPC on {}:{}",
                    options.host, options.grpc_port
                )
            })?;
        let grpc_addr = listener.local_addr()?;
        let services = GrpcServices::new(core.clone(), options.config_dir(), options.reload_wait);
        let (health, health_service) = tonic_health::server::health_reporter();
        tasks.push(tokio::spawn(report_health(
            core.clone(),
            health,
            shutdown.subscribe(),
        )));
        // A message larger than --max_request_bytes is refused from its length prefix,
        // before it is read.
        let max_message = core.limits().max_bytes;
        let mut builder = tonic::transport::Server::builder();
        if let Some(settings) = &options.tls {
            builder = builder
                .tls_config(tls::grpc(settings))
                .context("--ssl_config_file: the gRPC TLS configuration")?;
        }
        let grpc = builder
            .layer(in_flight.clone())
            .layer(GateLayer::new(core.gate(), grpc_exempt, grpc_overloaded))
            .layer(WireScanLayer::new(core.limits().clone()))
            .add_service(health_service)
            .add_service(
                PredictionServiceServer::new(services.clone())
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(MAX_RESPONSE_BYTES),
            )
            .add_service(
                ModelServiceServer::new(services)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(MAX_RESPONSE_BYTES),
            )
            .add_service(
                GrpcInferenceServiceServer::new(OipService::new(core.clone()))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(MAX_RESPONSE_BYTES),
            )
            .add_service(RolloutServiceServer::new(RolloutGrpc::new(core.clone())))
            .add_service(
                JobServiceServer::new(JobGrpc::new(core.clone(), jobs.clone()))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(MAX_RESPONSE_BYTES),
            );
        let stop = stopped(shutdown.subscribe());
        tasks.push(tokio::spawn(async move {
            // Without TCP_NODELAY a response written in several frames waits for the
            // client's delayed ACK: 40 ms added to every small request.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            grpc.serve_with_incoming_shutdown(incoming, stop)
                .await
                .context("gRPC server failed")
        }));
        tracing::info!(address = %grpc_addr, "gRPC listening");

        let rest_addr = match options.rest_port {
            None => None,
            Some(port) => {
                let listener =
                    TcpListener::bind((options.host, port))
                        .await
                        .with_context(|| {
                            format!("cannot listen for REST on {}:{port}", options.host)
                        })?;
                let addr = listener.local_addr()?;
                let app = rest::router(core.clone(), jobs.clone(), options.rest.clone())
                    .layer(GateLayer::new(
                        core.gate(),
                        rest::exempt_from_gate,
                        rest::overloaded,
                    ))
                    .layer(in_flight.clone());
                let stop = stopped(shutdown.subscribe());
                let serving = match &options.tls {
                    None => tokio::spawn(serve_rest(listener, app, stop)),
                    Some(settings) => {
                        tokio::spawn(serve_rest_tls(listener, app, tls::rest(settings)?, stop))
                    }
                };
                tasks.push(serving);
                tracing::info!(address = %addr, "REST listening");
                Some(addr)
            }
        };

        if let (Some(file), Some(every)) = (options.config_file.clone(), options.config_poll) {
            let core = core.clone();
            let wait = options.reload_wait;
            let mut stop = shutdown.subscribe();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = poll_config_file(core, file, every, wait) => {}
                    _ = stop.changed() => {}
                }
                Ok(())
            }));
        }

        Ok(Server {
            grpc_addr,
            rest_addr,
            core,
            shutdown,
            tasks,
            in_flight,
            jobs,
            _source: source,
            _mirror: mirror,
        })
    }

    /// Stops accepting, lets the requests in flight and the jobs running finish (for at most
    /// 30 seconds), then stops the listeners. Idle client connections do not hold it up.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let mut idle_since = None;
        loop {
            // The listeners end by themselves once their connections have closed.
            if self.tasks.iter().all(|t| t.is_finished()) && self.jobs.running() == 0 {
                break;
            }
            // Requests in flight (until their response bodies have gone to the connection)
            // and jobs running (the workers take no new ones).
            let now = tokio::time::Instant::now();
            if self.in_flight.count() + self.jobs.running() == 0 {
                // Every response is with its connection: give the connections a moment to
                // write it out and close, but do not wait on a client that keeps one open.
                let since = *idle_since.get_or_insert(now);
                if now - since >= FLUSH_GRACE {
                    break;
                }
            } else {
                idle_since = None;
            }
            if now >= deadline {
                tracing::warn!(
                    in_flight = self.in_flight.count(),
                    jobs_running = self.jobs.running(),
                    "shutdown grace period over; stopping anyway"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in self.tasks {
            if task.is_finished() {
                task.await.context("server task panicked")??;
            } else {
                task.abort();
            }
        }
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        wait_for_signal().await;
        tracing::info!(
            in_flight = self.in_flight.count(),
            "shutting down: no new connections; finishing requests in flight"
        );
        self.shutdown().await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Keeps the standard gRPC health service in step with the models: one service name per
/// model, SERVING while it has an AVAILABLE version; the empty name is SERVING while every
/// model is.
async fn report_health(
    core: Core,
    mut reporter: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use tonic_health::ServingStatus;
    let mut changes = core.subscribe();
    let mut known: Vec<String> = Vec::new();
    loop {
        let readiness = core.readiness();
        for gone in known
            .iter()
            .filter(|k| !readiness.iter().any(|m| &m.model == *k))
        {
            reporter.clear_service_status(gone).await;
        }
        for m in &readiness {
            let status = if m.problem.is_none() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(&m.model, status).await;
        }
        let all = if readiness.iter().all(|m| m.problem.is_none()) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", all).await;
        known = readiness.into_iter().map(|m| m.model).collect();
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Ok(()) },
            _ = stop.changed() => return Ok(()),
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `--model_config_file_poll_wait_seconds`: re-reads the file; a change is applied like a
/// ReloadConfig; a broken file is logged and ignored, so the last good config keeps serving.
async fn poll_config_file(core: Core, file: PathBuf, every: Duration, wait: Duration) {
    let mut last = tokio::fs::read_to_string(&file).await.ok();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticker.tick().await;
        let text = match tokio::fs::read_to_string(&file).await {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "cannot read the model config file; keeping the current config");
                continue;
            }
        };
        if last.as_deref() == Some(text.as_str()) {
            continue;
        }
        last = Some(text.clone());
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match ModelsConfig::from_text(&text, dir, &file.display().to_string()) {
            Err(e) => {
                tracing::error!(error = %e, "the model config file changed but is invalid; keeping the current config")
            }
            Ok(config) => match core.reload(config, wait).await {
                Ok(summary) => {
                    tracing::info!(file = %file.display(), %summary, "applied the changed model config file")
                }
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e.message, "the changed model config file was rejected; keeping the current config")
                }
            },
        }
    }
}

/// Sets up `tracing` on stderr: human-readable or one JSON object per line.
pub fn init_logging(format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        crate::config::LogFormat::Text => builder.try_init(),
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Plain-HTTP REST until `stop`.
async fn serve_rest(
    listener: TcpListener,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .context("REST server failed")
}

/// REST over TLS until `stop`, then a graceful shutdown of open connections.
async fn serve_rest_tls(
    listener: TcpListener,
    app: axum::Router,
    config: Arc<rustls::ServerConfig>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = listener.into_std()?;
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        stop.await;
        on_stop.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(config),
    )?
    .handle(handle)
    .serve(app.into_make_service())
    .await
    .context("REST server (TLS) failed")
}

/// gRPC paths that pass the concurrency gate freely: health checks (the standard service's
/// and the v2 API's liveness and readiness) must answer under load.
fn grpc_exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || is_probe(path)
}

/// The gRPC answer of a request refused by the concurrency gate.
fn grpc_overloaded(message: String) -> http::Response<tonic::body::Body> {
    tonic::Status::resource_exhausted(message).into_http()
}
