//! TF Serving's gRPC API (`tensorflow.serving.PredictionService` and `ModelService`) over
//! the core. Converts protos to core types and [`ServingError`]s to `tonic::Status`, and
//! records each request's metrics.
//! No model logic: every model request goes through [`crate::serving::Core`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use prost::Message;
use tonic::{Request, Response, Status};

use super::{model_status, signature_def_map};
use crate::config::ModelsConfig;
use crate::error::{Code, ServingError};
use crate::manager::{ServableHandle, VersionChoice};
use crate::metrics::{Api, Entrypoint, RequestOutcome};
use crate::proto::tensorflow::serving::{
    input, model_service_server::ModelService, model_spec,
    prediction_service_server::PredictionService, Class, ClassificationRequest,
    ClassificationResponse, ClassificationResult, Classifications, GetModelMetadataRequest,
    GetModelMetadataResponse, GetModelStatusRequest, GetModelStatusResponse,
    ModelSpec as ProtoSpec, MultiInferenceRequest, MultiInferenceResponse, PredictRequest,
    PredictResponse, RegressionRequest, RegressionResponse, ReloadConfigRequest,
    ReloadConfigResponse, StatusProto,
};
use crate::proto::tensorflow::{feature, Example as ProtoExample};
use crate::servable::Inputs;
use crate::serving::{Core, Example, ModelSpec};
use crate::tensor::{tensor_from_proto, tensor_to_proto, DecodeError};

/// The type URL GetModelMetadata packs its `signature_def` entry with.
pub const SIGNATURE_DEF_MAP_URL: &str = "type.googleapis.com/tensorflow.serving.SignatureDefMap";

/// The one mapping from core codes to gRPC codes.
pub fn status_code(code: Code) -> tonic::Code {
    match code {
        Code::Cancelled => tonic::Code::Cancelled,
        Code::Unknown => tonic::Code::Unknown,
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Code::NotFound => tonic::Code::NotFound,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::Aborted => tonic::Code::Aborted,
        Code::OutOfRange => tonic::Code::OutOfRange,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::Internal => tonic::Code::Internal,
        Code::Unavailable => tonic::Code::Unavailable,
    }
}

/// Longest message put in `grpc-message`: clients cap their metadata at 8-16 KB and would
/// report a longer one as a broken stream instead of the cause.
const MAX_STATUS_MESSAGE: usize = 4096;

pub fn to_status(e: ServingError) -> Status {
    let mut message = e.message;
    if message.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" (truncated)");
    }
    Status::new(status_code(e.code), message)
}

/// A request's ModelSpec in core terms.
pub fn spec_from_proto(spec: Option<&ProtoSpec>) -> Result<ModelSpec, ServingError> {
    let spec =
        spec.ok_or_else(|| ServingError::invalid_argument("the request has no model_spec"))?;
    if spec.name.is_empty() {
        return Err(ServingError::invalid_argument("model_spec.name is empty"));
    }
    let version = match &spec.version_choice {
        None => VersionChoice::Latest,
        Some(model_spec::VersionChoice::Version(v)) => VersionChoice::Number(*v),
        Some(model_spec::VersionChoice::VersionLabel(l)) if l.is_empty() => VersionChoice::Latest,
        Some(model_spec::VersionChoice::VersionLabel(l)) => VersionChoice::Label(l.clone()),
    };
    Ok(ModelSpec {
        name: spec.name.clone(),
        version,
        signature_name: spec.signature_name.clone(),
        client_key: None,
    })
}

