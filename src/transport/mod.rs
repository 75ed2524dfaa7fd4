//! Transports: gRPC and REST, each with TF Serving's API and the Open Inference Protocol
//! (`v2`). Each converts its wire types to the core's and back, and
//! owns one table from [`crate::error::Code`] to its status codes. No model logic here.

pub mod grpc;
pub mod grpc_scan;
pub mod jobs;
pub mod json;
pub mod rest;
pub mod rollout;
pub mod v2;

use axum::http::{header, HeaderMap};

use crate::error::{Code, ServingError};
use crate::proto::tensorflow::serving::{
    GetModelStatusResponse, ModelVersionStatus, SignatureDefMap, StatusProto,
};
use crate::proto::tensorflow::{
    tensor_info, tensor_shape_proto::Dim, SignatureDef, TensorInfo, TensorShapeProto,
};
use crate::servable::{SignatureMap, TensorSpec};
use crate::serving::{Core, ModelSpec};

/// GetModelStatus for both transports: every version of the model, or the one a version
/// number or label names.
pub fn model_status(core: &Core, spec: &ModelSpec) -> Result<GetModelStatusResponse, ServingError> {
    let statuses = core.status(spec)?;
    Ok(GetModelStatusResponse {
        model_version_status: statuses
            .into_iter()
            .map(|s| ModelVersionStatus {
                version: s.version,
                state: s.state as i32,
                status: Some(StatusProto {
                    error_code: if s.error.is_some() {
                        Code::Unknown.as_i32()
                    } else {
                        0
                    },
                    error_message: s.error.unwrap_or_default(),
                }),
            })
            .collect(),
    })
}

/// Our signatures as TF's `SignatureDefMap`, as GetModelMetadata reports them.
pub fn signature_def_map(signatures: &SignatureMap) -> SignatureDefMap {
    let info = |spec: &TensorSpec| TensorInfo {
        dtype: spec.dtype().to_proto(),
        tensor_shape: Some(TensorShapeProto {
            dim: spec
                .shape
                .iter()
                .enumerate()
                .map(|(i, &size)| Dim {
                    size,
                    name: spec.dim_names.get(i).cloned().unwrap_or_default(),
                })
                .collect(),
            unknown_rank: false,
        }),
        encoding: Some(tensor_info::Encoding::Name(format!("{}:0", spec.name))),
    };
    SignatureDefMap {
        signature_def: signatures
            .iter()
            .map(|(name, sig)| {
                (
                    name.clone(),
                    SignatureDef {
                        inputs: sig
                            .inputs
                            .iter()
                            .map(|s| (s.name.clone(), info(s)))
                            .collect(),
                        outputs: sig
                            .outputs
                            .iter()
                            .map(|s| (s.name.clone(), info(s)))
                            .collect(),
                        method_name: sig.method_name.clone(),
                        defaults: Default::default(),
                    },
                )
            })
            .collect(),
    }
}

/// The body length a request announces in `Content-Length` when it is above `max`. A server
/// that waited for such a body would read `max` bytes only to refuse them; the HTTP routers
/// answer 413 at once instead, before reading any of it.
pub fn announced_body_over(headers: &HeaderMap, max: usize) -> Option<u64> {
    let length = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (length > max as u64).then_some(length)
}
