//! The Open Inference Protocol (KServe v2, what Triton's `tritonclient` speaks) beside TF
//! Serving's API, over the same core: the same manager picks versions (labels through the
//! `version_label` request parameter), the same admission limits, batching and metrics
//! apply. This module holds what gRPC ([`grpc`]) and REST ([`rest`]) share: how a request
//! names a model, how a signature reads as v2 metadata, and the inference flow.
//! No model logic and no wire format here.

pub mod grpc;
pub mod rest;

use crate::admission::Budget;
use crate::error::ServingError;
use crate::manager::{VersionChoice, VersionState};
use crate::metrics::Api;
use crate::servable::{Inputs, Signature, TensorSpec};
use crate::serving::{Core, ModelSpec};
use crate::tensor::{DecodeError, Tensor};

/// `ServerMetadata`'s name.
pub const SERVER_NAME: &str = "candle-serving";
/// The protocol extensions this server implements (Triton's names).
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "parameters"];
/// `ModelMetadata`'s platform.
pub const PLATFORM: &str = "candle";
/// The request parameter that names a version label (TF Serving's `version_label`).
pub const VERSION_LABEL: &str = "version_label";
/// The request parameter that names a signature other than `serving_default`.
pub const SIGNATURE_NAME: &str = "signature_name";

/// The model spec of a v2 request: a name, a version number as a string (empty: the
/// version the server picks), and optionally a label or a signature from the parameters.
pub fn model_spec(
    name: &str,
    version: &str,
    label: Option<&str>,
    signature: Option<&str>,
) -> Result<ModelSpec, ServingError> {
    if name.is_empty() {
        return Err(ServingError::invalid_argument("the model name is empty"));
    }
    let version = match (version, label) {
        ("", None | Some("")) => VersionChoice::Latest,
        ("", Some(label)) => VersionChoice::Label(label.to_string()),
        (v, None | Some("")) => VersionChoice::Number(v.parse().map_err(|_| {
            ServingError::invalid_argument(format!(
                "model `{name}`: version `{v}` is not a number; name a label with the `{VERSION_LABEL}` parameter"
            ))
        })?),
        (v, Some(label)) => {
            return Err(ServingError::invalid_argument(format!(
                "model `{name}`: the request names both version {v} and label `{label}`; give one"
            )))
        }
    };
    Ok(ModelSpec {
        name: name.to_string(),
        version,
        signature_name: signature.unwrap_or_default().to_string(),
        client_key: None,
    })
}

/// One input or output as v2 metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

impl TensorMetadata {
    fn of(spec: &TensorSpec) -> Self {
        TensorMetadata {
            name: spec.name.clone(),
            datatype: spec.dtype().v2_name(),
            shape: spec.shape.clone(),
        }
    }
}

/// `ModelMetadata`: the model's available versions (ascending) and the version a request would reach,
/// with the inputs and outputs of the signature it names (`serving_default` unless given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMetadata {
    pub name: String,
    pub version: i64,
    pub versions: Vec<String>,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

pub fn model_metadata(core: &Core, spec: &ModelSpec) -> Result<ModelMetadata, ServingError> {
    let loaded = core.resolve(spec)?;
    let (_, signature) = Core::signature(&loaded, &spec.signature_name)?;
    let all = ModelSpec::latest(&spec.name);
    let mut numbers: Vec<i64> = core
        .status(&all)?
        .into_iter()
        .filter(|s| s.state == VersionState::Available)
        .map(|s| s.version)
        .collect();
    numbers.sort_unstable();
    let versions = numbers.iter().map(i64::to_string).collect();
    Ok(ModelMetadata {
        name: loaded.model().to_string(),
        version: loaded.version(),
        versions,
        inputs: signature.inputs.iter().map(TensorMetadata::of).collect(),
        outputs: signature.outputs.iter().map(TensorMetadata::of).collect(),
    })
}

/// `ModelReady`: whether the version the spec names can take requests. A model that is not
/// configured at all is NOT_FOUND rather than "not ready", so a typo does not look like a
/// model still loading.
pub fn model_ready(core: &Core, spec: &ModelSpec) -> Result<bool, ServingError> {
    match core.resolve(spec) {
        Ok(_) => Ok(true),
        Err(e) if !core.is_configured(&spec.name) => Err(e),
        Err(_) => Ok(false),
    }
}

/// `ServerReady`: every configured model has an AVAILABLE version.
pub fn server_ready(core: &Core) -> bool {
    core.readiness().iter().all(|m| m.problem.is_none())
}

/// The answer to a ModelInfer: the version that ran and its outputs, in the order the
/// request asked for them (or the signature's order).
#[derive(Debug)]
pub struct Inferred {
    pub model: String,
    pub version: i64,
    pub outputs: Vec<(String, Tensor)>,
}

/// Why a request's inputs could not be read: the input's name and the cause.
pub type InputError = (String, DecodeError);

