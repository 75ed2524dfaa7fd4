//! Per-user conversation state: the previous message and the symptoms gathered so far,
//! kept with an expiry. Behind a trait: Redis for deployments, a bounded in-process map
//! when no Redis URL is given. Both expire sessions after the same TTL. It owns the
//! `doctor:session:` key space in Redis and nothing else there.
//!
//! Sessions are keyed by entry point and user ([`SessionKey`]): the JSON chat API and the
//! WeChat webhook name users independently, so a chat client that sends a WeChat OpenID as
//! its `user` must never read or reset that patient's conversation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::expiring::{spawn_sweeper, ExpiringLru};
use super::redis_conn::RedisConnection;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user's previous message.
    pub last_message: String,
    /// Canonical symptom names gathered in this conversation, in the order they came up.
    pub symptoms: Vec<String>,
    /// Messages in this conversation.
    pub turns: u32,
}

/// The entry point a user came through; each has its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// The WeChat webhook; users are OpenIDs that WeChat vouches for.
    WeChat,
    /// The JSON chat API; users are whatever its (authenticated) client calls them.
    Chat,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::WeChat => "wechat",
            Channel::Chat => "chat",
        }
    }
}

/// Whose session: a user within one channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub channel: Channel,
    pub user: String,
}

impl SessionKey {
    pub fn new(channel: Channel, user: impl Into<String>) -> Self {
        SessionKey {
            channel,
            user: user.into(),
        }
    }

    pub fn wechat(openid: impl Into<String>) -> Self {
        Self::new(Channel::WeChat, openid)
    }

    pub fn chat(user: impl Into<String>) -> Self {
        Self::new(Channel::Chat, user)
    }
}

/// `wechat:{openid}` / `chat:{user}`: the channel comes first and has no `:` in it, so
/// no user name of one channel can spell a key of the other.
impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.channel.as_str(), self.user)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    async fn load(&self, key: &SessionKey) -> Result<Option<Session>, StoreError>;
    async fn save(
        &self,
        key: &SessionKey,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// What kind of store this is, for logs and health.
    fn describe(&self) -> String;
}

/// How many sessions [`MemoryStore::default`] keeps.
pub const DEFAULT_MEMORY_SESSIONS: usize = 100_000;
/// How often the facade's in-memory store drops expired sessions.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(30);

/// The default: sessions in this process, gone on restart. At most `capacity` of them (the
/// least recently used makes room), so a flood of new users costs bounded memory; expired
/// ones are dropped by [`MemoryStore::spawn_expiry`]'s task, not only when read again.
pub struct MemoryStore {
    sessions: Mutex<ExpiringLru<SessionKey, Session>>,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        MemoryStore {
            sessions: Mutex::new(ExpiringLru::new(capacity)),
        }
    }

    /// Drops expired sessions every `every` until the store is dropped.
    pub fn spawn_expiry(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        spawn_sweeper(self, every, "sessions", |store: &MemoryStore| {
            store.remove_expired()
        })
    }

    /// Drops expired sessions now; returns how many.
    pub fn remove_expired(&self) -> usize {
        self.sessions.lock().remove_expired(Instant::now())
    }

    /// Sessions held, expired or not.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.lock().is_empty()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_MEMORY_SESSIONS)
    }
}

