//! Asynchronous inference jobs (seed 003's Celery tasks, built into the server): a Predict
//! is checked as a synchronous one would be, queued, run later by whichever server process
//! takes it, and its answer kept until it expires; the client polls (or waits on) a job id.
//!
//! Two queues behind one interface: [`MemoryQueue`] (the default, in the process) and
//! [`RedisQueue`] (a Redis stream with a consumer group, which every server pointed at the
//! same Redis shares: adding a process adds workers). The worker loop here takes jobs, runs
//! them through the [`Executor`] the transports provide (so a job's result is byte for byte
//! what the synchronous call answers), at [`Priority::Background`] (behind interactive
//! requests in the batching queues and the inference pool), and stores the outcome.
//!
//! Delivery is at least once, storage exactly once: a job whose process died is taken over
//! after the visibility timeout and may run twice, but its result is written by whichever
//! run ends first and never overwritten.
//! This module knows no wire format: jobs carry the request as the transport received it.

mod memory;
mod stream;

pub use memory::MemoryQueue;
pub use stream::RedisQueue;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::error::{Code, ServingError};
use crate::manager::VersionChoice;
use crate::pool::Priority;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "PENDING" => JobState::Pending,
            "RUNNING" => JobState::Running,
            "SUCCEEDED" => JobState::Succeeded,
            "FAILED" => JobState::Failed,
            "CANCELLED" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job has ended (and its record now expires).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Which API a job was submitted through, which is the form of its request and result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A REST `:predict` body; the result is the JSON `:predict` answers.
    Rest,
    /// An encoded `tensorflow.serving.PredictRequest`; the result an encoded PredictResponse.
    Grpc,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Rest => "rest",
            JobKind::Grpc => "grpc",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "rest" => Some(JobKind::Rest),
            "grpc" => Some(JobKind::Grpc),
            _ => None,
        }
    }
}

/// A job as it is submitted (already checked by the transport).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub kind: JobKind,
    pub model: String,
    /// The version the request named; resolved again when the job runs.
    pub version: VersionChoice,
    /// Keeps the job on the client's side of a rollout.
    pub client_key: Option<String>,
    pub request: Vec<u8>,
}

/// A job as the queue keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub state: JobState,
    pub kind: JobKind,
    pub model: String,
    pub requested: VersionChoice,
    /// The version that ran it.
    pub served_version: Option<i64>,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub result: Option<Vec<u8>>,
    pub error: Option<(Code, String)>,
}

impl Job {
    /// A job just submitted.
    pub fn pending(id: &str, job: &NewJob, now: u64) -> Job {
        Job {
            id: id.to_string(),
            state: JobState::Pending,
            kind: job.kind,
            model: job.model.clone(),
            requested: job.version.clone(),
            served_version: None,
            created_at_ms: now,
            started_at_ms: None,
            finished_at_ms: None,
            result: None,
            error: None,
        }
    }

    /// The version to show: the one that ran it, else a number the request named.
    pub fn version(&self) -> Option<i64> {
        self.served_version.or(match self.requested {
            VersionChoice::Number(v) => Some(v),
            _ => None,
        })
    }
}

/// A job a worker has taken from the queue.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    /// The queue's handle of the delivery (the stream entry id for Redis).
    pub entry: String,
    pub job: NewJob,
    pub created_at_ms: u64,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded { version: i64, result: Vec<u8> },
    Failed { error: ServingError },
}

/// What a cancel found.
#[derive(Debug)]
pub enum Cancelled {
    /// The job had not started; it never will.
    Now(Job),
    /// Cancelled before (cancelling is idempotent).
    Already(Job),
    /// It is running or has ended.
    TooLate(Job),
}

/// Why the queue did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the job queue is full ({max} jobs are pending or running)")]
    Full { max: usize },
    #[error("the job queue is full (its pending requests would pass {max_bytes} bytes)")]
    FullBytes { max_bytes: usize },
    #[error("the job queue is unavailable: {0}")]
    Unavailable(String),
}

impl From<QueueError> for ServingError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full { .. } => {
                ServingError::resource_exhausted(format!("{e} (--max_pending_jobs); retry later"))
            }
            QueueError::FullBytes { .. } => ServingError::resource_exhausted(format!(
                "{e} (--max_pending_job_bytes); retry later"
            )),
            QueueError::Unavailable(_) => ServingError::unavailable(e.to_string()),
        }
    }
}