/// The client key a gRPC request carries (`x-client-id` metadata), for sticky rollouts.
pub fn client_key(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get("x-client-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

pub(crate) fn spec_to_proto(model: &str, version: i64, signature_name: &str) -> ProtoSpec {
    ProtoSpec {
        name: model.to_string(),
        signature_name: signature_name.to_string(),
        version_choice: Some(model_spec::VersionChoice::Version(version)),
    }
}

pub(crate) fn model_name(spec: Option<&ProtoSpec>) -> String {
    spec.map(|s| s.name.clone()).unwrap_or_default()
}

/// Both gRPC services over one core.
#[derive(Clone)]
pub struct GrpcServices {
    core: Core,
    /// Relative base paths in a ReloadConfig request are relative to this folder.
    config_dir: PathBuf,
    /// Longest a ReloadConfig waits for new versions when the client sets no deadline.
    reload_wait: Duration,
}

/// An outcome and the version that produced it (for the metrics).
pub(crate) type Served<T> = Result<(T, Option<i64>), ServingError>;

/// Records a gRPC request's metrics and debug log, and converts the outcome.
pub(crate) fn finish<T>(
    core: &Core,
    model: &str,
    api: Api,
    started: Instant,
    result: Served<T>,
) -> Result<Response<T>, Status> {
    let (status, version) = match &result {
        Ok((_, v)) => ("OK", *v),
        Err(e) => (e.code.name(), None),
    };
    let took = started.elapsed();
    core.record_request(RequestOutcome {
        model,
        version,
        api,
        entrypoint: Entrypoint::Grpc,
        status,
        took,
    });
    tracing::debug!(
        model,
        version,
        api = api.as_str(),
        status,
        us = took.as_micros() as u64,
        "gRPC request"
    );
    result.map(|(r, _)| Response::new(r)).map_err(to_status)
}

/// Predict's checks before any inference: the spec (and the rollout side it routes to) and
/// every input decoded within the request's budget. Asynchronous jobs run it at submission.
pub(crate) fn prepare_predict(
    core: &Core,
    request: &PredictRequest,
    client_key: Option<String>,
) -> Result<(ServableHandle, ModelSpec, Inputs), ServingError> {
    let mut spec = spec_from_proto(request.model_spec.as_ref())?;
    spec.client_key = client_key;
    let loaded = core.route(&spec)?;
    let mut inputs = Inputs::new();
    let mut budget = core.budget();
    // In name order, so that which input a limit stops at does not depend on hashing.
    let mut named: Vec<_> = request.inputs.iter().collect();
    named.sort_unstable_by_key(|(name, _)| *name);
    for (name, proto) in named {
        let tensor = tensor_from_proto(proto, &mut budget).map_err(|e| {
            let prefix = format!("{}: input `{name}`", loaded.describe());
            match e {
                DecodeError::Limit(limit) => ServingError::over_limit(&limit, prefix),
                other => ServingError::invalid_argument(format!("{prefix}: {other}")),
            }
        })?;
        inputs.insert(name.clone(), tensor);
    }
    Ok((loaded, spec, inputs))
}

/// Predict, for the PredictionService and for jobs submitted over gRPC.
pub(crate) async fn predict(
    core: &Core,
    request: PredictRequest,
    client_key: Option<String>,
) -> Served<PredictResponse> {
    let (loaded, spec, inputs) = prepare_predict(core, &request, client_key)?;
    let prediction = core
        .predict_on(loaded, &spec.signature_name, inputs, &request.output_filter)
        .await?;
    let response = PredictResponse {
        model_spec: Some(spec_to_proto(
            &prediction.model,
            prediction.version,
            &prediction.signature_name,
        )),
        outputs: prediction
            .outputs
            .iter()
            .map(|(k, t)| (k.clone(), tensor_to_proto(t)))
            .collect(),
    };
    Ok((response, Some(prediction.version)))
}

impl GrpcServices {
    pub fn new(core: Core, config_dir: PathBuf, reload_wait: Duration) -> Self {
        GrpcServices {
            core,
            config_dir,
            reload_wait,
        }
    }

    fn finish<T>(
        &self,
        model: &str,
        api: Api,
        started: Instant,
        result: Served<T>,
    ) -> Result<Response<T>, Status> {
        finish(&self.core, model, api, started, result)
    }

    async fn predict(
        &self,
        request: PredictRequest,
        client_key: Option<String>,
    ) -> Served<PredictResponse> {
        predict(&self.core, request, client_key).await
    }

    async fn classify(
        &self,
        request: ClassificationRequest,
        client_key: Option<String>,
    ) -> Served<ClassificationResponse> {
        let mut spec = spec_from_proto(request.model_spec.as_ref())?;
        spec.client_key = client_key;
        let examples = examples_from_input(request.input.as_ref())?;
        let result = self.core.classify(&spec, examples).await?;
        let classifications = result
            .classes
            .into_iter()
            .map(|classes| Classifications {
                classes: classes
                    .into_iter()
                    .map(|(label, score)| Class { label, score })
                    .collect(),
            })
            .collect();
        let response = ClassificationResponse {
            model_spec: Some(spec_to_proto(
                &result.model,
                result.version,
                &result.signature_name,
            )),
            result: Some(ClassificationResult { classifications }),
        };
        Ok((response, Some(result.version)))
    }

    fn metadata(&self, request: GetModelMetadataRequest) -> Served<GetModelMetadataResponse> {
        let spec = spec_from_proto(request.model_spec.as_ref())?;
        if request.metadata_field.is_empty() {
            return Err(ServingError::invalid_argument(
                "GetModelMetadataRequest.metadata_field is empty; ask for `signature_def`",
            ));
        }
        if let Some(other) = request
            .metadata_field
            .iter()
            .find(|f| *f != "signature_def")
        {
            return Err(ServingError::invalid_argument(format!(
                "metadata_field `{other}` is not available; this server offers `signature_def`"
            )));
        }
        let (loaded, signatures) = self.core.metadata(&spec)?;
        let packed = prost_types::Any {
            type_url: SIGNATURE_DEF_MAP_URL.to_string(),
            value: signature_def_map(&signatures).encode_to_vec(),
        };
        let response = GetModelMetadataResponse {
            model_spec: Some(spec_to_proto(loaded.model(), loaded.version(), "")),
            metadata: [("signature_def".to_string(), packed)].into(),
        };
        Ok((response, Some(loaded.version())))
    }
}

#[tonic::async_trait]
impl PredictionService for GrpcServices {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let started = Instant::now();
        let key = client_key(request.metadata());
        let request = request.into_inner();
        let model = model_name(request.model_spec.as_ref());
        let result = GrpcServices::predict(self, request, key).await;
        self.finish(&model, Api::Predict, started, result)
    }

    async fn classify(
        &self,
        request: Request<ClassificationRequest>,
    ) -> Result<Response<ClassificationResponse>, Status> {
        let started = Instant::now();
        let key = client_key(request.metadata());
        let request = request.into_inner();
        let model = model_name(request.model_spec.as_ref());
        let result = GrpcServices::classify(self, request, key).await;
        self.finish(&model, Api::Classify, started, result)
    }

    async fn regress(
        &self,
        request: Request<RegressionRequest>,
    ) -> Result<Response<RegressionResponse>, Status> {
        let model = model_name(request.get_ref().model_spec.as_ref());
        let result = Err(ServingError::unimplemented(
            "Regress is not implemented: no model kind served here (embedding, classifier, tagger) regresses; use Predict",
        ));
        self.finish(&model, Api::Regress, Instant::now(), result)
    }

    async fn multi_inference(
        &self,
        _: Request<MultiInferenceRequest>,
    ) -> Result<Response<MultiInferenceResponse>, Status> {
        let result = Err(ServingError::unimplemented(
            "MultiInference is not implemented; send one Predict or Classify per task",
        ));
        self.finish("", Api::MultiInference, Instant::now(), result)
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let model = model_name(request.model_spec.as_ref());
        let result = self.metadata(request);
        self.finish(&model, Api::GetModelMetadata, started, result)
    }
}

/// Classify's examples as feature name → string. Context features apply to every example
/// unless the example has its own.
fn examples_from_input(
    input: Option<&crate::proto::tensorflow::serving::Input>,
) -> Result<Vec<Example>, ServingError> {
    let kind = input.and_then(|i| i.kind.as_ref()).ok_or_else(|| {
        ServingError::invalid_argument("the ClassificationRequest has no input examples")
    })?;
    let (examples, context) = match kind {
        input::Kind::ExampleList(list) => (&list.examples, None),
        input::Kind::ExampleListWithContext(list) => (&list.examples, list.context.as_ref()),
    };
    let context = context
        .map(|c| example_features(c, "context"))
        .transpose()?;
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut features = example_features(e, &format!("example {i}"))?;
            if let Some(context) = &context {
                for (k, v) in context {
                    features.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            Ok(features)
        })
        .collect()
}

fn example_features(example: &ProtoExample, what: &str) -> Result<Example, ServingError> {
    let Some(features) = &example.features else {
        return Ok(Example::new());
    };
    features
        .feature
        .iter()
        .map(|(name, f)| match &f.kind {
            Some(feature::Kind::BytesList(list)) if list.value.len() == 1 => {
                Ok((name.clone(), list.value[0].clone()))
            }
            Some(feature::Kind::BytesList(list)) => Err(ServingError::invalid_argument(format!(
                "{what}: feature `{name}` has {} values; give exactly one string",
                list.value.len()
            ))),
            _ => Err(ServingError::invalid_argument(format!(
                "{what}: feature `{name}` must be a bytes_list holding one string"
            ))),
        })
        .collect()
}

/// The gRPC deadline the client set (`grpc-timeout` header), if any.
pub(crate) fn client_deadline<T>(request: &Request<T>) -> Option<Duration> {
    parse_grpc_timeout(request.metadata().get("grpc-timeout")?.to_str().ok()?)
}

/// `grpc-timeout`: at most 8 ASCII digits and a unit (H, M, S, m, u, n), as the gRPC
/// protocol defines it. Anything else, however long, is no deadline; nothing overflows.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = *value.as_bytes().last()?;
    if !unit.is_ascii() {
        return None;
    }
    let digits = &value[..value.len() - 1];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl ModelService for GrpcServices {
    async fn get_model_status(
        &self,
        request: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let model = model_name(request.model_spec.as_ref());
        let result = spec_from_proto(request.model_spec.as_ref())
            .and_then(|spec| model_status(&self.core, &spec))
            .map(|r| (r, None));
        self.finish(&model, Api::GetModelStatus, started, result)
    }

    /// Answers with the outcome in `status` (error code and message), as the clients in the
    /// TF Serving documentation expect, and never waits longer than the client's deadline.
    async fn handle_reload_config_request(
        &self,
        request: Request<ReloadConfigRequest>,
    ) -> Result<Response<ReloadConfigResponse>, Status> {
        let wait = client_deadline(&request)
            .map(|d| d.mul_f64(0.8).min(self.reload_wait))
            .unwrap_or(self.reload_wait);
        let request = request.into_inner();
        let outcome = match request.config.as_ref() {
            None => Err(ServingError::invalid_argument(
                "ReloadConfigRequest.config is missing",
            )),
            Some(config) => match ModelsConfig::from_proto(
                config,
                &self.config_dir,
                "ReloadConfigRequest.config",
                None,
            ) {
                Err(e) => Err(ServingError::invalid_argument(format!(
                    "{e}; the configuration was not changed"
                ))),
                Ok(models) => self.core.reload(models, wait).await,
            },
        };
        let status = match outcome {
            Ok(_) => StatusProto::default(),
            Err(e) => {
                tracing::warn!(error = %e.message, "ReloadConfig rejected");
                StatusProto {
                    error_code: e.code.as_i32(),
                    error_message: e.message,
                }
            }
        };
        Ok(Response::new(ReloadConfigResponse {
            status: Some(status),
            metric: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_parsing_cannot_overflow_or_panic() {
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("18446744073709551615H"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        for bad in ["", "H", "5", "5x", "-5S", "+5S", "5 S", "5é", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
