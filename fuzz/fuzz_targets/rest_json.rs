//! A REST :predict body as it arrives: measured (depth, values) before parsing, parsed,
//! read into tensors by the signature's dtypes (row and columnar formats, b64 strings),
//! then admitted. Never a panic, and ragged lists never become a tensor.
#![no_main]

use candle_serving::admission::{check_json, Budget, Limits};
use candle_serving::servable::{Signature, TensorSpec};
use candle_serving::tensor::DType;
use candle_serving::transport::json::parse_predict;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if check_json(data, limits.max_json_depth, limits.max_elements).is_err() {
        return;
    }
    let Ok(serde_json::Value::Object(body)) = serde_json::from_slice(data) else {
        return;
    };
    let signature = Signature::predict(
        vec![
            TensorSpec::new("text", DType::String, &[-1]),
            TensorSpec::new("text_pair", DType::String, &[-1]).optional(),
            TensorSpec::new("input_ids", DType::Int64, &[-1, -1]).optional(),
            TensorSpec::new("scores", DType::Float, &[-1, 3]).optional(),
        ],
        vec![TensorSpec::new("probabilities", DType::Float, &[-1, 3])],
    );
    if let Ok((_, inputs)) = parse_predict(&body, &signature) {
        let mut budget = Budget::new(&limits);
        for tensor in inputs.values() {
            let product: usize = tensor.shape().iter().product();
            assert_eq!(product, tensor.data().len(), "shape and values agree");
            let _ = budget.admit_tensor(tensor);
        }
    }
});
