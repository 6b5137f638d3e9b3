//! [`LoggingRecorder`]: the error recorder of a running server, an outbound
//! adapter of the domain's `ErrorRecorder` port.

use std::sync::Arc;

use feed_domain::{ErrorRecorder, FeedError, UserId};
use feed_http::{Counters, FeedErrorKind, LogBudget};
use slog::{Logger, warn};

/// Log lines a second for each kind of feed error.
const LINES_PER_S: u32 = 5;

/// Counts every feed error by kind in the server's [`Counters`] and logs it
/// with the user id, at most [`LINES_PER_S`] lines a second for each kind:
/// unknown users and short random fills are normal traffic, and a flood of
/// them must not flood the log. A line written after some were left out
/// says how many (`suppressed_before`); the counters have them all.
#[derive(Debug)]
pub struct LoggingRecorder {
    logger: Logger,
    counters: Arc<Counters>,
    budgets: [LogBudget; FeedErrorKind::ALL.len()],
}

impl LoggingRecorder {
    /// A recorder that counts into `counters` and logs to `logger`.
    pub fn new(logger: Logger, counters: Arc<Counters>) -> Self {
        Self {
            logger,
            counters,
            budgets: std::array::from_fn(|_| LogBudget::new(LINES_PER_S)),
        }
    }
}

impl ErrorRecorder for LoggingRecorder {
    fn record(&self, user: UserId, error: &FeedError) {
        let kind = FeedErrorKind::of(error);
        self.counters.record_feed_error(kind);
        if let Some(suppressed) = self.budgets[kind as usize].admit() {
            warn!(self.logger, "feed error";
                "user_id" => user.get(), "kind" => kind.label(), "error" => %error,
                "suppressed_before" => suppressed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use feed_domain::{RandomFillError, StorageError};
    use slog::Drain;

    use super::*;

    /// A drain that keeps each record's message and the user id.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl Drain for Lines {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            self.0.lock().unwrap().push(record.msg().to_string());
            Ok(())
        }
    }

    #[test]
    fn counts_every_error_and_logs_a_few_per_kind() {
        let lines = Lines::default();
        let counters = Arc::new(Counters::new(false));
        let recorder = LoggingRecorder::new(
            Logger::root(lines.clone().fuse(), slog::o!()),
            Arc::clone(&counters),
        );
        let user = UserId::new(3);
        for _ in 0..1000 {
            recorder.record(user, &StorageError::UnknownUser(user).into());
        }
        recorder.record(user, &StorageError::backend("down").into());
        recorder.record(user, &RandomFillError::Shortfall { missing: 2 }.into());
        let totals = counters.totals();
        assert_eq!(
            FeedErrorKind::ALL.map(|kind| totals.feed_errors_of(kind)),
            [1000, 1, 1]
        );
        // Within one second: at most LINES_PER_S unknown-user lines, and the
        // other kinds have budgets of their own.
        let written = lines.0.lock().unwrap().len();
        assert!(
            (2..=2 + 2 * LINES_PER_S as usize).contains(&written),
            "{written} lines"
        );
    }
}
