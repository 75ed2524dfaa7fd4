//! The Open Inference Protocol's REST API on the REST port: `/v2`, `/v2/health/{live,ready}`,
//! `/v2/models/{m}[/versions/{v}][/ready|/infer]`. JSON tensors (`data` nested or flat,
//! BYTES as strings) and Triton's binary-data extension, which `tritonclient.http` uses by
//! default: the body is a JSON header of `Inference-Header-Content-Length` bytes followed
//! by the binary inputs, each input's `binary_data_size` bytes in order; outputs asked for
//! with `binary_data` come back the same way. Errors are `{"error": "..."}` with the
//! statuses of the v1 API.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{
    infer, insert_input, model_metadata, model_ready, model_spec, refuse_extensions, server_ready,
    InputError, EXTENSIONS, PLATFORM, SERVER_NAME, SIGNATURE_NAME, VERSION_LABEL,
};
use crate::admission::Budget;
use crate::error::ServingError;
use crate::metrics::Api;
use crate::servable::Inputs;
use crate::tensor::{
    admit_v2_shape, dtype_from_v2, tensor_from_raw, tensor_to_raw, DType, DecodeError, Tensor,
    TensorData,
};
use crate::transport::json::number;
use crate::transport::rest::{body_too_large, error, parse_body, timed, AppState};

/// The header that splits a body into its JSON part and the binary data after it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// `GET /v2`: the server's name, version and extensions.
pub async fn server_metadata() -> Response {
    Json(json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
    .into_response()
}

/// `GET /v2/health/live`.
pub async fn live() -> Response {
    Json(json!({ "live": true })).into_response()
}

/// `GET /v2/health/ready`: 200 when every model can serve; 400 otherwise, as the protocol
/// says (a 4xx status is "not ready").
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let ready = server_ready(&state.core);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

/// Other paths under `/v2`: Triton's extensions are 501 by name, anything else 404.
pub async fn other(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let extension = [
        "repository",
        "systemsharedmemory",
        "cudasharedmemory",
        "trace",
        "logging",
    ]
    .iter()
    .any(|e| path.strip_prefix("/v2/").is_some_and(|p| p.starts_with(e)));
    if extension {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            format!("{method} {path} is one of Triton's extensions of the protocol, which this server does not implement"),
        );
    }
    error(StatusCode::NOT_FOUND, no_route(&method, path))
}

fn no_route(method: &Method, path: &str) -> String {
    format!("no route for {method} {path}; the v2 API is /v2, /v2/health/live, /v2/health/ready, /v2/models/{{model}}[/versions/{{v}}][/ready|/infer]")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Metadata,
    Ready,
    Infer,
    /// Triton's per-model extensions (`/config`, `/stats`, ...).
    Extension,
}

