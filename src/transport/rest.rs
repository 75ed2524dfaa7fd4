//! TF Serving's REST API over the core (`/v1/models/...`), the Open Inference Protocol's
//! routes (`/v2/...`, in [`super::v2::rest`]), `/healthz`, `/readyz` and the Prometheus
//! endpoint. Converts JSON to core types and [`ServingError`]s to
//! `{"error": "..."}` with the HTTP status of the gRPC code.
//! No model logic: every model request goes through [`crate::serving::Core`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::json::{self, proto_json};
use super::{model_status, signature_def_map, v2};
use crate::admission::{self, Limits};
use crate::error::{Code, ServingError};
use crate::jobs::{Cancelled, JobKind, Jobs, NewJob};
use crate::manager::{ServableHandle, VersionChoice};
use crate::metrics::{Api, Entrypoint, RequestOutcome};
use crate::proto::tensorflow::serving::{model_spec, ModelSpec as ProtoSpec};
use crate::rollout::RolloutRequest;
use crate::servable::Inputs;
use crate::serving::{Core, Example, ModelSpec};

/// Settings of the REST listener.
#[derive(Debug, Clone)]
pub struct RestOptions {
    /// `--rest_api_timeout_in_ms`; `None` for no deadline.
    pub timeout: Option<Duration>,
    /// `--rest_api_max_body_bytes`.
    pub max_body_bytes: usize,
    /// Where Prometheus metrics are served; `None` turns them off.
    pub metrics_path: Option<String>,
}

impl Default for RestOptions {
    fn default() -> Self {
        RestOptions {
            timeout: Some(Duration::from_secs(30)),
            max_body_bytes: 8 * 1024 * 1024,
            metrics_path: Some(DEFAULT_METRICS_PATH.to_string()),
        }
    }
}

/// TF Serving's default Prometheus path.
pub const DEFAULT_METRICS_PATH: &str = "/monitoring/prometheus/metrics";

/// The one mapping from core codes to HTTP statuses.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unknown | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

impl IntoResponse for ServingError {
    fn into_response(self) -> Response {
        let status = if self.too_large {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            http_status(self.code)
        };
        error(status, self.message)
    }
}

/// REST paths that pass the concurrency gate freely: health, readiness (the v2 API's
/// included), server metadata and metrics. Every model request takes a turn.
pub fn exempt_from_gate(path: &str) -> bool {
    let model_request = path.starts_with("/v1/")
        || path
            .strip_prefix("/v2/models/")
            .is_some_and(|rest| !v2::rest::is_probe(rest));
    !model_request
}

/// The REST answer of a request refused by the concurrency gate.
pub fn overloaded(message: String) -> Response {
    error(StatusCode::TOO_MANY_REQUESTS, message)
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) core: Core,
    pub(crate) options: Arc<RestOptions>,
    pub(crate) jobs: Arc<Jobs>,
}

/// The REST routes. `extra` layers (the in-flight counter) are applied by the caller.
pub fn router(core: Core, jobs: Arc<Jobs>, options: RestOptions) -> Router {
    let max_body = options.max_body_bytes;
    let metrics_path = options.metrics_path.clone();
    let state = AppState {
        core,
        options: Arc::new(options),
        jobs,
    };
    let mut router = Router::new()
        .route("/v1/models/{*rest}", any(models))
        .route("/v1/jobs/{id}", any(job_route))
        .route("/v2", get(v2::rest::server_metadata))
        .route("/v2/health/live", get(v2::rest::live))
        .route("/v2/health/ready", get(v2::rest::ready))
        .route("/v2/models/{*rest}", any(v2::rest::models))
        .route("/v2/{*rest}", any(v2::rest::other))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if let Some(path) = metrics_path {
        router = router.route(&path, get(metrics));
    }
    router
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            refuse_announced_oversize(max_body, request, next)
        }))
        .with_state(state)
}

pub(crate) fn body_too_large(max_body: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {max_body} bytes (--rest_api_max_body_bytes)"),
    )
}

