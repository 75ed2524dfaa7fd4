//! Merging requests into one batch along dimension 0, and splitting the outputs back.
//! Pure functions over host tensors (and the queue key saying which requests may share a
//! batch): no queue, no threads, no servable call; when a batch runs is the scheduler's call.

use crate::servable::{BatchPolicy, Inputs, Outputs};
use crate::tensor::{DType, Tensor, TensorData};

/// Rows of a request: its inputs' dimension 0 (the signature check made them agree).
pub fn rows(inputs: &Inputs) -> usize {
    inputs
        .values()
        .next()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(0)
}

/// Requests with equal keys can share a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKey {
    signature: String,
    /// Per input: name, dtype and the dimensions after the first (`None` where padding
    /// makes the length free).
    inputs: Vec<(String, DType, Option<Vec<usize>>)>,
    /// Length bucket (a power of two) for models that pad each batch to its longest row;
    /// 0 for models whose cost does not depend on how lengths mix.
    bucket: usize,
}

/// The length of one row as the model will see it: characters of a string, or the second
/// dimension of a rank-2 tensor.
fn longest_row(tensor: &Tensor) -> usize {
    match (tensor.data(), tensor.shape()) {
        (TensorData::String(values), _) => values
            .iter()
            .map(|v| String::from_utf8_lossy(v).chars().count())
            .max()
            .unwrap_or(0),
        (_, [_, len]) => *len,
        _ => 0,
    }
}

impl QueueKey {
    pub fn of(signature: &str, inputs: &Inputs, pad: bool, policy: BatchPolicy) -> QueueKey {
        let shapes = inputs
            .iter()
            .map(|(name, t)| {
                let rest = t.shape().get(1..).unwrap_or(&[]).to_vec();
                let free = pad && t.rank() == 2;
                (name.clone(), t.dtype(), (!free).then_some(rest))
            })
            .collect();
        let bucket = match policy {
            BatchPolicy::ByLength => inputs
                .values()
                .map(longest_row)
                .max()
                .unwrap_or(0)
                .max(8)
                .next_power_of_two(),
            BatchPolicy::Rows | BatchPolicy::Never => 0,
        };
        QueueKey {
            signature: signature.to_string(),
            inputs: shapes,
            bucket,
        }
    }
}

/// Stacks the parts' values row-major, padding each row of a rank-2 tensor to `width`.
fn stack<T: Clone>(parts: &[(&[T], usize, usize)], width: usize, pad: T) -> Vec<T> {
    let mut out = Vec::new();
    for &(values, rows, len) in parts {
        if len == width {
            out.extend_from_slice(values);
            continue;
        }
        for r in 0..rows {
            out.extend_from_slice(&values[r * len..(r + 1) * len]);
            out.extend(std::iter::repeat_n(pad.clone(), width - len));
        }
    }
    out
}

/// One batch from `parts` (all with the same input names and dtypes): values concatenated
/// along dimension 0; rank-2 inputs of different widths padded to the widest. With
/// `mask = Some((padded, mask))`, when `padded` needed padding and the parts carry no `mask`
/// input, one is written (1 on each request's own positions, 0 on padding).
pub fn merge(parts: &[&Inputs], mask: Option<(&str, &str)>) -> Result<Inputs, String> {
    let first = parts.first().ok_or("an empty batch")?;
    let mut merged = Inputs::new();
    if let Some((padded, mask_name)) = mask {
        if !first.contains_key(mask_name) {
            if let Some(written) = padding_mask(parts, padded)? {
                merged.insert(mask_name.to_string(), written);
            }
        }
    }
    for (name, sample) in first.iter() {
        let tensors: Vec<&Tensor> = parts
            .iter()
            .map(|p| {
                p.get(name)
                    .ok_or_else(|| format!("input `{name}` is missing from a request"))
            })
            .collect::<Result<_, _>>()?;
        let rows: usize = tensors.iter().map(|t| t.shape()[0]).sum();
        let rest = &sample.shape()[1..];
        let same = tensors.iter().all(|t| &t.shape()[1..] == rest);
        let (width, shape) = if same {
            let row: usize = rest.iter().product();
            (row, [&[rows][..], rest].concat())
        } else if sample.rank() == 2 {
            let width = tensors.iter().map(|t| t.shape()[1]).max().unwrap_or(0);
            (width, vec![rows, width])
        } else {
            return Err(format!(
                "input `{name}` has different shapes across requests"
            ));
        };
        macro_rules! stacked {
            ($variant:ident, $pad:expr) => {{
                let mut views = Vec::with_capacity(tensors.len());
                for t in &tensors {
                    let TensorData::$variant(v) = t.data() else {
                        return Err(format!(
                            "input `{name}` has different dtypes across requests"
                        ));
                    };
                    let r = t.shape()[0];
                    views.push((v.as_slice(), r, if r == 0 { width } else { v.len() / r }));
                }
                TensorData::$variant(stack(&views, width, $pad))
            }};
        }
        let data = match sample.data() {
            TensorData::Float(_) => stacked!(Float, 0.0),
            TensorData::Double(_) => stacked!(Double, 0.0),
            TensorData::Int32(_) => stacked!(Int32, 0),
            TensorData::Int64(_) => stacked!(Int64, 0),
            TensorData::Bool(_) => stacked!(Bool, false),
            TensorData::String(_) => stacked!(String, Vec::new()),
        };
        merged.insert(
            name.clone(),
            Tensor::new(shape, data).map_err(|e| e.to_string())?,
        );
    }
    Ok(merged)
}

