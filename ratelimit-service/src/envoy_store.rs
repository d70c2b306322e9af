//! The envoyproxy/ratelimit flavor's counters, as its Redis fixed-window cache keeps them
//! (`src/redis/fixed_cache_impl.go`): per key, `INCRBY key hits` then `EXPIRE key window`,
//! pipelined, and the count after the increment decides. The limitador crate offers no atomic
//! increment-and-read, so this flavor talks to Redis itself, with the client limitador uses.
//! Without Redis the counters live in this process. Like upstream (whose calls fail at once
//! while Redis is away), a lost connection is retried once per call, without back-off: calls
//! fail fast with an error while Redis is down and succeed again as soon as it is back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// One increment: the cache key, the hits to add, the key's time to live in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Increment {
    pub key: String,
    pub hits: u64,
    pub expire_secs: u64,
}

pub enum Store {
    Redis(ConnectionManager),
    Memory(Mutex<HashMap<String, (u64, Instant)>>),
}

impl Store {
    /// Connects to Redis (failing at once when it cannot be reached at start, as upstream
    /// does), or keeps the counters here.
    pub async fn new(redis_url: Option<&str>) -> Result<Store, String> {
        match redis_url {
            None => Ok(Store::Memory(Mutex::new(HashMap::new()))),
            Some(url) => {
                let client =
                    redis::Client::open(url).map_err(|e| format!("bad Redis URL {url}: {e}"))?;
                // No retries: each reconnection is one attempt, made by the next call.
                let config = ConnectionManagerConfig::new().set_number_of_retries(0);
                let conn = ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(|e| format!("failed to connect to Redis at {url}: {e}"))?;
                Ok(Store::Redis(conn))
            }
        }
    }

    /// Applies every increment and answers each key's count after it, in order.
    pub async fn increment(&self, items: &[Increment]) -> Result<Vec<u64>, String> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Redis(conn) => {
                let mut pipe = redis::pipe();
                for i in items {
                    pipe.cmd("INCRBY").arg(&i.key).arg(i.hits);
                    pipe.cmd("EXPIRE").arg(&i.key).arg(i.expire_secs).ignore();
                }
                let mut conn = conn.clone();
                pipe.query_async::<Vec<u64>>(&mut conn)
                    .await
                    .map_err(|e| format!("redis: {e}"))
            }
            Store::Memory(map) => {
                let now = Instant::now();
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                map.retain(|_, (_, expires)| *expires > now);
                Ok(items
                    .iter()
                    .map(|i| {
                        let expires = now + Duration::from_secs(i.expire_secs);
                        let slot = map.entry(i.key.clone()).or_insert((0, expires));
                        slot.0 = slot.0.saturating_add(i.hits);
                        slot.1 = expires;
                        slot.0
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_counts_per_key_and_answers_the_count_after() {
        let store = Store::new(None).await.unwrap();
        let inc = |key: &str, hits| Increment {
            key: key.to_string(),
            hits,
            expire_secs: 60,
        };
        assert_eq!(
            store.increment(&[inc("a", 3), inc("b", 1)]).await.unwrap(),
            vec![3, 1]
        );
        assert_eq!(store.increment(&[inc("a", 4)]).await.unwrap(), vec![7]);
        assert_eq!(store.increment(&[]).await.unwrap(), Vec::<u64>::new());
    }
}
