//! TF Serving's REST JSON ⇄ host tensors, read by the signature's dtypes: the row format
//! (`instances` → `predictions`), the columnar format (`inputs` → `outputs`), `{"b64": ...}`
//! for binary strings, and the proto3 JSON of status and metadata messages.
//! Conversion only: it calls no model and chooses no status code (`rest` does).

use base64::Engine;
use serde_json::{Map, Value};

use crate::proto::DESCRIPTORS;
use crate::servable::{Inputs, Outputs, Signature, TensorSpec};
use crate::tensor::{DType, Tensor, TensorData};

/// Which of the two request layouts a body used; the response uses the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Row,
    Columnar,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Reads a predict body's inputs. The message (for INVALID_ARGUMENT) says which input and
/// which element is wrong.
pub fn parse_predict(
    body: &Map<String, Value>,
    signature: &Signature,
) -> Result<(Layout, Inputs), String> {
    match (body.get("instances"), body.get("inputs")) {
        (Some(_), Some(_)) => Err(
            "give either `instances` (row format) or `inputs` (columnar format), not both".into(),
        ),
        (None, None) => {
            Err("the body needs `instances` (row format) or `inputs` (columnar format)".into())
        }
        (Some(instances), None) => parse_rows(instances, signature).map(|i| (Layout::Row, i)),
        (None, Some(inputs)) => parse_columns(inputs, signature).map(|i| (Layout::Columnar, i)),
    }
}

fn is_b64(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.len() == 1 && m.contains_key("b64"))
}

fn named_object(v: &Value) -> Option<&Map<String, Value>> {
    match v {
        Value::Object(m) if !is_b64(v) => Some(m),
        _ => None,
    }
}

fn spec<'a>(signature: &'a Signature, name: &str) -> Result<&'a TensorSpec, String> {
    signature.input(name).ok_or_else(|| {
        format!(
            "unknown input `{name}`; the signature takes {}",
            signature.describe_inputs()
        )
    })
}

/// Without names, values feed the signature's first input (`text` for every kind here).
fn unnamed(signature: &Signature) -> Result<&TensorSpec, String> {
    signature
        .inputs
        .first()
        .ok_or_else(|| "the signature takes no inputs".to_string())
}

fn parse_rows(instances: &Value, signature: &Signature) -> Result<Inputs, String> {
    let Value::Array(rows) = instances else {
        return Err("`instances` must be a list".into());
    };
    if rows.is_empty() {
        return Err("`instances` is empty; send at least one instance".into());
    }
    let mut inputs = Inputs::new();
    if let Some(first) = named_object(&rows[0]) {
        let keys: Vec<&String> = first.keys().collect();
        let mut columns: Vec<Vec<&Value>> = vec![Vec::with_capacity(rows.len()); keys.len()];
        for (i, row) in rows.iter().enumerate() {
            let Some(object) = named_object(row) else {
                return Err(format!("instance {i} is not an object like instance 0"));
            };
            if object.len() != keys.len() || !keys.iter().all(|k| object.contains_key(*k)) {
                let mine: Vec<&String> = object.keys().collect();
                return Err(format!(
                    "instance {i} has inputs {mine:?} but instance 0 has {keys:?}"
                ));
            }
            for (c, key) in keys.iter().enumerate() {
                columns[c].push(&object[*key]);
            }
        }
        for (key, column) in keys.iter().zip(columns) {
            let s = spec(signature, key)?;
            inputs.insert(key.to_string(), stack(&column, s)?);
        }
    } else {
        if let Some(i) = rows.iter().position(|r| named_object(r).is_some()) {
            return Err(format!(
                "instance {i} is an object but instance 0 is not; use one form for all"
            ));
        }
        let s = unnamed(signature)?;
        let column: Vec<&Value> = rows.iter().collect();
        inputs.insert(s.name.clone(), stack(&column, s)?);
    }
    Ok(inputs)
}

fn parse_columns(value: &Value, signature: &Signature) -> Result<Inputs, String> {
    let mut inputs = Inputs::new();
    match named_object(value) {
        Some(object) => {
            if object.is_empty() {
                return Err("`inputs` is an empty object".into());
            }
            for (key, v) in object {
                let s = spec(signature, key)?;
                inputs.insert(key.clone(), tensor(v, s, key)?);
            }
        }
        None => {
            let s = unnamed(signature)?;
            inputs.insert(s.name.clone(), tensor(value, s, &s.name)?);
        }
    }
    Ok(inputs)
}