/// The mask of `padded` across `parts` when its widths differ: ones where a request has
/// values, zeros where the batch pads; same integer dtype as `padded`.
fn padding_mask(parts: &[&Inputs], padded: &str) -> Result<Option<Tensor>, String> {
    let Some(tensors) = parts
        .iter()
        .map(|p| p.get(padded))
        .collect::<Option<Vec<&Tensor>>>()
    else {
        return Ok(None);
    };
    if tensors.iter().any(|t| t.rank() != 2) {
        return Ok(None);
    }
    let width = tensors.iter().map(|t| t.shape()[1]).max().unwrap_or(0);
    if tensors.iter().all(|t| t.shape()[1] == width) {
        return Ok(None);
    }
    let rows: usize = tensors.iter().map(|t| t.shape()[0]).sum();
    let mut ones = Vec::with_capacity(rows * width);
    for t in &tensors {
        let len = t.shape()[1];
        for _ in 0..t.shape()[0] {
            ones.extend((0..width).map(|i| i64::from(i < len)));
        }
    }
    let data = match tensors[0].dtype() {
        DType::Int64 => TensorData::Int64(ones),
        DType::Int32 => TensorData::Int32(ones.into_iter().map(|v| v as i32).collect()),
        _ => return Ok(None),
    };
    Tensor::new(vec![rows, width], data)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The outputs of a merged batch, cut back into one set per request of `rows` rows each.
pub fn split(outputs: Outputs, rows: &[usize]) -> Result<Vec<Outputs>, String> {
    let total: usize = rows.iter().sum();
    let mut per_request = vec![Outputs::new(); rows.len()];
    for (name, tensor) in outputs {
        let shape = tensor.shape().to_vec();
        if shape.first() != Some(&total) {
            return Err(format!(
                "output `{name}` has shape {shape:?}, not {total} rows: the model cannot be batched"
            ));
        }
        let row: usize = shape[1..].iter().product();
        macro_rules! cut {
            ($variant:ident, $values:expr) => {{
                let mut at = 0;
                for (out, &n) in per_request.iter_mut().zip(rows) {
                    let part = $values[at * row..(at + n) * row].to_vec();
                    at += n;
                    let shape = [&[n][..], &shape[1..]].concat();
                    let t = Tensor::new(shape, TensorData::$variant(part))
                        .map_err(|e| e.to_string())?;
                    out.insert(name.clone(), t);
                }
            }};
        }
        match tensor.into_data() {
            TensorData::Float(v) => cut!(Float, v),
            TensorData::Double(v) => cut!(Double, v),
            TensorData::Int32(v) => cut!(Int32, v),
            TensorData::Int64(v) => cut!(Int64, v),
            TensorData::Bool(v) => cut!(Bool, v),
            TensorData::String(v) => cut!(String, v),
        }
    }
    Ok(per_request)
}
