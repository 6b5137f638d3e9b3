//! The slog logger: text or JSON lines on stdout, written by a background
//! thread so that request threads never wait on the terminal or a pipe.

use slog::{Drain, Level, Logger, o};
use slog_async::{AsyncGuard, OverflowStrategy};

use crate::settings::{LogFormat, LogLevel, LogSettings};

/// Log records that may wait for the writer thread before new ones are
/// dropped (and the drop counted in the log).
const QUEUE: usize = 8192;

/// The root logger. Keep the guard alive until exit: dropping it flushes the
/// queue.
pub fn logger(settings: &LogSettings) -> (Logger, AsyncGuard) {
    let level = match settings.level {
        LogLevel::Critical => Level::Critical,
        LogLevel::Error => Level::Error,
        LogLevel::Warning => Level::Warning,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
        LogLevel::Trace => Level::Trace,
    };
    match settings.format {
        LogFormat::Text => {
            let decorator = slog_term::PlainSyncDecorator::new(std::io::stdout());
            let drain = slog_term::FullFormat::new(decorator).build().ignore_res();
            background(drain, level)
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(std::io::stdout())
                .add_default_keys()
                .build()
                .ignore_res();
            background(drain, level)
        }
    }
}

fn background<D>(drain: D, level: Level) -> (Logger, AsyncGuard)
where
    D: Drain<Ok = (), Err = slog::Never> + Send + 'static,
{
    let (drain, guard) = slog_async::Async::new(drain.filter_level(level).ignore_res())
        .chan_size(QUEUE)
        .overflow_strategy(OverflowStrategy::DropAndReport)
        .thread_name("log".into())
        .build_with_guard();
    let root = Logger::root(drain.ignore_res(), o!("service" => "feed-server"));
    (root, guard)
}
