//! The data being served: the synthetic set or a snapshot, put in place at
//! start-up, swapped for a new snapshot on a reload, and swapped back on a
//! rollback ([`DataManager`]).
//!
//! Progress belongs to the data it counts through: each loaded version has
//! its own offset map, so after a reload every user starts the new feeds
//! from the beginning (they are new recommendations), and a rollback brings
//! back the previous version with the progress it had.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web;
use feed_domain::{FeedService, SizeLimits};
use feed_http::{DataChange, DataControl, DataControlError, DataInfo, FeedSlot, SnapshotInfo};
use feed_memory::{
    CatalogRandomFeed, DataSpec, FeedTable, FileIdentity, MemoryFeedStorage, OffsetMap, OnCorrupt,
    Opened, ProgressError, ProgressFile, Snapshot, SnapshotMeta,
};
use slog::{Logger, error, info, warn};

use crate::logging;
use crate::recorder::LoggingRecorder;

/// The feed service as this binary runs it, over the in-memory adapters:
/// every port resolved at compile time.
pub type MemoryFeedService =
    FeedService<MemoryFeedStorage, CatalogRandomFeed, Arc<LoggingRecorder>>;

/// Why [`DataManager::load`] made no new version of a snapshot.
#[derive(Debug)]
enum NotLoaded {
    /// It is the snapshot being served.
    Same,
    /// It is the snapshot served before (which holds its progress file).
    Previous,
    /// It cannot be served: the reason, one line.
    Failed(String),
}

impl From<String> for NotLoaded {
    fn from(reason: String) -> Self {
        Self::Failed(reason)
    }
}

/// How often data generation reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Where users' progress is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressPlace {
    /// The folder of the progress files; `None` keeps progress in memory.
    pub dir: Option<PathBuf>,
    /// What to do with a bad progress file.
    pub on_corrupt: OnCorrupt,
}

impl ProgressPlace {
    /// Progress in memory only.
    pub const MEMORY: Self = Self {
        dir: None,
        on_corrupt: OnCorrupt::Fail,
    };

    /// The offsets of data `id` with `users` users: restored from its
    /// progress file, or fresh; in memory without a folder. Says in the log
    /// which.
    ///
    /// # Errors
    /// [`ProgressError`] naming the file or folder.
    pub fn offsets(
        &self,
        id: u64,
        users: u32,
        logger: &Logger,
    ) -> Result<OffsetMap, ProgressError> {
        let Some(dir) = &self.dir else {
            return Ok(OffsetMap::in_memory(users));
        };
        let (file, opened) = ProgressFile::open(dir, id, users, self.on_corrupt)?;
        let path = logging::path(file.path());
        let offsets = OffsetMap::in_file(file);
        match opened {
            Opened::Fresh => info!(logger, "progress: fresh for this data";
                "data_id" => format!("{id:016x}"), "file" => &path),
            Opened::Restored => info!(logger, "progress: restored";
                "data_id" => format!("{id:016x}"), "file" => &path,
                "users_started" => offsets.started()),
            Opened::Reset { reason, aside } => warn!(logger,
                "progress: the file was bad, kept aside, starting fresh";
                "file" => &path, "reason" => reason, "aside" => logging::path(&aside)),
        }
        Ok(offsets)
    }

    /// Removes progress files of data other than `keep`.
    fn clean(&self, keep: &[u64], logger: &Logger) {
        if let Some(dir) = &self.dir {
            match ProgressFile::clean(dir, keep) {
                Ok(removed) if !removed.is_empty() => info!(logger, "progress: old files removed";
                    "files" => removed.iter().map(|p| logging::path(p)).collect::<Vec<_>>().join(", ")),
                Ok(_) => {}
                Err(e) => warn!(logger, "progress: cannot clean the folder"; "error" => %e),
            }
        }
    }
}

/// Where snapshots are read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotPlace {
    /// The file a reload reads when it names none (`data.snapshot`).
    pub default: Option<PathBuf>,
    /// The only folder a reload that names a path may read from.
    pub dir: Option<PathBuf>,
}

