//! Signatures: the named inputs and outputs of a servable, reported by GetModelMetadata and
//! enforced on every request.
//! It describes and checks; it never runs a model or reads a wire format.

use std::collections::BTreeMap;

use super::Inputs;
use crate::tensor::{format_shape, DType};

/// The signature used when a request names none.
pub const DEFAULT_SIGNATURE: &str = "serving_default";
/// `SignatureDef.method_name` of a Predict signature.
pub const PREDICT_METHOD: &str = "tensorflow/serving/predict";

pub type SignatureMap = BTreeMap<String, Signature>;

/// One input or output: name, accepted dtypes (the first is the one reported in metadata)
/// and shape, `-1` for a dimension of any size.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtypes: Vec<DType>,
    pub shape: Vec<i64>,
    /// Inputs only: the request may leave it out.
    pub optional: bool,
    /// Names of the dimensions, reported in metadata (`TensorShapeProto.Dim.name`); a place
    /// to state limits such as the longest text a model takes.
    pub dim_names: Vec<String>,
}

impl TensorSpec {
    pub fn new(name: &str, dtype: DType, shape: &[i64]) -> Self {
        TensorSpec {
            name: name.to_string(),
            dtypes: vec![dtype],
            shape: shape.to_vec(),
            optional: false,
            dim_names: Vec::new(),
        }
    }

