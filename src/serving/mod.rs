//! The request-level API that every transport calls: resolve a model spec to a servable,
//! check the request against its signature, run it on the inference pool, and return
//! outputs or an error that names the model, the version and the cause. Transports only
//! convert wire types to and from what this module takes and returns.
//! It parses no wire format and makes no version decision: it asks the manager (resolve,
//! status, reload) and never changes what serves by itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::admission::{Budget, Gate, Limits};
use crate::batching::{self, BatchError, Batcher, BatchingOptions};
use crate::config::ModelsConfig;
use crate::error::ServingError;
use crate::manager::{Manager, ModelReadiness, ServableHandle, VersionChoice, VersionStatus};
use crate::metrics::{Api, Metrics, RequestOutcome};
use crate::pool::{PoolError, WorkerPool};
use crate::rollout::Rollouts;
use crate::servable::{
    BatchPolicy, Inputs, Outputs, ServableError, Signature, SignatureMap, DEFAULT_SIGNATURE,
};
use crate::tensor::{Tensor, TensorData};

/// Limits of the request path.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// Threads that tokenise and run models.
    pub inference_threads: usize,
    /// Requests that may wait for an inference thread before new ones are refused with
    /// RESOURCE_EXHAUSTED.
    pub max_queued: usize,
    /// What every request is checked against before work proportional to it.
    pub limits: Limits,
    /// Server-side batching (`--enable_batching`), for every version of every model whose
    /// servable allows it.
    pub batching: Option<BatchingOptions>,
    /// Where rollouts are kept across restarts (beside the config file); `None`: in memory.
    pub rollouts_file: Option<PathBuf>,
    /// The config file a promotion rewrites, when the server has one.
    pub config_file: Option<PathBuf>,
}

impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions {
            inference_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_queued: 1024,
            limits: Limits::default(),
            batching: None,
            rollouts_file: None,
            config_file: None,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub version: VersionChoice,
    /// Empty means `serving_default`.
    pub signature_name: String,
    /// Who is asking (`X-Client-Id`, `x-client-id`, a request id): keeps a client on one side
    /// of a rollout. Never part of a reply.
    pub client_key: Option<String>,
}

impl ModelSpec {
    pub fn latest(name: &str) -> Self {
        ModelSpec {
            name: name.to_string(),
            version: VersionChoice::Latest,
            signature_name: String::new(),
            client_key: None,
        }
    }
}

/// The answer to a Predict: the outputs and which version produced them.
#[derive(Debug)]
pub struct Prediction {
    pub model: String,
    pub version: i64,
    pub signature_name: String,
    pub outputs: Outputs,
}

/// One example of a Classify request: feature name → one string value.
pub type Example = BTreeMap<String, Vec<u8>>;

/// The answer to a Classify: per example, every class with its score.
#[derive(Debug)]
pub struct Classification {
    pub model: String,
    pub version: i64,
    pub signature_name: String,
    pub classes: Vec<Vec<(String, f32)>>,
}

/// Cheap to clone; both transports hold one.
#[derive(Clone)]
pub struct Core {
    manager: Arc<Manager>,
    pool: Arc<WorkerPool>,
    options: Arc<CoreOptions>,
    metrics: Arc<Metrics>,
    gate: Gate,
    rollouts: Arc<Rollouts>,
}

/// The metrics label of requests for models that are not configured: a client's made-up
/// names never become label values, so the metrics page cannot be grown from outside.
pub const UNKNOWN_MODEL_LABEL: &str = "_unknown_";

impl Core {
    pub fn new(manager: Arc<Manager>, options: CoreOptions, metrics: Arc<Metrics>) -> Self {
        let pool = WorkerPool::new("inference", options.inference_threads, options.max_queued);
        let gate = Gate::new(options.limits.max_concurrent, options.limits.max_wait);
        let rollouts = Rollouts::new(
            manager.clone(),
            metrics.registry(),
            options.rollouts_file.clone(),
            options.config_file.clone(),
        );
        Core {
            rollouts,
            manager,
            pool: Arc::new(pool),
            options: Arc::new(options),
            metrics,
            gate,
        }
    }

    /// The request limits.
    pub fn limits(&self) -> &Limits {
        &self.options.limits
    }

    /// A fresh decoding budget for one request.
    pub fn budget(&self) -> Budget {
        Budget::new(&self.options.limits)
    }