impl SnapshotPlace {
    /// The file a reload asked for `path` reads: `path` (relative to the
    /// folder, or absolute) resolved, links and all, inside the folder.
    /// Whether a path outside it exists is never told: every such path
    /// gets the same answer.
    ///
    /// # Errors
    /// [`DataControlError::Forbidden`] for a path outside the folder (or
    /// when there is no folder); [`DataControlError::Failed`] for a path
    /// inside it that cannot be resolved.
    pub fn confine(&self, path: &Path) -> Result<PathBuf, DataControlError> {
        let outside = || {
            DataControlError::Forbidden(
                "a reload may only name a file inside data.snapshot_dir".into(),
            )
        };
        let dir = self.dir.as_deref().ok_or_else(|| {
            DataControlError::Forbidden(
                "a reload may not name a file: set data.snapshot_dir (or data.snapshot)".into(),
            )
        })?;
        let dir = dir
            .canonicalize()
            .map_err(|e| DataControlError::Failed(format!("data.snapshot_dir: {e}")))?;
        if path
            .components()
            .any(|part| part == std::path::Component::ParentDir)
        {
            return Err(outside());
        }
        let joined = dir.join(path); // an absolute `path` replaces `dir`
        match joined.canonicalize() {
            Ok(real) if real.starts_with(&dir) => Ok(real),
            Ok(_) => Err(outside()),
            // "Not found" only for a plain name in the folder itself that is
            // not a link: through a link or a subfolder it could tell
            // whether something outside exists.
            Err(e)
                if joined.parent() == Some(dir.as_path())
                    && std::fs::symlink_metadata(&joined)
                        .map_or(true, |meta| !meta.file_type().is_symlink()) =>
            {
                Err(DataControlError::Failed(format!(
                    "{}: {e}",
                    joined.display()
                )))
            }
            Err(_) => Err(outside()),
        }
    }
}

/// A loaded version of the data: the service over it and its facts.
#[derive(Debug)]
pub struct Loaded {
    /// The service.
    pub service: MemoryFeedService,
    /// What its progress belongs to: the snapshot id, or the synthetic
    /// set's fingerprint.
    pub data_id: u64,
    /// What it holds.
    pub info: DataInfo,
    /// The snapshot file it was loaded from, as it was then.
    pub file: Option<FileIdentity>,
}

