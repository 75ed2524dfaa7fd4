//! The in-process job queue (`--job_queue=memory`, the default): nothing to install, jobs
//! live as long as the process. Same rules as the Redis queue: a bound on jobs pending or
//! running, cancel only before the start, one stored outcome, results that expire. Finished
//! jobs also share a byte budget ([`MAX_RETAINED_BYTES`]): past it the oldest are forgotten
//! before their time, so a client submitting without end cannot fill the process's memory
//! with results nobody collects.

use std::collections::{HashMap, VecDeque};

/// Bytes of finished jobs' results and errors the process keeps at most.
pub const MAX_RETAINED_BYTES: usize = 256 * 1024 * 1024;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Cancelled, Claimed, Job, JobState, NewJob, Outcome, QueueError};

/// What a finished job's record costs besides its result: id, timestamps, names.
const RECORD_BYTES: usize = 256;

struct Stored {
    job: Job,
    request: NewJob,
    /// When a finished job's record goes (ms since the epoch).
    expires_at_ms: Option<u64>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Stored>,
    pending: VecDeque<String>,
    running: usize,
    /// Bytes of the requests of jobs pending or running.
    pending_bytes: usize,
    /// Finished jobs, oldest first, with the bytes each holds.
    finished: VecDeque<(String, usize)>,
    retained_bytes: usize,
}

impl State {
    /// Forgets the oldest finished jobs while over `budget` bytes, and those expired by `now`.
    fn trim(&mut self, budget: usize, now: u64) {
        while let Some((id, bytes)) = self.finished.front() {
            let expired = self
                .jobs
                .get(id)
                .is_none_or(|s| s.expires_at_ms.is_some_and(|at| at <= now));
            if self.retained_bytes <= budget && !expired {
                break;
            }
            self.retained_bytes -= bytes;
            let id = id.clone();
            self.finished.pop_front();
            self.jobs.remove(&id);
        }
    }

    fn retain(&mut self, id: &str, bytes: usize, budget: usize, now: u64) {
        self.finished.push_back((id.to_string(), bytes));
        self.retained_bytes += bytes;
        self.trim(budget, now);
    }
}

pub struct MemoryQueue {
    state: Mutex<State>,
    arrived: Notify,
    max_pending: usize,
    max_pending_bytes: usize,
    ttl: Duration,
    retained_budget: usize,
}

impl MemoryQueue {
    pub fn new(max_pending: usize, max_pending_bytes: usize, ttl: Duration) -> Self {
        MemoryQueue {
            state: Mutex::default(),
            arrived: Notify::new(),
            max_pending,
            max_pending_bytes,
            ttl,
            retained_budget: MAX_RETAINED_BYTES,
        }
    }

    /// The same with another budget for finished jobs (tests).
    pub fn with_budget(max_pending: usize, ttl: Duration, retained_budget: usize) -> Self {
        MemoryQueue {
            retained_budget,
            ..MemoryQueue::new(max_pending, usize::MAX, ttl)
        }
    }

    pub fn submit(&self, id: &str, request: &NewJob, now: u64) -> Result<(), QueueError> {
        let mut state = self.state.lock();
        if state.pending.len() + state.running >= self.max_pending {
            return Err(QueueError::Full {
                max: self.max_pending,
            });
        }
        if state.pending_bytes.saturating_add(request.request.len()) > self.max_pending_bytes {
            return Err(QueueError::FullBytes {
                max_bytes: self.max_pending_bytes,
            });
        }
        state.pending_bytes += request.request.len();
        let job = Job::pending(id, request, now);
        state.jobs.insert(
            id.to_string(),
            Stored {
                job,
                request: request.clone(),
                expires_at_ms: None,
            },
        );
        state.pending.push_back(id.to_string());
        drop(state);
        self.arrived.notify_one();
        Ok(())
    }