/// Stacks one value per instance into a batch tensor `[n, ...]`.
fn stack(values: &[&Value], spec: &TensorSpec) -> Result<Tensor, String> {
    let mut shape = None;
    let mut data = empty_data(spec.dtypes[0]);
    for (i, v) in values.iter().enumerate() {
        let mut inner_shape = Vec::new();
        let first = data.len();
        walk(
            v,
            spec.dtypes[0],
            &format!("`{}` of instance {i}", spec.name),
            0,
            &mut inner_shape,
            &mut data,
            first,
        )?;
        match &shape {
            None => shape = Some(inner_shape),
            Some(s) if *s != inner_shape => {
                return Err(format!(
                    "ragged instances: `{}` has shape {:?} in instance {i} but {:?} in instance 0",
                    spec.name, inner_shape, s
                ))
            }
            Some(_) => {}
        }
    }
    let mut full = vec![values.len()];
    full.extend(shape.unwrap_or_default());
    Tensor::new(full, data).map_err(|e| e.to_string())
}

/// A whole (possibly nested) value as one tensor.
fn tensor(v: &Value, spec: &TensorSpec, what: &str) -> Result<Tensor, String> {
    let mut shape = Vec::new();
    let mut data = empty_data(spec.dtypes[0]);
    walk(
        v,
        spec.dtypes[0],
        &format!("`{what}`"),
        0,
        &mut shape,
        &mut data,
        0,
    )?;
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

fn empty_data(dtype: DType) -> TensorData {
    match dtype {
        DType::Float => TensorData::Float(Vec::new()),
        DType::Double => TensorData::Double(Vec::new()),
        DType::Int32 => TensorData::Int32(Vec::new()),
        DType::Int64 => TensorData::Int64(Vec::new()),
        DType::Bool => TensorData::Bool(Vec::new()),
        DType::String => TensorData::String(Vec::new()),
    }
}

/// Walks a nested list, appending leaves to `data` and recording the shape; every list at
/// one depth must have the same length. `first` is where this value's elements start in
/// `data` (`data.len()` at the top).
fn walk(
    v: &Value,
    dtype: DType,
    what: &str,
    depth: usize,
    shape: &mut Vec<usize>,
    data: &mut TensorData,
    first: usize,
) -> Result<(), String> {
    if let Value::Array(items) = v {
        // Once a value has been seen, the shape is complete: a list at or below the depth
        // of the values (`[1, [2]]`) is ragged, never a new dimension.
        if data.len() > first && depth >= shape.len() {
            return Err(format!(
                "ragged list in {what}: a list where a value was expected at depth {depth}"
            ));
        }
        match shape.get(depth) {
            None if shape.len() == depth => shape.push(items.len()),
            Some(&n) if n == items.len() => {}
            _ => {
                return Err(format!(
                    "ragged list in {what}: lists at depth {depth} differ in length"
                ))
            }
        }
        for item in items {
            walk(item, dtype, what, depth + 1, shape, data, first)?;
        }
        return Ok(());
    }
    if shape.len() > depth {
        return Err(format!(
            "ragged list in {what}: a value where a list was expected at depth {depth}"
        ));
    }
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    let wrong = |expected: &str| {
        format!(
            "{what} must hold {expected} ({}), got {}",
            dtype.name(),
            kind(v)
        )
    };
    match data {
        TensorData::String(out) => match v {
            Value::String(s) => out.push(s.as_bytes().to_vec()),
            Value::Object(m) if is_b64(v) => {
                let text = m["b64"]
                    .as_str()
                    .ok_or_else(|| format!("{what}: `b64` must be a string"))?;
                out.push(
                    B64.decode(text)
                        .map_err(|e| format!("{what}: invalid base64: {e}"))?,
                );
            }
            _ => return Err(wrong("strings")),
        },
        TensorData::Int64(out) => out.push(v.as_i64().ok_or_else(|| wrong("integers"))?),
        TensorData::Int32(out) => out.push(
            v.as_i64()
                .and_then(|x| i32::try_from(x).ok())
                .ok_or_else(|| wrong("32-bit integers"))?,
        ),
        TensorData::Float(out) => out.push(v.as_f64().ok_or_else(|| wrong("numbers"))? as f32),
        TensorData::Double(out) => out.push(v.as_f64().ok_or_else(|| wrong("numbers"))?),
        TensorData::Bool(out) => out.push(v.as_bool().ok_or_else(|| wrong("booleans"))?),
    }
    Ok(())
}

/// A JSON number for an f32, written with the shortest digits that round-trip as f32
/// (0.1, not 0.10000000149011612). Not-a-number becomes null, which JSON has instead.
pub(crate) fn number(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn string(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => serde_json::json!({ "b64": B64.encode(bytes) }),
    }
}

fn leaf(data: &TensorData, i: usize) -> Value {
    match data {
        TensorData::Float(v) => number(v[i]),
        TensorData::Double(v) => {
            serde_json::Number::from_f64(v[i]).map_or(Value::Null, Value::Number)
        }
        TensorData::Int32(v) => Value::from(v[i]),
        TensorData::Int64(v) => Value::from(v[i]),
        TensorData::Bool(v) => Value::from(v[i]),
        TensorData::String(v) => string(&v[i]),
    }
}

/// Elements `[start, start + product(shape))` of `data` as nested lists of `shape`.
fn nested(data: &TensorData, shape: &[usize], start: usize) -> Value {
    match shape.split_first() {
        None => leaf(data, start),
        Some((&n, rest)) => {
            let stride: usize = rest.iter().product();
            Value::Array(
                (0..n)
                    .map(|i| nested(data, rest, start + i * stride))
                    .collect(),
            )
        }
    }
}

/// The response body for `outputs`, in the layout of the request. In the row format each
/// output's first dimension is the instance; a single output is given bare.
pub fn predict_response(layout: Layout, outputs: &Outputs) -> Value {
    match layout {
        Layout::Columnar => {
            let whole = |t: &Tensor| nested(t.data(), t.shape(), 0);
            let value = if outputs.len() == 1 {
                whole(outputs.values().next().expect("one output"))
            } else {
                Value::Object(outputs.iter().map(|(k, t)| (k.clone(), whole(t))).collect())
            };
            serde_json::json!({ "outputs": value })
        }
        Layout::Row => {
            let rows = outputs
                .values()
                .next()
                .map_or(0, |t| t.shape().first().copied().unwrap_or(0));
            let row = |t: &Tensor, r: usize| {
                let inner = &t.shape()[1..];
                nested(t.data(), inner, r * inner.iter().product::<usize>())
            };
            let predictions: Vec<Value> = (0..rows)
                .map(|r| {
                    if outputs.len() == 1 {
                        row(outputs.values().next().expect("one output"), r)
                    } else {
                        Value::Object(
                            outputs
                                .iter()
                                .map(|(k, t)| (k.clone(), row(t, r)))
                                .collect(),
                        )
                    }
                })
                .collect();
            serde_json::json!({ "predictions": predictions })
        }
    }
}

/// proto3 JSON of a message as TF Serving's REST API writes it: field names as in the
/// proto, 64-bit integers as strings, enums by name, default values included.
pub fn proto_json<T: prost::Message>(full_name: &str, message: &T) -> Value {
    let descriptor = DESCRIPTORS
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is in proto/; this is a bug"));
    let dynamic =
        prost_reflect::DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
            .expect("a message prost encoded decodes against its own descriptor; this is a bug");
    let options = prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true)
        .skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("serialising into a JSON value cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servable::TensorSpec;

    fn signature() -> Signature {
        Signature::predict(
            vec![
                TensorSpec::new("text", DType::String, &[-1]).optional(),
                TensorSpec::new("text_pair", DType::String, &[-1]).optional(),
                TensorSpec::new("input_ids", DType::Int64, &[-1, -1]).optional(),
            ],
            vec![TensorSpec::new("embeddings", DType::Float, &[-1, 2])],
        )
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn row_format_with_bare_values_named_objects_and_b64() {
        let (layout, inputs) = parse_predict(
            &body(serde_json::json!({"instances": ["a", {"b64": "aGk="}]})),
            &signature(),
        )
        .unwrap();
        assert_eq!(layout, Layout::Row);
        assert_eq!(inputs["text"], Tensor::strings(["a", "hi"]));
        let (_, inputs) = parse_predict(
            &body(serde_json::json!({"instances": [{"text": "a", "text_pair": "b"}, {"text": "c", "text_pair": "d"}]})),
            &signature(),
        )
        .unwrap();
        assert_eq!(inputs["text_pair"], Tensor::strings(["b", "d"]));
        let (_, inputs) = parse_predict(
            &body(serde_json::json!({"instances": [{"input_ids": [1, 2]}, {"input_ids": [3, 4]}]})),
            &signature(),
        )
        .unwrap();
        assert_eq!(
            inputs["input_ids"],
            Tensor::new(vec![2, 2], TensorData::Int64(vec![1, 2, 3, 4])).unwrap()
        );
    }

    #[test]
    fn columnar_format() {
        let (layout, inputs) = parse_predict(
            &body(serde_json::json!({"inputs": {"input_ids": [[1, 2, 3]]}})),
            &signature(),
        )
        .unwrap();
        assert_eq!(layout, Layout::Columnar);
        assert_eq!(inputs["input_ids"].shape(), &[1, 3]);
        let (_, inputs) = parse_predict(
            &body(serde_json::json!({"inputs": ["x", "y"]})),
            &signature(),
        )
        .unwrap();
        assert_eq!(inputs["text"], Tensor::strings(["x", "y"]));
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let err = |v: Value| parse_predict(&body(v), &signature()).unwrap_err();
        assert_eq!(
            err(serde_json::json!({"instances": []})),
            "`instances` is empty; send at least one instance"
        );
        assert_eq!(
            err(serde_json::json!({"instances": [{"input_ids": [1, 2]}, {"input_ids": [3]}]})),
            "ragged instances: `input_ids` has shape [1] in instance 1 but [2] in instance 0"
        );
        assert_eq!(
            err(serde_json::json!({"instances": [{"input_ids": [1, "2"]}]})),
            "`input_ids` of instance 0 must hold integers (DT_INT64), got a string"
        );
        assert_eq!(
            err(serde_json::json!({"instances": [1]})),
            "`text` of instance 0 must hold strings (DT_STRING), got a number"
        );
        assert!(
            err(serde_json::json!({"inputs": {"txt": ["a"]}})).starts_with("unknown input `txt`")
        );
        assert_eq!(
            err(serde_json::json!({"inputs": {"input_ids": [[1, 2], [3]]}})),
            "ragged list in `input_ids`: lists at depth 1 differ in length"
        );
        // A value before a list is ragged too, never read as a new dimension.
        assert_eq!(
            err(serde_json::json!({"inputs": {"input_ids": [1, [2]]}})),
            "ragged list in `input_ids`: a list where a value was expected at depth 1"
        );
        assert_eq!(
            err(serde_json::json!({"inputs": {"input_ids": [[1], 2]}})),
            "ragged list in `input_ids`: a value where a list was expected at depth 1"
        );
        assert_eq!(
            err(serde_json::json!({"instances": [{"input_ids": [1, [2]]}]})),
            "ragged list in `input_ids` of instance 0: a list where a value was expected at depth 1"
        );
        assert_eq!(
            err(serde_json::json!({"instances": [{"text": "a"}, {"text_pair": "b"}]})),
            "instance 1 has inputs [\"text_pair\"] but instance 0 has [\"text\"]"
        );
        assert_eq!(
            err(serde_json::json!({"x": 1})),
            "the body needs `instances` (row format) or `inputs` (columnar format)"
        );
    }

    #[test]
    fn responses_in_both_layouts() {
        let mut outputs = Outputs::new();
        outputs.insert(
            "embeddings".into(),
            Tensor::new(vec![2, 2], TensorData::Float(vec![0.1, 0.2, 0.3, 0.4])).unwrap(),
        );
        assert_eq!(
            predict_response(Layout::Row, &outputs),
            serde_json::json!({"predictions": [[0.1, 0.2], [0.3, 0.4]]})
        );
        assert_eq!(
            predict_response(Layout::Columnar, &outputs),
            serde_json::json!({"outputs": [[0.1, 0.2], [0.3, 0.4]]})
        );
        outputs.insert(
            "labels".into(),
            Tensor::new(vec![2], TensorData::String(vec![b"a".to_vec(), vec![0xff]])).unwrap(),
        );
        assert_eq!(
            predict_response(Layout::Row, &outputs),
            serde_json::json!({"predictions": [{"embeddings": [0.1, 0.2], "labels": "a"}, {"embeddings": [0.3, 0.4], "labels": {"b64": "/w=="}}]})
        );
    }
}