/// The facts of `table`, loaded in `took`, from `snapshot` if any.
fn info(table: &FeedTable, took: Duration, snapshot: Option<(&SnapshotMeta, &Path)>) -> DataInfo {
    DataInfo {
        users: u64::from(table.users()),
        items: table.total_items() as u64,
        bytes: table.bytes() as u64,
        load_seconds: took.as_secs_f64(),
        snapshot: snapshot.map(|(meta, path)| SnapshotInfo {
            id: format!("{:016x}", meta.id),
            created_unix_ms: meta.created_unix_ms,
            path: path.display().to_string(),
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
pub fn synthetic(
    spec: &DataSpec,
    limits: SizeLimits,
    recorder: Arc<LoggingRecorder>,
    offsets: OffsetMap,
    logger: &Logger,
) -> Loaded {
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
pub fn from_snapshot(
    snapshot: Snapshot,
    took: Duration,
    limits: SizeLimits,
    recorder: Arc<LoggingRecorder>,
    offsets: OffsetMap,
) -> Loaded {
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

/// Why a fallback list of `fallback` items cannot serve answers of up to
/// `max_size` items, if it cannot: a request for `max_size` items of a user
/// without a feed (or, in Redis mode, with the node of their slots down)
/// is filled from the fallback list alone. A snapshot or data version with
/// such a list is refused (at start, on reload, by `redis-load` and by a
/// frontend's watcher), so that every answer holds exactly N distinct
/// items.
pub fn short_fallback(fallback: usize, max_size: usize) -> Option<String> {
    (fallback < max_size).then(|| {
        format!(
            "the fallback list has {fallback} items, api.max_size is {max_size}: every answer \
             must be able to hold max_size distinct items"
        )
    })
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

/// One version of the data, as served.
#[derive(Debug)]
struct Version {
    service: Arc<MemoryFeedService>,
    /// What it holds.
    info: DataInfo,
    /// What its progress belongs to: the snapshot id, or the synthetic
    /// set's fingerprint.
    data_id: u64,
}

impl Version {
    /// Whether this version is the snapshot with `id` (the synthetic set is
    /// no snapshot, whatever its fingerprint).
    fn holds_snapshot(&self, id: u64) -> bool {
        self.info.snapshot.is_some() && self.data_id == id
    }
}

/// What is served now and what was served before it.
#[derive(Debug, Default)]
struct Versions {
    current: Option<Version>,
    previous: Option<Version>,
    /// The identity of the file at the default path when it was last
    /// loaded or tried (for the file watch); `None` until the first load
    /// of that path.
    watched: Option<FileIdentity>,
}

/// Locks `mutex`, recovering the value if a panicking thread left it
/// poisoned: every update here leaves `Versions` consistent at each step.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Puts data in place and swaps it: the start-up load, reloads (admin
/// endpoint, SIGHUP, file watch) and rollbacks all go through here, one at
/// a time.
#[derive(Debug)]
pub struct DataManager {
    slot: web::Data<FeedSlot<MemoryFeedService>>,
    counters: Arc<feed_http::Counters>,
    recorder: Arc<LoggingRecorder>,
    limits: SizeLimits,
    snapshots: SnapshotPlace,
    progress: ProgressPlace,
    versions: Mutex<Versions>,
    /// Held for the whole of a load, reload or rollback.
    busy: Mutex<()>,
    logger: Logger,
}

/// Why a change could not start: another one holds the lock.
fn busy(mutex: &Mutex<()>) -> Result<std::sync::MutexGuard<'_, ()>, DataControlError> {
    match mutex.try_lock() {
        Ok(guard) => Ok(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Err(DataControlError::Busy),
    }
}

impl DataManager {
    /// A manager over `slot`, reloading `default_path` when a reload names
    /// no file.
    pub fn new(
        slot: web::Data<FeedSlot<MemoryFeedService>>,
        counters: Arc<feed_http::Counters>,
        recorder: Arc<LoggingRecorder>,
        limits: SizeLimits,
        snapshots: SnapshotPlace,
        progress: ProgressPlace,
        logger: Logger,
    ) -> Self {
        Self {
            slot,
            counters,
            recorder,
            limits,
            snapshots,
            progress,
            versions: Mutex::default(),
            busy: Mutex::new(()),
            logger,
        }
    }

    /// The error recorder every version reports to.
    pub fn recorder(&self) -> &Arc<LoggingRecorder> {
        &self.recorder
    }

    /// Serves the start-up data; waits for a reload that started first.
    pub fn install_first(&self, loaded: Loaded) {
        let _busy = lock(&self.busy);
        self.install(loaded);
    }

    /// Whether the snapshot with `id` is the one being served.
    pub fn serves_snapshot(&self, id: u64) -> bool {
        lock(&self.versions)
            .current
            .as_ref()
            .is_some_and(|v| v.holds_snapshot(id))
    }

    /// Serves `loaded` from now on; what was served becomes the previous
    /// version (for a rollback). The caller holds `busy`.
    fn install(&self, loaded: Loaded) {
        // Offsets clamped at open are reported before anything is served.
        self.report_clamped(&loaded.service);
        if loaded.service.storage().offsets().file().is_some() {
            self.counters.record_progress_durable();
        }
        let service = Arc::new(loaded.service);
        let mut versions = lock(&self.versions);
        if let (Some(file), Some(snapshot)) = (loaded.file, &loaded.info.snapshot)
            && self.snapshots.default.as_deref() == Some(Path::new(&snapshot.path))
        {
            versions.watched = Some(file);
        }
        self.slot.replace(Arc::clone(&service));
        self.counters.set_data(loaded.info.clone());
        versions.previous = versions.current.replace(Version {
            service,
            info: loaded.info,
            data_id: loaded.data_id,
        });
        // Progress files of this version and the previous one stay (for a
        // rollback); older ones go.
        let keep: Vec<u64> = [&versions.current, &versions.previous]
            .into_iter()
            .flatten()
            .map(|version| version.data_id)
            .collect();
        drop(versions);
        self.progress.clean(&keep, &self.logger);
    }

    /// Makes the progress of the versions held (current and previous)
    /// durable, and counts it; a no-op for progress in memory. `all` also
    /// folds the journals into the arrays (at shutdown).
    pub fn sync(&self, all: bool) {
        let services: Vec<Arc<MemoryFeedService>> = {
            let versions = lock(&self.versions);
            [&versions.current, &versions.previous]
                .into_iter()
                .flatten()
                .map(|version| Arc::clone(&version.service))
                .collect()
        };
        for service in services {
            self.report_clamped(&service);
            if let Some(file) = service.storage().offsets().file() {
                let synced = if all { file.sync_all() } else { file.sync() };
                match synced {
                    Ok(synced) => self
                        .counters
                        .record_progress_sync(synced.took, synced.bytes),
                    Err(e) => {
                        // Nothing is lost (the next sync writes the whole
                        // array) and the server stays ready: progress lives
                        // on this instance, so a 503 would turn a full disk
                        // into an outage.
                        self.counters.record_progress_sync_error();
                        error!(self.logger, "progress: sync failed, the next one rewrites it all";
                            "file" => logging::path(file.path()), "error" => %e);
                    }
                }
            }
        }
    }

    /// Logs and counts offsets of `service`'s progress found beyond their
    /// feed's end (a damaged progress file) since the last report.
    fn report_clamped(&self, service: &MemoryFeedService) {
        let offsets = service.storage().offsets();
        let total = offsets.clamped();
        let reported = offsets.clamped_reported(total);
        if total > reported {
            self.counters.record_progress_clamped(total - reported);
            error!(self.logger, "progress: offsets beyond their feed's end, clamped (a damaged progress file?)";
                "file" => offsets.file().map(|f| logging::path(f.path())), "clamped" => total - reported);
        }
    }

    /// Opens and fully verifies the snapshot at `path`.
    fn load(&self, path: &Path) -> Result<Loaded, NotLoaded> {
        let started = Instant::now();
        let snapshot = Snapshot::open(path).map_err(|e| e.to_string())?;
        check_fallback(&snapshot, self.limits)?;
        let meta = *snapshot.meta();
        // The same snapshot as the one served keeps its progress: no new
        // file is opened for it (it would be the one in use).
        {
            let versions = lock(&self.versions);
            let holds = |version: &Option<Version>| {
                version.as_ref().is_some_and(|v| v.holds_snapshot(meta.id))
            };
            if holds(&versions.current) {
                return Err(NotLoaded::Same);
            }
            if holds(&versions.previous) {
                return Err(NotLoaded::Previous);
            }
        }
        let users = u32::try_from(meta.users).map_err(|_| "too many users".to_owned())?;
        let offsets = self
            .progress
            .offsets(meta.id, users, &self.logger)
            .map_err(|e| e.to_string())?;
        Ok(from_snapshot(
            snapshot,
            started.elapsed(),
            self.limits,
            Arc::clone(&self.recorder),
            offsets,
        ))
    }

    /// Reloads the default snapshot if its file is not the one last loaded
    /// or tried from that path (a failed file is not tried again until it
    /// changes). Does nothing before the first load of that path, or while
    /// another change runs (the next look tries again).
    pub fn reload_if_replaced(&self) {
        let Some(path) = self.snapshots.default.clone() else {
            return;
        };
        let Ok(_busy) = busy(&self.busy) else {
            return;
        };
        let now = FileIdentity::of(&path);
        {
            let mut versions = lock(&self.versions);
            let (Some(watched), Some(now)) = (versions.watched, now) else {
                return;
            };
            if now == watched {
                return;
            }
            versions.watched = Some(now);
            if now.same_file(&watched) {
                // Not a new file: the one mapped, changed in place. It
                // cannot be reloaded (it is what is served), only reported.
                error!(self.logger,
                    "the snapshot file was changed in place (truncated or rewritten); this is unsupported: \
                     write a new file and rename it over the path";
                    "path" => logging::path(&path));
                return;
            }
        }
        // The outcome is logged and counted by `reload_locked`.
        let _ = self.reload_locked(path);
    }

    /// Loads `path` and swaps it in; the caller holds `busy`. The same
    /// snapshot as the one served (same id) is kept as it is, with its
    /// progress: a reload that changes nothing does not replay every feed.
    fn reload_locked(&self, path: PathBuf) -> Result<DataInfo, DataControlError> {
        info!(self.logger, "reloading"; "path" => logging::path(&path));
        match self.load(&path) {
            Err(NotLoaded::Previous) => {
                // Its progress file is held by that version: serve it again.
                let info = self.swap_back()?;
                info!(self.logger, "reloaded";
                    "path" => logging::path(&path), "users" => info.users, "items" => info.items,
                    "snapshot_id" => info.snapshot.as_ref().map_or("", |s| s.id.as_str()),
                    "as" => "the previous version, with its progress");
                Ok(info)
            }
            Err(NotLoaded::Same) => {
                info!(self.logger, "reload: the same snapshot is being served, kept with its progress";
                    "path" => logging::path(&path));
                self.counters
                    .data()
                    .ok_or_else(|| DataControlError::Failed("no data served yet".into()))
            }
            Ok(loaded) => {
                let info = loaded.info.clone();
                self.install(loaded);
                self.counters.record_data_change(DataChange::Reloaded);
                info!(self.logger, "reloaded";
                    "path" => logging::path(&path), "users" => info.users, "items" => info.items,
                    "snapshot_id" => info.snapshot.as_ref().map_or("", |s| s.id.as_str()),
                    "load_ms" => (info.load_seconds * 1e3) as u64);
                Ok(info)
            }
            Err(NotLoaded::Failed(reason)) => {
                self.counters.record_data_change(DataChange::Failed);
                warn!(self.logger, "reload failed, still serving the current data";
                    "path" => logging::path(&path), "error" => logging::escaped(&reason));
                Err(DataControlError::Failed(reason))
            }
        }
    }
}

impl DataControl for DataManager {
    fn reload(&self, path: Option<PathBuf>) -> Result<DataInfo, DataControlError> {
        let _busy = busy(&self.busy)?;
        let path = match path {
            Some(path) => self.snapshots.confine(&path)?,
            None => self
                .snapshots
                .default
                .clone()
                .ok_or(DataControlError::NoPath)?,
        };
        self.reload_locked(path)
    }

    fn rollback(&self) -> Result<DataInfo, DataControlError> {
        let _busy = busy(&self.busy)?;
        self.swap_back()
    }
}

impl DataManager {
    /// Serves the previous version again; the caller holds `busy`.
    fn swap_back(&self) -> Result<DataInfo, DataControlError> {
        let mut versions = lock(&self.versions);
        let version = versions
            .previous
            .take()
            .ok_or(DataControlError::NoPrevious)?;
        self.slot.replace(Arc::clone(&version.service));
        self.counters.set_data(version.info.clone());
        let info = version.info.clone();
        versions.previous = versions.current.replace(version);
        self.counters.record_data_change(DataChange::RolledBack);
        info!(self.logger, "rolled back";
            "users" => info.users,
            "snapshot_id" => info.snapshot.as_ref().map_or("", |s| s.id.as_str()));
        Ok(info)
    }
}
