//! The TensorFlow / TF Serving and Open Inference Protocol protos of `proto/`, compiled by `build.rs`. Generated code
//! is never committed; packages become nested modules so `tensorflow.serving.ModelSpec` is
//! `proto::tensorflow::serving::ModelSpec`.
//! Nothing but the generated types and their descriptors: conversions live in `tensor` and
//! `transport`, text-format parsing in `config`.

#![allow(clippy::all, missing_docs)]

use std::sync::LazyLock;

use prost_reflect::DescriptorPool;

pub mod tensorflow {
    tonic::include_proto!("tensorflow");

    pub mod error {
        tonic::include_proto!("tensorflow.error");
    }

    pub mod serving {
        tonic::include_proto!("tensorflow.serving");
    }
}

/// The Open Inference Protocol (KServe v2) gRPC service.
pub mod inference {
    tonic::include_proto!("inference");
}

/// This project's own services.
pub mod candle_serving {
    pub mod jobs {
        pub mod v1 {
            tonic::include_proto!("candle_serving.jobs.v1");
        }
    }
    pub mod rollout {
        pub mod v1 {
            tonic::include_proto!("candle_serving.rollout.v1");
        }
    }
}

/// Descriptors of every message in `proto/`, for reading text-format configs and for
/// proto3 JSON.
pub static DESCRIPTORS: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin")).as_ref())
        .expect("the descriptor set written by build.rs decodes; this is a bug")
});
