//! Loading a version of the data: the synthetic set, generated on every
//! core, or an opened (so wholly verified) snapshot, each made into the
//! feed service over the in-memory adapters ([`Loaded`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use feed_domain::{DataInfo, DataVersion, ErrorRecorder, FeedService, SizeLimits, short_fallback};
use slog::{Logger, info};

use super::ProgressPlace;
use crate::{
    CatalogRandomFeed, DataSettings, DataSource, DataSpec, FeedTable, FileIdentity, Given,
    MemoryFeedStorage, OffsetMap, Snapshot, SnapshotMeta,
};

/// The feed service over the in-memory adapters, its error recorder `E`
/// chosen by the server: every port resolved at compile time.
pub type MemoryFeedService<E> = FeedService<MemoryFeedStorage, CatalogRandomFeed, E>;

/// How often data generation reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A loaded version of the data: the service over it and its facts.
#[derive(Debug)]
pub struct Loaded<E> {
    /// The service.
    pub service: MemoryFeedService<E>,
    /// What its progress belongs to: the snapshot id, or the synthetic
    /// set's fingerprint.
    pub data_id: u64,
    /// What it holds.
    pub info: DataInfo,
    /// The snapshot file it was loaded from, as it was then.
    pub file: Option<FileIdentity>,
}

/// The facts of `table`, loaded in `took`, from `snapshot` if any.
pub(crate) fn info(
    table: &FeedTable,
    took: Duration,
    snapshot: Option<(&SnapshotMeta, &Path)>,
) -> DataInfo {
    DataInfo {
        users: u64::from(table.users()),
        items: table.total_items() as u64,
        bytes: table.bytes() as u64,
        load_seconds: took.as_secs_f64(),
        version: snapshot.map(|(meta, path)| DataVersion {
            id: format!("{:016x}", meta.id),
            created_unix_ms: meta.created_unix_ms,
            source: path.display().to_string(),
        }),
    }
}