/// `{model}[/versions/{v}][/ready|/infer]`; `None` for any other shape.
fn parse_route(rest: &str) -> Option<(&str, &str, Action)> {
    // Triton's statistics of every model (`get_inference_statistics()` with no model).
    if rest == "stats" {
        return Some(("", "", Action::Extension));
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let (model, version, tail) = match parts.as_slice() {
        [model, "versions", version, tail @ ..] if !version.is_empty() => (*model, *version, tail),
        [model, tail @ ..] => (*model, "", tail),
        [] => return None,
    };
    if model.is_empty() {
        return None;
    }
    let action = match tail {
        [] => Action::Metadata,
        ["ready"] => Action::Ready,
        ["infer"] => Action::Infer,
        ["config" | "stats" | "trace" | "unload" | "load"] | ["trace", "setting"] => {
            Action::Extension
        }
        _ => return None,
    };
    Some((model, version, action))
}

/// Whether a path under `/v2/models/` is a readiness probe, which passes the concurrency
/// gate freely.
pub fn is_probe(rest: &str) -> bool {
    matches!(parse_route(rest), Some((_, _, Action::Ready)))
}

/// `/v2/models/...`. The body is read only for an inference, within
/// `--rest_api_max_body_bytes`; other calls never buffer one.
pub(crate) async fn models(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some((model, version, action)) = parse_route(&rest) else {
        return error(StatusCode::NOT_FOUND, no_route(&method, uri.path()));
    };
    let allowed = match action {
        Action::Infer => Method::POST,
        _ => Method::GET,
    };
    if method != allowed && action != Action::Extension {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {}; use {allowed}", uri.path()),
        );
    }
    match action {
        Action::Extension => error(
            StatusCode::NOT_IMPLEMENTED,
            format!("{method} {} is one of Triton's extensions of the protocol, which this server does not implement", uri.path()),
        ),
        Action::Metadata => {
            let work = async {
                let spec = model_spec(model, version, None, None)?;
                let meta = model_metadata(&state.core, &spec)?;
                let version = meta.version;
                let tensors = |list: &[super::TensorMetadata]| -> Vec<Value> {
                    list.iter()
                        .map(
                            |t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }),
                        )
                        .collect()
                };
                let body = json!({
                    "name": meta.name,
                    "versions": meta.versions,
                    "platform": PLATFORM,
                    "inputs": tensors(&meta.inputs),
                    "outputs": tensors(&meta.outputs),
                });
                Ok(((StatusCode::OK, Json(body)).into_response(), Some(version)))
            };
            respond(timed(&state, model, Api::ModelMetadata, started, work).await)
        }
        Action::Ready => {
            match model_spec(model, version, None, None).and_then(|s| model_ready(&state.core, &s))
            {
                Ok(true) => Json(json!({ "name": model, "ready": true })).into_response(),
                Ok(false) => (
                    StatusCode::BAD_REQUEST,
                    Json(json!({ "name": model, "ready": false })),
                )
                    .into_response(),
                Err(e) => e.into_response(),
            }
        }
        Action::Infer => {
            let max = state.options.max_body_bytes;
            let body = match axum::body::to_bytes(body, max).await {
                Ok(body) => body,
                Err(_) => return body_too_large(max),
            };
            let work = run_infer(&state, model, version, &headers, &body);
            respond(timed(&state, model, Api::ModelInfer, started, work).await)
        }
    }
}

fn respond(outcome: Result<(Response, Option<i64>), ServingError>) -> Response {
    match outcome {
        Ok((response, _)) => response,
        Err(e) => e.into_response(),
    }
}

/// The JSON part and the binary part of an infer body.
fn split_body<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), ServingError> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return Err(ServingError::unimplemented(format!(
                "Content-Encoding {} is not supported; send the body uncompressed",
                String::from_utf8_lossy(encoding.as_bytes())
            )));
        }
    }
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            ServingError::invalid_argument("Inference-Header-Content-Length is not a number")
        })?;
    if length > body.len() {
        return Err(ServingError::invalid_argument(format!(
            "Inference-Header-Content-Length is {length} but the body has {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(length))
}

fn object<'a>(
    value: Option<&'a Value>,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(format!("`{what}` must be an object")),
    }
}

fn string_param<'a>(
    parameters: Option<&'a Map<String, Value>>,
    name: &str,
) -> Result<Option<&'a str>, ServingError> {
    match parameters.and_then(|p| p.get(name)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ServingError::invalid_argument(format!(
            "parameter `{name}` must be a string"
        ))),
    }
}

fn bool_param(
    parameters: Option<&Map<String, Value>>,
    name: &str,
) -> Result<Option<bool>, ServingError> {
    match parameters.and_then(|p| p.get(name)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ServingError::invalid_argument(format!(
            "parameter `{name}` must be true or false"
        ))),
    }
}

/// One requested output: its name and whether it is wanted as binary data.
struct Requested {
    name: String,
    binary: Option<bool>,
}

