//! Counts requests in flight across both transports, so shutdown can wait for exactly the
//! requests that started, rather than for clients to hang up their idle connections.
//! It only counts; it never refuses a request (the admission gate does).
//!
//! A request counts from the moment its headers arrive until its response body has been
//! handed to the connection in full (or dropped, when the client goes away). Counting only
//! until the handler returns is not enough: a large response (256 embeddings are 400 KB)
//! still has to cross the client's flow-control window, and a shutdown that saw zero and
//! closed the connection then would cut it off half-sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};

/// A tower layer that increments a counter for the life of each request and its response.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl<S> tower::Layer<S> for InFlight {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightService {
            inner,
            count: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct InFlightService<S> {
    inner: S,
    count: Arc<AtomicUsize>,
}

/// One request's share of the count, given back when dropped.
struct Guard(Arc<AtomicUsize>);

impl Guard {
    fn new(count: &Arc<AtomicUsize>) -> Guard {
        count.fetch_add(1, Ordering::AcqRel);
        Guard(count.clone())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, R, B> tower::Service<R> for InFlightService<S>
where
    S: tower::Service<R, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Counted<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let guard = Guard::new(&self.count);
        let future = self.inner.call(request);
        Box::pin(async move {
            // An error drops the guard here; a response carries it in its body.
            let response = future.await?;
            Ok(response.map(|body| Counted {
                body,
                guard: Some(guard),
            }))
        })
    }
}

/// A response body that keeps its request counted until its last frame has been taken.
pub struct Counted<B> {
    body: B,
    guard: Option<Guard>,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if frame.is_none() || this.body.is_end_stream() {
            this.guard = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, Service, ServiceExt};

    /// A service whose response body is `body`, counted by `in_flight`.
    fn counted(
        in_flight: &InFlight,
        body: &'static [u8],
    ) -> impl tower::Service<
        (),
        Response = http::Response<Counted<Full<bytes::Bytes>>>,
        Error = std::convert::Infallible,
    > {
        in_flight.layer(tower::service_fn(move |_: ()| async move {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                bytes::Bytes::from_static(body),
            )))
        }))
    }

    #[tokio::test]
    async fn a_request_counts_until_its_body_has_been_taken() {
        let in_flight = InFlight::default();
        let mut service = counted(&in_flight, b"embeddings");
        let response = service.ready().await.unwrap().call(()).await.unwrap();
        // The handler has returned, but the body has not gone out yet.
        assert_eq!(in_flight.count(), 1);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"embeddings");
        assert_eq!(in_flight.count(), 0);
    }

    #[tokio::test]
    async fn a_response_dropped_unsent_stops_counting() {
        let in_flight = InFlight::default();
        let mut service = counted(&in_flight, b"x");
        let response = service.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(in_flight.count(), 1);
        drop(response);
        assert_eq!(in_flight.count(), 0);
    }
}
