//! Why a call to the cluster failed.

use std::time::Duration;

/// A failure of the Redis adapter. It reaches the domain as the cause of a
/// `StorageError::Backend`.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The circuit breaker is open for this user's slots.
    #[error("the circuit breaker is open for these slots")]
    BreakerOpen,
    /// No answer within the time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The cluster or the client failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The data in the cluster is not what the loader writes.
    #[error("corrupt data in the cluster: {0}")]
    Corrupt(String),
}