/// Runs a job's request the way the synchronous API would.
pub trait Executor: Send + Sync + 'static {
    fn run<'a>(&'a self, job: &'a NewJob) -> BoxFuture<'a, Outcome>;
}

/// The queue a server uses (one per server, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub enum Queue {
    Memory(MemoryQueue),
    Redis(RedisQueue),
}

impl Queue {
    async fn submit(&self, id: &str, job: &NewJob, now: u64) -> Result<(), QueueError> {
        match self {
            Queue::Memory(q) => q.submit(id, job, now),
            Queue::Redis(q) => q.submit(id, job, now).await,
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        match self {
            Queue::Memory(q) => Ok(q.get(id, now_ms())),
            Queue::Redis(q) => q.get(id).await,
        }
    }

    async fn cancel(&self, id: &str, now: u64) -> Result<Option<Cancelled>, QueueError> {
        match self {
            Queue::Memory(q) => Ok(q.cancel(id, now)),
            Queue::Redis(q) => q.cancel(id, now).await,
        }
    }

    /// Up to `max` jobs, moved to RUNNING; waits up to `wait` for the first.
    async fn take(&self, max: usize, wait: Duration) -> Result<Vec<Claimed>, QueueError> {
        match self {
            Queue::Memory(q) => Ok(q.take(max, wait).await),
            Queue::Redis(q) => q.take(max, wait).await,
        }
    }

    /// Jobs of processes that stopped touching them (Redis only).
    async fn reclaim(&self, max: usize) -> Result<Vec<Claimed>, QueueError> {
        match self {
            Queue::Memory(_) => Ok(Vec::new()),
            Queue::Redis(q) => q.reclaim(max).await,
        }
    }

    /// Stores the outcome unless the job already has one; true if this call stored it.
    async fn finish(
        &self,
        claimed: &Claimed,
        outcome: &Outcome,
        now: u64,
    ) -> Result<bool, QueueError> {
        match self {
            Queue::Memory(q) => Ok(q.finish(&claimed.id, outcome, now)),
            Queue::Redis(q) => q.finish(claimed, outcome, now).await,
        }
    }

    /// Tells the queue the process is still working on these deliveries.
    async fn touch(&self, entries: &[String]) -> Result<(), QueueError> {
        match self {
            Queue::Memory(_) => Ok(()),
            Queue::Redis(q) => q.touch(entries).await,
        }
    }

    /// Jobs pending or running, in the whole queue.
    async fn length(&self) -> Result<u64, QueueError> {
        match self {
            Queue::Memory(q) => Ok(q.length()),
            Queue::Redis(q) => q.length().await,
        }
    }

    fn sweep(&self, now: u64) {
        if let Queue::Memory(q) = self {
            q.sweep(now);
        }
    }
}

/// `--job_queue` and its companions.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// `memory`, or `redis://host:port/db`.
    pub queue: String,
    /// A job whose process has not touched it for this long is taken over by another.
    pub visibility_timeout: Duration,
    /// How long a finished job's result is kept.
    pub result_ttl: Duration,
    /// Jobs pending or running at once; beyond, submission is refused.
    pub max_pending: usize,
    /// Bytes of the requests of jobs pending or running; beyond, submission is refused.
    pub max_pending_bytes: usize,
    /// Jobs this process runs at once (they still share the inference threads); 0: this
    /// process only submits.
    pub concurrency: usize,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            queue: "memory".into(),
            visibility_timeout: Duration::from_secs(60),
            result_ttl: Duration::from_secs(86_400),
            max_pending: 10_000,
            max_pending_bytes: 1 << 30,
            concurrency: 16,
        }
    }
}

struct JobMetrics {
    transitions: IntCounterVec,
    queue_length: IntGauge,
    running: IntGauge,
    queue_wait: HistogramVec,
    run: HistogramVec,
}

