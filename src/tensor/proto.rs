//! `tensorflow.TensorProto` ⇄ [`Tensor`]. Values may come in the typed repeated fields or
//! as raw little-endian bytes in `tensor_content` (how the official Python client's
//! `make_tensor_proto` sends numeric arrays); responses use the typed fields, as TF Serving does.
//! Conversion only: how much a request may decode is the [`Budget`]'s decision, and whether
//! the tensors fit a model is the signature's.

use super::{format_shape, proto_dtype_name, DType, Tensor, TensorData};
use crate::admission::{Budget, LimitError};
use crate::proto::tensorflow::{tensor_shape_proto::Dim, TensorProto, TensorShapeProto};

/// Why a TensorProto could not be read. The caller adds which input it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("dtype {0} is not supported by this server")]
    UnsupportedDType(String),
    #[error("tensor_shape has unknown_rank set; a request tensor needs a known shape")]
    UnknownRank,
    #[error("tensor_shape has a negative dimension {0}")]
    NegativeDim(i64),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("tensor_content has {actual} bytes but shape {shape} of {dtype} needs {expected}")]
    ContentSize {
        dtype: DType,
        shape: String,
        expected: usize,
        actual: usize,
    },
    #[error("DT_STRING values must be sent in string_val, not tensor_content")]
    StringContent,
    #[error("the raw contents have {actual} bytes but shape {shape} of {dtype} needs {expected}")]
    RawSize {
        dtype: DType,
        shape: String,
        expected: usize,
        actual: usize,
    },
    #[error("{0}")]
    Malformed(String),
    #[error("the shape has {rank} dimensions; a request tensor may have at most {limit}")]
    Rank { rank: usize, limit: usize },
    #[error("the shape has a negative dimension {0}")]
    NegativeShape(i64),
    #[error("shape {shape} needs {expected} values but {actual} were given in {field}")]
    ValueCount {
        shape: String,
        field: &'static str,
        expected: usize,
        actual: usize,
    },
}

/// Reads a request tensor, drawing on the request's `budget`: the claimed shape and the
/// bytes it implies are admitted before anything is allocated for them.
pub fn tensor_from_proto(proto: &TensorProto, budget: &mut Budget) -> Result<Tensor, DecodeError> {
    let dtype = DType::from_proto(proto.dtype)
        .ok_or_else(|| DecodeError::UnsupportedDType(proto_dtype_name(proto.dtype)))?;
    let dims = dims_from_proto(proto.tensor_shape.as_ref())?;
    let count = budget.admit_shape(&dims)?;
    // Every dimension is within the budget's per-dimension limit, so each fits a usize.
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let shape_text = format_shape(&shape);
    let data = if !proto.tensor_content.is_empty() {
        decode_content(dtype, &proto.tensor_content, count, &shape_text, budget)?
    } else {
        decode_typed(dtype, proto, count, &shape_text, budget)?
    };
    Ok(Tensor::new(shape, data).expect("decoders return exactly `count` values; this is a bug"))
}

fn dims_from_proto(shape: Option<&TensorShapeProto>) -> Result<Vec<u64>, DecodeError> {
    let Some(shape) = shape else {
        return Ok(Vec::new());
    };
    if shape.unknown_rank {
        return Err(DecodeError::UnknownRank);
    }
    shape
        .dim
        .iter()
        .map(|d| u64::try_from(d.size).map_err(|_| DecodeError::NegativeDim(d.size)))
        .collect()
}

fn decode_content(
    dtype: DType,
    bytes: &[u8],
    count: usize,
    shape: &str,
    budget: &mut Budget,
) -> Result<TensorData, DecodeError> {
    if dtype == DType::String {
        return Err(DecodeError::StringContent);
    }
    super::read_little_endian(dtype, bytes, count, budget, |expected| {
        DecodeError::ContentSize {
            dtype,
            shape: shape.to_string(),
            expected,
            actual: bytes.len(),
        }
    })
}

