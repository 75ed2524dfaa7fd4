//! The concurrency gate: one budget of requests in flight shared by gRPC and REST. It sits
//! in front of each transport as a tower layer, so a request waits for its turn before its
//! body is read and decoded; beyond `max_wait` it is refused with the transport's
//! RESOURCE_EXHAUSTED answer. Health and metrics paths pass freely, so probes still answer
//! under overload.
//! It owns the permits and the refusal text; it reads nothing of a request but its path (for
//! the exemptions), never its body, model or inputs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared budget. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gate {
    permits: Option<Arc<Semaphore>>,
    capacity: usize,
    max_wait: Duration,
}

/// A turn: held for the life of one request.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Gate {
    /// `capacity` 0 lets every request through.
    pub fn new(capacity: usize, max_wait: Duration) -> Self {
        Gate {
            permits: (capacity > 0).then(|| Arc::new(Semaphore::new(capacity))),
            capacity,
            max_wait,
        }
    }

    /// Waits up to `max_wait` for a turn.
    pub async fn enter(&self) -> Result<Permit, String> {
        let Some(permits) = &self.permits else {
            return Ok(Permit(None));
        };
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return Ok(Permit(Some(permit)));
        }
        match tokio::time::timeout(self.max_wait, permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Permit(Some(permit))),
            _ => Err(format!(
                "the server is at its limit of {} concurrent requests (--max_concurrent_requests) and none finished within {} ms; retry later",
                self.capacity,
                self.max_wait.as_millis()
            )),
        }
    }

    /// Requests in flight now.
    pub fn in_use(&self) -> usize {
        self.permits
            .as_ref()
            .map_or(0, |p| self.capacity - p.available_permits())
    }
}

/// Puts a [`Gate`] in front of a transport. `reject` builds the transport's
/// RESOURCE_EXHAUSTED response from the message; `exempt` names paths that pass freely.
#[derive(Clone)]
pub struct GateLayer<F> {
    gate: Gate,
    reject: F,
    exempt: fn(&str) -> bool,
}

impl<F> GateLayer<F> {
    pub fn new(gate: Gate, exempt: fn(&str) -> bool, reject: F) -> Self {
        GateLayer {
            gate,
            reject,
            exempt,
        }
    }
}

impl<S, F: Clone> tower::Layer<S> for GateLayer<F> {
    type Service = GateService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.gate.clone(),
            reject: self.reject.clone(),
            exempt: self.exempt,
        }
    }
}

#[derive(Clone)]
pub struct GateService<S, F> {
    inner: S,
    gate: Gate,
    reject: F,
    exempt: fn(&str) -> bool,
}

impl<S, F, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GateService<S, F>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    F: Fn(String) -> http::Response<ResBody> + Clone + Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that serves the request, after its turn.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if (self.exempt)(request.uri().path()) {
            return Box::pin(async move {
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(request).await
            });
        }
        let gate = self.gate.clone();
        let reject = self.reject.clone();
        Box::pin(async move {
            let permit = match gate.enter().await {
                Ok(permit) => permit,
                Err(message) => return Ok(reject(message)),
            };
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            let response = inner.call(request).await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_beyond_the_budget_waits_then_is_refused() {
        let gate = Gate::new(2, Duration::from_millis(500));
        let a = gate.enter().await.unwrap();
        let _b = gate.enter().await.unwrap();
        assert_eq!(gate.in_use(), 2);
        let started = tokio::time::Instant::now();
        let refused = gate.enter().await.unwrap_err();
        assert!(
            refused.contains("limit of 2 concurrent requests"),
            "{refused}"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        // A turn freed while waiting is taken.
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(a);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn capacity_zero_lets_everything_through() {
        let gate = Gate::new(0, Duration::ZERO);
        let _held: Vec<Permit> = futures_all(&gate, 100).await;
        assert_eq!(gate.in_use(), 0);
    }

    async fn futures_all(gate: &Gate, n: usize) -> Vec<Permit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(gate.enter().await.unwrap());
        }
        permits
    }
}
