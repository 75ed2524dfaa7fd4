//! A connection to a backing service, made on first use and made again after a failure,
//! but at most once per [`RETRY_AFTER`]: while a service is down (or its address swallows
//! packets until the connect timeout), callers get the last error at once instead of
//! queueing one by one behind connect attempts and blowing WeChat's time budget.

use std::future::Future;
use std::time::{Duration, Instant};

/// The shortest time between two connect attempts.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct Reconnecting<T> {
    state: tokio::sync::Mutex<State<T>>,
}

struct State<T> {
    connection: Option<T>,
    failed: Option<(Instant, String)>,
}

impl<T: Clone> Reconnecting<T> {
    pub fn new() -> Self {
        Reconnecting {
            state: tokio::sync::Mutex::new(State {
                connection: None,
                failed: None,
            }),
        }
    }

    /// The connection, connecting with `connect` if there is none and the last attempt
    /// failed more than [`RETRY_AFTER`] ago; otherwise that attempt's error.
    pub async fn get<F, Fut>(&self, connect: F) -> Result<T, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let mut state = self.state.lock().await;
        if let Some(c) = &state.connection {
            return Ok(c.clone());
        }
        if let Some((at, error)) = &state.failed {
            if at.elapsed() < RETRY_AFTER {
                return Err(error.clone());
            }
        }
        match connect().await {
            Ok(c) => {
                state.connection = Some(c.clone());
                state.failed = None;
                Ok(c)
            }
            Err(e) => {
                state.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Forgets the connection after a failure, so a later call connects again.
    pub async fn reset(&self) {
        self.state.lock().await.connection = None;
    }
}

impl<T: Clone> Default for Reconnecting<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn failed_connects_are_not_retried_within_the_pause() {
        let slot = Reconnecting::<u32>::new();
        let attempts = AtomicUsize::new(0);
        let failing = || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<u32, _>("refused".to_string())
        };
        assert_eq!(slot.get(failing).await, Err("refused".into()));
        assert_eq!(slot.get(failing).await, Err("refused".into()));
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "the second call reused the error"
        );
        tokio::time::sleep(RETRY_AFTER + Duration::from_millis(50)).await;
        assert_eq!(slot.get(|| async { Ok(7) }).await, Ok(7));
        assert_eq!(
            slot.get(|| async { Ok(8) }).await,
            Ok(7),
            "connected once, then reused"
        );
        slot.reset().await;
        assert_eq!(slot.get(|| async { Ok(9) }).await, Ok(9));
    }
}
