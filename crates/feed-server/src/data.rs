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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::web;
use feed_domain::{FeedService, SizeLimits};
use feed_http::{DataChange, DataControl, DataControlError, DataInfo, FeedSlot, SnapshotInfo};
use feed_memory::{
    CatalogRandomFeed, DataSpec, FeedTable, FileIdentity, ItemsVerifier, MemoryFeedStorage,
    Snapshot, SnapshotMeta,
};
use slog::{Logger, info, warn};

use crate::recorder::LoggingRecorder;

/// The feed service as this binary runs it, over the in-memory adapters:
/// every port resolved at compile time.
pub type MemoryFeedService =
    FeedService<MemoryFeedStorage, CatalogRandomFeed, Arc<LoggingRecorder>>;

/// How often data generation reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A loaded version of the data: the service over it and its facts.
#[derive(Debug)]
pub struct Loaded {
    /// The service.
    pub service: MemoryFeedService,
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

/// The service over the synthetic data set of `spec`.
pub fn synthetic(
    spec: &DataSpec,
    limits: SizeLimits,
    recorder: Arc<LoggingRecorder>,
    logger: &Logger,
) -> Loaded {
    let (table, took) = generate(spec, logger);
    let info = info(&table, took, None);
    let service = FeedService::new(
        MemoryFeedStorage::new(table),
        CatalogRandomFeed::new(spec.catalog_size()),
        recorder,
        limits,
    );
    Loaded {
        service,
        info,
        file: None,
    }
}

/// The service over an opened `snapshot` (opened `took` ago), and the check
/// of its items still to run.
pub fn from_snapshot(
    snapshot: Snapshot,
    took: Duration,
    limits: SizeLimits,
    recorder: Arc<LoggingRecorder>,
) -> (Loaded, ItemsVerifier) {
    let verifier = snapshot.verifier();
    let file = Some(snapshot.identity());
    let path = snapshot.path().to_owned();
    let (meta, table, fallback) = snapshot.into_parts();
    let info = info(&table, took, Some((&meta, &path)));
    let service = FeedService::new(
        MemoryFeedStorage::new(table),
        CatalogRandomFeed::from_list(fallback),
        recorder,
        limits,
    );
    (
        Loaded {
            service,
            info,
            file,
        },
        verifier,
    )
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One version of the data, as served.
type Version = (Arc<MemoryFeedService>, DataInfo);

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
    default_path: Option<PathBuf>,
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
        default_path: Option<PathBuf>,
        logger: Logger,
    ) -> Self {
        Self {
            slot,
            counters,
            recorder,
            limits,
            default_path,
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
    pub fn serves_snapshot(&self, id: &str) -> bool {
        lock(&self.versions)
            .current
            .as_ref()
            .and_then(|(_, info)| info.snapshot.as_ref())
            .is_some_and(|snapshot| snapshot.id == id)
    }

    /// Serves `loaded` from now on; what was served becomes the previous
    /// version (for a rollback). The caller holds `busy`.
    fn install(&self, loaded: Loaded) {
        let service = Arc::new(loaded.service);
        let mut versions = lock(&self.versions);
        if let (Some(file), Some(snapshot)) = (loaded.file, &loaded.info.snapshot)
            && self.default_path.as_deref() == Some(Path::new(&snapshot.path))
        {
            versions.watched = Some(file);
        }
        self.slot.replace(Arc::clone(&service));
        self.counters.set_data(loaded.info.clone());
        versions.previous = versions.current.replace((service, loaded.info));
    }

    /// Opens and fully verifies the snapshot at `path`.
    fn load(&self, path: &Path) -> Result<Loaded, String> {
        let started = Instant::now();
        let snapshot = Snapshot::open(path).map_err(|e| e.to_string())?;
        snapshot.verify_items().map_err(|e| e.to_string())?;
        let (loaded, _) = from_snapshot(
            snapshot,
            started.elapsed(),
            self.limits,
            Arc::clone(&self.recorder),
        );
        Ok(loaded)
    }

    /// Reloads the default snapshot if its file is not the one last loaded
    /// or tried from that path (a failed file is not tried again until it
    /// changes). Does nothing before the first load of that path, or while
    /// another change runs (the next look tries again).
    pub fn reload_if_replaced(&self) {
        let Some(path) = self.default_path.clone() else {
            return;
        };
        let Ok(_busy) = busy(&self.busy) else {
            return;
        };
        let now = FileIdentity::of(&path);
        {
            let mut versions = lock(&self.versions);
            if versions.watched.is_none() || now.is_none() || now == versions.watched {
                return;
            }
            versions.watched = now;
        }
        // The outcome is logged and counted by `reload_locked`.
        let _ = self.reload_locked(path);
    }

    /// Loads `path` and swaps it in; the caller holds `busy`. The same
    /// snapshot as the one served (same id) is kept as it is, with its
    /// progress: a reload that changes nothing does not replay every feed.
    fn reload_locked(&self, path: PathBuf) -> Result<DataInfo, DataControlError> {
        info!(self.logger, "reloading"; "path" => %path.display());
        match self.load(&path) {
            Ok(loaded) => {
                let info = loaded.info.clone();
                let same = info
                    .snapshot
                    .as_ref()
                    .is_some_and(|snapshot| self.serves_snapshot(&snapshot.id));
                if same {
                    info!(self.logger, "reload: the same snapshot is being served, kept with its progress";
                        "path" => %path.display(),
                        "snapshot_id" => info.snapshot.as_ref().map_or("", |s| s.id.as_str()));
                    return Ok(self.counters.data().unwrap_or(info));
                }
                self.install(loaded);
                self.counters.record_data_change(DataChange::Reloaded);
                info!(self.logger, "reloaded";
                    "path" => %path.display(), "users" => info.users, "items" => info.items,
                    "snapshot_id" => info.snapshot.as_ref().map_or("", |s| s.id.as_str()),
                    "load_ms" => (info.load_seconds * 1e3) as u64);
                Ok(info)
            }
            Err(reason) => {
                self.counters.record_data_change(DataChange::Failed);
                warn!(self.logger, "reload failed, still serving the current data";
                    "path" => %path.display(), "error" => &reason);
                Err(DataControlError::Failed(reason))
            }
        }
    }
}

impl DataControl for DataManager {
    fn reload(&self, path: Option<PathBuf>) -> Result<DataInfo, DataControlError> {
        let _busy = busy(&self.busy)?;
        let path = path
            .or_else(|| self.default_path.clone())
            .ok_or(DataControlError::NoPath)?;
        self.reload_locked(path)
    }

    fn rollback(&self) -> Result<DataInfo, DataControlError> {
        let _busy = busy(&self.busy)?;
        let mut versions = lock(&self.versions);
        let (service, info) = versions
            .previous
            .take()
            .ok_or(DataControlError::NoPrevious)?;
        self.slot.replace(Arc::clone(&service));
        self.counters.set_data(info.clone());
        versions.previous = versions.current.replace((service, info.clone()));
        self.counters.record_data_change(DataChange::RolledBack);
        info!(self.logger, "rolled back";
            "users" => info.users,
            "snapshot_id" => info.snapshot.as_ref().map_or("", |s| s.id.as_str()));
        Ok(info)
    }
}
