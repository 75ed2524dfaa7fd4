//! Open Inference Protocol (KServe v2) tensors ⇄ [`Tensor`]: the protocol's datatype names,
//! raw little-endian bytes (gRPC `raw_input_contents`, the REST binary-data extension) and
//! the typed `InferTensorContents` fields. BYTES elements in raw form are each preceded by
//! their length as a 4-byte little-endian integer.
//! Conversion only, drawing on the request's [`Budget`] as the TF decoders do: the claimed
//! shape is admitted before anything is allocated for it.

use super::{format_shape, DType, DecodeError, Tensor, TensorData};
use crate::admission::Budget;
use crate::proto::inference::InferTensorContents;

impl DType {
    /// The protocol's name of the type (`FP32`, `BYTES`, ...).
    pub fn v2_name(self) -> &'static str {
        match self {
            DType::Float => "FP32",
            DType::Double => "FP64",
            DType::Int32 => "INT32",
            DType::Int64 => "INT64",
            DType::Bool => "BOOL",
            DType::String => "BYTES",
        }
    }

    pub fn from_v2_name(name: &str) -> Option<DType> {
        Some(match name {
            "FP32" => DType::Float,
            "FP64" => DType::Double,
            "INT32" => DType::Int32,
            "INT64" => DType::Int64,
            "BOOL" => DType::Bool,
            "BYTES" => DType::String,
            _ => return None,
        })
    }
}

/// The protocol's types this server does not read, so an error can tell an unsupported
/// type from a misspelt one.
const OTHER_V2_TYPES: &[&str] = &[
    "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "FP16", "BF16",
];

/// The dtype a request names, or why it cannot be read.
pub fn dtype_from_v2(name: &str) -> Result<DType, DecodeError> {
    DType::from_v2_name(name).ok_or_else(|| {
        if OTHER_V2_TYPES.contains(&name) {
            DecodeError::UnsupportedDType(name.to_string())
        } else {
            DecodeError::Malformed(format!(
                "datatype `{name}` is not a type of the protocol (BOOL, INT32, INT64, FP32, FP64, BYTES, ...)"
            ))
        }
    })
}

/// Most dimensions a request tensor may have: far above any model's (3 here), low enough
/// that a shape can be quoted in an error message.
pub const MAX_RANK: usize = 32;

/// Admits a v2 shape (signed dimensions) and returns it with its element count.
pub fn admit_shape(shape: &[i64], budget: &mut Budget) -> Result<(Vec<usize>, usize), DecodeError> {
    if shape.len() > MAX_RANK {
        return Err(DecodeError::Rank {
            rank: shape.len(),
            limit: MAX_RANK,
        });
    }
    let dims = shape
        .iter()
        .map(|&d| u64::try_from(d).map_err(|_| DecodeError::NegativeShape(d)))
        .collect::<Result<Vec<u64>, _>>()?;
    let count = budget.admit_shape(&dims)?;
    // Every dimension is within the budget's per-dimension limit, so each fits a usize.
    Ok((dims.iter().map(|&d| d as usize).collect(), count))
}

/// Reads a tensor from its raw bytes.
pub fn tensor_from_raw(
    dtype: DType,
    shape: &[i64],
    bytes: &[u8],
    budget: &mut Budget,
) -> Result<Tensor, DecodeError> {
    let (shape, count) = admit_shape(shape, budget)?;
    let data = match dtype {
        DType::String => TensorData::String(raw_strings(bytes, count, &shape, budget)?),
        _ => super::read_little_endian(dtype, bytes, count, budget, |expected| {
            DecodeError::RawSize {
                dtype,
                shape: format_shape(&shape),
                expected,
                actual: bytes.len(),
            }
        })?,
    };
    Ok(Tensor::new(shape, data).expect("exactly `count` values were read; this is a bug"))
}