#[async_trait::async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        Ok(self.sessions.lock().get(key, Instant::now()).cloned())
    }

    async fn save(
        &self,
        key: &SessionKey,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let evicted = self
            .sessions
            .lock()
            .insert(key.clone(), session.clone(), now + ttl);
        if evicted.lost_live(now) {
            tracing::debug!(
                evicted = evicted.count,
                "session store full; the least recently used sessions were dropped"
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let capacity = self.sessions.lock().capacity();
        format!("in-memory sessions (at most {capacity})")
    }
}

/// Sessions in Redis, as JSON under `doctor:session:{channel}:{user}` with `SET ... EX
/// ttl`. The connection manager reconnects by itself when Redis comes back.
pub struct RedisStore {
    redis: Arc<RedisConnection>,
}

const KEY_PREFIX: &str = "doctor:session:";

impl RedisStore {
    /// Checks the URL now; connects on first use, so the facade starts even while Redis is down.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self::with_connection(Arc::new(
            RedisConnection::new(url, timeout).map_err(StoreError)?,
        )))
    }

    /// Shares a connection (the facade's replay memory uses the same one).
    pub fn with_connection(redis: Arc<RedisConnection>) -> Self {
        RedisStore { redis }
    }

    pub fn key(key: &SessionKey) -> String {
        format!("{KEY_PREFIX}{key}")
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Session>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(Self::key(key));
        let value: Option<String> = self.redis.query(cmd, "GET").await.map_err(StoreError)?;
        match value {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| StoreError(format!("session of {key} is not valid JSON: {e}"))),
        }
    }

    async fn save(
        &self,
        key: &SessionKey,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(session).map_err(|e| StoreError(e.to_string()))?;
        let seconds = ttl.as_secs().max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(Self::key(key)).arg(json).arg("EX").arg(seconds);
        self.redis.query::<()>(cmd, "SET").await.map_err(StoreError)
    }

    fn describe(&self) -> String {
        format!("Redis at {}", self.redis.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(message: &str) -> Session {
        Session {
            last_message: message.into(),
            symptoms: vec!["咳嗽".into()],
            turns: 1,
        }
    }

    const TTL: Duration = Duration::from_secs(600);

    #[tokio::test(start_paused = true)]
    async fn a_full_store_evicts_the_least_recently_used_session() {
        let store = MemoryStore::new(2);
        let (a, b, c) = (
            SessionKey::chat("a"),
            SessionKey::chat("b"),
            SessionKey::chat("c"),
        );
        store.save(&a, &session("a"), TTL).await.unwrap();
        store.save(&b, &session("b"), TTL).await.unwrap();
        // Reading a makes b the least recently used.
        assert!(store.load(&a).await.unwrap().is_some());
        store.save(&c, &session("c"), TTL).await.unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.load(&b).await.unwrap(), None, "b was evicted");
        assert_eq!(store.load(&a).await.unwrap(), Some(session("a")));
        assert_eq!(store.load(&c).await.unwrap(), Some(session("c")));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_sessions_go_without_any_save_or_load() {
        let store = Arc::new(MemoryStore::new(10));
        let sweeper = store.spawn_expiry(Duration::from_secs(1));
        store
            .save(
                &SessionKey::chat("a"),
                &session("a"),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        store
            .save(
                &SessionKey::wechat("b"),
                &session("b"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(store.len(), 1, "the sweeper dropped the expired session");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(store.is_empty());

        // The task holds the store weakly and ends once the store is gone.
        drop(store);
        tokio::time::timeout(Duration::from_secs(5), sweeper)
            .await
            .expect("the sweeper ends with its store")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_session_loads_as_none() {
        let store = MemoryStore::new(10);
        let key = SessionKey::chat("a");
        store
            .save(&key, &session("a"), Duration::from_secs(5))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(store.load(&key).await.unwrap(), Some(session("a")));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(store.load(&key).await.unwrap(), None);
        assert!(store.is_empty(), "the read dropped it");
    }

    #[tokio::test]
    async fn channels_are_separate_key_spaces() {
        let store = MemoryStore::default();
        store
            .save(&SessionKey::wechat("u1"), &session("wechat"), TTL)
            .await
            .unwrap();
        assert_eq!(store.load(&SessionKey::chat("u1")).await.unwrap(), None);
        store
            .save(&SessionKey::chat("u1"), &session("chat"), TTL)
            .await
            .unwrap();
        assert_eq!(
            store.load(&SessionKey::wechat("u1")).await.unwrap(),
            Some(session("wechat"))
        );
        assert_eq!(
            RedisStore::key(&SessionKey::wechat("u1")),
            "doctor:session:wechat:u1"
        );
        assert_eq!(
            RedisStore::key(&SessionKey::chat("u1")),
            "doctor:session:chat:u1"
        );
        assert_ne!(
            RedisStore::key(&SessionKey::chat("wechat:u1")),
            RedisStore::key(&SessionKey::wechat("u1")),
        );
    }
}
