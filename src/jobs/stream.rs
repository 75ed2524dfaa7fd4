//! The shared job queue (`--job_queue=redis://host:port/db`): a Redis stream read through
//! one consumer group by every server process that points at the same Redis.
//!
//! Keys (all under `candle-serving:jobs:`; `pending-bytes` counts the requests' bytes of
//! jobs pending or running, against `--max_pending_job_bytes`):
//! - `queue`: the stream. One entry per job (`job` = its id), added on submission, read with
//!   XREADGROUP, acknowledged and deleted in the same script that stores the outcome, so its
//!   length is the number of jobs pending or running.
//! - `job:{id}`: a hash with the job's state, request and, once it ends, its result or error.
//!   It expires `--job_result_ttl_seconds` after the job ends.
//!
//! Every change of state is one Lua script, so it is atomic against the other processes:
//! submission checks the bound and adds entry and hash together; a job starts only from
//! PENDING (or RUNNING, when taken over); an outcome is stored only if none is, and acked
//! with it; a cancel succeeds only from PENDING. A process touches its running jobs (XCLAIM
//! JUSTID) every quarter of the visibility timeout; jobs nobody touched for longer are taken
//! over with XAUTOCLAIM.

use std::time::Duration;

use redis::{Script, Value};

use super::{
    code_from_name, decode_version, encode_version, Cancelled, Claimed, Job, JobKind, JobState,
    NewJob, Outcome, QueueError,
};
use crate::redis_conn::RedisConnection;

const STREAM: &str = "candle-serving:jobs:queue";
/// Bytes of the requests of jobs pending or running, against `--max_pending_job_bytes`.
const BYTES: &str = "candle-serving:jobs:pending-bytes";
const GROUP: &str = "candle-serving";
const JOB_PREFIX: &str = "candle-serving:jobs:job:";

/// The deadline of every command but the blocking read.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

const SUBMIT: &str = r#"
-- KEYS: stream, job hash, pending bytes. ARGV: max pending, max bytes, size, job id, then
-- the hash's fields and values. 1: queued; 0: too many jobs; -1: too many bytes.
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
local bytes = tonumber(redis.call('GET', KEYS[3]) or '0')
if bytes + tonumber(ARGV[3]) > tonumber(ARGV[2]) then
  return -1
end
redis.call('INCRBY', KEYS[3], ARGV[3])
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[4])
redis.call('HSET', KEYS[2], 'entry', entry, 'size', ARGV[3], unpack(ARGV, 5))
return 1
"#;

/// Gives back a job's request bytes (never below zero: a counter that drifted, say after a
/// restart, heals).
const RELEASE: &str = r#"
local function release(job, counter)
  local size = tonumber(redis.call('HGET', job, 'size') or '0')
  if redis.call('DECRBY', counter, size) < 0 then
    redis.call('SET', counter, 0)
  end
end
"#;

const START: &str = r#"
-- KEYS: job hash. ARGV: consumer, now. The job's request, or nil if it may not start.
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'PENDING' and state ~= 'RUNNING' then
  return false
end
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'started_at', ARGV[2], 'worker', ARGV[1])
return redis.call('HMGET', KEYS[1], 'kind', 'model', 'version', 'client_key', 'request', 'created_at')
"#;

const FINISH: &str = r#"
-- KEYS: job hash, stream, pending bytes. ARGV: ttl seconds, entry, group, then the fields
-- and values.
local state = redis.call('HGET', KEYS[1], 'state')
local stored = 0
if state == 'PENDING' or state == 'RUNNING' then
  release(KEYS[1], KEYS[3])
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
  redis.call('HDEL', KEYS[1], 'request')
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  stored = 1
end
-- pcall: after a Redis restart the group may be gone; the outcome is stored all the same.
redis.pcall('XACK', KEYS[2], ARGV[3], ARGV[2])
redis.pcall('XDEL', KEYS[2], ARGV[2])
return stored
"#;

const CANCEL: &str = r#"
-- KEYS: job hash, stream, pending bytes. ARGV: ttl seconds, now, group. The state found
-- (nil: no job).
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'PENDING' then
  release(KEYS[1], KEYS[3])
  redis.call('HSET', KEYS[1], 'state', 'CANCELLED', 'finished_at', ARGV[2])
  redis.call('HDEL', KEYS[1], 'request')
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  local entry = redis.call('HGET', KEYS[1], 'entry')
  redis.pcall('XACK', KEYS[2], ARGV[3], entry)
  redis.pcall('XDEL', KEYS[2], entry)
