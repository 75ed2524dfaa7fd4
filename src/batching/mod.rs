//! Server-side batching (`--enable_batching`): requests to one model version wait in a
//! queue, are merged into one batch along dimension 0, run once, and the outputs are split
//! back row by row. Each loaded version owns its own [`Batcher`], so a batch never mixes
//! versions, and a version being swapped out finishes its queue before it is dropped.
//!
//! Scheduling follows TF Serving's basic batch scheduler: a batch starts when a batch
//! thread is free and either `max_batch_size` rows are waiting or the oldest request has
//! waited `batch_timeout`, with one rule of ours added: as many rows as the previous batch
//! had are enough (see `Scheduler::ready`), so a lone client never waits for the timeout
//! while, under load, the requests that arrive while a batch runs form the next one. Requests are queued by
//! shape (and, for models that pad to the longest row, by length bucket), so only requests
//! that can share a batch share a queue.
//!
//! Asynchronous jobs share the queues at a lower [`Priority`]: within a queue they stand
//! behind every interactive request, fill only what room in a batch is left, may take only
//! half the queue, and a batch of nothing but jobs runs on the pool's background lane.
//!
//! It never picks a version or checks a signature (the serving core does both before a
//! request is queued), and it runs batches on the inference pool, never on the async runtime.

mod merge;

pub use crate::config::BatchingOptions;
pub use merge::{merge, rows, split};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
// tokio's clock, so tests can pause and advance it.
use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot, Semaphore};

use self::merge::QueueKey;
use crate::pool::{PoolError, Priority, WorkerPool};
use crate::servable::{BatchPolicy, Inputs, Outputs, Servable, ServableError};

/// Why a batched request produced no outputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the batching queue is full ({capacity} rows are waiting)")]
    Full { capacity: usize },
    #[error(transparent)]
    Servable(#[from] ServableError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("the batcher has shut down")]
    Closed,
}

struct Task {
    signature: String,
    inputs: Inputs,
    rows: usize,
    key: QueueKey,
    enqueued: Instant,
    priority: Priority,
    reply: oneshot::Sender<Result<Outputs, BatchError>>,
}

/// Counts what the batcher did, for metrics and tests.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Batches run.
    pub batches: AtomicUsize,
    /// Requests run inside those batches.
    pub requests: AtomicUsize,
    /// Requests dropped from the queue because their client went away.
    pub abandoned: AtomicUsize,
}

/// Called with the rows of each batch as it starts (for metrics).
pub type OnBatch = Box<dyn Fn(usize) + Send + Sync>;

/// The queue and scheduler of one model version.
pub struct Batcher {
    sender: mpsc::UnboundedSender<Task>,
    waiting_rows: Arc<AtomicUsize>,
    options: Arc<BatchingOptions>,
    policy: BatchPolicy,
    stats: Arc<BatchStats>,
}

impl Batcher {
    /// Starts the scheduler of `servable` on the current tokio runtime. Batches run on
    /// `pool`. The scheduler ends when the batcher is dropped and its queue is empty.
    pub fn new(
        servable: Arc<dyn Servable>,
        options: BatchingOptions,
        pool: Arc<WorkerPool>,
        on_batch: OnBatch,
    ) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let options = Arc::new(options);
        let waiting_rows = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(BatchStats::default());
        let policy = servable.batch_policy();
        let scheduler = Scheduler {
            servable,
            options: options.clone(),
            pool,
            threads: Arc::new(Semaphore::new(options.num_batch_threads)),
            waiting_rows: waiting_rows.clone(),
            stats: stats.clone(),
            on_batch,
            queues: Vec::new(),
            last_rows: 1,
        };
        tokio::spawn(scheduler.run(receiver));
        Batcher {
            sender,
            waiting_rows,
            options,
            policy,
            stats,
        }
    }

    pub fn options(&self) -> &BatchingOptions {
        &self.options
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Rows waiting for a batch.
    pub fn waiting_rows(&self) -> usize {
        self.waiting_rows.load(Ordering::Acquire)
    }

    /// Whether a request of `rows` rows goes through the queue. Larger requests are already
    /// a batch; they run on their own.
    pub fn takes(&self, rows: usize) -> bool {
        self.policy != BatchPolicy::Never && rows >= 1 && rows <= self.options.max_batch_size
    }

    /// Queues one request (already checked against its signature) and returns its outputs
    /// once its batch has run. Dropping the future before then removes the request from
    /// the queue (or discards its rows if the batch already started).
    pub async fn run(&self, signature: &str, inputs: Inputs) -> Result<Outputs, BatchError> {
        let rows = merge::rows(&inputs);
        let priority = Priority::current();
        let capacity = match priority {
            Priority::Interactive => self.options.queue_capacity(),
            Priority::Background => self.options.queue_capacity().div_ceil(2),
        };
        let before = self.waiting_rows.fetch_add(rows, Ordering::AcqRel);
        if before + rows > capacity {
            self.waiting_rows.fetch_sub(rows, Ordering::AcqRel);
            return Err(BatchError::Full { capacity });
        }
        let (reply, answer) = oneshot::channel();
        let key = QueueKey::of(
            signature,
            &inputs,
            self.options.pad_variable_length_inputs,
            self.policy,
        );
        let task = Task {
            signature: signature.to_string(),
            inputs,
            rows,
            key,
            enqueued: Instant::now(),
            priority,
            reply,
        };
        if self.sender.send(task).is_err() {
            self.waiting_rows.fetch_sub(rows, Ordering::AcqRel);
            return Err(BatchError::Closed);
        }
        answer.await.unwrap_or(Err(BatchError::Closed))
    }
}

