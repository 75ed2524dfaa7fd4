//! A connection to Redis, shared by the doctor's session store and WeChat replay memory and
//! by the server's job queue: one multiplexed connection manager, made on first use (so a
//! process starts while Redis is down), every command under a deadline. It owns no keys;
//! the callers choose their own key spaces.

use std::time::Duration;

use crate::connect::Reconnecting;

pub struct RedisConnection {
    /// The URL without its password, for logs, errors and `/healthz`.
    url: String,
    client: redis::Client,
    connection: Reconnecting<redis::aio::ConnectionManager>,
    timeout: Duration,
}

impl RedisConnection {
    /// Checks the URL now; connects on first use.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let shown = redact(url);
        let client =
            redis::Client::open(url).map_err(|e| format!("invalid Redis URL {shown}: {e}"))?;
        Ok(RedisConnection {
            url: shown,
            client,
            connection: Reconnecting::new(),
            timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection manager, which reconnects by itself when Redis comes back.
    async fn get(&self) -> Result<redis::aio::ConnectionManager, String> {
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
        self.connection.get(connect).await
    }

    /// Runs `cmd` within the deadline; `what` names it in errors (`GET`, `SET`...).
    pub async fn query<T>(&self, cmd: redis::Cmd, what: &str) -> Result<T, String>
    where
        T: redis::FromRedisValue + Send,
    {
        let mut c = self.get().await?;
        tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut c))
            .await
            .map_err(|_| format!("{what} timed out"))?
            .map_err(|e| format!("{what} failed: {e}"))
    }
}

impl RedisConnection {
    /// Runs a Lua script (EVALSHA, loading it first if Redis does not have it) within the
    /// deadline; `what` names it in errors.
    pub async fn invoke<T>(
        &self,
        script: &redis::ScriptInvocation<'_>,
        what: &str,
    ) -> Result<T, String>
    where
        T: redis::FromRedisValue + Send,
    {
        let mut c = self.get().await?;
        tokio::time::timeout(self.timeout, script.invoke_async::<T>(&mut c))
            .await
            .map_err(|_| format!("{what} timed out"))?
            .map_err(|e| format!("{what} failed: {e}"))
    }
}

/// `url` with the user information (`redis://:password@host`) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_the_shown_url() {
        assert_eq!(
            redact("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://user:pw@host"), "redis://***@host");
        assert_eq!(redact("redis://127.0.0.1/"), "redis://127.0.0.1/");
        assert_eq!(redact("not a url"), "not a url");
        let c =
            RedisConnection::new("redis://:hunter2@127.0.0.1:1/", Duration::from_secs(1)).unwrap();
        assert!(!c.url().contains("hunter2"), "{}", c.url());
    }
}