async fn run_infer(
    state: &AppState,
    model: &str,
    version: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Response, Option<i64>), ServingError> {
    let in_model = |e: ServingError| e.context(format_args!("model `{model}`"));
    let (header_part, binary) = split_body(headers, body).map_err(in_model)?;
    let request = parse_body(header_part, state.core.limits()).map_err(in_model)?;
    let bad = |m: String| ServingError::invalid_argument(format!("model `{model}`: {m}"));
    let parameters =
        object(request.get("parameters"), "the request's `parameters`").map_err(bad)?;
    if let Some(parameters) = parameters {
        refuse_extensions(model, "the request", parameters.keys())?;
    }
    let mut spec = model_spec(
        model,
        version,
        string_param(parameters, VERSION_LABEL).map_err(in_model)?,
        string_param(parameters, SIGNATURE_NAME).map_err(in_model)?,
    )?;
    let all_binary = bool_param(parameters, "binary_data_output")
        .map_err(in_model)?
        .unwrap_or(false);
    let id = match request.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("`id` must be a string".into())),
    };
    spec.client_key = crate::transport::rest::client_key(headers).or_else(|| id.clone());
    let Some(Value::Array(inputs)) = request.get("inputs") else {
        return Err(bad("the body needs `inputs`, a list of tensors".into()));
    };
    for input in inputs {
        let name = input.get("name").and_then(Value::as_str).unwrap_or("?");
        if let Some(Value::Object(p)) = input.get("parameters") {
            refuse_extensions(model, &format!("input `{name}`"), p.keys())?;
        }
    }
    // The inputs' binary parts must add up to the binary data exactly.
    let declared: u64 = inputs
        .iter()
        .filter_map(|i| i.get("parameters")?.get("binary_data_size")?.as_u64())
        .fold(0u64, u64::saturating_add);
    if declared != binary.len() as u64 {
        return Err(bad(format!(
            "the inputs' binary_data_size add up to {declared} bytes but the body has {} bytes of binary data after its JSON header",
            binary.len()
        )));
    }
    let requested = match request.get("outputs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|o| {
                let name = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                    bad("each of `outputs` needs a `name`".into())
                })?;
                let params = object(o.get("parameters"), &format!("output `{name}`'s `parameters`")).map_err(bad)?;
                if let Some(p) = params {
                    refuse_extensions(model, &format!("output `{name}`"), p.keys())?;
                }
                if params.is_some_and(|p| p.get("classification").is_some_and(|c| !c.is_null())) {
                    return Err(ServingError::unimplemented(format!(
                        "model `{model}`: output `{name}` asks for the classification extension, which this server does not implement; use :classify on the v1 API"
                    )));
                }
                Ok(Requested {
                    name: name.to_string(),
                    binary: bool_param(params, "binary_data")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad("`outputs` must be a list".into())),
    };
    let names: Vec<String> = requested.iter().map(|r| r.name.clone()).collect();
    let inferred = infer(&state.core, &spec, &names, |budget| {
        decode_inputs(inputs, binary, budget)
    })
    .await?;
    let mut header_json = Map::new();
    header_json.insert("model_name".into(), Value::from(inferred.model.clone()));
    header_json.insert(
        "model_version".into(),
        Value::from(inferred.version.to_string()),
    );
    if let Some(id) = id {
        header_json.insert("id".into(), Value::from(id));
    }
    let mut outputs = Vec::with_capacity(inferred.outputs.len());
    let mut binary_out: Vec<u8> = Vec::new();
    let mut any_binary = false;
    for (name, tensor) in &inferred.outputs {
        let binary = requested
            .iter()
            .find(|r| &r.name == name)
            .and_then(|r| r.binary)
            .unwrap_or(all_binary);
        let mut output = json!({
            "name": name,
            "datatype": tensor.dtype().v2_name(),
            "shape": tensor.shape(),
        });
        // A BYTES output that is not UTF-8 cannot be a JSON string: it goes as binary data,
        // which tritonclient reads either way.
        let as_json = if binary { None } else { flat_json(tensor) };
        match as_json {
            Some(data) => output["data"] = data,
            None => {
                any_binary = true;
                let raw = tensor_to_raw(tensor);
                output["parameters"] = json!({ "binary_data_size": raw.len() });
                binary_out.extend_from_slice(&raw);
            }
        }
        outputs.push(output);
    }
    header_json.insert("outputs".into(), Value::Array(outputs));
    let header_bytes =
        serde_json::to_vec(&Value::Object(header_json)).expect("a JSON value always serialises");
    let response = if !any_binary {
        ([(header::CONTENT_TYPE, "application/json")], header_bytes).into_response()
    } else {
        let length = HeaderValue::from(header_bytes.len());
        let mut body = header_bytes;
        body.extend_from_slice(&binary_out);
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (header::HeaderName::from_static(HEADER_LENGTH), length),
            ],
            body,
        )
            .into_response()
    };
    Ok((response, Some(inferred.version)))
}

