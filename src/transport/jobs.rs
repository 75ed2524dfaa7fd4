//! Asynchronous jobs on the wire: how a queued request is run (the same code as the
//! synchronous Predict of the API it came through, so a result is exactly what Predict
//! answers), the JSON of a job for `GET /v1/jobs/{id}`, and `candle_serving.jobs.v1.JobService`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use prost::Message;
use serde::Serialize;
use serde_json::value::RawValue;
use tonic::{Request, Response, Status};

use super::grpc::{self, spec_to_proto, to_status};
use super::json::proto_json;
use super::rest;
use crate::error::ServingError;
use crate::jobs::{rfc3339, Cancelled, Executor, Job, JobKind, JobState, Jobs, NewJob, Outcome};
use crate::proto::candle_serving::jobs::v1 as pb;
use crate::proto::candle_serving::jobs::v1::job_service_server::JobService;
use crate::proto::tensorflow::serving::{PredictRequest, PredictResponse};
use crate::serving::{Core, ModelSpec};

/// Runs jobs through the transports' own Predict.
pub struct PredictExecutor {
    core: Core,
}

impl PredictExecutor {
    pub fn new(core: Core) -> Arc<Self> {
        Arc::new(PredictExecutor { core })
    }
}

fn outcome(result: Result<(Vec<u8>, Option<i64>), ServingError>) -> Outcome {
    match result {
        Ok((result, Some(version))) => Outcome::Succeeded { version, result },
        Ok((_, None)) => Outcome::Failed {
            error: ServingError::internal("the job ran on no version; this is a bug"),
        },
        Err(error) => Outcome::Failed { error },
    }
}

impl Executor for PredictExecutor {
    fn run<'a>(&'a self, job: &'a NewJob) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match job.kind {
                JobKind::Rest => {
                    let spec = ModelSpec {
                        name: job.model.clone(),
                        version: job.version.clone(),
                        signature_name: String::new(),
                        client_key: job.client_key.clone(),
                    };
                    let result = rest::predict(&self.core, spec, &job.request)
                        .await
                        .map(|(body, version)| (body.to_string().into_bytes(), version));
                    outcome(result)
                }
                JobKind::Grpc => {
                    let request = match PredictRequest::decode(&job.request[..]) {
                        Ok(request) => request,
                        Err(e) => {
                            return Outcome::Failed {
                                error: ServingError::internal(format!(
                                    "model `{}`: the queued request does not decode: {e}",
                                    job.model
                                )),
                            }
                        }
                    };
                    let result = grpc::predict(&self.core, request, job.client_key.clone())
                        .await
                        .map(|(response, version)| (response.encode_to_vec(), version));
                    outcome(result)
                }
            }
        })
    }
}

/// A job as `GET /v1/jobs/{id}` answers it (fields in this order). `result` is the `:predict`
/// body of a job submitted over REST, embedded byte for byte (parsing it into numbers and
/// printing them again could change a float's last digit), or the proto3 JSON of the
/// PredictResponse of one submitted over gRPC.
#[derive(Serialize)]
pub struct JobView<'a> {
    job_id: &'a str,
    state: &'static str,
    model_spec: SpecView<'a>,
    result: Option<Box<RawValue>>,
    error: Option<&'a str>,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
}

#[derive(Serialize)]
struct SpecView<'a> {
    name: &'a str,
    version: Option<i64>,
}

pub fn job_json(job: &Job) -> JobView<'_> {
    let result = job.result.as_deref().and_then(|bytes| match job.kind {
        JobKind::Rest => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| RawValue::from_string(text.to_string()).ok()),
        JobKind::Grpc => PredictResponse::decode(bytes).ok().and_then(|r| {
            serde_json::value::to_raw_value(&proto_json("tensorflow.serving.PredictResponse", &r))
                .ok()
        }),
    });
    JobView {
        job_id: &job.id,
        state: job.state.as_str(),
        model_spec: SpecView {
            name: &job.model,
            version: job.version(),
        },
        result,
        error: job.error.as_ref().map(|(_, message)| message.as_str()),
        created_at: rfc3339(job.created_at_ms),
        started_at: job.started_at_ms.map(rfc3339),
        finished_at: job.finished_at_ms.map(rfc3339),
    }
}

fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn job_proto(job: &Job) -> pb::Job {
    let result = job.result.as_deref().and_then(|bytes| match job.kind {
        JobKind::Grpc => PredictResponse::decode(bytes)
            .ok()
            .map(pb::job::Result::Response),
        JobKind::Rest => String::from_utf8(bytes.to_vec())
            .ok()
            .map(pb::job::Result::ResultJson),
    });
    let state = match job.state {
        JobState::Pending => pb::JobState::Pending,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    };
    let mut spec = spec_to_proto(&job.model, job.version().unwrap_or(0), "");
    if job.version().is_none() {
        spec.version_choice = None;
    }
    pb::Job {
        job_id: job.id.clone(),
        state: state as i32,
        model_spec: Some(spec),
        result,
        error_code: job.error.as_ref().map_or(0, |(code, _)| code.as_i32()),
        error_message: job
            .error
            .as_ref()
            .map(|(_, m)| m.clone())
            .unwrap_or_default(),
        created_at: Some(timestamp(job.created_at_ms)),
        started_at: job.started_at_ms.map(timestamp),
        finished_at: job.finished_at_ms.map(timestamp),
    }
}

/// `candle_serving.jobs.v1.JobService`.
#[derive(Clone)]
pub struct JobGrpc {
    core: Core,
    jobs: Arc<Jobs>,
}

impl JobGrpc {
    pub fn new(core: Core, jobs: Arc<Jobs>) -> Self {
        JobGrpc { core, jobs }
    }
}

#[tonic::async_trait]
impl JobService for JobGrpc {
    async fn submit(&self, request: Request<PredictRequest>) -> Result<Response<pb::Job>, Status> {
        let key = grpc::client_key(request.metadata());
        let request = request.into_inner();
        let (loaded, spec, inputs) =
            grpc::prepare_predict(&self.core, &request, key).map_err(to_status)?;
        self.core
            .check_predict(
                &loaded,
                &spec.signature_name,
                &inputs,
                &request.output_filter,
            )
            .map_err(to_status)?;
        let job = NewJob {
            kind: JobKind::Grpc,
            model: spec.name,
            version: spec.version,
            client_key: spec.client_key,
            request: request.encode_to_vec(),
        };
        let job = self.jobs.submit(job).await.map_err(to_status)?;
        Ok(Response::new(job_proto(&job)))
    }

    async fn get(&self, request: Request<pb::JobRequest>) -> Result<Response<pb::Job>, Status> {
        let job = self
            .jobs
            .get(&request.into_inner().job_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(job_proto(&job)))
    }

    async fn cancel(&self, request: Request<pb::JobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = request.into_inner().job_id;
        match self.jobs.cancel(&id).await.map_err(to_status)? {
            Cancelled::Now(job) | Cancelled::Already(job) => Ok(Response::new(job_proto(&job))),
            Cancelled::TooLate(job) => Err(to_status(ServingError::failed_precondition(format!(
                "job `{id}` is {} and can no longer be cancelled",
                job.state.as_str()
            )))),
        }
    }

    async fn wait(&self, request: Request<pb::JobRequest>) -> Result<Response<pb::Job>, Status> {
        // Answer a little before the client's deadline, so the answer can still reach it.
        let until = grpc::client_deadline(&request)
            .map(|d| d.saturating_sub(Duration::from_millis(50)))
            .map(|d| tokio::time::Instant::now() + d)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(24 * 3600));
        let job = self
            .jobs
            .wait(&request.into_inner().job_id, until)
            .await
            .map_err(to_status)?;
        Ok(Response::new(job_proto(&job)))
    }
}
