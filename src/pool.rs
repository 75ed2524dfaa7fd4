//! Dedicated worker threads for CPU-bound work (tokenising, forward passes, model loads)
//! that must never run on the async runtime's threads. Loads and inference get separate
//! pools, so a slow load never takes a thread a request is waiting for.
//! The pool knows nothing of models or requests: it runs closures, bounds its queue and turns
//! panics into errors. Work comes in two priorities: a worker takes a background job
//! (asynchronous inference jobs) only when no interactive one is waiting, and background
//! jobs may fill only half the queue.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Who is waiting for a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// A client holds a connection open for the answer.
    #[default]
    Interactive,
    /// An asynchronous job: runs when nothing interactive waits.
    Background,
}

tokio::task_local! {
    static PRIORITY: Priority;
}

impl Priority {
    /// The priority of the work the current task does: [`Priority::Background`] inside
    /// [`Priority::scope`], interactive otherwise.
    pub fn current() -> Priority {
        PRIORITY.try_with(|p| *p).unwrap_or_default()
    }

    /// Runs `work` with this priority: the inference it starts (batching queue, pool) is
    /// scheduled accordingly, without every layer in between passing it along.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        PRIORITY.scope(self, work).await
    }
}

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

/// A fixed set of named threads pulling jobs from one bounded queue (in two priorities).
pub struct WorkerPool {
    name: String,
    sender: crossbeam_channel::Sender<Job>,
    background: crossbeam_channel::Sender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl WorkerPool {
    /// `threads` workers named `name-N`; at most `capacity` jobs wait at once.
    pub fn new(name: &str, threads: usize, capacity: usize) -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        let (background, low) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let (high, low) = (receiver.clone(), low.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || worker(high, low))
                .expect("spawning a worker thread");
        }
        WorkerPool {
            name: name.to_string(),
            sender,
            background,
            queued: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// Jobs queued but not yet started.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues `f` at the current task's [`Priority`] and returns a future of its result. A
    /// panic in `f` becomes an error, never a dead thread. If the returned future is dropped
    /// before a worker reaches the job (the client went away), the job is skipped.
    pub fn submit<R, F>(
        &self,
        f: F,
    ) -> Result<impl Future<Output = Result<R, PoolError>>, PoolError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        self.submit_at(Priority::current(), f)
    }

    /// [`submit`](Self::submit) at a given priority. Background work may fill only half the
    /// queue, so a burst of it never makes interactive work wait for room.
    pub fn submit_at<R, F>(
        &self,
        priority: Priority,
        f: F,
    ) -> Result<impl Future<Output = Result<R, PoolError>>, PoolError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let capacity = match priority {
            Priority::Interactive => self.capacity,
            Priority::Background => self.capacity.div_ceil(2),
        };
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        if before >= capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(PoolError::Full {
                pool: self.name.clone(),
                capacity,
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
        let sender = match priority {
            Priority::Interactive => &self.sender,
            Priority::Background => &self.background,
        };
        if sender.send(job).is_err() {
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

/// A worker thread: interactive jobs first; a background job only when none waits.
fn worker(high: crossbeam_channel::Receiver<Job>, low: crossbeam_channel::Receiver<Job>) {
    loop {
        if let Ok(job) = high.try_recv() {
            job();
            continue;
        }
        if let Ok(job) = low.try_recv() {
            job();
            continue;
        }
        crossbeam_channel::select! {
            recv(high) -> job => match job {
                Ok(job) => job(),
                Err(_) => return,
            },
            recv(low) -> job => {
                if let Ok(job) = job {
                    job();
                }
            }
        }
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

    #[tokio::test]
    async fn interactive_work_goes_before_background_work() {
        let pool = WorkerPool::new("prio", 1, 8);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let blocker = pool.submit(move || wait.recv().unwrap()).unwrap();
        while pool.queued() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut done = Vec::new();
        for (i, priority) in [
            Priority::Background,
            Priority::Background,
            Priority::Interactive,
        ]
        .into_iter()
        .enumerate()
        {
            let order = order.clone();
            done.push(
                pool.submit_at(priority, move || order.lock().push(i))
                    .unwrap(),
            );
        }
        // Background work may take only half the queue.
        assert!(pool.submit_at(Priority::Background, || ()).is_ok());
        assert!(matches!(
            pool.submit_at(Priority::Background, || ()),
            Err(PoolError::Full { capacity: 4, .. })
        ));
        release.send(()).unwrap();
        blocker.await.unwrap();
        for d in done {
            d.await.unwrap();
        }
        assert_eq!(*order.lock(), vec![2, 0, 1]);
        assert_eq!(
            Priority::Background
                .scope(async { Priority::current() })
                .await,
            Priority::Background
        );
        assert_eq!(Priority::current(), Priority::Interactive);
    }
}