/// Runs a ModelInfer. `decode` reads the request's inputs against the request's budget;
/// it runs only once the model, version and signature are known to exist and the requested
/// outputs to be among the signature's.
pub async fn infer(
    core: &Core,
    spec: &ModelSpec,
    requested: &[String],
    decode: impl FnOnce(&mut Budget) -> Result<Inputs, InputError>,
) -> Result<Inferred, ServingError> {
    let loaded = core.route(spec)?;
    let (_, signature) = Core::signature(&loaded, &spec.signature_name)?;
    let order = output_order(signature, requested)
        .map_err(|m| ServingError::invalid_argument(format!("{}: {m}", loaded.describe())))?;
    let mut budget = core.budget();
    let inputs = decode(&mut budget).map_err(|(name, e)| {
        let prefix = format!("{}: input `{name}`", loaded.describe());
        match e {
            DecodeError::Limit(limit) => ServingError::over_limit(&limit, prefix),
            other => ServingError::invalid_argument(format!("{prefix}: {other}")),
        }
    })?;
    let mut prediction = core
        .predict_as(
            loaded,
            &spec.signature_name,
            inputs,
            requested,
            Api::ModelInfer,
        )
        .await?;
    let mut outputs = Vec::with_capacity(order.len());
    for name in order {
        let Some(tensor) = prediction.outputs.remove(&name) else {
            return Err(ServingError::internal(format!(
                "model `{}` version {} produced no `{name}` output",
                prediction.model, prediction.version
            )));
        };
        outputs.push((name, tensor));
    }
    Ok(Inferred {
        model: prediction.model,
        version: prediction.version,
        outputs,
    })
}

/// The outputs to answer with, in order: the requested ones (each an output of the
/// signature, none twice), or all of the signature's.
fn output_order(signature: &Signature, requested: &[String]) -> Result<Vec<String>, String> {
    if requested.is_empty() {
        return Ok(signature.outputs.iter().map(|s| s.name.clone()).collect());
    }
    for (i, name) in requested.iter().enumerate() {
        if signature.output(name).is_none() {
            return Err(format!(
                "requested output `{name}` is not an output of the model; its outputs: {}",
                signature.output_names().join(", ")
            ));
        }
        if requested[..i].contains(name) {
            return Err(format!("output `{name}` is requested twice"));
        }
    }
    Ok(requested.to_vec())
}

/// The protocol extension a parameter belongs to when this server does not implement it:
/// a request that relies on one is refused rather than answered as if it were plain.
pub fn unsupported_extension(parameter: &str) -> Option<&'static str> {
    if parameter.starts_with("shared_memory_") {
        Some("shared-memory")
    } else if parameter.starts_with("sequence_") {
        Some("sequence batching")
    } else {
        None
    }
}

/// Refuses the first parameter of `names` that belongs to an unimplemented extension.
pub fn refuse_extensions<'a>(
    model: &str,
    what: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), ServingError> {
    for name in names {
        if let Some(extension) = unsupported_extension(name) {
            return Err(ServingError::unimplemented(format!(
                "model `{model}`: {what} has parameter `{name}` of the {extension} extension, which this server does not implement"
            )));
        }
    }
    Ok(())
}

/// Adds a decoded input, refusing a name given twice.
pub fn insert_input(inputs: &mut Inputs, name: &str, tensor: Tensor) -> Result<(), InputError> {
    if inputs.insert(name.to_string(), tensor).is_some() {
        return Err((
            name.to_string(),
            DecodeError::Malformed("the request gives this input twice".into()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    #[test]
    fn versions_are_numbers_and_labels_come_from_the_parameter() {
        assert_eq!(
            model_spec("m", "", None, None).unwrap().version,
            VersionChoice::Latest
        );
        assert_eq!(
            model_spec("m", "3", None, None).unwrap().version,
            VersionChoice::Number(3)
        );
        assert_eq!(
            model_spec("m", "", Some("stable"), Some("other")).unwrap(),
            ModelSpec {
                name: "m".into(),
                version: VersionChoice::Label("stable".into()),
                signature_name: "other".into(),
                client_key: None,
            }
        );
        let e = model_spec("m", "stable", None, None).unwrap_err();
        assert!(e.message.contains("`version_label`"), "{}", e.message);
        assert!(model_spec("m", "2", Some("canary"), None).is_err());
        assert!(model_spec("", "", None, None).is_err());
    }

    #[test]
    fn outputs_come_in_the_requested_order_or_the_signatures() {
        let sig = Signature::predict(
            vec![TensorSpec::new("text", DType::String, &[-1])],
            vec![
                TensorSpec::new("tags", DType::String, &[-1, -1]),
                TensorSpec::new("entities", DType::String, &[-1, -1]),
            ],
        );
        assert_eq!(output_order(&sig, &[]).unwrap(), ["tags", "entities"]);
        let asked = ["entities".to_string(), "tags".to_string()];
        assert_eq!(output_order(&sig, &asked).unwrap(), asked);
        assert!(output_order(&sig, &["x".into()])
            .unwrap_err()
            .contains("its outputs: tags, entities"));
        assert!(output_order(&sig, &["tags".into(), "tags".into()]).is_err());
    }
}