    pub fn with_dim_names(mut self, names: &[&str]) -> Self {
        self.dim_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Also accept `dtype` (for example DT_INT32 where DT_INT64 is the canonical type).
    pub fn or_dtype(mut self, dtype: DType) -> Self {
        self.dtypes.push(dtype);
        self
    }

    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    pub fn dtype(&self) -> DType {
        self.dtypes[0]
    }

    fn describe(&self) -> String {
        let dtypes: Vec<&str> = self.dtypes.iter().map(|d| d.name()).collect();
        let optional = if self.optional { ", optional" } else { "" };
        format!(
            "`{}` ({} {}{optional})",
            self.name,
            dtypes.join("|"),
            format_shape(&self.shape)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub method_name: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    pub fn predict(inputs: Vec<TensorSpec>, outputs: Vec<TensorSpec>) -> Self {
        Signature {
            method_name: PREDICT_METHOD.to_string(),
            inputs,
            outputs,
        }
    }

    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|s| s.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|s| s.name == name)
    }

    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|s| s.name.as_str()).collect()
    }

    /// Describes the inputs for an error message: "`text` (DT_STRING [-1]), ...".
    pub fn describe_inputs(&self) -> String {
        let all: Vec<String> = self.inputs.iter().map(TensorSpec::describe).collect();
        all.join(", ")
    }

    /// Checks names, dtypes and shapes, that all inputs agree on the batch size (their first
    /// dimension), and that the batch is neither empty nor larger than `max_batch`. Returns
    /// the batch size. The message names the input, what was expected and what came.
    pub fn check_inputs(&self, inputs: &Inputs, max_batch: usize) -> Result<usize, String> {
        for name in inputs.keys() {
            if self.input(name).is_none() {
                return Err(format!(
                    "unknown input `{name}`; the signature takes {}",
                    self.describe_inputs()
                ));
            }
        }
        let mut batch: Option<(&str, usize)> = None;
        for spec in &self.inputs {
            let Some(tensor) = inputs.get(&spec.name) else {
                if spec.optional {
                    continue;
                }
                return Err(format!(
                    "missing input {}; the signature takes {}",
                    spec.describe(),
                    self.describe_inputs()
                ));
            };
            if !spec.dtypes.contains(&tensor.dtype()) {
                let expected: Vec<&str> = spec.dtypes.iter().map(|d| d.name()).collect();
                return Err(format!(
                    "input `{}` must be {}, got {}",
                    spec.name,
                    expected.join(" or "),
                    tensor.dtype()
                ));
            }
            let shape = tensor.shape();
            let fits = shape.len() == spec.shape.len()
                && shape
                    .iter()
                    .zip(&spec.shape)
                    .all(|(&got, &want)| want < 0 || got as i64 == want);
            if !fits {
                return Err(format!(
                    "input `{}` must have shape {}, got {}",
                    spec.name,
                    format_shape(&spec.shape),
                    format_shape(shape)
                ));
            }
            let Some(&size) = shape.first() else { continue };
            match batch {
                None => batch = Some((&spec.name, size)),
                Some((first, n)) if n != size => {
                    return Err(format!(
                        "inputs disagree on the batch size: `{first}` has {n} entries but `{}` has {size}",
                        spec.name
                    ))
                }
                Some(_) => {}
            }
        }
        let (name, size) = batch.ok_or_else(|| "the request has no inputs".to_string())?;
        if size == 0 {
            return Err(format!(
                "input `{name}` is an empty batch; send at least one entry"
            ));
        }
        if size > max_batch {
            return Err(format!(
                "input `{name}` has a batch of {size}, more than the {max_batch} this server accepts in one request"
            ));
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{Tensor, TensorData};

    fn pair_signature() -> Signature {
        Signature::predict(
            vec![
                TensorSpec::new("text", DType::String, &[-1]),
                TensorSpec::new("text_pair", DType::String, &[-1]).optional(),
            ],
            vec![TensorSpec::new("probabilities", DType::Float, &[-1, 2])],
        )
    }

    fn inputs(pairs: &[(&str, Tensor)]) -> Inputs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn accepts_a_batch_and_reports_its_size() {
        let sig = pair_signature();
        let ins = inputs(&[
            ("text", Tensor::strings(["a", "b"])),
            ("text_pair", Tensor::strings(["c", "d"])),
        ]);
        assert_eq!(sig.check_inputs(&ins, 8), Ok(2));
    }

    #[test]
    fn names_the_unknown_input_and_what_is_expected() {
        let err = pair_signature()
            .check_inputs(&inputs(&[("txt", Tensor::strings(["a"]))]), 8)
            .unwrap_err();
        assert_eq!(
            err,
            "unknown input `txt`; the signature takes `text` (DT_STRING [-1]), `text_pair` (DT_STRING [-1], optional)"
        );
    }

    #[test]
    fn rejects_wrong_dtype_shape_ragged_empty_and_oversized() {
        let sig = pair_signature();
        let floats = Tensor::new(vec![1], TensorData::Float(vec![1.0])).unwrap();
        assert_eq!(
            sig.check_inputs(&inputs(&[("text", floats)]), 8)
                .unwrap_err(),
            "input `text` must be DT_STRING, got DT_FLOAT"
        );
        let matrix = Tensor::new(vec![1, 1], TensorData::String(vec![b"a".to_vec()])).unwrap();
        assert_eq!(
            sig.check_inputs(&inputs(&[("text", matrix)]), 8)
                .unwrap_err(),
            "input `text` must have shape [-1], got [1,1]"
        );
        let ragged = inputs(&[
            ("text", Tensor::strings(["a", "b"])),
            ("text_pair", Tensor::strings(["c"])),
        ]);
        assert_eq!(
            sig.check_inputs(&ragged, 8).unwrap_err(),
            "inputs disagree on the batch size: `text` has 2 entries but `text_pair` has 1"
        );
        let empty = inputs(&[("text", Tensor::strings(Vec::<&str>::new()))]);
        assert!(sig
            .check_inputs(&empty, 8)
            .unwrap_err()
            .contains("empty batch"));
        let big = inputs(&[("text", Tensor::strings(["x"; 9]))]);
        assert!(sig
            .check_inputs(&big, 8)
            .unwrap_err()
            .contains("batch of 9, more than the 8"));
        assert!(sig
            .check_inputs(&Inputs::new(), 8)
            .unwrap_err()
            .starts_with("missing input `text`"));
    }
}
