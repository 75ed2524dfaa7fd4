//! Memory of the WeChat requests already received, so that a captured signed request cannot
//! be sent again. WeChat's signature covers only `(token, timestamp, nonce)`, not the
//! body: whoever sees one signed URL could otherwise post any message under any OpenID
//! with it for as long as the clock check lets the timestamp through. Behind a trait: a
//! bounded in-process set, or Redis (`doctor:wechat:seen:` keys, which this module owns)
//! so that every facade behind a load balancer shares one memory. It checks nothing
//! itself; the webhook verifies the signature and the clock first.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::expiring::{spawn_sweeper, ExpiringLru};
use super::redis_conn::RedisConnection;

#[derive(Debug, Clone, thiserror::Error)]
#[error("replay memory: {0}")]
pub struct ReplayError(pub String);

/// One signed request, as the replay memory knows it.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub signature: &'a str,
}

impl Signed<'_> {
    /// `{timestamp}:{nonce}:{signature}`, the signature in lower case: the webhook accepts
    /// either case, so a replay in upper case must land on the same key. The timestamp is
    /// digits and the signature hex, so the nonce between them cannot shift the borders.
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.timestamp,
            self.nonce,
            self.signature.to_ascii_lowercase()
        )
    }
}

#[async_trait::async_trait]
pub trait ReplayGuard: Send + Sync {
    /// Records the request; `Ok(true)` the first time, `Ok(false)` if it was seen within
    /// the memory's window. An error means the memory cannot be consulted, and the caller
    /// must refuse the request (fail closed).
    async fn first_seen(&self, request: Signed<'_>) -> Result<bool, ReplayError>;
    fn describe(&self) -> String;
}

/// How long to remember a request admitted under `max_clock_skew`: twice the window. A
/// request older than the window is refused by the clock check anyway; the margin covers
/// this server's own clock being stepped back.
pub fn window_for(max_clock_skew: Duration) -> Duration {
    max_clock_skew.saturating_mul(2).max(Duration::from_secs(1))
}

/// How many requests [`MemoryReplay`] remembers by default. Only correctly signed,
/// in-window requests are recorded, so only WeChat can fill it; at 100,000 over a
/// ten-minute window that is ~160 messages a second before a live entry is evicted.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// The in-process memory, for a single facade without Redis.
pub struct MemoryReplay {
    seen: Mutex<ExpiringLru<String, ()>>,
    remember: Duration,
}

impl MemoryReplay {
    /// Remembers each request for `remember` ([`window_for`] the clock window).
    pub fn new(capacity: usize, remember: Duration) -> Self {
        MemoryReplay {
            seen: Mutex::new(ExpiringLru::new(capacity)),
            remember,
        }
    }

    /// Drops expired entries every `every` until the memory is dropped.
    pub fn spawn_expiry(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        spawn_sweeper(self, every, "WeChat replay memory", |m: &MemoryReplay| {
            m.seen.lock().remove_expired(Instant::now())
        })
    }

    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.lock().is_empty()
    }
}

#[async_trait::async_trait]
impl ReplayGuard for MemoryReplay {
    async fn first_seen(&self, request: Signed<'_>) -> Result<bool, ReplayError> {
        let id = request.id();
        let now = Instant::now();
        let (evicted, capacity) = {
            let mut seen = self.seen.lock();
            if seen.contains_live(&id, now) {
                return Ok(false);
            }
            (seen.insert(id, (), now + self.remember), seen.capacity())
        };
        if evicted.lost_live(now) {
            // A request pushed out while still inside the window could be replayed: the
            // capacity is too small for the traffic.
            tracing::warn!(
                capacity,
                "WeChat replay memory full; an unexpired request was forgotten"
            );
        }
        Ok(true)
    }

    fn describe(&self) -> String {
        format!(
            "in-memory replay check ({} s window)",
            self.remember.as_secs()
        )
    }
}

const KEY_PREFIX: &str = "doctor:wechat:seen:";

/// The memory in Redis: `SET doctor:wechat:seen:{id} 1 NX EX {remember}`, atomic, so two
/// facades receiving the same replay at once still let only one through.
pub struct RedisReplay {
    redis: Arc<RedisConnection>,
    remember: Duration,
}

impl RedisReplay {
    pub fn new(redis: Arc<RedisConnection>, remember: Duration) -> Self {
        RedisReplay { redis, remember }
    }

    pub fn key(request: &Signed<'_>) -> String {
        format!("{KEY_PREFIX}{}", request.id())
    }
}

#[async_trait::async_trait]
impl ReplayGuard for RedisReplay {
    async fn first_seen(&self, request: Signed<'_>) -> Result<bool, ReplayError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(Self::key(&request))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(self.remember.as_secs().max(1));
        // `OK` when the key was set, nil when it already existed.
        let set: Option<String> = self.redis.query(cmd, "SET NX").await.map_err(ReplayError)?;
        Ok(set.is_some())
    }

    fn describe(&self) -> String {
        format!("replay check in Redis at {}", self.redis.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed<'a>(timestamp: &'a str, nonce: &'a str, signature: &'a str) -> Signed<'a> {
        Signed {
            timestamp,
            nonce,
            signature,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn remembers_a_request_for_its_window_only() {
        let memory = Arc::new(MemoryReplay::new(100, Duration::from_secs(600)));
        let sweeper = memory.spawn_expiry(Duration::from_secs(30));
        let first = signed("1700000000", "n1", "abcdef");
        assert!(memory.first_seen(first).await.unwrap());
        assert!(!memory.first_seen(first).await.unwrap(), "a replay");
        assert!(
            !memory
                .first_seen(signed("1700000000", "n1", "ABCDEF"))
                .await
                .unwrap(),
            "the signature's case does not make it new"
        );
        assert!(memory
            .first_seen(signed("1700000000", "n2", "abcdef"))
            .await
            .unwrap());
        tokio::time::sleep(Duration::from_secs(631)).await;
        assert!(memory.is_empty(), "swept after the window");
        drop(memory);
        tokio::time::timeout(Duration::from_secs(60), sweeper)
            .await
            .expect("the sweeper ends with its memory")
            .unwrap();
    }

    #[test]
    fn keys_are_namespaced_and_lower_case() {
        assert_eq!(
            RedisReplay::key(&signed("17", "n", "AbC")),
            "doctor:wechat:seen:17:n:abc"
        );
    }
}