/// A body whose `Content-Length` is over the limit is refused before any of it is read; a
/// chunked one is cut off by [`DefaultBodyLimit`] when it passes the limit.
async fn refuse_announced_oversize(max_body: usize, request: Request, next: Next) -> Response {
    if super::announced_body_over(request.headers(), max_body).is_some() {
        return body_too_large(max_body);
    }
    next.run(request).await
}

async fn no_route(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}; the API is /v1/models/{{model}}[/versions/{{v}}|/labels/{{l}}][/metadata|:predict|:classify], /v2/..., /healthz, /readyz", uri.path()),
    )
}

async fn healthz() -> Response {
    Json(json!({ "status": "alive" })).into_response()
}

/// 200 when every configured model has an AVAILABLE version; otherwise 503 with what is
/// not ready and why.
async fn readyz(State(state): State<AppState>) -> Response {
    let models = state.core.readiness();
    let ready = models.iter().all(|m| m.problem.is_none());
    let list: Vec<Value> = models
        .iter()
        .map(|m| match &m.problem {
            None => json!({ "model": m.model, "ready": true, "available_versions": m.available_versions }),
            Some(why) => json!({ "model": m.model, "ready": false, "reason": why }),
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "models": list }))).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.core.render_metrics(),
    )
        .into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Status,
    Metadata,
    Predict,
    /// `:predictAsync`: a job.
    PredictAsync,
    Classify,
    Regress,
}

impl Action {
    fn api(self) -> Api {
        match self {
            Action::Status => Api::GetModelStatus,
            Action::Metadata => Api::GetModelMetadata,
            Action::Predict | Action::PredictAsync => Api::Predict,
            Action::Classify => Api::Classify,
            Action::Regress => Api::Regress,
        }
    }

    fn method(self) -> Method {
        match self {
            Action::Status | Action::Metadata => Method::GET,
            _ => Method::POST,
        }
    }
}

/// `{model}[/versions/{v}|/labels/{l}][/metadata|:predict|:classify|:regress]`.
fn parse_route(rest: &str) -> Result<(String, VersionChoice, Action), String> {
    let (path, verb) = match rest.rsplit_once(':') {
        Some((path, verb)) if !verb.contains('/') => (path, Some(verb)),
        _ => (rest, None),
    };
    let mut parts: Vec<&str> = path.split('/').collect();
    let mut action = Action::Status;
    if parts.last() == Some(&"metadata") && parts.len() > 1 {
        parts.pop();
        action = Action::Metadata;
    }
    if let Some(verb) = verb {
        if action == Action::Metadata {
            return Err(format!("`/metadata:{verb}` is not a route"));
        }
        action = match verb {
            "predict" => Action::Predict,
            "predictAsync" => Action::PredictAsync,
            "classify" => Action::Classify,
            "regress" => Action::Regress,
            other => {
                return Err(format!(
                    "unknown verb `:{other}`; use :predict, :predictAsync, :classify or :regress"
                ))
            }
        };
    }
    let version = match parts.as_slice() {
        [name] if !name.is_empty() => VersionChoice::Latest,
        [_, "versions", v] => VersionChoice::Number(
            v.parse()
                .map_err(|_| format!("version `{v}` is not a number"))?,
        ),
        [_, "labels", l] if !l.is_empty() => VersionChoice::Label(l.to_string()),
        _ => return Err(format!("`/v1/models/{rest}` is not a route; use /v1/models/{{model}}[/versions/{{v}}|/labels/{{l}}][/metadata|:predict|:classify]")),
    };
    Ok((parts[0].to_string(), version, action))
}

/// The client key a REST request carries (`X-Client-Id`), for sticky rollouts.
pub(crate) fn client_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-client-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// `{model}/rollout` (GET, PUT, DELETE) and `{model}/rollout:promote` (POST).
fn rollout_route(rest: &str) -> Option<(&str, bool)> {
    if let Some(model) = rest.strip_suffix("/rollout:promote") {
        return (!model.is_empty() && !model.contains('/')).then_some((model, true));
    }
    let model = rest.strip_suffix("/rollout")?;
    (!model.is_empty() && !model.contains('/')).then_some((model, false))
}

