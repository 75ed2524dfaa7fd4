//! `candle_serving.rollout.v1.RolloutService`: the rollout controls over gRPC, the same
//! calls as `/v1/models/{m}/rollout` over REST.

use tonic::{Request, Response, Status};

use super::grpc::to_status;
use crate::error::ServingError;
use crate::proto::candle_serving::rollout::v1 as pb;
use crate::proto::candle_serving::rollout::v1::rollout_service_server::RolloutService;
use crate::rollout::{Analysis, AutoPolicy, Rollout, RolloutRequest, SideFigures};
use crate::serving::Core;

#[derive(Clone)]
pub struct RolloutGrpc {
    core: Core,
}

impl RolloutGrpc {
    pub fn new(core: Core) -> Self {
        RolloutGrpc { core }
    }
}

fn model(name: &str) -> Result<&str, Status> {
    if name.is_empty() {
        return Err(to_status(ServingError::invalid_argument(
            "the request names no model",
        )));
    }
    Ok(name)
}

fn policy_to_proto(p: &AutoPolicy) -> pb::AutoPolicy {
    pb::AutoPolicy {
        step_percent: p.step_percent,
        interval_seconds: p.interval_seconds,
        min_requests: p.min_requests,
        max_error_rate: p.max_error_rate,
        max_p99_ratio: p.max_p99_ratio,
    }
}

fn side_to_proto(s: &SideFigures) -> pb::SideFigures {
    pb::SideFigures {
        version: s.version,
        requests: s.requests,
        errors: s.errors,
        error_rate: s.error_rate,
        p99_ms: s.p99_ms,
    }
}

fn analysis_to_proto(a: &Analysis) -> pb::Analysis {
    pb::Analysis {
        at: a.at,
        window_seconds: a.window_seconds,
        stable: Some(side_to_proto(&a.stable)),
        canary: Some(side_to_proto(&a.canary)),
        decision: a.decision.clone(),
        reason: a.reason.clone(),
    }
}

fn status_to_proto(r: Rollout) -> pb::RolloutStatus {
    pb::RolloutStatus {
        model: r.model,
        stable_label: r.stable_label,
        canary_label: r.canary_label,
        stable_version: r.stable_version,
        canary_version: r.canary_version,
        canary_percent: r.canary_percent,
        auto: r.auto.as_ref().map(policy_to_proto),
        phase: r.phase.name().to_string(),
        reason: r.reason.unwrap_or_default(),
        last_analysis: r.last_analysis.as_ref().map(analysis_to_proto),
        started_at: r.started_at,
        updated_at: r.updated_at,
    }
}

/// A proto policy as a request: fields left at zero take the defaults.
fn policy_from_proto(p: pb::AutoPolicy) -> AutoPolicy {
    let d = AutoPolicy::default();
    fn or<T: PartialEq + Default>(value: T, default: T) -> T {
        if value == T::default() {
            default
        } else {
            value
        }
    }
    AutoPolicy {
        step_percent: or(p.step_percent, d.step_percent),
        interval_seconds: or(p.interval_seconds, d.interval_seconds),
        min_requests: or(p.min_requests, d.min_requests),
        max_error_rate: or(p.max_error_rate, d.max_error_rate),
        max_p99_ratio: or(p.max_p99_ratio, d.max_p99_ratio),
    }
}

fn answer(result: Result<Rollout, ServingError>) -> Result<Response<pb::RolloutStatus>, Status> {
    result
        .map(|r| Response::new(status_to_proto(r)))
        .map_err(to_status)
}

#[tonic::async_trait]
impl RolloutService for RolloutGrpc {
    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let request = request.into_inner();
        answer(self.core.rollouts().get(model(&request.model)?))
    }

    async fn start_rollout(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let request = request.into_inner();
        let name = model(&request.model)?.to_string();
        let start = RolloutRequest {
            canary_label: (!request.canary_label.is_empty()).then_some(request.canary_label),
            stable_label: (!request.stable_label.is_empty()).then_some(request.stable_label),
            canary_percent: request.canary_percent,
            auto: request.auto.map(policy_from_proto),
        };
        answer(self.core.rollouts().start(&name, start).await)
    }

    async fn promote_rollout(
        &self,
        request: Request<pb::PromoteRolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let request = request.into_inner();
        answer(self.core.rollouts().promote(model(&request.model)?).await)
    }

    async fn abort_rollout(
        &self,
        request: Request<pb::AbortRolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let request = request.into_inner();
        answer(self.core.rollouts().abort(model(&request.model)?).await)
    }
}
