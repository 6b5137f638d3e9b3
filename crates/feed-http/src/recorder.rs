//! [`LogRecorder`]: the error recorder of a running server.

use std::sync::atomic::{AtomicU64, Ordering};

use feed_domain::{ErrorRecorder, FeedError, StorageError, UserId};
use slog::{Logger, warn};

/// Feed errors counted by kind.
#[derive(Debug, Default)]
pub struct FeedErrorCounts {
    unknown_user: AtomicU64,
    storage: AtomicU64,
    random_fill: AtomicU64,
}

impl FeedErrorCounts {
    /// Requests for a user with no feed.
    pub fn unknown_user(&self) -> u64 {
        self.unknown_user.load(Ordering::Relaxed)
    }

    /// Feed storage failures.
    pub fn storage(&self) -> u64 {
        self.storage.load(Ordering::Relaxed)
    }

    /// Random fills that came up short.
    pub fn random_fill(&self) -> u64 {
        self.random_fill.load(Ordering::Relaxed)
    }
}

/// Counts every feed error by kind and logs it, with the user id, at
/// warning level. The logger is expected to drain asynchronously, so that a
/// burst of errors cannot stall request threads.
#[derive(Debug)]
pub struct LogRecorder {
    logger: Logger,
    counts: FeedErrorCounts,
}

impl LogRecorder {
    /// A recorder that logs to `logger`.
    pub fn new(logger: Logger) -> Self {
        Self {
            logger,
            counts: FeedErrorCounts::default(),
        }
    }

    /// The counts so far.
    pub const fn counts(&self) -> &FeedErrorCounts {
        &self.counts
    }
}

impl ErrorRecorder for LogRecorder {
    fn record(&self, user: UserId, error: &FeedError) {
        let (counter, kind) = match error {
            FeedError::Storage(StorageError::UnknownUser(_)) => {
                (&self.counts.unknown_user, "unknown_user")
            }
            FeedError::Storage(StorageError::Backend(_)) => (&self.counts.storage, "storage"),
            FeedError::RandomFill(_) => (&self.counts.random_fill, "random_fill"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        warn!(self.logger, "feed error"; "user_id" => user.get(), "kind" => kind, "error" => %error);
    }
}

#[cfg(test)]
mod tests {
    use feed_domain::RandomFillError;

    use super::*;

    #[test]
    fn counts_by_kind() {
        let recorder = LogRecorder::new(Logger::root(slog::Discard, slog::o!()));
        let user = UserId::new(3);
        recorder.record(user, &StorageError::UnknownUser(user).into());
        recorder.record(user, &StorageError::UnknownUser(user).into());
        recorder.record(user, &StorageError::backend("down").into());
        recorder.record(user, &RandomFillError::Shortfall { missing: 2 }.into());
        let counts = recorder.counts();
        assert_eq!(
            (
                counts.unknown_user(),
                counts.storage(),
                counts.random_fill()
            ),
            (2, 1, 1)
        );
    }
}