async fn rollout(
    state: &AppState,
    method: &Method,
    model: &str,
    promote: bool,
    body: &[u8],
) -> Response {
    let rollouts = state.core.rollouts();
    let result = match (method.clone(), promote) {
        (Method::POST, true) => rollouts.promote(model).await,
        (Method::GET, false) => rollouts.get(model),
        (Method::DELETE, false) => rollouts.abort(model).await,
        (Method::PUT, false) => match serde_json::from_slice::<RolloutRequest>(body) {
            Ok(request) => rollouts.start(model, request).await,
            Err(e) => Err(ServingError::invalid_argument(format!(
                "model `{model}`: the rollout body is not valid: {e}; send {{\"canary_percent\": 0-100, \"canary_label\": ..., \"stable_label\": ..., \"auto\": {{...}}}}"
            ))),
        },
        (_, true) => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on /v1/models/{model}/rollout:promote; use POST"),
            )
        }
        (_, false) => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on /v1/models/{model}/rollout; use GET, PUT or DELETE"),
            )
        }
    };
    match result {
        Ok(rollout) => Json(serde_json::to_value(&rollout).unwrap_or_default()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn models(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    if let Some((model, promote)) = rollout_route(&rest) {
        return match body {
            Ok(body) => rollout(&state, &method, model, promote, &body).await,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                body_too_large(state.options.max_body_bytes)
            }
            Err(rejection) => error(rejection.status(), rejection.body_text()),
        };
    }
    let (model, version, action) = match parse_route(&rest) {
        Ok(route) => route,
        Err(message) => return error(StatusCode::NOT_FOUND, message),
    };
    if method != action.method() {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} is not allowed on /v1/models/{rest}; use {}",
                action.method()
            ),
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return body_too_large(state.options.max_body_bytes)
        }
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let spec = ModelSpec {
        name: model.clone(),
        version,
        signature_name: String::new(),
        client_key: client_key(&headers),
    };
    if action == Action::PredictAsync {
        return submit_job(&state, spec, body).await;
    }
    let work = handle(&state.core, action, spec, &body);
    let outcome = timed(&state, &model, action.api(), started, work).await;
    match outcome {
        Ok((body, _)) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Runs one model request under `--rest_api_timeout_in_ms`, then records its metrics and
/// debug log. The work returns its answer and the version that served it.
pub(crate) async fn timed<T>(
    state: &AppState,
    model: &str,
    api: Api,
    started: Instant,
    work: impl std::future::Future<Output = Result<(T, Option<i64>), ServingError>>,
) -> Result<(T, Option<i64>), ServingError> {
    let outcome = match state.options.timeout {
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ServingError::new(
                Code::DeadlineExceeded,
                format!(
                    "model `{model}`: the request did not finish within {} ms (--rest_api_timeout_in_ms)",
                    limit.as_millis()
                ),
            )),
        },
        None => work.await,
    };
    let (status, served_version) = match &outcome {
        Ok((_, v)) => ("OK", *v),
        Err(e) => (e.code.name(), None),
    };
    state.core.record_request(RequestOutcome {
        model,
        version: served_version,
        api,
        entrypoint: Entrypoint::Rest,
        status,
        took: started.elapsed(),
    });
    tracing::debug!(model, version = ?served_version, api = api.as_str(), status, us = started.elapsed().as_micros() as u64, "REST request");
    outcome
}

/// The body as a JSON object, measured (nesting, number of values) before it is parsed.
pub(crate) fn parse_body(body: &[u8], limits: &Limits) -> Result<Map<String, Value>, ServingError> {
    admission::check_json(body, limits.max_json_depth, limits.max_elements)
        .map_err(|e| ServingError::over_limit(&e, "the request body"))?;
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ServingError::invalid_argument(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ServingError::invalid_argument(format!(
            "malformed JSON in the request body: {e}"
        ))),
    }
}

fn signature_name(body: &Map<String, Value>) -> Result<String, ServingError> {
    match body.get("signature_name") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ServingError::invalid_argument(
            "`signature_name` must be a string",
        )),
    }
}