/// Typed fields. As in TensorFlow, a single value fills a larger shape; otherwise the count
/// must match exactly (TensorFlow would silently repeat the last value; a short list is far
/// more often a client bug, so it is an error here). The bytes the values will take are
/// admitted before they are copied or repeated.
fn decode_typed(
    dtype: DType,
    proto: &TensorProto,
    count: usize,
    shape: &str,
    budget: &mut Budget,
) -> Result<TensorData, DecodeError> {
    fn fill<T: Clone>(
        values: &[T],
        count: usize,
        shape: &str,
        field: &'static str,
        budget: &mut Budget,
    ) -> Result<Vec<T>, DecodeError> {
        check_count(values.len(), count, shape, field)?;
        budget.admit_bytes(count, std::mem::size_of::<T>())?;
        Ok(repeat(values, count))
    }
    Ok(match dtype {
        DType::Float => {
            TensorData::Float(fill(&proto.float_val, count, shape, "float_val", budget)?)
        }
        DType::Double => {
            TensorData::Double(fill(&proto.double_val, count, shape, "double_val", budget)?)
        }
        DType::Int32 => TensorData::Int32(fill(&proto.int_val, count, shape, "int_val", budget)?),
        DType::Int64 => {
            TensorData::Int64(fill(&proto.int64_val, count, shape, "int64_val", budget)?)
        }
        DType::Bool => TensorData::Bool(fill(&proto.bool_val, count, shape, "bool_val", budget)?),
        DType::String => {
            let values = &proto.string_val;
            check_count(values.len(), count, shape, "string_val")?;
            let copies = if values.len() == count { 1 } else { count };
            for (index, value) in values.iter().enumerate() {
                budget.admit_string(index, value, copies)?;
            }
            TensorData::String(repeat(values, count))
        }
    })
}

/// `count` values are needed; `given` may be exactly that or one value to repeat.
fn check_count(
    given: usize,
    count: usize,
    shape: &str,
    field: &'static str,
) -> Result<(), DecodeError> {
    if given == count || (given == 1 && count > 0) {
        return Ok(());
    }
    Err(DecodeError::ValueCount {
        shape: shape.to_string(),
        field,
        expected: count,
        actual: given,
    })
}

fn repeat<T: Clone>(values: &[T], count: usize) -> Vec<T> {
    if values.len() == count {
        values.to_vec()
    } else {
        vec![values[0].clone(); count]
    }
}