    pub fn get(&self, id: &str, now: u64) -> Option<Job> {
        let state = self.state.lock();
        let stored = state.jobs.get(id)?;
        if stored.expires_at_ms.is_some_and(|at| at <= now) {
            return None;
        }
        Some(stored.job.clone())
    }

    pub fn cancel(&self, id: &str, now: u64) -> Option<Cancelled> {
        let mut state = self.state.lock();
        let ttl = self.ttl.as_millis() as u64;
        let stored = state.jobs.get_mut(id)?;
        if stored.expires_at_ms.is_some_and(|at| at <= now) {
            return None;
        }
        let size = stored.request.request.len();
        let cancelled = match stored.job.state {
            JobState::Pending => {
                stored.request.request = Vec::new();
                stored.job.state = JobState::Cancelled;
                stored.job.finished_at_ms = Some(now);
                stored.expires_at_ms = Some(now + ttl);
                Cancelled::Now(stored.job.clone())
            }
            JobState::Cancelled => Cancelled::Already(stored.job.clone()),
            _ => Cancelled::TooLate(stored.job.clone()),
        };
        if matches!(cancelled, Cancelled::Now(_)) {
            state.pending.retain(|p| p != id);
            state.pending_bytes -= size;
            state.retain(id, RECORD_BYTES, self.retained_budget, now);
        }
        Some(cancelled)
    }

    /// Up to `max` pending jobs, now running; waits up to `wait` for one to arrive.
    pub async fn take(&self, max: usize, wait: Duration) -> Vec<Claimed> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            let taken = self.take_now(max, super::now_ms());
            if !taken.is_empty() {
                return taken;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Vec::new();
            }
        }
    }

    fn take_now(&self, max: usize, now: u64) -> Vec<Claimed> {
        let mut state = self.state.lock();
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some(id) = state.pending.pop_front() else {
                break;
            };
            let Some(stored) = state.jobs.get_mut(&id) else {
                continue;
            };
            stored.job.state = JobState::Running;
            stored.job.started_at_ms = Some(now);
            taken.push(Claimed {
                id: id.clone(),
                entry: id,
                job: stored.request.clone(),
                created_at_ms: stored.job.created_at_ms,
            });
        }
        state.running += taken.len();
        // Another worker may be waiting too; leave it the rest.
        if !state.pending.is_empty() {
            self.arrived.notify_one();
        }
        taken
    }

    pub fn finish(&self, id: &str, outcome: &Outcome, now: u64) -> bool {
        let mut state = self.state.lock();
        let ttl = self.ttl.as_millis() as u64;
        let Some(stored) = state.jobs.get_mut(id) else {
            return false;
        };
        if stored.job.state.is_final() {
            return false;
        }
        let was_running = stored.job.state == JobState::Running;
        stored.job.finished_at_ms = Some(now);
        stored.expires_at_ms = Some(now + ttl);
        match outcome {
            Outcome::Succeeded { version, result } => {
                stored.job.state = JobState::Succeeded;
                stored.job.served_version = Some(*version);
                stored.job.result = Some(result.clone());
            }
            Outcome::Failed { error } => {
                stored.job.state = JobState::Failed;
                stored.job.error = Some((error.code, error.message.clone()));
            }
        }
        // The request is not needed any more.
        let size = stored.request.request.len();
        stored.request.request = Vec::new();
        let bytes = RECORD_BYTES
            + stored.job.result.as_ref().map_or(0, Vec::len)
            + stored.job.error.as_ref().map_or(0, |(_, m)| m.len());
        if was_running {
            state.running -= 1;
        }
        state.pending_bytes -= size;
        state.retain(id, bytes, self.retained_budget, now);
        true
    }

    pub fn length(&self) -> u64 {
        let state = self.state.lock();
        (state.pending.len() + state.running) as u64
    }

    /// Forgets finished jobs whose results have expired (they finish in order and share one
    /// TTL, so the expired ones are at the front).
    pub fn sweep(&self, now: u64) {
        self.state.lock().trim(self.retained_budget, now);
    }
}