/// Generates the synthetic data set on every core, logging progress each
/// second.
pub fn generate(spec: &DataSpec, logger: &Logger) -> (FeedTable, Duration) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    let progress = AtomicU64::new(0);
    let table = std::thread::scope(|scope| {
        let generator = scope.spawn(|| FeedTable::generate(spec, threads, &progress));
        let mut next_report = started + PROGRESS_EVERY;
        while !generator.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            if Instant::now() >= next_report {
                next_report += PROGRESS_EVERY;
                let done = progress.load(Ordering::Relaxed);
                info!(logger, "generating feeds";
                    "users_done" => done, "users" => spec.users(),
                    "percent" => done * 100 / u64::from(spec.users()).max(1));
            }
        }
        generator.join()
    });
    match table {
        Ok(table) => (table, started.elapsed()),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The service over the synthetic data set of `spec`, with its progress
/// in `offsets`.
pub fn synthetic<E: ErrorRecorder>(
    spec: &DataSpec,
    limits: SizeLimits,
    recorder: E,
    offsets: OffsetMap,
    logger: &Logger,
) -> Loaded<E> {
    let (table, took) = generate(spec, logger);
    let info = info(&table, took, None);
    let service = FeedService::new(
        MemoryFeedStorage::with_offsets(table, offsets),
        CatalogRandomFeed::new(spec.catalog_size()),
        recorder,
        limits,
    );
    Loaded {
        service,
        data_id: spec.fingerprint(),
        info,
        file: None,
    }
}

/// The service over an opened (so wholly verified) `snapshot`, opened
/// `took` ago, with its progress in `offsets`.
pub fn from_snapshot<E: ErrorRecorder>(
    snapshot: Snapshot,
    took: Duration,
    limits: SizeLimits,
    recorder: E,
    offsets: OffsetMap,
) -> Loaded<E> {
    let file = Some(snapshot.identity());
    let path = snapshot.path().to_owned();
    let (meta, table, fallback) = snapshot.into_parts();
    let info = info(&table, took, Some((&meta, &path)));
    let service = FeedService::new(
        MemoryFeedStorage::with_offsets(table, offsets),
        CatalogRandomFeed::from_list(fallback),
        recorder,
        limits,
    );
    Loaded {
        service,
        data_id: meta.id,
        info,
        file,
    }
}

/// [`short_fallback`] of an opened snapshot, naming its file.
///
/// # Errors
/// One line naming the file and both numbers.
pub fn check_fallback(snapshot: &Snapshot, limits: SizeLimits) -> Result<(), String> {
    match short_fallback(snapshot.fallback().len(), limits.max_size().get()) {
        Some(reason) => Err(format!("{}: {reason}", snapshot.path().display())),
        None => Ok(()),
    }
}

/// The first version of the data, opened before anything listens (a bad
/// snapshot or an unusable progress file is a bad configuration, not a
/// failed start), then made into a service on the loading thread
/// ([`First::load`]): generating the synthetic set or building the table's
/// index takes seconds, and the server answers "loading" meanwhile.
#[derive(Debug)]
pub enum First {
    /// The synthetic set of `spec`, with its progress.
    Synthetic {
        /// What to generate.
        spec: DataSpec,
        /// Its progress.
        offsets: OffsetMap,
    },
    /// A snapshot, opened (so wholly verified) in `took`, with its progress.
    Snapshot {
        /// The snapshot (boxed: it is much larger than the other variant).
        snapshot: Box<Snapshot>,
        /// How long opening it took.
        took: Duration,
        /// Its progress.
        offsets: OffsetMap,
        /// What a reload carried into it in an earlier run, if anything
        /// (boxed, as the snapshot).
        given: Option<Box<Given>>,
    },
}

impl First {
    /// Opens the data `data` names (the synthetic set of `spec`, or the
    /// snapshot file, whose fallback list must fill answers of up to
    /// `limits`), with its progress kept as `progress` says.
    ///
    /// # Errors
    /// One line naming the key and the file: `data.snapshot: ...` or
    /// `progress.path: ...`.
    pub fn open(
        data: &DataSettings,
        spec: DataSpec,
        limits: SizeLimits,
        progress: &ProgressPlace,
        logger: &Logger,
    ) -> Result<Self, String> {
        let progress_error = |e| format!("progress.path: {e}");
        match data.source {
            DataSource::Synthetic => {
                let offsets = progress
                    .offsets(spec.fingerprint(), spec.users(), logger)
                    .map_err(progress_error)?;
                Ok(Self::Synthetic { spec, offsets })
            }
            DataSource::Snapshot => {
                let started = Instant::now();
                let path = data.snapshot_path().unwrap_or_default();
                let snapshot = Snapshot::open(&path).map_err(|e| format!("data.snapshot: {e}"))?;
                check_fallback(&snapshot, limits).map_err(|e| format!("data.snapshot: {e}"))?;
                let offsets = progress
                    .snapshot_offsets(&snapshot, logger)
                    .map_err(progress_error)?;
                // A bad file of marks stops the start as a bad progress
                // file does (`progress.on_corrupt`).
                let given = progress
                    .given_kept(snapshot.meta().id, snapshot.table(), logger)
                    .map_err(progress_error)?
                    .map(Box::new);
                Ok(Self::Snapshot {
                    snapshot: Box::new(snapshot),
                    took: started.elapsed(),
                    offsets,
                    given,
                })
            }
        }
    }

    /// The service over it for answers of up to `limits`, its errors
    /// reported to `recorder`.
    pub fn load<E: ErrorRecorder>(
        self,
        limits: SizeLimits,
        recorder: E,
        logger: &Logger,
    ) -> Loaded<E> {
        match self {
            Self::Synthetic { spec, offsets } => {
                synthetic(&spec, limits, recorder, offsets, logger)
            }
            Self::Snapshot {
                snapshot,
                took,
                offsets,
                given,
            } => {
                let loaded = from_snapshot(*snapshot, took, limits, recorder, offsets);
                if let Some(given) = given {
                    loaded.service.storage().given_or_init(|| *given);
                }
                loaded
            }
        }
    }
}