/// `count` length-prefixed strings that fill `bytes` exactly.
fn raw_strings(
    mut bytes: &[u8],
    count: usize,
    shape: &[usize],
    budget: &mut Budget,
) -> Result<Vec<Vec<u8>>, DecodeError> {
    let malformed = |m: String| DecodeError::Malformed(m);
    // Each element takes at least its 4-byte prefix, so the count is checked against the
    // bytes before the vector is sized.
    if bytes.len() / 4 < count {
        return Err(malformed(format!(
            "the raw BYTES contents have {} bytes, too few for the {count} elements of shape {}",
            bytes.len(),
            format_shape(shape)
        )));
    }
    let mut values = Vec::with_capacity(count);
    for index in 0..count {
        let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(malformed(format!(
                "the raw BYTES contents end before element {index} of {count}"
            )));
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        let Some(value) = rest.get(..len) else {
            return Err(malformed(format!(
                "raw BYTES element {index} claims {len} bytes but only {} remain",
                rest.len()
            )));
        };
        budget.admit_string(index, value, 1)?;
        values.push(value.to_vec());
        bytes = &rest[len..];
    }
    if !bytes.is_empty() {
        return Err(malformed(format!(
            "the raw BYTES contents have {} bytes left after the {count} elements of shape {}",
            bytes.len(),
            format_shape(shape)
        )));
    }
    Ok(values)
}

/// A tensor's values as raw bytes.
pub fn tensor_to_raw(tensor: &Tensor) -> Vec<u8> {
    fn flat<T: Copy, const N: usize>(values: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|&v| f(v)).collect()
    }
    match tensor.data() {
        TensorData::Float(v) => flat(v, f32::to_le_bytes),
        TensorData::Double(v) => flat(v, f64::to_le_bytes),
        TensorData::Int32(v) => flat(v, i32::to_le_bytes),
        TensorData::Int64(v) => flat(v, i64::to_le_bytes),
        TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        TensorData::String(v) => {
            let mut out = Vec::with_capacity(v.iter().map(|s| s.len() + 4).sum());
            for s in v {
                // Strings are bounded by the request limits, far below 4 GiB.
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s);
            }
            out
        }
    }
}

