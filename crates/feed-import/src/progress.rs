//! [`ProgressReporter`]: an import's [`Progress`] on stderr, as a live bar on
//! a terminal and as a plain line at most once a second otherwise (a log
//! file or a CI job would fill with a bar's redraws).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::{Progress, Stage};

/// The stages, told apart (a stage's file does not make it another).
const fn kind(stage: Stage) -> u8 {
    match stage {
        Stage::Reading { sorting: false, .. } => 0,
        Stage::Reading { sorting: true, .. } => 1,
        Stage::Merging { .. } => 2,
    }
}

/// The stage an import starts in.
const FIRST: Stage = Stage::Reading {
    file: 0,
    sorting: false,
};

/// The shortest time between two plain lines.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// Renders [`Progress`] reports on stderr; feed it from the callback of
/// [`import`](crate::import) and call [`finish`](Self::finish) afterwards:
///
/// ```no_run
/// # use std::path::PathBuf;
/// let inputs = vec![PathBuf::from("feeds.parquet")];
/// let mut reporter = feed_import::ProgressReporter::new(inputs.len());
/// let result = feed_import::import_to_memory(&inputs, None, &mut |p| reporter.update(p));
/// reporter.finish();
/// let (feeds, imported) = result?;
/// eprintln!("{}", imported.summary);
/// # Ok::<(), feed_import::ImportError>(())
/// ```
pub struct ProgressReporter {
    files: usize,
    /// The stage last shown.
    stage: Stage,
    view: View,
}

enum View {
    /// stderr is a terminal: an `indicatif` spinner with rows and rows/s.
    Bar(ProgressBar),
    /// Anything else: "read N rows (R rows/s)" lines.
    Lines(Lines),
}

struct Lines {
    out: Mutex<Box<dyn Write + Send>>,
    /// When the current stage started.
    start: Instant,
    last_line: Instant,
    rows: u64,
    stage: Stage,
}

impl ProgressReporter {
    /// A reporter for an import of `files` inputs: a bar if stderr is a
    /// terminal, plain lines otherwise.
    pub fn new(files: usize) -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar(files)
        } else {
            Self::lines(files, Box::new(std::io::stderr()), Instant::now())
        }
    }

    fn bar(files: usize) -> Self {
        let bar = ProgressBar::new_spinner();
        let style = ProgressStyle::with_template(
            "{spinner} {msg}: {human_pos} rows ({per_sec}), {elapsed}",
        )
        .expect("the template is valid");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(100));
        let reporter = Self {
            files,
            stage: FIRST,
            view: View::Bar(bar),
        };
        reporter.show(FIRST);
        reporter
    }

    fn lines(files: usize, out: Box<dyn Write + Send>, start: Instant) -> Self {
        Self {
            files,
            stage: FIRST,
            view: View::Lines(Lines {
                out: Mutex::new(out),
                start,
                last_line: start,
                rows: 0,
                stage: FIRST,
            }),
        }
    }

    fn show(&self, stage: Stage) {
        if let View::Bar(bar) = &self.view {
            bar.set_message(match stage {
                Stage::Reading {
                    file,
                    sorting: false,
                } => format!("reading file {}/{}", file + 1, self.files),
                Stage::Reading {
                    file,
                    sorting: true,
                } => format!(
                    "not in user order: reading file {}/{} into the sort",
                    file + 1,
                    self.files
                ),
                Stage::Merging { runs } => format!("merging {runs} sorted runs"),
            });
        }
    }

    /// Shows `progress`.
    pub fn update(&mut self, progress: Progress) {
        self.update_at(progress, Instant::now());
    }

    fn update_at(&mut self, progress: Progress, now: Instant) {
        self.show(progress.stage);
        let stage = self.stage;
        self.stage = progress.stage;
        match &mut self.view {
            View::Bar(bar) => {
                if kind(progress.stage) != kind(stage) {
                    // A new stage counts afresh.
                    bar.reset();
                }
                bar.set_position(progress.rows);
            }
            View::Lines(lines) => {
                if kind(progress.stage) != kind(stage) {
                    lines.start = now;
                }
                lines.rows = progress.rows;
                lines.stage = progress.stage;
                if now.duration_since(lines.last_line) >= LINE_EVERY {
                    lines.last_line = now;
                    lines.write(now);
                }
            }
        }
    }

    /// Stops the bar and leaves its last state on screen, or writes a last
    /// line with the total.
    pub fn finish(&self) {
        self.finish_at(Instant::now());
    }

    fn finish_at(&self, now: Instant) {
        match &self.view {
            View::Bar(bar) => bar.finish(),
            View::Lines(lines) => lines.write(now),
        }
    }
}