impl JobMetrics {
    fn new(registry: &Registry) -> Self {
        let seconds = prometheus::exponential_buckets(0.001, 2.0, 22).expect("valid buckets");
        let transitions = IntCounterVec::new(
            Opts::new(
                ":candle_serving:jobs_total",
                "Asynchronous jobs by what happened to them in this process: submitted, succeeded, failed, cancelled, reclaimed (taken over from a process that stopped).",
            ),
            &["model_name", "state"],
        )
        .expect("valid metric");
        let queue_length = IntGauge::new(
            ":candle_serving:job_queue_length",
            "Jobs pending or running in the whole job queue (every process sharing it).",
        )
        .expect("valid metric");
        let running = IntGauge::new(
            ":candle_serving:jobs_running",
            "Jobs this process is running.",
        )
        .expect("valid metric");
        let queue_wait = HistogramVec::new(
            HistogramOpts::new(
                ":candle_serving:job_queue_wait_seconds",
                "Time from a job's submission to the start of its run, in seconds.",
            )
            .buckets(seconds.clone()),
            &["model_name"],
        )
        .expect("valid metric");
        let run = HistogramVec::new(
            HistogramOpts::new(
                ":candle_serving:job_run_seconds",
                "Time a job's run took, in seconds.",
            )
            .buckets(seconds),
            &["model_name"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(transitions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queue_length.clone()),
            Box::new(running.clone()),
            Box::new(queue_wait.clone()),
            Box::new(run.clone()),
        ] {
            registry
                .register(metric)
                .expect("job metrics registered once");
        }
        JobMetrics {
            transitions,
            queue_length,
            running,
            queue_wait,
            run,
        }
    }

    fn count(&self, model: &str, what: &str) {
        self.transitions.with_label_values(&[model, what]).inc();
    }
}

/// The job service of one server process: submission, lookup and the workers.
pub struct Jobs {
    queue: Queue,
    options: JobOptions,
    metrics: JobMetrics,
    /// Woken whenever a job of this process ends, for `wait`.
    ended: Notify,
    /// Jobs this process is running (until their outcome is stored).
    running: std::sync::atomic::AtomicUsize,
}

/// How often the workers touch their jobs, take over dead processes' jobs and update the
/// queue-length gauge.
fn maintenance_interval(visibility: Duration) -> Duration {
    (visibility / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// How long the workers wait for the models to load before they take jobs anyway.
pub const READY_WAIT: Duration = Duration::from_secs(120);

/// How long a worker blocks on an empty queue before it looks around again.
const TAKE_WAIT: Duration = Duration::from_millis(500);

impl Jobs {
    /// Checks the options and opens the queue (Redis is connected on first use, so the
    /// server starts while Redis is down).
    pub fn new(options: JobOptions, registry: &Registry) -> Result<Arc<Jobs>, String> {
        if options.max_pending == 0 {
            return Err("--max_pending_jobs must be at least 1".into());
        }
        if options.visibility_timeout.is_zero() {
            return Err("--job_visibility_timeout_seconds must be at least 1".into());
        }
        let queue = if options.queue == "memory" {
            Queue::Memory(MemoryQueue::new(
                options.max_pending,
                options.max_pending_bytes,
                options.result_ttl,
            ))
        } else if options.queue.starts_with("redis://") || options.queue.starts_with("rediss://") {
            Queue::Redis(RedisQueue::new(
                &options.queue,
                options.max_pending,
                options.max_pending_bytes,
                options.result_ttl,
                options.visibility_timeout,
            )?)
        } else {
            return Err(format!(
                "--job_queue={}: use `memory` or redis://host:port/db",
                options.queue
            ));
        };
        Ok(Arc::new(Jobs {
            queue,
            metrics: JobMetrics::new(registry),
            options,
            ended: Notify::new(),
            running: Default::default(),
        }))
    }

    /// Jobs this process is running; a graceful shutdown waits for them.
    pub fn running(&self) -> usize {
        self.running.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `memory`, or the Redis URL without its password.
    pub fn describe(&self) -> String {
        match &self.queue {
            Queue::Memory(_) => "memory".into(),
            Queue::Redis(q) => q.url().to_string(),
        }
    }

    /// Queues a checked request; the job as stored.
    pub async fn submit(&self, job: NewJob) -> Result<Job, ServingError> {
        let id = new_id();
        let now = now_ms();
        self.queue.submit(&id, &job, now).await.map_err(|e| {
            let e = ServingError::from(e);
            ServingError::new(e.code, format!("model `{}`: {}", job.model, e.message))
        })?;
        self.metrics.count(&job.model, "submitted");
        tracing::debug!(job = %id, model = %job.model, version = %job.version, "job submitted");
        Ok(Job::pending(&id, &job, now))
    }

    /// The job, or NOT_FOUND (unknown, expired, or not a job id at all).
    pub async fn get(&self, id: &str) -> Result<Job, ServingError> {
        if !is_job_id(id) {
            return Err(not_found(id));
        }
        self.queue
            .get(id)
            .await
            .map_err(ServingError::from)?
            .ok_or_else(|| not_found(id))
    }

    /// Cancels a job that has not started.
    pub async fn cancel(&self, id: &str) -> Result<Cancelled, ServingError> {
        if !is_job_id(id) {
            return Err(not_found(id));
        }
        let cancelled = self
            .queue
            .cancel(id, now_ms())
            .await
            .map_err(ServingError::from)?
            .ok_or_else(|| not_found(id))?;
        if let Cancelled::Now(job) = &cancelled {
            self.metrics.count(&job.model, "cancelled");
            tracing::debug!(job = %id, model = %job.model, "job cancelled");
            self.ended.notify_waiters();
        }
        Ok(cancelled)
    }

    /// The job once it has ended, or as it is at `until`.
    pub async fn wait(&self, id: &str, until: tokio::time::Instant) -> Result<Job, ServingError> {
        let mut pause = Duration::from_millis(5);
        loop {
            // Registered before the read, so an end in between is not missed.
            let ended = self.ended.notified();
            let job = self.get(id).await?;
            let now = tokio::time::Instant::now();
            if job.state.is_final() || now >= until {
                return Ok(job);
            }
            // Jobs that end in other processes are seen by polling, at most every 250 ms.
            let wake = (now + pause).min(until);
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Starts this process's workers; they stop taking jobs when `stop` turns true. They
    /// start taking jobs once `ready` says the models have loaded (or after
    /// [`READY_WAIT`]), so a process that joins the queue does not fail jobs for models it
    /// is still loading.
    pub fn start_workers(
        self: &Arc<Self>,
        executor: Arc<dyn Executor>,
        ready: Box<dyn Fn() -> bool + Send + Sync>,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(self.clone().work(executor, ready, stop))
    }

    async fn work(
        self: Arc<Self>,
        executor: Arc<dyn Executor>,
        ready: Box<dyn Fn() -> bool + Send + Sync>,
        mut stop: watch::Receiver<bool>,
    ) {
        if self.options.concurrency == 0 {
            return;
        }
        let waiting_since = Instant::now();
        while !ready() && waiting_since.elapsed() < READY_WAIT {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed() => return,
            }
        }
        let permits = Arc::new(Semaphore::new(self.options.concurrency));
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        let every = maintenance_interval(self.options.visibility_timeout);
        let mut last_maintenance: Option<Instant> = None;
        let mut failing: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                return;
            }
            let first = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
                _ = stop.changed() => return,
            };
            let mut held = vec![first];
            while let Ok(p) = permits.clone().try_acquire_owned() {
                held.push(p);
            }
            let mut claimed = Vec::new();
            let mut result = Ok(());
            if last_maintenance.is_none_or(|at| at.elapsed() >= every) {
                last_maintenance = Some(Instant::now());
                result = self.maintain(&in_flight, held.len(), &mut claimed).await;
            }
            if result.is_ok() && claimed.is_empty() {
                result = tokio::select! {
                    taken = self.queue.take(held.len(), TAKE_WAIT) => taken.map(|t| claimed = t),
                    _ = stop.changed() => return,
                };
            }
            match result {
                Ok(()) => {
                    if let Some(error) = failing.take() {
                        tracing::info!(queue = %self.describe(), %error, "the job queue is reachable again");
                    }
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    let error = e.to_string();
                    if failing.as_deref() != Some(error.as_str()) {
                        tracing::warn!(queue = %self.describe(), %error, "cannot take jobs; retrying");
                    }
                    failing = Some(error);
                    drop(held);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            for job in claimed {
                let permit = held.pop().expect("never more jobs than permits");
                in_flight.lock().insert(job.entry.clone());
                let (this, executor, in_flight) =
                    (self.clone(), executor.clone(), in_flight.clone());
                tokio::spawn(async move {
                    let entry = job.entry.clone();
                    this.run_one(job, executor.as_ref()).await;
                    in_flight.lock().remove(&entry);
                    drop(permit);
                });
            }
        }
    }

    /// Touches this process's running jobs, takes over jobs of dead processes (into
    /// `claimed`), refreshes the queue gauge and forgets expired results.
    async fn maintain(
        &self,
        in_flight: &Mutex<HashSet<String>>,
        room: usize,
        claimed: &mut Vec<Claimed>,
    ) -> Result<(), QueueError> {
        let entries: Vec<String> = in_flight.lock().iter().cloned().collect();
        if !entries.is_empty() {
            self.queue.touch(&entries).await?;
        }
        let reclaimed = self.queue.reclaim(room).await?;
        for job in &reclaimed {
            self.metrics.count(&job.job.model, "reclaimed");
            tracing::info!(job = %job.id, model = %job.job.model, "took over a job whose process stopped");
        }
        claimed.extend(reclaimed);
        self.metrics
            .queue_length
            .set(self.queue.length().await? as i64);
        self.queue.sweep(now_ms());
        Ok(())
    }

    async fn run_one(&self, claimed: Claimed, executor: &dyn Executor) {
        let model = claimed.job.model.clone();
        let waited = now_ms().saturating_sub(claimed.created_at_ms);
        self.metrics
            .queue_wait
            .with_label_values(&[&model])
            .observe(waited as f64 / 1000.0);
        self.metrics.running.inc();
        self.running
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        let outcome = loop {
            let outcome = Priority::Background.scope(executor.run(&claimed.job)).await;
            // Overload is the server's state, not the job's fault: wait for room.
            match &outcome {
                Outcome::Failed { error }
                    if error.code == Code::ResourceExhausted
                        && started.elapsed() < self.options.visibility_timeout =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                _ => break outcome,
            }
        };
        let took = started.elapsed();
        self.metrics.running.dec();
        self.metrics
            .run
            .with_label_values(&[&model])
            .observe(took.as_secs_f64());
        let (state, version) = match &outcome {
            Outcome::Succeeded { version, .. } => ("succeeded", Some(*version)),
            Outcome::Failed { .. } => ("failed", None),
        };
        // Until the outcome is stored the job is not acknowledged; if it never is, another
        // process runs it again after the visibility timeout.
        let mut pause = Duration::from_millis(100);
        let deadline = Instant::now() + self.options.visibility_timeout;
        loop {
            match self.queue.finish(&claimed, &outcome, now_ms()).await {
                Ok(stored) => {
                    if stored {
                        self.metrics.count(&model, state);
                    }
                    tracing::debug!(job = %claimed.id, model = %model, ?version, state, stored, waited_ms = waited, run_ms = took.as_millis() as u64, "job ended");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(job = %claimed.id, error = %e, "cannot store the job's result; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(job = %claimed.id, error = %e, "gave up storing the job's result; another process will run it again");
                    break;
                }
            }
        }
        self.running
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.ended.notify_waiters();
    }
}

fn not_found(id: &str) -> ServingError {
    ServingError::not_found(format!(
        "job `{id}` does not exist, or its result has expired"
    ))
}

/// 32 lower-case hex digits: 128 random bits.
fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether `id` has the form of a job id (anything else is never looked up).
pub fn is_job_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A version choice as the queue stores it: `latest`, `3` or `label:stable`.
fn encode_version(v: &VersionChoice) -> String {
    match v {
        VersionChoice::Latest => "latest".into(),
        VersionChoice::Number(n) => n.to_string(),
        VersionChoice::Label(l) => format!("label:{l}"),
    }
}

fn decode_version(s: &str) -> Option<VersionChoice> {
    if s == "latest" {
        return Some(VersionChoice::Latest);
    }
    if let Some(label) = s.strip_prefix("label:") {
        return Some(VersionChoice::Label(label.to_string()));
    }
    s.parse().ok().map(VersionChoice::Number)
}

fn code_from_name(name: &str) -> Code {
    [
        Code::Cancelled,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
    ]
    .into_iter()
    .find(|c| c.name() == name)
    .unwrap_or(Code::Unknown)
}

#[cfg(test)]
mod tests;