/// Reads a tensor from the typed `contents` fields: exactly one value per element, in the
/// field of its type (the protocol does not repeat a single value as TensorFlow does).
pub fn tensor_from_contents(
    dtype: DType,
    shape: &[i64],
    contents: &InferTensorContents,
    budget: &mut Budget,
) -> Result<Tensor, DecodeError> {
    let (shape, count) = admit_shape(shape, budget)?;
    let text = format_shape(&shape);
    let check = |given: usize, field: &'static str| {
        if given == count {
            return Ok(());
        }
        Err(DecodeError::ValueCount {
            shape: text.clone(),
            field,
            expected: count,
            actual: given,
        })
    };
    /// The values of one field, admitted at their size each, then copied.
    fn take<T: Clone>(values: &[T], budget: &mut Budget) -> Result<Vec<T>, DecodeError> {
        budget.admit_bytes(values.len(), std::mem::size_of::<T>())?;
        Ok(values.to_vec())
    }
    let c = contents;
    let data = match dtype {
        DType::Float => {
            check(c.fp32_contents.len(), "fp32_contents")?;
            TensorData::Float(take(&c.fp32_contents, budget)?)
        }
        DType::Double => {
            check(c.fp64_contents.len(), "fp64_contents")?;
            TensorData::Double(take(&c.fp64_contents, budget)?)
        }
        DType::Int32 => {
            check(c.int_contents.len(), "int_contents")?;
            TensorData::Int32(take(&c.int_contents, budget)?)
        }
        DType::Int64 => {
            check(c.int64_contents.len(), "int64_contents")?;
            TensorData::Int64(take(&c.int64_contents, budget)?)
        }
        DType::Bool => {
            check(c.bool_contents.len(), "bool_contents")?;
            TensorData::Bool(take(&c.bool_contents, budget)?)
        }
        DType::String => {
            check(c.bytes_contents.len(), "bytes_contents")?;
            for (index, value) in c.bytes_contents.iter().enumerate() {
                budget.admit_string(index, value, 1)?;
            }
            TensorData::String(c.bytes_contents.clone())
        }
    };
    Ok(Tensor::new(shape, data).expect("the value count was checked; this is a bug"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Limits;

    fn budget() -> Budget {
        Budget::new(&Limits::default())
    }

    #[test]
    fn raw_round_trips_every_type() {
        let tensors = [
            Tensor::new(vec![2, 2], TensorData::Float(vec![0.5, -1.0, 3.25, 0.0])).unwrap(),
            Tensor::new(vec![1], TensorData::Double(vec![1e300])).unwrap(),
            Tensor::new(vec![3], TensorData::Int32(vec![-1, 0, 7])).unwrap(),
            Tensor::new(vec![1, 2], TensorData::Int64(vec![i64::MIN, 101])).unwrap(),
            Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap(),
            Tensor::new(
                vec![3],
                TensorData::String(vec!["头痛".into(), Vec::new(), b"x".to_vec()]),
            )
            .unwrap(),
        ];
        for t in tensors {
            let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            let raw = tensor_to_raw(&t);
            assert_eq!(
                tensor_from_raw(t.dtype(), &shape, &raw, &mut budget()).unwrap(),
                t
            );
        }
    }

    #[test]
    fn bytes_elements_carry_a_little_endian_length_prefix() {
        let t = Tensor::strings(["ab", "c"]);
        assert_eq!(tensor_to_raw(&t), b"\x02\x00\x00\x00ab\x01\x00\x00\x00c");
    }

    #[test]
    fn malformed_raw_contents_are_refused_with_the_reason() {
        let e = |dtype, shape: &[i64], bytes: &[u8]| {
            tensor_from_raw(dtype, shape, bytes, &mut budget())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(DType::Float, &[2], &[0; 7]),
            "the raw contents have 7 bytes but shape [2] of DT_FLOAT needs 8"
        );
        assert!(
            e(DType::String, &[2], b"\x09\x00\x00\x00ab\x00\x00\x00\x00")
                .contains("element 0 claims 9 bytes")
        );
        assert!(e(DType::String, &[1], b"\x01\x00\x00\x00ab").contains("1 bytes left"));
        assert!(e(DType::String, &[3], b"\x00\x00\x00\x00").contains("too few"));
        assert_eq!(
            e(DType::Int64, &[-1], &[]),
            "the shape has a negative dimension -1"
        );
        // A huge claimed shape is refused before anything is allocated for it.
        assert!(e(DType::String, &[1 << 40], &[]).contains("--max_request_dim"));
        assert!(e(DType::Float, &[60_000, 60_000], &[]).contains("--max_request_elements"));
        assert_eq!(
            e(DType::Float, &[1; 40], &[]),
            "the shape has 40 dimensions; a request tensor may have at most 32"
        );
    }

    #[test]
    fn contents_need_one_value_per_element_in_the_field_of_the_type() {
        let contents = InferTensorContents {
            fp32_contents: vec![1.0, 2.0],
            ..Default::default()
        };
        let t = tensor_from_contents(DType::Float, &[1, 2], &contents, &mut budget()).unwrap();
        assert_eq!(t.data(), &TensorData::Float(vec![1.0, 2.0]));
        let e = tensor_from_contents(DType::Float, &[3], &contents, &mut budget()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shape [3] needs 3 values but 2 were given in fp32_contents"
        );
        let e = tensor_from_contents(DType::Int64, &[2], &contents, &mut budget()).unwrap_err();
        assert!(e.to_string().contains("int64_contents"), "{e}");
    }

    #[test]
    fn datatype_names_map_both_ways() {
        for d in [
            DType::Float,
            DType::Double,
            DType::Int32,
            DType::Int64,
            DType::Bool,
            DType::String,
        ] {
            assert_eq!(DType::from_v2_name(d.v2_name()), Some(d));
        }
        assert_eq!(
            dtype_from_v2("FP16").unwrap_err().to_string(),
            "dtype FP16 is not supported by this server"
        );
        assert!(dtype_from_v2("float32")
            .unwrap_err()
            .to_string()
            .contains("not a type of the protocol"));
    }
}
