//! The store on Redis or Valkey, with redis-rs: one lazily connected, multiplexed
//! connection (its `ConnectionManager` reconnects by itself), every operation bounded by the
//! configured timeout. With Sentinel, the master is asked of the Sentinels when the
//! connection is first made and again after it failed (a failover moves it).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncCommands, Client, RedisConnectionInfo, Script, SetExpiry, SetOptions, TlsMode};
use tokio::sync::Mutex;

use super::{StoreError, TokenStore};
use crate::config::{StoreEndpoint, StoreSettings};

/// Deletes `KEYS[1]` when its value starts with `ARGV[1]`.
const DELETE_IF_PREFIXED: &str = r"
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, string.len(ARGV[1])) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisStore {
    endpoint: StoreEndpoint,
    timeout: Duration,
    /// Made on first use, and again after a Sentinel-resolved connection failed.
    connection: Mutex<Option<ConnectionManager>>,
    delete_if_prefixed: Script,
}

impl RedisStore {
    pub fn new(settings: &StoreSettings) -> RedisStore {
        RedisStore {
            endpoint: settings.endpoint.clone(),
            timeout: settings.timeout,
            connection: Mutex::new(None),
            delete_if_prefixed: Script::new(DELETE_IF_PREFIXED),
        }
    }

    fn config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.timeout)
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let client = match &self.endpoint {
            StoreEndpoint::Direct(url) => Client::open(url.expose()).map_err(cause)?,
            StoreEndpoint::Sentinel(endpoint) => {
                let sentinels: Vec<String> = endpoint
                    .sentinels
                    .iter()
                    .map(|(host, port)| format!("redis://{host}:{port}"))
                    .collect();
                let mut info = RedisConnectionInfo::default().set_db(endpoint.db);
                if let Some(username) = &endpoint.username {
                    info = info.set_username(username);
                }
                if let Some(password) = &endpoint.password {
                    info = info.set_password(password.expose());
                }
                let mut node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                if endpoint.tls {
                    node = node.set_tls_mode(TlsMode::Secure);
                }
                let mut sentinel = SentinelClient::build(
                    sentinels,
                    endpoint.service.as_str(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(cause)?;
                bounded(self.timeout, sentinel.async_get_client()).await?
            }
        };
        let connection =
            ConnectionManager::new_lazy_with_config(client, self.config()).map_err(cause)?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `operation` on the connection within the timeout; after a failure behind
    /// Sentinel, the next operation asks the Sentinels for the master again.
    async fn run<T, F, Fut>(&self, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        let result = bounded(self.timeout, operation(connection)).await;
        if result.is_err() && matches!(self.endpoint, StoreEndpoint::Sentinel(_)) {
            *self.connection.lock().await = None;
        }
        result
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.run(|mut c| async move { c.get(key).await }).await
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let millis = ttl.as_millis().max(1) as u64;
        self.run(|mut c| async move { c.pset_ex(key, value, millis).await })
            .await
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let options = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(ttl.as_millis().max(1) as u64));
        let reply: Option<String> = self
            .run(|mut c| async move { c.set_options(key, value, options).await })
            .await?;
        Ok(reply.is_some())
    }

    async fn delete_if_prefixed(&self, key: &str, prefix: &str) -> Result<bool, StoreError> {
        let deleted: i64 = self
            .run(|mut c| async move {
                self.delete_if_prefixed
                    .key(key)
                    .arg(prefix)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(drop)
    }
}

async fn bounded<T>(
    timeout: Duration,
    future: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(cause),
        Err(_) => Err(StoreError(format!(
            "the store did not answer within {timeout:?}"
        ))),
    }
}

/// The kind of failure, never the URL it happened at (it may hold a password).
fn cause(error: redis::RedisError) -> StoreError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connection_refusal() {
        "connection refused"
    } else if error.is_connection_dropped() || error.is_io_error() {
        "connection lost"
    } else {
        "store error"
    };
    let code = error
        .code()
        .map(|code| format!(" ({code})"))
        .unwrap_or_default();
    StoreError(format!("{kind}{code}"))
}