/// Runs one REST action; returns the JSON body and the version that served it.
async fn handle(
    core: &Core,
    action: Action,
    mut spec: ModelSpec,
    body: &[u8],
) -> Result<(Value, Option<i64>), ServingError> {
    match action {
        Action::Status => {
            let response = model_status(core, &spec)?;
            Ok((proto_json("tensorflow.serving.GetModelStatusResponse", &response), None))
        }
        Action::Metadata => {
            let (loaded, signatures) = core.metadata(&spec)?;
            let model_spec = ProtoSpec {
                name: loaded.model().to_string(),
                signature_name: String::new(),
                version_choice: Some(model_spec::VersionChoice::Version(loaded.version())),
            };
            let body = json!({
                "model_spec": proto_json("tensorflow.serving.ModelSpec", &model_spec),
                "metadata": {
                    "signature_def": proto_json("tensorflow.serving.SignatureDefMap", &signature_def_map(&signatures)),
                },
            });
            Ok((body, Some(loaded.version())))
        }
        // `models` submits `:predictAsync` as a job before it gets here.
        Action::Predict | Action::PredictAsync => predict(core, spec, body).await,
        Action::Classify => {
            let body = parse_body(body, core.limits())?;
            spec.signature_name = signature_name(&body)?;
            let examples = examples(&body)?;
            let result = core.classify(&spec, examples).await?;
            let results: Vec<Value> = result
                .classes
                .iter()
                .map(|classes| Value::Array(classes.iter().map(|(label, score)| json!([label, score])).collect()))
                .collect();
            Ok((json!({ "results": results }), Some(result.version)))
        }
        Action::Regress => Err(ServingError::unimplemented(
            "Regress is not implemented: no model kind served here (embedding, classifier, tagger) regresses; use :predict",
        )),
    }
}

/// `:predict`'s checks before any inference: the body, the spec (and the rollout side it
/// routes to), the signature and every input within the request's budget. Asynchronous jobs
/// run it at submission.
pub(crate) fn prepare_predict(
    core: &Core,
    spec: &mut ModelSpec,
    body: &[u8],
) -> Result<(ServableHandle, json::Layout, Inputs), ServingError> {
    let body = parse_body(body, core.limits())?;
    spec.signature_name = signature_name(&body)?;
    let loaded = core.route(spec)?;
    let (_, signature) = Core::signature(&loaded, &spec.signature_name)?;
    let (layout, inputs) = json::parse_predict(&body, signature)
        .map_err(|m| ServingError::invalid_argument(format!("{}: {m}", loaded.describe())))?;
    let mut budget = core.budget();
    for (name, tensor) in &inputs {
        budget.admit_tensor(tensor).map_err(|e| {
            ServingError::over_limit(&e, format_args!("{}: input `{name}`", loaded.describe()))
        })?;
    }
    Ok((loaded, layout, inputs))
}

/// `:predict`, for the REST API and for jobs submitted over REST: the JSON answer and the
/// version that served.
pub(crate) async fn predict(
    core: &Core,
    mut spec: ModelSpec,
    body: &[u8],
) -> Result<(Value, Option<i64>), ServingError> {
    let (loaded, layout, inputs) = prepare_predict(core, &mut spec, body)?;
    let prediction = core
        .predict_on(loaded, &spec.signature_name, inputs, &[])
        .await?;
    Ok((
        json::predict_response(layout, &prediction.outputs),
        Some(prediction.version),
    ))
}