impl Lines {
    fn write(&self, now: Instant) {
        let seconds = now.duration_since(self.start).as_secs_f64();
        let rate = if seconds > 0.0 {
            (self.rows as f64 / seconds).round() as u64
        } else {
            0
        };
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Progress is advice: a closed stderr must not fail the import.
        let _ = match self.stage {
            Stage::Reading { sorting: false, .. } => {
                writeln!(out, "read {} rows ({rate} rows/s)", self.rows)
            }
            Stage::Reading { sorting: true, .. } => writeln!(
                out,
                "not in user order: read {} rows into the sort ({rate} rows/s)",
                self.rows
            ),
            Stage::Merging { runs } => writeln!(
                out,
                "merged {} users from {runs} sorted runs ({rate} users/s)",
                self.rows
            ),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer whose text the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn reading(file: usize) -> Stage {
        Stage::Reading {
            file,
            sorting: false,
        }
    }

    #[test]
    fn plain_lines_come_at_most_once_a_second_and_at_the_end() {
        let out = Shared::default();
        let start = Instant::now();
        let mut reporter = ProgressReporter::lines(2, Box::new(out.clone()), start);
        let at = |ms| start + Duration::from_millis(ms);
        reporter.update_at(
            Progress {
                stage: reading(0),
                rows: 100,
            },
            at(500),
        );
        reporter.update_at(
            Progress {
                stage: reading(0),
                rows: 2000,
            },
            at(1000),
        );
        reporter.update_at(
            Progress {
                stage: reading(1),
                rows: 2500,
            },
            at(1900),
        );
        reporter.update_at(
            Progress {
                stage: reading(1),
                rows: 3000,
            },
            at(2000),
        );
        reporter.finish_at(at(4000));
        assert_eq!(
            out.text(),
            "read 2000 rows (2000 rows/s)\nread 3000 rows (1500 rows/s)\nread 3000 rows (750 rows/s)\n"
        );
    }

    /// After a start over into the sort, and while merging, the lines say
    /// so and count afresh.
    #[test]
    fn the_sort_stages_have_lines_of_their_own() {
        let out = Shared::default();
        let start = Instant::now();
        let mut reporter = ProgressReporter::lines(1, Box::new(out.clone()), start);
        let at = |ms| start + Duration::from_millis(ms);
        reporter.update_at(
            Progress {
                stage: reading(0),
                rows: 2,
            },
            at(100),
        );
        let sorting = Stage::Reading {
            file: 0,
            sorting: true,
        };
        reporter.update_at(
            Progress {
                stage: sorting,
                rows: 1,
            },
            at(200),
        );
        reporter.update_at(
            Progress {
                stage: sorting,
                rows: 2200,
            },
            at(1300),
        );
        let merging = Stage::Merging { runs: 3 };
        reporter.update_at(
            Progress {
                stage: merging,
                rows: 0,
            },
            at(1400),
        );
        reporter.finish_at(at(3400));
        assert_eq!(
            out.text(),
            "not in user order: read 2200 rows into the sort (2000 rows/s)\n\
             merged 0 users from 3 sorted runs (0 users/s)\n"
        );
    }

    #[test]
    fn a_bar_can_be_driven_and_finished() {
        let mut reporter = ProgressReporter::bar(1);
        if let View::Bar(bar) = &reporter.view {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        reporter.update(Progress {
            stage: reading(0),
            rows: 10,
        });
        reporter.finish();
        let View::Bar(bar) = &reporter.view else {
            panic!("not a bar")
        };
        assert_eq!(bar.position(), 10);
        assert!(bar.is_finished());
    }
}