/// Writes a response tensor with the typed fields.
pub fn tensor_to_proto(tensor: &Tensor) -> TensorProto {
    let mut proto = TensorProto {
        dtype: tensor.dtype().to_proto(),
        tensor_shape: Some(TensorShapeProto {
            dim: tensor
                .shape()
                .iter()
                .map(|&size| Dim {
                    size: size as i64,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        ..Default::default()
    };
    match tensor.data() {
        TensorData::Float(v) => proto.float_val = v.clone(),
        TensorData::Double(v) => proto.double_val = v.clone(),
        TensorData::Int32(v) => proto.int_val = v.clone(),
        TensorData::Int64(v) => proto.int64_val = v.clone(),
        TensorData::Bool(v) => proto.bool_val = v.clone(),
        TensorData::String(v) => proto.string_val = v.clone(),
    }
    proto
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Limits;

    fn budget() -> Budget {
        Budget::new(&Limits::default())
    }

    fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
        Some(TensorShapeProto {
            dim: dims
                .iter()
                .map(|&size| Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        })
    }

    #[test]
    fn reads_tensor_content_little_endian() {
        let values = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.5];
        let proto = TensorProto {
            dtype: 1,
            tensor_shape: shape(&[2, 3]),
            tensor_content: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
        let t = tensor_from_proto(&proto, &mut budget()).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.data(), &TensorData::Float(values.to_vec()));
    }

    #[test]
    fn reads_int64_content_and_typed_fields_alike() {
        let ids = [101i64, 7592, 102];
        let content = TensorProto {
            dtype: 9,
            tensor_shape: shape(&[1, 3]),
            tensor_content: ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
        let typed = TensorProto {
            dtype: 9,
            tensor_shape: shape(&[1, 3]),
            int64_val: ids.to_vec(),
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&content, &mut budget()),
            tensor_from_proto(&typed, &mut budget())
        );
    }

    #[test]
    fn single_value_fills_the_shape() {
        let proto = TensorProto {
            dtype: 3,
            tensor_shape: shape(&[2, 2]),
            int_val: vec![4],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&proto, &mut budget()).unwrap().data(),
            &TensorData::Int32(vec![4; 4])
        );
    }

    #[test]
    fn wrong_value_count_names_the_field() {
        let proto = TensorProto {
            dtype: 7,
            tensor_shape: shape(&[3]),
            string_val: vec![b"a".to_vec(), b"b".to_vec()],
            ..Default::default()
        };
        let err = tensor_from_proto(&proto, &mut budget())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "shape [3] needs 3 values but 2 were given in string_val"
        );
    }

    #[test]
    fn content_of_the_wrong_size_is_rejected() {
        let proto = TensorProto {
            dtype: 1,
            tensor_shape: shape(&[3]),
            tensor_content: vec![0; 8],
            ..Default::default()
        };
        assert!(matches!(
            tensor_from_proto(&proto, &mut budget()),
            Err(DecodeError::ContentSize {
                expected: 12,
                actual: 8,
                ..
            })
        ));
    }

    #[test]
    fn huge_declared_shapes_are_refused_before_allocating() {
        let proto = TensorProto {
            dtype: 1,
            tensor_shape: shape(&[1 << 40, 1 << 30]),
            float_val: vec![1.0],
            ..Default::default()
        };
        assert!(matches!(
            tensor_from_proto(&proto, &mut budget()),
            Err(DecodeError::Limit(LimitError::Dim { .. }))
        ));
    }

    /// The 1 KB message of the hardening issue: one 1 KiB string claimed to fill [67108864].
    /// Refused by the shape, then by the bytes it would expand to, before any copy.
    #[test]
    fn a_single_value_cannot_expand_past_the_budget() {
        let mut proto = TensorProto {
            dtype: 7,
            tensor_shape: shape(&[67_108_864]),
            string_val: vec![vec![b'a'; 1024]],
            ..Default::default()
        };
        let e = tensor_from_proto(&proto, &mut budget()).unwrap_err();
        assert!(e.to_string().contains("--max_request_dim"), "{e}");
        proto.tensor_shape = shape(&[60_000]);
        let e = tensor_from_proto(&proto, &mut budget()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the request decodes to more than 4194304 bytes (--max_request_bytes)"
        );
        let int64 = TensorProto {
            dtype: 9,
            tensor_shape: shape(&[8192, 8192]),
            int64_val: vec![1],
            ..Default::default()
        };
        let e = tensor_from_proto(&int64, &mut budget()).unwrap_err();
        assert!(e.to_string().contains("--max_request_elements"), "{e}");
    }

    #[test]
    fn unsupported_dtype_is_named() {
        let proto = TensorProto {
            dtype: 19,
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&proto, &mut budget())
                .unwrap_err()
                .to_string(),
            "dtype DT_HALF is not supported by this server"
        );
    }

    #[test]
    fn round_trips_through_the_typed_fields() {
        let t = Tensor::new(
            vec![2],
            TensorData::String(vec![b"x".to_vec(), "头痛".into()]),
        )
        .unwrap();
        assert_eq!(
            tensor_from_proto(&tensor_to_proto(&t), &mut budget()).unwrap(),
            t
        );
        let f = Tensor::new(vec![1, 2], TensorData::Float(vec![0.5, -1.0])).unwrap();
        assert_eq!(
            tensor_from_proto(&tensor_to_proto(&f), &mut budget()).unwrap(),
            f
        );
    }
}
