//! Host tensors: the one representation requests and responses take between a transport and
//! a servable. Transports convert wire formats (TensorProto, JSON) into these and back; models
//! read them and never see a proto. Nothing here knows about candle.

mod proto;
mod v2;

pub use proto::{tensor_from_proto, tensor_to_proto, DecodeError};
pub use v2::{
    admit_shape as admit_v2_shape, dtype_from_v2, tensor_from_contents, tensor_from_raw,
    tensor_to_raw,
};

use std::fmt;

/// The TensorFlow data types this server can read or write; the numbers are `tensorflow.DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    Float,
    Double,
    Int32,
    Int64,
    Bool,
    String,
}

impl DType {
    pub fn to_proto(self) -> i32 {
        match self {
            DType::Float => 1,
            DType::Double => 2,
            DType::Int32 => 3,
            DType::String => 7,
            DType::Int64 => 9,
            DType::Bool => 10,
        }
    }

    pub fn from_proto(value: i32) -> Option<DType> {
        Some(match value {
            1 => DType::Float,
            2 => DType::Double,
            3 => DType::Int32,
            7 => DType::String,
            9 => DType::Int64,
            10 => DType::Bool,
            _ => return None,
        })
    }

    /// TensorFlow's name for the type (`DT_FLOAT`), used in metadata and error messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::Float => "DT_FLOAT",
            DType::Double => "DT_DOUBLE",
            DType::Int32 => "DT_INT32",
            DType::Int64 => "DT_INT64",
            DType::Bool => "DT_BOOL",
            DType::String => "DT_STRING",
        }
    }
}

/// The name of any `tensorflow.DataType` number, including the ones this server does not
/// read, so an error can say what the client actually sent.
pub fn proto_dtype_name(value: i32) -> String {
    let name = match value {
        0 => "DT_INVALID",
        1 => "DT_FLOAT",
        2 => "DT_DOUBLE",
        3 => "DT_INT32",
        4 => "DT_UINT8",
        5 => "DT_INT16",
        6 => "DT_INT8",
        7 => "DT_STRING",
        8 => "DT_COMPLEX64",
        9 => "DT_INT64",
        10 => "DT_BOOL",
        14 => "DT_BFLOAT16",
        17 => "DT_UINT16",
        19 => "DT_HALF",
        22 => "DT_UINT32",
        23 => "DT_UINT64",
        other => return format!("DataType {other}"),
    };
    name.to_string()
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The values of a tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Float(Vec<f32>),
    Double(Vec<f64>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Bool(Vec<bool>),
    String(Vec<Vec<u8>>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::Float(_) => DType::Float,
            TensorData::Double(_) => DType::Double,
            TensorData::Int32(_) => DType::Int32,
            TensorData::Int64(_) => DType::Int64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::String(_) => DType::String,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::Float(v) => v.len(),
            TensorData::Double(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::String(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes one element takes in memory (for strings, the vector that holds it).
    pub fn item_size(&self) -> usize {
        match self {
            TensorData::Float(_) | TensorData::Int32(_) => 4,
            TensorData::Double(_) | TensorData::Int64(_) => 8,
            TensorData::Bool(_) => 1,
            TensorData::String(_) => std::mem::size_of::<Vec<u8>>(),
        }
    }
}

/// A dense tensor: a shape and its values. The constructor keeps the two consistent, so
/// code holding a `Tensor` never checks `shape.product() == data.len()` again.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// A shape and a value count that do not agree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shape {shape:?} holds {expected} values but {actual} were given")]
pub struct ShapeMismatch {
    pub shape: Vec<usize>,
    pub expected: usize,
    pub actual: usize,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, ShapeMismatch> {
        let expected = element_count(&shape).unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(ShapeMismatch {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// A batch of strings, shape `[n]`.
    pub fn strings<S: AsRef<[u8]>>(values: impl IntoIterator<Item = S>) -> Tensor {
        let values: Vec<Vec<u8>> = values.into_iter().map(|s| s.as_ref().to_vec()).collect();
        Tensor {
            shape: vec![values.len()],
            data: TensorData::String(values),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

/// `count` values of a fixed-width `dtype` from little-endian `bytes`, as TensorProto's
/// `tensor_content` and the v2 protocol's raw contents carry them, admitted to `budget` before
/// they are copied. A byte count that does not fit the shape is `wrong_size(expected bytes)`;
/// callers handle DT_STRING themselves (it has no fixed width).
fn read_little_endian(
    dtype: DType,
    bytes: &[u8],
    count: usize,
    budget: &mut crate::admission::Budget,
    wrong_size: impl FnOnce(usize) -> DecodeError,
) -> Result<TensorData, DecodeError> {
    let item = match dtype {
        DType::Float | DType::Int32 => 4,
        DType::Double | DType::Int64 => 8,
        DType::Bool => 1,
        DType::String => unreachable!("strings are not fixed-width; the caller reads them"),
    };
    if Some(bytes.len()) != count.checked_mul(item) {
        return Err(wrong_size(count.saturating_mul(item)));
    }
    budget.admit_bytes(count, item)?;
    fn le<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
            .collect()
    }
    Ok(match dtype {
        DType::Float => TensorData::Float(le(bytes, f32::from_le_bytes)),
        DType::Double => TensorData::Double(le(bytes, f64::from_le_bytes)),
        DType::Int32 => TensorData::Int32(le(bytes, i32::from_le_bytes)),
        DType::Int64 => TensorData::Int64(le(bytes, i64::from_le_bytes)),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DType::String => unreachable!("refused above"),
    })
}

/// The number of elements of `shape`, or `None` when it overflows.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Formats a shape the way TensorFlow prints them: `[2,3]`, `[]` for a scalar, `-1` unknown.
pub fn format_shape<T: fmt::Display>(dims: &[T]) -> String {
    let inner: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(","))
}
