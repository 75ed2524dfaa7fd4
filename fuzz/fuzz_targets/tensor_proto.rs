//! A gRPC PredictRequest as it arrives: the wire scan that counts its values, protobuf
//! bytes → tensors under the default request budget → the embedding signature's check. Never a panic, and never more elements or
//! bytes than the budget admits, whatever shape the message claims.
#![no_main]

use candle_serving::admission::{scan_predict_request, Budget, Limits};
use candle_serving::proto::tensorflow::serving::PredictRequest;
use candle_serving::servable::{Inputs, Signature, TensorSpec};
use candle_serving::tensor::{tensor_from_proto, DType};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let scanned = scan_predict_request(data, &limits);
    let Ok(request) = PredictRequest::decode(data) else {
        return;
    };
    if scanned.is_ok() {
        let values: usize = request
            .inputs
            .values()
            .map(|t| {
                t.string_val.len()
                    + t.float_val.len()
                    + t.double_val.len()
                    + t.int_val.len()
                    + t.int64_val.len()
                    + t.bool_val.len()
                    + t.half_val.len()
            })
            .sum();
        assert!(values <= limits.max_elements, "the scan counts what prost decodes");
    }
    let mut budget = Budget::new(&limits);
    let mut inputs = Inputs::new();
    let mut elements = 0usize;
    for (name, proto) in &request.inputs {
        match tensor_from_proto(proto, &mut budget) {
            Ok(tensor) => {
                elements += tensor.data().len();
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