end
return state
"#;

pub struct RedisQueue {
    connection: RedisConnection,
    /// XREADGROUP with BLOCK holds its connection: it gets one of its own.
    blocking: RedisConnection,
    consumer: String,
    max_pending: usize,
    max_pending_bytes: usize,
    ttl_seconds: u64,
    visibility_ms: u64,
    /// Where the next XAUTOCLAIM scan starts.
    cursor: parking_lot::Mutex<String>,
    scripts: Scripts,
}

struct Scripts {
    submit: Script,
    start: Script,
    finish: Script,
    cancel: Script,
}

fn job_key(id: &str) -> String {
    format!("{JOB_PREFIX}{id}")
}

fn unavailable(e: String) -> QueueError {
    QueueError::Unavailable(e)
}

impl RedisQueue {
    pub fn new(
        url: &str,
        max_pending: usize,
        max_pending_bytes: usize,
        ttl: Duration,
        visibility: Duration,
    ) -> Result<Self, String> {
        let connection = RedisConnection::new(url, COMMAND_TIMEOUT)?;
        let blocking = RedisConnection::new(url, COMMAND_TIMEOUT + super::TAKE_WAIT)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        Ok(RedisQueue {
            connection,
            blocking,
            consumer: format!(
                "{host}-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            max_pending,
            max_pending_bytes,
            ttl_seconds: ttl.as_secs().max(1),
            visibility_ms: visibility.as_millis() as u64,
            cursor: parking_lot::Mutex::new("0-0".into()),
            scripts: Scripts {
                submit: Script::new(SUBMIT),
                start: Script::new(START),
                finish: Script::new(&format!("{RELEASE}{FINISH}")),
                cancel: Script::new(&format!("{RELEASE}{CANCEL}")),
            },
        })
    }

    pub fn url(&self) -> &str {
        self.connection.url()
    }

    pub async fn submit(&self, id: &str, job: &NewJob, now: u64) -> Result<(), QueueError> {
        let mut invocation = self.scripts.submit.key(STREAM);
        invocation
            .key(job_key(id))
            .key(BYTES)
            .arg(self.max_pending)
            .arg(self.max_pending_bytes)
            .arg(job.request.len())
            .arg(id)
            .arg("state")
            .arg(JobState::Pending.as_str())
            .arg("kind")
            .arg(job.kind.as_str())
            .arg("model")
            .arg(&job.model)
            .arg("version")
            .arg(encode_version(&job.version))
            .arg("client_key")
            .arg(job.client_key.as_deref().unwrap_or(""))
            .arg("request")
            .arg(&job.request[..])
            .arg("created_at")
            .arg(now);
        let added: i64 = self
            .connection
            .invoke(&invocation, "submitting the job")
            .await
            .map_err(unavailable)?;
        match added {
            0 => Err(QueueError::Full {
                max: self.max_pending,
            }),
            -1 => Err(QueueError::FullBytes {
                max_bytes: self.max_pending_bytes,
            }),
            _ => Ok(()),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(job_key(id));
        let fields: Vec<(String, Vec<u8>)> = self
            .connection
            .query(cmd, "HGETALL")
            .await
            .map_err(unavailable)?;
        Ok(job_from_fields(id, &fields))
    }

    pub async fn cancel(&self, id: &str, now: u64) -> Result<Option<Cancelled>, QueueError> {
        let mut invocation = self.scripts.cancel.key(job_key(id));
        invocation
            .key(STREAM)
            .key(BYTES)
            .arg(self.ttl_seconds)
            .arg(now)
            .arg(GROUP);
        let before: Option<String> = self
            .connection
            .invoke(&invocation, "cancelling the job")
            .await
            .map_err(unavailable)?;
        let Some(before) = before else {
            return Ok(None);
        };
        let Some(job) = self.get(id).await? else {
            return Ok(None);
        };
        Ok(Some(match JobState::parse(&before) {
            Some(JobState::Pending) => Cancelled::Now(job),
            Some(JobState::Cancelled) => Cancelled::Already(job),
            _ => Cancelled::TooLate(job),
        }))
    }

    /// Creates the stream and the group if they do not exist (a fresh or restarted Redis).
    async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(STREAM)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.connection.query::<Value>(cmd, "XGROUP CREATE").await {
            Ok(_) => Ok(()),
            Err(e) if e.contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub async fn take(&self, max: usize, wait: Duration) -> Result<Vec<Claimed>, QueueError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(wait.as_millis() as u64)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">");
        let reply = match self
            .blocking
            .query::<Value>(cmd.clone(), "XREADGROUP")
            .await
        {
            Err(e) if e.contains("NOGROUP") => {
                self.ensure_group().await?;
                self.blocking
                    .query::<Value>(cmd, "XREADGROUP")
                    .await
                    .map_err(unavailable)?
            }
            other => other.map_err(unavailable)?,
        };
        // [[stream, [[entry, [field, value, ...]], ...]]], or nil when nothing came.
        let entries = match &reply {
            Value::Array(streams) => streams
                .first()
                .and_then(|s| match s {
                    Value::Array(pair) => pair.get(1),
                    _ => None,
                })
                .map(stream_entries)
                .unwrap_or_default(),
            Value::Map(streams) => streams
                .first()
                .map(|(_, e)| stream_entries(e))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        self.start_all(entries).await
    }

    pub async fn reclaim(&self, max: usize) -> Result<Vec<Claimed>, QueueError> {
        let cursor = self.cursor.lock().clone();
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(STREAM)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.visibility_ms)
            .arg(&cursor)
            .arg("COUNT")
            .arg(max);
        let reply = match self.connection.query::<Value>(cmd, "XAUTOCLAIM").await {
            Err(e) if e.contains("NOGROUP") => {
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            other => other.map_err(unavailable)?,
        };
        // [next cursor, [[entry, [field, value, ...]], ...], [deleted entries]]
        let Value::Array(parts) = reply else {
            return Ok(Vec::new());
        };
        if let Some(next) = parts.first().and_then(text) {
            *self.cursor.lock() = next;
        }
        let entries = parts.get(1).map(stream_entries).unwrap_or_default();
        self.start_all(entries).await
    }

    /// Moves each delivered job to RUNNING; acknowledges deliveries of jobs that may not
    /// start (cancelled, already finished by a process that died before acking, expired).
    async fn start_all(&self, entries: Vec<(String, String)>) -> Result<Vec<Claimed>, QueueError> {
        let now = super::now_ms();
        let mut claimed = Vec::new();
        for (entry, id) in entries {
            let mut invocation = self.scripts.start.key(job_key(&id));
            invocation.arg(&self.consumer).arg(now);
            let fields: Option<Vec<Option<Vec<u8>>>> = self
                .connection
                .invoke(&invocation, "starting the job")
                .await
                .map_err(unavailable)?;
            match fields.as_deref().and_then(request_from_fields) {
                Some((job, created_at_ms)) => claimed.push(Claimed {
                    id,
                    entry,
                    job,
                    created_at_ms,
                }),
                None => self.drop_entry(&entry).await?,
            }
        }
        Ok(claimed)
    }

    async fn drop_entry(&self, entry: &str) -> Result<(), QueueError> {
        let mut ack = redis::cmd("XACK");
        ack.arg(STREAM).arg(GROUP).arg(entry);
        self.connection
            .query::<Value>(ack, "XACK")
            .await
            .map_err(unavailable)?;
        let mut del = redis::cmd("XDEL");
        del.arg(STREAM).arg(entry);
        self.connection
            .query::<Value>(del, "XDEL")
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn finish(
        &self,
        claimed: &Claimed,
        outcome: &Outcome,
        now: u64,
    ) -> Result<bool, QueueError> {
        let mut invocation = self.scripts.finish.key(job_key(&claimed.id));
        invocation
            .key(STREAM)
            .key(BYTES)
            .arg(self.ttl_seconds)
            .arg(&claimed.entry)
            .arg(GROUP)
            .arg("finished_at")
            .arg(now);
        match outcome {
            Outcome::Succeeded { version, result } => {
                invocation
                    .arg("state")
                    .arg(JobState::Succeeded.as_str())
                    .arg("served_version")
                    .arg(*version)
                    .arg("result")
                    .arg(&result[..]);
            }
            Outcome::Failed { error } => {
                invocation
                    .arg("state")
                    .arg(JobState::Failed.as_str())
                    .arg("error_code")
                    .arg(error.code.name())
                    .arg("error")
                    .arg(&error.message);
            }
        }
        let stored: i64 = self
            .connection
            .invoke(&invocation, "storing the job's outcome")
            .await
            .map_err(unavailable)?;
        Ok(stored == 1)
    }

    pub async fn touch(&self, entries: &[String]) -> Result<(), QueueError> {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(STREAM).arg(GROUP).arg(&self.consumer).arg(0);
        for entry in entries {
            cmd.arg(entry);
        }
        cmd.arg("JUSTID");
        self.connection
            .query::<Value>(cmd, "XCLAIM")
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn length(&self) -> Result<u64, QueueError> {
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(STREAM);
        self.connection
            .query(cmd, "XLEN")
            .await
            .map_err(unavailable)
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `[[entry, [field, value, ...]], ...]` → (entry, job id). Entries deleted since they
/// were delivered come with nil fields and are skipped.
fn stream_entries(v: &Value) -> Vec<(String, String)> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let Value::Array(pair) = e else { return None };
            let entry = text(pair.first()?)?;
            let fields = match pair.get(1)? {
                Value::Array(f) => f.clone(),
                Value::Map(m) => m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
                _ => return None,
            };
            let id = fields
                .chunks(2)
                .find(|kv| kv.len() == 2 && text(&kv[0]).as_deref() == Some("job"))
                .and_then(|kv| text(&kv[1]))?;
            Some((entry, id))
        })
        .filter(|(_, id)| super::is_job_id(id))
        .collect()
}

fn utf8(v: &Option<Vec<u8>>) -> Option<String> {
    v.as_ref().and_then(|b| String::from_utf8(b.clone()).ok())
}

/// The START script's reply: kind, model, version, client key, request, created_at.
fn request_from_fields(f: &[Option<Vec<u8>>]) -> Option<(NewJob, u64)> {
    let [kind, model, version, client_key, request, created_at] = f else {
        return None;
    };
    let job = NewJob {
        kind: JobKind::parse(&utf8(kind)?)?,
        model: utf8(model)?,
        version: decode_version(&utf8(version)?)?,
        client_key: utf8(client_key).filter(|k| !k.is_empty()),
        request: request.clone()?,
    };
    Some((job, utf8(created_at)?.parse().ok()?))
}

/// A job from its hash (HGETALL); `None` if there is none or it is not one of ours.
fn job_from_fields(id: &str, fields: &[(String, Vec<u8>)]) -> Option<Job> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    };
    let number = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
    Some(Job {
        id: id.to_string(),
        state: JobState::parse(&get("state")?)?,
        kind: JobKind::parse(&get("kind")?)?,
        model: get("model")?,
        requested: decode_version(&get("version")?)?,
        served_version: get("served_version").and_then(|v| v.parse().ok()),
        created_at_ms: number("created_at")?,
        started_at_ms: number("started_at"),
        finished_at_ms: number("finished_at"),
        result: fields
            .iter()
            .find(|(k, _)| k == "result")
            .map(|(_, v)| v.clone()),
        error: get("error").map(|m| (code_from_name(&get("error_code").unwrap_or_default()), m)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn stream_replies_are_read_and_foreign_entries_skipped() {
        let id = "0123456789abcdef0123456789abcdef";
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("job"), bulk(id)])]),
            // Deleted since delivery.
            Value::Array(vec![bulk("2-0"), Value::Nil]),
            // Not a job id: never used in a key.
            Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("job"), bulk("x*")]),
            ]),
        ]);
        assert_eq!(
            stream_entries(&reply),
            vec![("1-0".to_string(), id.to_string())]
        );
    }

    #[test]
    fn a_job_hash_reads_back() {
        let fields: Vec<(String, Vec<u8>)> = [
            ("state", "FAILED"),
            ("kind", "rest"),
            ("model", "m"),
            ("version", "label:stable"),
            ("created_at", "5"),
            ("finished_at", "9"),
            ("error_code", "INVALID_ARGUMENT"),
            ("error", "bad"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        let job = job_from_fields("a", &fields).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(
            job.requested,
            crate::manager::VersionChoice::Label("stable".into())
        );
        assert_eq!(job.finished_at_ms, Some(9));
        assert_eq!(
            job.error,
            Some((crate::error::Code::InvalidArgument, "bad".into()))
        );
        assert!(job_from_fields("a", &fields[1..]).is_none());
    }
}
