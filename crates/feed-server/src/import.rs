//! `feed-server import`: an offline job's feeds (Parquet, JSON Lines), or
//! the configured synthetic set, written as a snapshot file.
//!
//! For files this is only the composition: `feed_import::import` gives the
//! feeds in user order to a [`FeedSink`] that is the snapshot's streaming
//! writer, after checking the output folder's free space against what the
//! import expects to write there (the snapshot, and the sort's runs when
//! the input is not in user order).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use feed_import::{
    Expected, FeedSink, ImportError, ImportOptions, ImportSummary, ProgressReporter,
};
use feed_memory::snapshot::SnapshotWriter;
use feed_memory::{SnapshotError, SnapshotMeta, snapshot};
use slog::Logger;

use feed_memory::now_unix_ms;

use crate::settings::ServiceSpec;
use feed_memory::lifecycle::generate;

/// Why an import wrote nothing. One line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    /// An input was unreadable or invalid.
    #[error(transparent)]
    Input(#[from] ImportError),
    /// The snapshot could not be written.
    #[error(transparent)]
    Output(#[from] SnapshotError),
    /// More users than a snapshot holds.
    #[error("{0} users: a snapshot holds at most 4294967295")]
    TooManyUsers(u64),
    /// The output's folder has too little free space for the snapshot and
    /// the sort's temporary files.
    #[error(
        "{}: not enough free space: the import needs {needed} bytes here (snapshot {snapshot}, sorting {temporary}), {free} are free",
        folder.display()
    )]
    NoSpace {
        /// The output's folder.
        folder: PathBuf,
        /// Bytes needed in all.
        needed: u64,
        /// Of which the snapshot.
        snapshot: u64,
        /// Of which the sort's temporary files.
        temporary: u64,
        /// Bytes free (for an unprivileged user).
        free: u64,
    },
    /// The folder's free space could not be read.
    #[error("{}: cannot read the free space: {cause}", folder.display())]
    Space {
        /// The output's folder.
        folder: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
}

impl From<feed_import::Failure<ImportFailure>> for ImportFailure {
    fn from(failure: feed_import::Failure<ImportFailure>) -> Self {
        match failure {
            feed_import::Failure::Input(error) => Self::Input(error),
            feed_import::Failure::Sink(error) => error,
        }
    }
}

/// What an import wrote.
#[derive(Debug)]
pub struct Written {
    /// What was read, when files were.
    pub read: Option<ImportSummary>,
    /// The snapshot's header.
    pub meta: SnapshotMeta,
    /// The file.
    pub output: PathBuf,
    /// Time spent writing it (after the last feed, for an import of files:
    /// the fallback list, the header and the syncs).
    pub writing: Duration,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(read) = &self.read {
            writeln!(f, "{read}")?;
        }
        write!(
            f,
            "wrote {} in {:.1} s: snapshot {:016x}, {} users, {} items, {} fallback items",
            self.output.display(),
            self.writing.as_secs_f64(),
            self.meta.id,
            self.meta.users,
            self.meta.items,
            self.meta.fallback
        )
    }
}

/// The snapshot as the import's [`FeedSink`]: each start checks the free
/// space of the output's folder and opens a new writer.
struct SnapshotSink<'a> {
    output: &'a Path,
    writer: Option<SnapshotWriter>,
    /// Replaces the free space read from the system (tests).
    free: Option<u64>,
}

impl FeedSink for SnapshotSink<'_> {
    type Error = ImportFailure;

    fn start(&mut self, expected: &Expected) -> Result<(), ImportFailure> {
        // The previous attempt's temporary file goes first.
        self.writer = None;
        if expected.users > u64::from(u32::MAX) {
            return Err(ImportFailure::TooManyUsers(expected.users));
        }
        let folder = match self.output.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let snapshot = snapshot::file_bytes(expected.users, expected.items, expected.fallback);
        let needed = snapshot + expected.temporary_bytes;
        let free = match self.free {
            Some(free) => free,
            None => free_bytes(folder).map_err(|cause| ImportFailure::Space {
                folder: folder.to_owned(),
                cause,
            })?,
        };
        if needed > free {
            return Err(ImportFailure::NoSpace {
                folder: folder.to_owned(),
                needed,
                snapshot,
                temporary: expected.temporary_bytes,
                free,
            });
        }
        self.writer = Some(SnapshotWriter::create(self.output, expected.users)?);
        Ok(())
    }

    fn feed(&mut self, user: u64, items: &[u32]) -> Result<(), ImportFailure> {
        match &mut self.writer {
            Some(writer) => Ok(writer.push(user, items)?),
            None => unreachable!("the import starts the sink before the first feed"),
        }
    }
}

