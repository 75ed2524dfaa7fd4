//! Measures a gRPC Predict (or JobService Submit) or ModelInfer message before tonic decodes it (see
//! [`crate::admission::scan_predict_request`] and [`crate::admission::scan_infer_request`]),
//! and answers Triton's extensions of the v2 service by name. The body is read up to
//! `--max_request_bytes` (as tonic would read it anyway), its values are counted on the wire,
//! and a message holding more than the limits allow is refused without being decoded. It
//! sits inside the concurrency gate, so only admitted requests hold a body in memory. Other
//! methods pass through untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full, Limited};
use tonic::body::Body;

use crate::admission::{scan_infer_request, scan_predict_request, LimitError, Limits};
use crate::transport::v2::grpc::triton_extension;

const PREDICT: &str = "/tensorflow.serving.PredictionService/Predict";
const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
/// A job's submission carries a PredictRequest too.
const JOB_SUBMIT: &str = "/candle_serving.jobs.v1.JobService/Submit";

type Scanner = fn(&[u8], &Limits) -> Result<(), LimitError>;

#[derive(Clone)]
pub struct WireScanLayer {
    limits: Arc<Limits>,
}

impl WireScanLayer {
    pub fn new(limits: Limits) -> Self {
        WireScanLayer {
            limits: Arc::new(limits),
        }
    }
}

impl<S> tower::Layer<S> for WireScanLayer {
    type Service = WireScan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WireScan {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct WireScan<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> tower::Service<http::Request<Body>> for WireScan<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let scan: Scanner = match request.uri().path() {
            PREDICT | JOB_SUBMIT => scan_predict_request,
            MODEL_INFER => scan_infer_request,
            path => {
                if let Some(status) = triton_extension(path) {
                    return Box::pin(async move { Ok(status.into_http()) });
                }
                return Box::pin(inner.call(request));
            }
        };
        let limits = self.limits.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // The 5-byte gRPC frame header comes on top of the message.
            let bytes = match Limited::new(body, limits.max_bytes + 5).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return Ok(tonic::Status::out_of_range(format!(
                        "the request message is larger than {} bytes (--max_request_bytes)",
                        limits.max_bytes
                    ))
                    .into_http())
                }
            };
            // An uncompressed frame: flag 0, then the length. Anything else is tonic's to judge.
            if let (Some(0), Some(header)) = (bytes.first(), bytes.get(1..5)) {
                let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
                if let Some(message) = bytes.get(5..5 + len) {
                    if let Err(e) = scan(message, &limits) {
                        return Ok(tonic::Status::invalid_argument(e.to_string()).into_http());
                    }
                }
            }
            inner
                .call(http::Request::from_parts(
                    parts,
                    Body::new(Full::new(bytes)),
                ))
                .await
        })
    }
}
