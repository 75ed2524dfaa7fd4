//! A gRPC PredictRequest as it arrives: protobuf bytes → tensors under the default request
//! budget → the embedding signature's check. Never a panic, and never more elements or
//! bytes than the budget admits, whatever shape the message claims.
#![no_main]

use candle_serving::admission::{Budget, Limits};
use candle_serving::proto::tensorflow::serving::PredictRequest;
use candle_serving::servable::{Inputs, Signature, TensorSpec};
use candle_serving::tensor::{tensor_from_proto, DType};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = PredictRequest::decode(data) else {
        return;
    };
    let limits = Limits::default();
    let mut budget = Budget::new(&limits);
    let mut inputs = Inputs::new();
    let mut elements = 0usize;
    for (name, proto) in &request.inputs {
        match tensor_from_proto(proto, &mut budget) {
            Ok(tensor) => {
                elements += tensor.len();
                inputs.insert(name.clone(), tensor);
            }
            Err(_) => return,
        }
    }
    assert!(elements <= limits.max_elements, "the budget bounds what is decoded");
    let signature = Signature::predict(
        vec![
            TensorSpec::new("text", DType::String, &[-1]).optional(),
            TensorSpec::new("input_ids", DType::Int64, &[-1, -1])
                .or_dtype(DType::Int32)
                .optional(),
            TensorSpec::new("attention_mask", DType::Int64, &[-1, -1])
                .or_dtype(DType::Int32)
                .optional(),
        ],
        vec![TensorSpec::new("embeddings", DType::Float, &[-1, 384])],
    );
    let _ = signature.check_inputs(&inputs, limits.max_batch);
});