/// A JSON array of the tensor's values, flattened in row-major order; `None` when a BYTES
/// value is not UTF-8.
fn flat_json(tensor: &Tensor) -> Option<Value> {
    Some(Value::Array(match tensor.data() {
        TensorData::Float(v) => v.iter().map(|&x| number(x)).collect(),
        TensorData::Double(v) => v
            .iter()
            .map(|&x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number))
            .collect(),
        TensorData::Int32(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::Int64(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| Value::from(x)).collect(),
        TensorData::String(v) => v
            .iter()
            .map(|s| std::str::from_utf8(s).ok().map(Value::from))
            .collect::<Option<_>>()?,
    }))
}

/// The request's inputs: each from its JSON `data` or from the next `binary_data_size`
/// bytes of the binary part, which must be used up exactly.
fn decode_inputs(
    inputs: &[Value],
    mut binary: &[u8],
    budget: &mut Budget,
) -> Result<Inputs, InputError> {
    let mut decoded = Inputs::new();
    for (i, input) in inputs.iter().enumerate() {
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{i}"));
        let fail = |m: String| (name.clone(), DecodeError::Malformed(m));
        let Value::Object(input) = input else {
            return Err(fail(
                "an input must be an object with name, datatype, shape and data".into(),
            ));
        };
        if !input.get("name").is_some_and(Value::is_string) {
            return Err(fail("the input needs a `name`".into()));
        }
        let datatype = input
            .get("datatype")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("the input needs a `datatype`".into()))?;
        let dtype = dtype_from_v2(datatype).map_err(|e| (name.clone(), e))?;
        let shape: Vec<i64> = match input.get("shape") {
            Some(Value::Array(dims)) => dims
                .iter()
                .map(|d| {
                    d.as_i64()
                        .ok_or_else(|| fail(format!("shape holds `{d}`, not an integer")))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(fail("the input needs a `shape`, a list of integers".into())),
        };
        let parameters = object(input.get("parameters"), "parameters").map_err(fail)?;
        let binary_size = match parameters.and_then(|p| p.get("binary_data_size")) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        fail("`binary_data_size` must be a non-negative integer".into())
                    })?,
            ),
        };
        let tensor = match (binary_size, input.get("data")) {
            (Some(_), Some(_)) => {
                return Err(fail(
                    "the input has both `data` and `binary_data_size`; send one".into(),
                ))
            }
            (Some(size), None) => {
                if size > binary.len() {
                    return Err(fail(format!(
                        "binary_data_size is {size} but only {} bytes of binary data remain",
                        binary.len()
                    )));
                }
                let (bytes, rest) = binary.split_at(size);
                binary = rest;
                tensor_from_raw(dtype, &shape, bytes, budget)
            }
            (None, Some(data)) => json_tensor(dtype, &shape, data, budget),
            (None, None) => {
                return Err(fail(
                    "the input has no `data` and no `binary_data_size`".into(),
                ))
            }
        }
        .map_err(|e| (name.clone(), e))?;
        insert_input(&mut decoded, &name, tensor)?;
    }
    debug_assert!(binary.is_empty(), "the sizes were added up before decoding");
    Ok(decoded)
}

/// A tensor from JSON `data`: nested lists or one flat list, row-major, one value per
/// element of `shape`.
fn json_tensor(
    dtype: DType,
    shape: &[i64],
    data: &Value,
    budget: &mut Budget,
) -> Result<Tensor, DecodeError> {
    let (shape, count) = admit_v2_shape(shape, budget)?;
    let mut leaves: Vec<&Value> = Vec::new();
    flatten(data, &mut leaves, count);
    if leaves.len() != count {
        return Err(DecodeError::ValueCount {
            shape: crate::tensor::format_shape(&shape),
            field: "data",
            expected: count,
            actual: leaves.len(),
        });
    }
    let wrong = |i: usize, v: &Value| {
        let kind = match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number out of range or of the wrong kind",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        };
        DecodeError::Malformed(format!(
            "data element {i} is {kind}, not a {} value",
            dtype.v2_name()
        ))
    };
    fn read<T>(
        leaves: &[&Value],
        budget: &mut Budget,
        f: impl Fn(&Value) -> Option<T>,
        wrong: impl Fn(usize, &Value) -> DecodeError,
    ) -> Result<Vec<T>, DecodeError> {
        budget.admit_bytes(leaves.len(), std::mem::size_of::<T>())?;
        leaves
            .iter()
            .enumerate()
            .map(|(i, v)| f(v).ok_or_else(|| wrong(i, v)))
            .collect()
    }
    let data = match dtype {
        DType::String => {
            for (i, v) in leaves.iter().enumerate() {
                let s = v.as_str().ok_or_else(|| wrong(i, v))?;
                budget.admit_string(i, s.as_bytes(), 1)?;
            }
            TensorData::String(
                leaves
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().as_bytes().to_vec())
                    .collect(),
            )
        }
        DType::Float => TensorData::Float(read(
            &leaves,
            budget,
            |v| v.as_f64().map(|x| x as f32),
            wrong,
        )?),
        DType::Double => TensorData::Double(read(&leaves, budget, Value::as_f64, wrong)?),
        DType::Int32 => TensorData::Int32(read(
            &leaves,
            budget,
            |v| v.as_i64().and_then(|x| i32::try_from(x).ok()),
            wrong,
        )?),
        DType::Int64 => TensorData::Int64(read(&leaves, budget, Value::as_i64, wrong)?),
        DType::Bool => TensorData::Bool(read(&leaves, budget, Value::as_bool, wrong)?),
    };
    Ok(Tensor::new(shape, data).expect("the value count was checked; this is a bug"))
}

