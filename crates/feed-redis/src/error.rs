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
    /// The version served is no longer kept in the cluster (a publish
    /// dropped it while this frontend could not switch): its progress may
    /// be deleted, so it is not moved any more.
    #[error("version {0} is no longer kept in the cluster")]
    Retired(u64),
    /// The user's progress in the version served here was sealed by a
    /// newer one (`crate::carry`): this frontend has not switched yet.
    #[error("the user's progress in version {0} is sealed by a newer version")]
    Sealed(u64),
    /// The user's marks of what the previous version gave are missing, and
    /// this frontend does not map that version's snapshot to make them.
    #[error("the marks of version {0}'s progress are missing and its snapshot is not mapped here")]
    NotMapped(u64),
}

/// `call`'s answer, or [`RedisStoreError::Timeout`] when it takes longer
/// than `limit`: the one way every call to the cluster is bounded.
pub(crate) async fn within<T>(
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisStoreError> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(RedisStoreError::Timeout(limit)),
    }
}

impl RedisStoreError {
    /// Whether this says the node (or the way to it) failed, as opposed to
    /// a node that answered with an error about the data: only the former
    /// counts towards opening the circuit breaker.
    pub fn is_node_failure(&self) -> bool {
        use redis::{ErrorKind, ServerErrorKind};
        match self {
            Self::BreakerOpen | Self::Timeout(_) => true,
            Self::Corrupt(_) | Self::Retired(_) | Self::Sealed(_) | Self::NotMapped(_) => false,
            Self::Redis(error) => match error.kind() {
                ErrorKind::Server(kind) => matches!(
                    kind,
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                ),
                _ => true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    use super::RedisStoreError;

    fn redis(kind: ErrorKind) -> RedisStoreError {
        RedisStoreError::Redis(RedisError::from((kind, "test")))
    }

    #[test]
    fn only_node_failures_count_for_the_breaker() {
        assert!(RedisStoreError::Timeout(std::time::Duration::from_millis(1)).is_node_failure());
        assert!(redis(ErrorKind::Io).is_node_failure());
        assert!(redis(ErrorKind::Server(ServerErrorKind::ClusterDown)).is_node_failure());
        assert!(redis(ErrorKind::Server(ServerErrorKind::TryAgain)).is_node_failure());
        assert!(!redis(ErrorKind::Server(ServerErrorKind::ResponseError)).is_node_failure());
        assert!(!redis(ErrorKind::Server(ServerErrorKind::NoScript)).is_node_failure());
        assert!(!RedisStoreError::Corrupt("a ragged feed".into()).is_node_failure());
    }
}
