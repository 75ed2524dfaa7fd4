//! `inference.GRPCInferenceService` over the core. Inputs arrive in `contents` or, as
//! `tritonclient` always sends them, in `raw_input_contents`; outputs always go in
//! `raw_output_contents`, the only place `tritonclient` reads numeric outputs from.
//! Triton's extra calls never reach this service: the gRPC wire layer answers them
//! UNIMPLEMENTED by name (see [`triton_extension`]).

use std::collections::HashMap;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::{
    infer, insert_input, model_metadata, model_ready, model_spec, refuse_extensions, server_ready,
    InputError, EXTENSIONS, PLATFORM, SERVER_NAME, SIGNATURE_NAME, VERSION_LABEL,
};
use crate::error::ServingError;
use crate::metrics::Api;
use crate::proto::inference::{
    grpc_inference_service_server::GrpcInferenceService, infer_parameter::ParameterChoice,
    model_infer_response::InferOutputTensor, model_metadata_response, InferParameter,
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, ServerLiveRequest, ServerLiveResponse,
    ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};
use crate::servable::Inputs;
use crate::serving::Core;
use crate::tensor::{dtype_from_v2, tensor_from_contents, tensor_from_raw, tensor_to_raw};
use crate::transport::grpc::{finish, to_status, Served};

/// The service's path prefix.
pub const SERVICE_PATH: &str = "/inference.GRPCInferenceService/";

/// The calls of the protocol this server answers.
const METHODS: &[&str] = &[
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
];

/// For a call of Triton's extensions of the service (ModelStreamInfer, ModelConfig,
/// the repository and shared-memory calls, ...), the UNIMPLEMENTED status that names it;
/// `None` for any other path.
pub fn triton_extension(path: &str) -> Option<Status> {
    let method = path.strip_prefix(SERVICE_PATH)?;
    if METHODS.contains(&method) {
        return None;
    }
    Some(Status::unimplemented(format!(
        "inference.GRPCInferenceService/{method} is not implemented: it is one of Triton's extensions of the protocol; this server answers {}",
        METHODS.join(", ")
    )))
}

/// Health probes that pass the concurrency gate freely.
pub fn is_probe(path: &str) -> bool {
    path.strip_prefix(SERVICE_PATH)
        .is_some_and(|m| matches!(m, "ServerLive" | "ServerReady" | "ModelReady"))
}

#[derive(Clone)]
pub struct OipService {
    core: Core,
}

impl OipService {
    pub fn new(core: Core) -> Self {
        OipService { core }
    }
}

/// A string parameter, refusing one of another type.
fn string_param<'a>(
    model: &str,
    parameters: &'a HashMap<String, InferParameter>,
    name: &str,
) -> Result<Option<&'a str>, ServingError> {
    match parameters
        .get(name)
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => Ok(None),
        Some(ParameterChoice::StringParam(s)) => Ok(Some(s)),
        Some(_) => Err(ServingError::invalid_argument(format!(
            "model `{model}`: parameter `{name}` must be a string"
        ))),
    }
}

fn decode_inputs(
    request: &ModelInferRequest,
    budget: &mut crate::admission::Budget,
) -> Result<Inputs, InputError> {
    let raw = &request.raw_input_contents;
    let mut inputs = Inputs::new();
    for (i, input) in request.inputs.iter().enumerate() {
        let fail = |e| (input.name.clone(), e);
        let dtype = dtype_from_v2(&input.datatype).map_err(fail)?;
        let tensor = match (raw.get(i), &input.contents) {
            (Some(_), Some(_)) => {
                return Err(fail(crate::tensor::DecodeError::Malformed(
                    "the input has both `contents` and raw_input_contents; send one".into(),
                )))
            }
            (Some(bytes), None) => tensor_from_raw(dtype, &input.shape, bytes, budget),
            (None, Some(contents)) => tensor_from_contents(dtype, &input.shape, contents, budget),
            (None, None) => {
                return Err(fail(crate::tensor::DecodeError::Malformed(
                    "the input has no values: send `contents` or raw_input_contents".into(),
                )))
            }
        }
        .map_err(fail)?;
        insert_input(&mut inputs, &input.name, tensor)?;
    }
    Ok(inputs)
}

