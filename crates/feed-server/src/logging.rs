//! The slog logger: text or JSON lines on stdout, written by a background
//! thread so that request threads never wait on the terminal or a pipe.

use slog::{Drain, Level, Logger, o};
use slog_async::{AsyncGuard, OverflowStrategy};

use crate::settings::{LogFormat, LogLevel, LogSettings};

/// `text` as it goes into a log field: control characters, quotes and
/// backslashes escaped, so that a file name (or an error naming one) can
/// never forge a line or a field of the text format. Ordinary paths come
/// out unchanged.
pub fn escaped(text: &str) -> String {
    text.escape_debug().to_string()
}

/// A path as it goes into a log field ([`escaped`], not valid UTF-8
/// replaced).
pub fn path(path: &std::path::Path) -> String {
    escaped(&path.to_string_lossy())
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn paths_cannot_forge_log_lines() {
        let forged = std::path::Path::new("/srv/a\nlevel=CRIT msg=\"fake\".snap");
        let logged = super::path(forged);
        assert!(!logged.contains('\n'), "{logged}");
        assert_eq!(logged, r#"/srv/a\nlevel=CRIT msg=\"fake\".snap"#);
        assert_eq!(
            super::path(std::path::Path::new("/srv/feeds.snap")),
            "/srv/feeds.snap"
        );
    }
}
