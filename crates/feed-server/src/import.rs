//! `feed-server import`: an offline job's feeds (Parquet, JSON Lines), or
//! the configured synthetic set, written as a snapshot file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use feed_import::{ImportError, ImportSummary, ProgressReporter};
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
    /// Time spent writing it.
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

/// Reads `inputs` (and the `fallback` list) and writes the snapshot at
/// `output`. Without a fallback list, the fill draws from every distinct
/// item of the feeds.
///
/// # Errors
/// [`ImportFailure`] naming the file (and row and column) at fault; nothing
/// is left at `output` then.
pub fn files(
    inputs: &[PathBuf],
    fallback: Option<&Path>,
    output: &Path,
) -> Result<Written, ImportFailure> {
    let mut reporter = ProgressReporter::new(inputs.len());
    let outcome = feed_import::import(inputs, fallback, &mut |p| reporter.update(p));
    reporter.finish();
    let (feeds, read) = outcome?;
    if feeds.user_ids.len() as u64 > u64::from(u32::MAX) {
        return Err(ImportFailure::TooManyUsers(feeds.user_ids.len() as u64));
    }
    let fallback = match &feeds.fallback {
        Some(list) => list.clone(),
        None => feed_import::distinct_items(&feeds.items),
    };
    let started = Instant::now();
    let meta = snapshot::write_csr(
        output,
        &feeds.user_ids,
        &feeds.offsets,
        &feeds.items,
        &fallback,
        now_unix_ms(),
    )?;
    Ok(Written {
        read: Some(read),
        meta,
        output: output.to_owned(),
        writing: started.elapsed(),
    })
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
