//! Per-user conversation state: the previous message and the symptoms gathered so far,
//! kept with an expiry. Behind a trait: Redis for deployments, an in-process map when no
//! Redis URL is given. Both expire sessions after the same TTL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::connect::Reconnecting;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user's previous message.
    pub last_message: String,
    /// Canonical symptom names gathered in this conversation, in the order they came up.
    pub symptoms: Vec<String>,
    /// Messages in this conversation.
    pub turns: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    async fn load(&self, user: &str) -> Result<Option<Session>, StoreError>;
    async fn save(&self, user: &str, session: &Session, ttl: Duration) -> Result<(), StoreError>;
    /// What kind of store this is, for logs and health.
    fn describe(&self) -> String;
}

/// The default: sessions in this process, gone on restart.
#[derive(Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, (Session, Instant)>>,
}

#[async_trait::async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, user: &str) -> Result<Option<Session>, StoreError> {
        let mut sessions = self.sessions.lock();
        match sessions.get(user) {
            Some((session, expires)) if *expires > Instant::now() => Ok(Some(session.clone())),
            Some(_) => {
                sessions.remove(user);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn save(&self, user: &str, session: &Session, ttl: Duration) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        // Drop expired sessions now and then, so the map does not grow without bound.
        if sessions.len() > 10_000 {
            sessions.retain(|_, (_, expires)| *expires > now);
        }
        sessions.insert(user.to_string(), (session.clone(), now + ttl));
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory sessions".into()
    }
}

/// Sessions in Redis, as JSON under `doctor:session:{user}` with `SET ... EX ttl`. The
/// connection manager reconnects by itself when Redis comes back.
pub struct RedisStore {
    url: String,
    client: redis::Client,
    connection: Reconnecting<redis::aio::ConnectionManager>,
    timeout: Duration,
}

const KEY_PREFIX: &str = "doctor:session:";

impl RedisStore {
    /// Checks the URL now; connects on first use, so the facade starts even while Redis is down.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError(format!("invalid Redis URL {url}: {e}")))?;
        Ok(RedisStore {
            url: url.to_string(),
            client,
            connection: Reconnecting::new(),
            timeout,
        })
    }

    pub fn key(user: &str) -> String {
        format!("{KEY_PREFIX}{user}")
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, StoreError> {
        let connect = || async {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1);
            let manager =
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), config);
            tokio::time::timeout(self.timeout, manager)
                .await
                .map_err(|_| format!("connecting to {} timed out", self.url))?
                .map_err(|e| format!("cannot connect to {}: {e}", self.url))
        };
        self.connection.get(connect).await.map_err(StoreError)
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, user: &str) -> Result<Option<Session>, StoreError> {
        let mut c = self.connection().await?;
        let value: Option<String> = tokio::time::timeout(
            self.timeout,
            redis::cmd("GET").arg(Self::key(user)).query_async(&mut c),
        )
        .await
        .map_err(|_| StoreError("GET timed out".into()))?
        .map_err(|e| StoreError(format!("GET failed: {e}")))?;
        match value {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| StoreError(format!("session of {user} is not valid JSON: {e}"))),
        }
    }

    async fn save(&self, user: &str, session: &Session, ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.connection().await?;
        let json = serde_json::to_string(session).map_err(|e| StoreError(e.to_string()))?;
        let seconds = ttl.as_secs().max(1);
        tokio::time::timeout(
            self.timeout,
            redis::cmd("SET")
                .arg(Self::key(user))
                .arg(json)
                .arg("EX")
                .arg(seconds)
                .query_async::<()>(&mut c),
        )
        .await
        .map_err(|_| StoreError("SET timed out".into()))?
        .map_err(|e| StoreError(format!("SET failed: {e}")))
    }

    fn describe(&self) -> String {
        format!("Redis at {}", self.url)
    }
}
