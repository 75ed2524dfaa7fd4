//! Dedicated worker threads for CPU-bound work (tokenising, forward passes, model loads)
//! that must never run on the async runtime's threads. Loads and inference get separate
//! pools, so a slow load never takes a thread a request is waiting for.
//! The pool knows nothing of models or requests: it runs closures, bounds its queue and turns
//! panics into errors.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not produce its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the {pool} queue is full ({capacity} jobs waiting)")]
    Full { pool: String, capacity: usize },
    #[error("the job panicked: {0}")]
    Panicked(String),
    #[error("the {0} pool has shut down")]
    ShutDown(String),
}

/// A fixed set of named threads pulling jobs from one bounded queue.
pub struct WorkerPool {
    name: String,
    sender: crossbeam_channel::Sender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl WorkerPool {
    /// `threads` workers named `name-N`; at most `capacity` jobs wait at once.
    pub fn new(name: &str, threads: usize, capacity: usize) -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while let Ok(job) = receiver.recv() {
                        job();
                    }
                })
                .expect("spawning a worker thread");
        }
        WorkerPool {
            name: name.to_string(),
            sender,
            queued: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// Jobs queued but not yet started.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues `f` and returns a future of its result. A panic in `f` becomes an error, never
    /// a dead thread. If the returned future is dropped before a worker reaches the job
    /// (the client went away), the job is skipped.
    pub fn submit<R, F>(
        &self,
        f: F,
    ) -> Result<impl Future<Output = Result<R, PoolError>>, PoolError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(PoolError::Full {
                pool: self.name.clone(),
                capacity: self.capacity,
            });
        }
        let (tx, rx) = oneshot::channel();
        let queued = self.queued.clone();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            queued.fetch_sub(1, Ordering::AcqRel);
            if tx.is_closed() {
                return;
            }
            let _enter = span.enter();
            let result = catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                PoolError::Panicked(message)
            });
            let _ = tx.send(result);
        });
        if self.sender.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(PoolError::ShutDown(self.name.clone()));
        }
        let name = self.name.clone();
        Ok(async move { rx.await.map_err(|_| PoolError::ShutDown(name))? })
    }

    /// [`submit`](Self::submit) and wait.
    pub async fn run<R, F>(&self, f: F) -> Result<R, PoolError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        self.submit(f)?.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_the_runtime_and_survives_panics() {
        let pool = WorkerPool::new("test", 2, 16);
        let name = pool
            .run(|| std::thread::current().name().unwrap().to_string())
            .await
            .unwrap();
        assert!(name.starts_with("test-"), "{name}");
        let err = pool.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert_eq!(err, PoolError::Panicked("boom".into()));
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_and_abandoned_jobs_are_skipped() {
        let pool = WorkerPool::new("busy", 1, 2);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let blocker = pool.submit(move || wait.recv().unwrap()).unwrap();
        // Let the worker pick the blocker up, so the queue below holds exactly two jobs.
        while pool.queued() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let abandoned = pool
            .submit(move || r.fetch_add(1, Ordering::SeqCst))
            .unwrap();
        let kept = pool.submit(|| 5).unwrap();
        assert!(matches!(
            pool.submit(|| 0),
            Err(PoolError::Full { capacity: 2, .. })
        ));
        drop(abandoned);
        release.send(()).unwrap();
        blocker.await.unwrap();
        assert_eq!(kept.await.unwrap(), 5);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