/// Bytes an unprivileged user may still write in `folder`'s filesystem.
fn free_bytes(folder: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(folder)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// How `files` imports: the sort's memory, and a free space to assume.
#[derive(Debug, Clone, Default)]
pub struct FileImport {
    /// Bytes of feeds the sort holds in memory before it writes a run
    /// (default: [`ImportOptions::DEFAULT_RUN_BYTES`]).
    pub sort_memory: Option<usize>,
    /// The free space to assume in the output's folder instead of asking
    /// the system (for tests).
    pub assume_free: Option<u64>,
}

/// Reads `inputs` (and the `fallback` list) and writes the snapshot at
/// `output`, streaming: feeds in user order go straight to the file;
/// others are sorted through runs in a hidden temporary folder beside
/// `output`. Without a fallback list, the fill draws from every distinct
/// item of the feeds. Ctrl-C or SIGTERM stops it, leaving nothing behind.
///
/// # Errors
/// [`ImportFailure`] naming the file (and row and column) at fault, or the
/// folder without enough space; nothing is left at `output` then, nor any
/// temporary file.
pub fn files(
    inputs: &[PathBuf],
    fallback: Option<&Path>,
    output: &Path,
    how: &FileImport,
) -> Result<Written, ImportFailure> {
    let folder = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut options = ImportOptions::new(folder);
    if let Some(bytes) = how.sort_memory {
        options.run_bytes = bytes;
    }
    let interrupted = on_interrupt();
    let mut sink = SnapshotSink {
        output,
        writer: None,
        free: how.assume_free,
    };
    let mut reporter = ProgressReporter::new(inputs.len());
    let outcome = feed_import::import(
        inputs,
        fallback,
        &options,
        Some(&interrupted),
        &mut |p| reporter.update(p),
        &mut sink,
    );
    reporter.finish();
    let imported = outcome?;
    if interrupted.load(Ordering::Relaxed) {
        return Err(ImportError::Interrupted.into());
    }
    let started = Instant::now();
    let writer = sink
        .writer
        .take()
        .expect("a finished import started its sink");
    let meta = writer.finish(imported.fallback.iter(), now_unix_ms())?;
    Ok(Written {
        read: Some(imported.summary),
        meta,
        output: output.to_owned(),
        writing: started.elapsed(),
    })
}

/// A flag set on the first SIGINT (Ctrl-C) or SIGTERM from now on, so the
/// import (or an export) stops and removes its temporary files instead of
/// dying with them.
pub(crate) fn on_interrupt() -> Arc<AtomicBool> {
    use tokio::signal::unix::{SignalKind, signal};
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    let (ready, registered) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            let _ = ready.send(());
            return;
        };
        runtime.block_on(async move {
            let (Ok(mut interrupt), Ok(mut terminate)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = ready.send(());
                return;
            };
            let _ = ready.send(());
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            set.store(true, Ordering::Relaxed);
        });
    });
    // Without handlers (they could not be made) a signal kills the import
    // as before; the hidden folder is then left behind.
    let _ = registered.recv();
    flag
}

/// Generates the configured synthetic data set and writes it as a snapshot
/// at `output`, with the whole catalog as its fallback list: served from
/// the snapshot, it answers exactly as generated at start-up.
///
/// # Errors
/// [`ImportFailure::Output`] when the file cannot be written.
pub fn synthetic(spec: &ServiceSpec, output: &Path) -> Result<Written, ImportFailure> {
    let quiet = Logger::root(slog::Discard, slog::o!());
    let (table, _) = generate(&spec.data, &quiet);
    let catalog: Vec<u32> = (1..=spec.data.catalog_size()).collect();
    let started = Instant::now();
    let meta = snapshot::write(output, &table, &catalog, now_unix_ms())?;
    Ok(Written {
        read: None,
        meta,
        output: output.to_owned(),
        writing: started.elapsed(),
    })
}