struct Queue {
    key: QueueKey,
    tasks: VecDeque<Task>,
    rows: usize,
}

struct Scheduler {
    servable: Arc<dyn Servable>,
    options: Arc<BatchingOptions>,
    pool: Arc<WorkerPool>,
    threads: Arc<Semaphore>,
    waiting_rows: Arc<AtomicUsize>,
    stats: Arc<BatchStats>,
    on_batch: OnBatch,
    queues: Vec<Queue>,
    /// Rows of the batch formed last.
    last_rows: usize,
}

impl Scheduler {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Task>) {
        let mut open = true;
        loop {
            let Ok(permit) = self.threads.clone().acquire_owned().await else {
                return;
            };
            // Wait until some queue may form a batch.
            let index = loop {
                while let Ok(task) = receiver.try_recv() {
                    self.push(task);
                }
                self.drop_abandoned();
                if let Some(i) = self.ready(Instant::now(), !open) {
                    break i;
                }
                if !open && self.queues.is_empty() {
                    return;
                }
                let deadline = self
                    .queues
                    .iter()
                    .filter_map(|q| q.tasks.front())
                    .map(|t| t.enqueued + self.options.batch_timeout)
                    .min();
                tokio::select! {
                    task = receiver.recv(), if open => match task {
                        Some(task) => self.push(task),
                        None => open = false,
                    },
                    _ = sleep_until(deadline) => {}
                }
            };
            let batch = self.take(index);
            if batch.is_empty() {
                continue;
            }
            self.dispatch(batch, permit);
        }
    }

    fn push(&mut self, task: Task) {
        let queue = match self.queues.iter().position(|q| q.key == task.key) {
            Some(i) => &mut self.queues[i],
            None => {
                self.queues.push(Queue {
                    key: task.key.clone(),
                    tasks: VecDeque::new(),
                    rows: 0,
                });
                self.queues.last_mut().expect("just pushed")
            }
        };
        queue.rows += task.rows;
        // Interactive requests stand in front of every background one; each kind in
        // arrival order.
        let at = match task.priority {
            Priority::Background => queue.tasks.len(),
            Priority::Interactive => queue
                .tasks
                .iter()
                .position(|t| t.priority == Priority::Background)
                .unwrap_or(queue.tasks.len()),
        };
        queue.tasks.insert(at, task);
    }

    /// Removes requests whose caller stopped waiting (the client went away or timed out).
    fn drop_abandoned(&mut self) {
        for queue in &mut self.queues {
            let before = queue.tasks.len();
            let mut freed = 0;
            queue.tasks.retain(|t| {
                let keep = !t.reply.is_closed();
                if !keep {
                    freed += t.rows;
                }
                keep
            });
            if freed > 0 {
                queue.rows -= freed;
                self.waiting_rows.fetch_sub(freed, Ordering::AcqRel);
                self.stats
                    .abandoned
                    .fetch_add(before - queue.tasks.len(), Ordering::Relaxed);
            }
        }
        self.queues.retain(|q| !q.tasks.is_empty());
    }

    /// The queue to batch next: among the queues that are ready, the one whose oldest
    /// request is oldest (queues holding interactive requests before those holding only jobs). A queue is ready when it holds `max_batch_size` rows, or as many
    /// rows as the previous batch had, or its oldest request has waited `batch_timeout`
    /// (every queue is, when `draining`). The middle rule is this server's: under steady
    /// load a batch waits (never beyond the timeout) for the clients of the previous batch
    /// to come back, while a lone client, whose previous batch was its own single row,
    /// never waits at all, where TF Serving's rule would add the whole timeout to it.
    fn ready(&self, now: Instant, draining: bool) -> Option<usize> {
        let enough = self.last_rows.clamp(1, self.options.max_batch_size);
        self.queues
            .iter()
            .enumerate()
            .filter(|(_, q)| {
                draining
                    || q.rows >= enough
                    || q.tasks
                        .front()
                        .is_some_and(|t| now >= t.enqueued + self.options.batch_timeout)
            })
            .min_by_key(|(_, q)| {
                q.tasks
                    .front()
                    .map(|t| (t.priority == Priority::Background, t.enqueued))
            })
            .map(|(i, _)| i)
    }

    /// Up to `max_batch_size` rows from the front of queue `index`, in arrival order.
    fn take(&mut self, index: usize) -> Vec<Task> {
        let queue = &mut self.queues[index];
        let mut batch = Vec::new();
        let mut rows = 0;
        while let Some(task) = queue.tasks.front() {
            if !batch.is_empty() && rows + task.rows > self.options.max_batch_size {
                break;
            }
            rows += task.rows;
            batch.push(queue.tasks.pop_front().expect("front exists"));
        }
        queue.rows -= rows;
        if queue.tasks.is_empty() {
            self.queues.remove(index);
        }
        self.waiting_rows.fetch_sub(rows, Ordering::AcqRel);
        self.last_rows = rows;
        batch
    }

    /// Runs `batch` on the pool and answers each request; the permit (a batch thread) is
    /// held until the batch is done.
    fn dispatch(&self, batch: Vec<Task>, permit: tokio::sync::OwnedSemaphorePermit) {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .requests
            .fetch_add(batch.len(), Ordering::Relaxed);
        (self.on_batch)(batch.iter().map(|t| t.rows).sum());
        let servable = self.servable.clone();
        let pool = self.pool.clone();
        let priority = if batch.iter().any(|t| t.priority == Priority::Interactive) {
            Priority::Interactive
        } else {
            Priority::Background
        };
        tokio::spawn(async move {
            let _permit = permit;
            let (replies, work): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|t| (t.reply, (t.signature, t.inputs)))
                .unzip();
            let job = move || run_batch(servable.as_ref(), work);
            match pool.submit_at(priority, job) {
                Ok(running) => match running.await {
                    Ok(results) => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            let _ = reply.send(result);
                        }
                    }
                    Err(e) => replies.into_iter().for_each(|r| {
                        let _ = r.send(Err(e.clone().into()));
                    }),
                },
                Err(e) => replies.into_iter().for_each(|r| {
                    let _ = r.send(Err(e.clone().into()));
                }),
            }
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Merges the requests, runs them once and splits the outputs. If the merged batch fails,
/// each request runs alone, so one client's bad input fails only that client's request.
fn run_batch(
    servable: &dyn Servable,
    work: Vec<(String, Inputs)>,
) -> Vec<Result<Outputs, BatchError>> {
    if work.len() == 1 {
        let (signature, inputs) = &work[0];
        return vec![servable.run(signature, inputs).map_err(BatchError::from)];
    }
    let signature = work[0].0.clone();
    let rows: Vec<usize> = work.iter().map(|(_, inputs)| merge::rows(inputs)).collect();
    let parts: Vec<&Inputs> = work.iter().map(|(_, inputs)| inputs).collect();
    let merged = merge(&parts, servable.padding_mask());
    let outputs = merged
        .map_err(ServableError::Internal)
        .and_then(|inputs| servable.run(&signature, &inputs))
        .and_then(|outputs| split(outputs, &rows).map_err(ServableError::Internal));
    match outputs {
        Ok(per_request) => per_request.into_iter().map(Ok).collect(),
        Err(_) => work
            .iter()
            .map(|(signature, inputs)| servable.run(signature, inputs).map_err(BatchError::from))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