    /// The concurrency gate both transports put in front of their request paths.
    pub fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// Records one finished request in the metrics. The model label is the request's model
    /// only when that model is configured.
    pub fn record_request(&self, outcome: RequestOutcome) {
        let configured = outcome.version.is_some() || self.manager.is_configured(outcome.model);
        self.metrics.request(&RequestOutcome {
            model: if configured {
                outcome.model
            } else {
                UNKNOWN_MODEL_LABEL
            },
            ..outcome
        });
    }

    /// A receiver that changes whenever any version changes state (for health reporting).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.manager.subscribe()
    }

    /// The Prometheus text of every metric.
    pub fn render_metrics(&self) -> String {
        self.refresh_gauges();
        self.metrics.render()
    }

    /// Sets the gauges that are read from state rather than counted as things happen.
    pub fn refresh_gauges(&self) {
        self.metrics.inference_queue.set(self.pool.queued() as i64);
        self.metrics
            .requests_in_flight
            .set(self.gate.in_use() as i64);
        self.metrics.versions.reset();
        for (model, state, count) in self.manager.version_counts() {
            self.metrics
                .versions
                .with_label_values(&[&model, state.name()])
                .set(count as i64);
        }
    }

    /// Requests waiting for an inference thread.
    pub fn queued(&self) -> usize {
        self.pool.queued()
    }

    /// Whether `model` is in the current configuration (whatever its versions' state).
    pub fn is_configured(&self, model: &str) -> bool {
        self.manager.is_configured(model)
    }

    pub fn resolve(&self, spec: &ModelSpec) -> Result<ServableHandle, ServingError> {
        self.manager.resolve(&spec.name, &spec.version)
    }

    /// The version an inference request runs on: as [`Core::resolve`], except that a request
    /// naming neither a version nor a label for a model with a rollout in progress goes to
    /// the side its client key (or chance) picks. A side whose label cannot be resolved
    /// falls back to the other, then to the latest version.
    pub fn route(&self, spec: &ModelSpec) -> Result<ServableHandle, ServingError> {
        if spec.version == VersionChoice::Latest {
            if let Some((label, _)) = self.rollouts.route(&spec.name, spec.client_key.as_deref()) {
                if let Ok(loaded) = self
                    .manager
                    .resolve(&spec.name, &VersionChoice::Label(label))
                {
                    return Ok(loaded);
                }
            }
        }
        self.resolve(spec)
    }

    /// The server's rollouts.
    pub fn rollouts(&self) -> &Arc<Rollouts> {
        &self.rollouts
    }

    /// The signature a request names (empty: `serving_default`).
    pub fn signature<'a>(
        loaded: &'a ServableHandle,
        name: &str,
    ) -> Result<(&'a str, &'a Signature), ServingError> {
        let name = if name.is_empty() {
            DEFAULT_SIGNATURE
        } else {
            name
        };
        let signatures = loaded.servable().signatures();
        signatures
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| {
                let known: Vec<&str> = signatures.keys().map(String::as_str).collect();
                ServingError::invalid_argument(format!(
                    "{} has no signature `{name}`; its signatures: {}",
                    loaded.describe(),
                    known.join(", ")
                ))
            })
    }

    pub async fn predict(
        &self,
        spec: &ModelSpec,
        inputs: Inputs,
        output_filter: &[String],
    ) -> Result<Prediction, ServingError> {
        let loaded = self.route(spec)?;
        self.predict_on(loaded, &spec.signature_name, inputs, output_filter)
            .await
    }

    /// Predict on an already resolved version (REST resolves first, to read JSON by the
    /// signature's dtypes).
    pub async fn predict_on(
        &self,
        loaded: ServableHandle,
        signature_name: &str,
        inputs: Inputs,
        output_filter: &[String],
    ) -> Result<Prediction, ServingError> {
        self.predict_as(loaded, signature_name, inputs, output_filter, Api::Predict)
            .await
    }

    /// Predict on a resolved version for another API (the Open Inference Protocol's
    /// ModelInfer), which the runtime metrics then name.
    pub async fn predict_as(
        &self,
        loaded: ServableHandle,
        signature_name: &str,
        inputs: Inputs,
        output_filter: &[String],
        api: Api,
    ) -> Result<Prediction, ServingError> {
        let name = self.check_predict(&loaded, signature_name, &inputs, output_filter)?;
        let mut outputs = self.run(&loaded, name.clone(), inputs, api).await?;
        if !output_filter.is_empty() {
            outputs.retain(|k, _| output_filter.contains(k));
        }
        Ok(Prediction {
            model: loaded.model().to_string(),
            version: loaded.version(),
            signature_name: name,
            outputs,
        })
    }

    /// Everything a Predict checks before it runs: the signature, the output filter and the
    /// inputs against the signature and the limits. Returns the signature's name.
    /// Asynchronous jobs are checked with it at submission, so a request Predict would
    /// refuse is refused the same way instead of being queued.
    pub fn check_predict(
        &self,
        loaded: &ServableHandle,
        signature_name: &str,
        inputs: &Inputs,
        output_filter: &[String],
    ) -> Result<String, ServingError> {
        let (name, signature) = Self::signature(loaded, signature_name)?;
        if let Some(unknown) = output_filter.iter().find(|f| signature.output(f).is_none()) {
            return Err(ServingError::invalid_argument(format!(
                "{}: output_filter names `{unknown}`, which signature `{name}` does not produce; its outputs: {}",
                loaded.describe(),
                signature.output_names().join(", ")
            )));
        }
        signature
            .check_inputs(inputs, self.options.limits.max_batch)
            .map_err(|m| ServingError::invalid_argument(format!("{}: {m}", loaded.describe())))?;
        Ok(name.to_string())
    }

    async fn run(
        &self,
        loaded: &ServableHandle,
        signature: String,
        inputs: Inputs,
        api: Api,
    ) -> Result<Outputs, ServingError> {
        let started = std::time::Instant::now();
        let result = match self.batcher(loaded, &inputs) {
            Some(batcher) => batcher.run(&signature, inputs).await,
            None => {
                let job = {
                    let loaded = loaded.clone();
                    move || loaded.servable().run(&signature, &inputs)
                };
                match self.pool.run(job).await {
                    Ok(result) => result.map_err(BatchError::from),
                    Err(e) => Err(e.into()),
                }
            }
        };
        let took = started.elapsed();
        self.metrics
            .runtime(loaded.model(), loaded.version(), api, took);
        let server_error = matches!(
            result,
            Err(BatchError::Pool(PoolError::Panicked(_)))
                | Err(BatchError::Servable(ServableError::Internal(_)))
        );
        self.rollouts
            .record(loaded.model(), loaded.version(), took, server_error);
        result.map_err(|e| match e {
            BatchError::Pool(PoolError::Full { capacity, .. }) => ServingError::resource_exhausted(format!(
                "{}: the server is overloaded ({capacity} requests are waiting for inference); retry later",
                loaded.describe()
            )),
            BatchError::Full { capacity } => ServingError::resource_exhausted(format!(
                "{}: the batching queue is full ({capacity} rows are waiting); retry later",
                loaded.describe()
            )),
            BatchError::Pool(PoolError::Panicked(m)) => {
                ServingError::internal(format!("{} failed: {m}", loaded.describe()))
            }
            BatchError::Pool(PoolError::ShutDown(_)) | BatchError::Closed => {
                ServingError::unavailable("the server is shutting down")
            }
            BatchError::Servable(ServableError::InvalidInput(m)) => {
                ServingError::invalid_argument(format!("{}: {m}", loaded.describe()))
            }
            BatchError::Servable(ServableError::Internal(m)) => {
                ServingError::internal(format!("{} failed: {m}", loaded.describe()))
            }
        })
    }

    /// The batcher a request goes through: the version's own, when batching is on, the
    /// servable allows it and the request is not larger than a batch.
    fn batcher<'a>(&self, loaded: &'a ServableHandle, inputs: &Inputs) -> Option<&'a Batcher> {
        let options = self.options.batching.as_ref()?;
        if loaded.servable().batch_policy() == BatchPolicy::Never {
            return None;
        }
        let batcher = loaded.batcher(|servable| {
            let (metrics, model, version) = (
                self.metrics.clone(),
                loaded.model().to_string(),
                loaded.version(),
            );
            let on_batch = Box::new(move |rows| metrics.batch(&model, version, rows));
            Batcher::new(servable, options.clone(), self.pool.clone(), on_batch)
        });
        batcher.takes(batching::rows(inputs)).then_some(batcher)
    }

    /// The Classify API over a classifier's signature: each example's features are its
    /// string inputs (`text`, `text_pair`).
    pub async fn classify(
        &self,
        spec: &ModelSpec,
        examples: Vec<Example>,
    ) -> Result<Classification, ServingError> {
        let loaded = self.route(spec)?;
        let Some(target) = loaded.servable().classification() else {
            return Err(ServingError::invalid_argument(format!(
                "{} ({}) does not classify; use Predict",
                loaded.describe(),
                loaded.servable().kind()
            )));
        };
        let signature_name = if spec.signature_name.is_empty() {
            target.signature
        } else {
            spec.signature_name.as_str()
        };
        let (name, signature) = Self::signature(&loaded, signature_name)?;
        if examples.is_empty() {
            return Err(ServingError::invalid_argument(format!(
                "{}: the request has no examples",
                loaded.describe()
            )));
        }
        let mut columns: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (i, example) in examples.iter().enumerate() {
            for feature in example.keys() {
                let takes = signature
                    .input(feature)
                    .is_some_and(|s| s.dtypes.contains(&crate::tensor::DType::String));
                if !takes {
                    let names: Vec<&str> = signature
                        .inputs
                        .iter()
                        .filter(|s| s.dtypes.contains(&crate::tensor::DType::String))
                        .map(|s| s.name.as_str())
                        .collect();
                    return Err(ServingError::invalid_argument(format!(
                        "{}: example {i} has feature `{feature}`, which the model does not take; it takes {}",
                        loaded.describe(),
                        names.join(", ")
                    )));
                }
            }
        }
        for spec_in in &signature.inputs {
            let present = examples
                .iter()
                .filter(|e| e.contains_key(&spec_in.name))
                .count();
            if present == 0 {
                continue;
            }
            if present != examples.len() {
                return Err(ServingError::invalid_argument(format!(
                    "{}: feature `{}` is in {present} of {} examples; give it in all or none",
                    loaded.describe(),
                    spec_in.name,
                    examples.len()
                )));
            }
            columns.insert(
                spec_in.name.clone(),
                examples.iter().map(|e| e[&spec_in.name].clone()).collect(),
            );
        }
        let inputs: Inputs = columns
            .into_iter()
            .map(|(k, v)| (k, Tensor::strings(v)))
            .collect();
        let mut budget = self.budget();
        for (name, tensor) in &inputs {
            budget.admit_tensor(tensor).map_err(|e| {
                ServingError::over_limit(
                    &e,
                    format_args!("{}: feature `{name}`", loaded.describe()),
                )
            })?;
        }
        signature
            .check_inputs(&inputs, self.options.limits.max_batch)
            .map_err(|m| ServingError::invalid_argument(format!("{}: {m}", loaded.describe())))?;
        let name = name.to_string();
        let outputs = self
            .run(&loaded, name.clone(), inputs, Api::Classify)
            .await?;
        let scores = outputs.get(target.scores).ok_or_else(|| {
            ServingError::internal(format!(
                "{} produced no `{}` output",
                loaded.describe(),
                target.scores
            ))
        })?;
        let (TensorData::Float(values), [rows, cols]) = (scores.data(), scores.shape()) else {
            return Err(ServingError::internal(format!(
                "{}: `{}` is not a float matrix",
                loaded.describe(),
                target.scores
            )));
        };
        let classes = (0..*rows)
            .map(|r| {
                (0..*cols)
                    .map(|c| (target.class_names[c].clone(), values[r * cols + c]))
                    .collect()
            })
            .collect();
        Ok(Classification {
            model: loaded.model().to_string(),
            version: loaded.version(),
            signature_name: name,
            classes,
        })
    }

    /// GetModelMetadata: the resolved version and its signatures.
    pub fn metadata(
        &self,
        spec: &ModelSpec,
    ) -> Result<(ServableHandle, SignatureMap), ServingError> {
        let loaded = self.resolve(spec)?;
        let signatures = loaded.servable().signatures().clone();
        Ok((loaded, signatures))
    }

    /// GetModelStatus: every version of the model, or the one a version number or label names.
    pub fn status(&self, spec: &ModelSpec) -> Result<Vec<VersionStatus>, ServingError> {
        self.manager.status(&spec.name, &spec.version)
    }

    pub fn readiness(&self) -> Vec<ModelReadiness> {
        self.manager.readiness()
    }

    pub async fn reload(
        &self,
        config: ModelsConfig,
        wait: Duration,
    ) -> Result<String, ServingError> {
        self.manager.reload(config, wait).await
    }
}