/// Collects the scalar leaves of nested lists, stopping once there are more than `limit`
/// (the caller reports the count). Nesting is bounded by `--max_json_depth`, measured
/// before the body was parsed.
fn flatten<'a>(value: &'a Value, leaves: &mut Vec<&'a Value>, limit: usize) {
    match value {
        Value::Array(items) => {
            for item in items {
                if leaves.len() > limit {
                    return;
                }
                flatten(item, leaves, limit);
            }
        }
        leaf => leaves.push(leaf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Limits;

    #[test]
    fn routes() {
        assert_eq!(parse_route("m"), Some(("m", "", Action::Metadata)));
        assert_eq!(
            parse_route("m/versions/2/infer"),
            Some(("m", "2", Action::Infer))
        );
        assert_eq!(parse_route("m/ready"), Some(("m", "", Action::Ready)));
        assert_eq!(parse_route("m/config"), Some(("m", "", Action::Extension)));
        assert_eq!(parse_route("m/other"), None);
        assert_eq!(parse_route("/infer"), None);
        assert_eq!(parse_route("stats"), Some(("", "", Action::Extension)));
        assert!(is_probe("m/versions/3/ready") && !is_probe("ready") && !is_probe("m/infer"));
    }

    #[test]
    fn json_data_may_be_nested_or_flat() {
        let mut budget = Budget::new(&Limits::default());
        let nested = json_tensor(
            DType::Float,
            &[2, 2],
            &json!([[1, 2.5], [3, 4]]),
            &mut budget,
        )
        .unwrap();
        let flat = json_tensor(DType::Float, &[2, 2], &json!([1, 2.5, 3, 4]), &mut budget).unwrap();
        assert_eq!(nested, flat);
        assert_eq!(nested.shape(), &[2, 2]);
        let strings = json_tensor(DType::String, &[2], &json!(["头痛", "x"]), &mut budget).unwrap();
        assert_eq!(strings, Tensor::strings(["头痛", "x"]));
        let e = json_tensor(DType::Int32, &[2], &json!([1, 1.5]), &mut budget).unwrap_err();
        assert_eq!(
            e.to_string(),
            "data element 1 is a number out of range or of the wrong kind, not a INT32 value"
        );
        let e = json_tensor(DType::Int64, &[3], &json!([1, 2]), &mut budget).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shape [3] needs 3 values but 2 were given in data"
        );
        let e = json_tensor(DType::String, &[1 << 30], &json!([]), &mut budget).unwrap_err();
        assert!(e.to_string().contains("--max_request"), "{e}");
    }

    #[test]
    fn binary_inputs_are_taken_in_order() {
        let raw = tensor_to_raw(&Tensor::strings(["a", "bc"]));
        let inputs = vec![
            json!({"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": raw.len()}}),
        ];
        let mut budget = Budget::new(&Limits::default());
        let decoded = decode_inputs(&inputs, &raw, &mut budget).unwrap();
        assert_eq!(decoded["text"], Tensor::strings(["a", "bc"]));
        let (name, e) = decode_inputs(&inputs, &raw[..3], &mut budget).unwrap_err();
        assert_eq!(name, "text");
        assert!(e.to_string().contains("only 3 bytes"), "{e}");
    }
}