/// `:predictAsync`: checked as `:predict` would be, then queued; 202 with the job.
async fn submit_job(state: &AppState, mut spec: ModelSpec, body: Bytes) -> Response {
    let checked = prepare_predict(&state.core, &mut spec, &body).and_then(|(loaded, _, inputs)| {
        state
            .core
            .check_predict(&loaded, &spec.signature_name, &inputs, &[])
    });
    if let Err(e) = checked {
        return e.into_response();
    }
    let job = NewJob {
        kind: JobKind::Rest,
        model: spec.name,
        version: spec.version,
        client_key: spec.client_key,
        request: body.to_vec(),
    };
    match state.jobs.submit(job).await {
        Ok(job) => {
            let location = format!("/v1/jobs/{}", job.id);
            (
                StatusCode::ACCEPTED,
                [(axum::http::header::LOCATION, location)],
                Json(json!({"job_id": job.id, "state": job.state.as_str()})),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `GET` and `DELETE /v1/jobs/{id}`.
async fn job_route(
    State(state): State<AppState>,
    method: Method,
    Path(id): Path<String>,
) -> Response {
    let result = match method {
        Method::GET => state.jobs.get(&id).await,
        Method::DELETE => match state.jobs.cancel(&id).await {
            Ok(Cancelled::Now(job) | Cancelled::Already(job)) => Ok(job),
            Ok(Cancelled::TooLate(job)) => {
                return error(
                    StatusCode::CONFLICT,
                    format!(
                        "job `{id}` is {} and can no longer be cancelled",
                        job.state.as_str()
                    ),
                )
            }
            Err(e) => Err(e),
        },
        other => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{other} is not allowed on /v1/jobs/{id}; use GET or DELETE"),
            )
        }
    };
    match result {
        Ok(job) => Json(super::jobs::job_json(&job)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `{"examples": [{"text": "..."}], "context": {...}}`: each feature one string (or
/// `{"b64": ...}`, or a list of one); context features apply to every example.
fn examples(body: &Map<String, Value>) -> Result<Vec<Example>, ServingError> {
    let bad = |m: String| ServingError::invalid_argument(m);
    let Some(Value::Array(list)) = body.get("examples") else {
        return Err(bad(
            "the body needs `examples`, a list of objects of features".into(),
        ));
    };
    let feature = |what: &str, name: &str, v: &Value| -> Result<Vec<u8>, ServingError> {
        let v = match v {
            Value::Array(items) if items.len() == 1 => &items[0],
            other => other,
        };
        match v {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Object(m) if m.len() == 1 => {
                use base64::Engine;
                let text = m
                    .get("b64")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{what}: feature `{name}` must be a string")))?;
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| bad(format!("{what}: feature `{name}`: invalid base64: {e}")))
            }
            _ => Err(bad(format!("{what}: feature `{name}` must be one string"))),
        }
    };
    let to_example = |what: &str, v: &Value| -> Result<Example, ServingError> {
        let Value::Object(m) = v else {
            return Err(bad(format!("{what} must be an object of features")));
        };
        m.iter()
            .map(|(k, v)| Ok((k.clone(), feature(what, k, v)?)))
            .collect()
    };
    let context = body
        .get("context")
        .map(|c| to_example("context", c))
        .transpose()?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let mut example = to_example(&format!("example {i}"), v)?;
            if let Some(context) = &context {
                for (k, v) in context {
                    example.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            Ok(example)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_requests_of_both_apis_take_a_turn_at_the_gate_and_probes_do_not() {
        for path in [
            "/v1/models/m:predict",
            "/v2/models/m/infer",
            "/v2/models/m",
            "/v2/models/ready",
        ] {
            assert!(!exempt_from_gate(path), "{path}");
        }
        for path in [
            "/healthz",
            "/readyz",
            "/v2/health/ready",
            "/v2/models/m/ready",
            "/v2",
        ] {
            assert!(exempt_from_gate(path), "{path}");
        }
    }

    #[test]
    fn routes() {
        assert_eq!(
            parse_route("m").unwrap(),
            ("m".into(), VersionChoice::Latest, Action::Status)
        );
        assert_eq!(
            parse_route("m/versions/3/metadata").unwrap(),
            ("m".into(), VersionChoice::Number(3), Action::Metadata)
        );
        assert_eq!(
            parse_route("m/labels/stable:predict").unwrap(),
            (
                "m".into(),
                VersionChoice::Label("stable".into()),
                Action::Predict
            )
        );
        assert_eq!(
            parse_route("m:classify").unwrap(),
            ("m".into(), VersionChoice::Latest, Action::Classify)
        );
        assert_eq!(
            parse_route("m:explain").unwrap_err(),
            "unknown verb `:explain`; use :predict, :predictAsync, :classify or :regress"
        );
        assert_eq!(
            parse_route("m/labels/stable:predictAsync").unwrap(),
            (
                "m".into(),
                VersionChoice::Label("stable".into()),
                Action::PredictAsync
            )
        );
        assert_eq!(
            parse_route("m/versions/x").unwrap_err(),
            "version `x` is not a number"
        );
        assert!(parse_route("m/other/1")
            .unwrap_err()
            .contains("is not a route"));
    }
}