impl OipService {
    async fn model_infer(
        &self,
        request: ModelInferRequest,
        client_key: Option<String>,
    ) -> Served<ModelInferResponse> {
        let model = &request.model_name;
        refuse_extensions(model, "the request", request.parameters.keys())?;
        for input in &request.inputs {
            refuse_extensions(
                model,
                &format!("input `{}`", input.name),
                input.parameters.keys(),
            )?;
        }
        for output in &request.outputs {
            refuse_extensions(
                model,
                &format!("output `{}`", output.name),
                output.parameters.keys(),
            )?;
        }
        let spec = model_spec(
            model,
            &request.model_version,
            string_param(model, &request.parameters, VERSION_LABEL)?,
            string_param(model, &request.parameters, SIGNATURE_NAME)?,
        )?;
        let raw = request.raw_input_contents.len();
        if raw != 0 && raw != request.inputs.len() {
            return Err(ServingError::invalid_argument(format!(
                "model `{}`: raw_input_contents has {raw} entries for {} inputs; give one per input, in order",
                spec.name,
                request.inputs.len()
            )));
        }
        if let Some(output) = request
            .outputs
            .iter()
            .find(|o| o.parameters.contains_key("classification"))
        {
            return Err(ServingError::unimplemented(format!(
                "model `{}`: output `{}` asks for the classification extension, which this server does not implement; use TF Serving's Classify",
                spec.name, output.name
            )));
        }
        let requested: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
        let mut spec = spec;
        spec.client_key =
            client_key.or_else(|| (!request.id.is_empty()).then(|| request.id.clone()));
        let inferred = infer(&self.core, &spec, &requested, |budget| {
            decode_inputs(&request, budget)
        })
        .await?;
        let response = ModelInferResponse {
            model_name: inferred.model,
            model_version: inferred.version.to_string(),
            id: request.id,
            parameters: HashMap::new(),
            raw_output_contents: inferred
                .outputs
                .iter()
                .map(|(_, t)| tensor_to_raw(t))
                .collect(),
            outputs: inferred
                .outputs
                .into_iter()
                .map(|(name, t)| InferOutputTensor {
                    name,
                    datatype: t.dtype().v2_name().to_string(),
                    shape: t.shape().iter().map(|&d| d as i64).collect(),
                    parameters: HashMap::new(),
                    contents: None,
                })
                .collect(),
        };
        Ok((response, Some(inferred.version)))
    }

    fn model_metadata(&self, request: &ModelMetadataRequest) -> Served<ModelMetadataResponse> {
        let spec = model_spec(&request.name, &request.version, None, None)?;
        let meta = model_metadata(&self.core, &spec)?;
        let tensors = |list: Vec<super::TensorMetadata>| {
            list.into_iter()
                .map(|t| model_metadata_response::TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.to_string(),
                    shape: t.shape,
                })
                .collect()
        };
        let response = ModelMetadataResponse {
            name: meta.name,
            versions: meta.versions,
            platform: PLATFORM.to_string(),
            inputs: tensors(meta.inputs),
            outputs: tensors(meta.outputs),
        };
        Ok((response, Some(meta.version)))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for OipService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: server_ready(&self.core),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        // As Triton does, a model that is not served is "not ready" here rather than an
        // error (tritonclient.grpc's is_model_ready raises on errors).
        let ready = match model_spec(&request.name, &request.version, None, None)
            .and_then(|spec| model_ready(&self.core, &spec))
        {
            Ok(ready) => ready,
            Err(e) if e.code == crate::error::Code::NotFound => false,
            Err(e) => return Err(to_status(e)),
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let result = OipService::model_metadata(self, &request);
        finish(
            &self.core,
            &request.name,
            Api::ModelMetadata,
            started,
            result,
        )
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let started = Instant::now();
        let key = crate::transport::grpc::client_key(request.metadata());
        let request = request.into_inner();
        let model = request.model_name.clone();
        let result = OipService::model_infer(self, request, key).await;
        finish(&self.core, &model, Api::ModelInfer, started, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triton_extensions_are_named_and_the_protocol_passes() {
        let status = triton_extension("/inference.GRPCInferenceService/ModelConfig").unwrap();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("ModelConfig is not implemented"));
        assert!(triton_extension("/inference.GRPCInferenceService/ModelInfer").is_none());
        assert!(triton_extension("/tensorflow.serving.PredictionService/Predict").is_none());
        assert!(is_probe("/inference.GRPCInferenceService/ServerReady"));
        assert!(!is_probe("/inference.GRPCInferenceService/ModelInfer"));
    }
}
