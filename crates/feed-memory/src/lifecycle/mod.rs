//! The memory mode's data lifecycle ([`DataManager`]): the data put in
//! place at start-up, swapped for a new snapshot on a reload, swapped back
//! on a rollback, reloaded when the snapshot file is replaced, and the
//! users' progress made durable in the background ([`Background`]).
//!
//! Progress belongs to the data it counts through: each loaded version has
//! its own offset map, so after a reload every user starts the new feeds
//! from the beginning (they are new recommendations), and a rollback brings
//! back the previous version with the progress it had. Progress files of
//! the versions held (current and previous) stay; older ones are removed.
//!
//! It publishes through the domain's [`Publish`] port and is controlled
//! through its [`DataControl`] port, so the delivery layer never names it.
//!
//! - `load.rs`: the synthetic set or a snapshot made into a [`Loaded`]
//!   version;
//! - `place.rs`: where snapshots are read from ([`SnapshotPlace`], which
//!   confines a reload to its folder) and progress is kept
//!   ([`ProgressPlace`]).

mod load;
mod place;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use feed_domain::{
    BlockedItems, BlocklistControl, BlocklistError, BlocklistPlan, DataChange, DataControl,
    DataControlError, DataInfo, ErrorRecorder, ItemId, ProgressEvent, Publish, SizeLimits,
    short_fallback,
};
use slog::{Logger, error, info, warn};

pub use self::load::{
    First, Loaded, MemoryFeedService, check_fallback, from_snapshot, generate, synthetic,
};
pub use self::place::{ProgressPlace, SnapshotPlace};
use crate::blocklist::{BlockLog, Blocked};
use crate::carry::{Carried, Served, carry};
use crate::{FileIdentity, Given, MemoryFeedStorage, Snapshot};

/// `text` as it goes into a log field: control characters, quotes and
/// backslashes escaped, so that a file name (or an error naming one) can
/// never forge a line or a field of the text format. Ordinary paths come
/// out unchanged.
pub fn log_escaped(text: &str) -> String {
    text.escape_debug().to_string()
}

/// A path as it goes into a log field ([`log_escaped`], not valid UTF-8
/// replaced).
pub fn log_path(path: &Path) -> String {
    log_escaped(&path.to_string_lossy())
}

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

/// One version of the data, as served.
struct Version<E> {
    service: Arc<MemoryFeedService<E>>,
    /// What it holds.
    info: DataInfo,
    /// What its progress belongs to: the snapshot id, or the synthetic
    /// set's fingerprint.
    data_id: u64,
}

impl<E> Version<E> {
    /// Whether this version is the snapshot with `id` (the synthetic set is
    /// no snapshot, whatever its fingerprint).
    fn holds_snapshot(&self, id: u64) -> bool {
        self.info.version.is_some() && self.data_id == id
    }
}

/// What is served now and what was served before it.
struct Versions<E> {
    current: Option<Version<E>>,
    previous: Option<Version<E>>,
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
pub struct DataManager<E> {
    publish: Arc<dyn Publish<MemoryFeedService<E>>>,
    /// The items taken down, shared by every version.
    blocked: Arc<Blocked>,
    /// Where changes to them are kept (with the progress), and the lock
    /// that makes them one at a time.
    block_log: Mutex<Option<BlockLog>>,
    recorder: E,
    limits: SizeLimits,
    snapshots: SnapshotPlace,
    progress: ProgressPlace,
    versions: Mutex<Versions<E>>,
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

impl<E: ErrorRecorder + Clone> DataManager<E> {
    /// A manager that publishes through `publish`, every version reporting
    /// its errors to `recorder`.
    pub fn new(
        publish: Arc<dyn Publish<MemoryFeedService<E>>>,
        recorder: E,
        limits: SizeLimits,
        snapshots: SnapshotPlace,
        progress: ProgressPlace,
        logger: Logger,
    ) -> Self {
        Self {
            publish,
            blocked: Arc::default(),
            block_log: Mutex::new(None),
            recorder,
            limits,
            snapshots,
            progress,
            versions: Mutex::default(),
            busy: Mutex::new(()),
            logger,
        }
    }

    /// Opens the blocklist kept with the progress (`blocklist.log` in the
    /// progress folder; without one it lives as long as the process) and
    /// returns how many items it blocks. Call before the first version is
    /// installed.
    ///
    /// # Errors
    /// One line naming the file.
    pub fn open_blocklist(&self) -> Result<usize, String> {
        if let Some(dir) = &self.progress.dir {
            let log = BlockLog::open(dir, &self.blocked)?;
            *lock(&self.block_log) = Some(log);
        }
        Ok(self.blocked.len())
    }

    /// The error recorder every version reports to.
    pub const fn recorder(&self) -> &E {
        &self.recorder
    }

    /// Serves the start-up data; waits for a reload that started first.
    /// Then the server is ready.
    pub fn install_first(&self, loaded: Loaded<E>) {
        let _busy = lock(&self.busy);
        let _ = self.install(loaded);
        self.publish.ready();
    }

    /// Serves `loaded` from now on; what was served becomes the previous
    /// version (for a rollback). The caller holds `busy`.
    fn install(&self, loaded: Loaded<E>) -> Arc<MemoryFeedService<E>> {
        // Offsets clamped at open are reported before anything is served.
        self.report_clamped(&loaded.service);
        // Blocked items are never served by any version.
        let storage = loaded.service.storage();
        storage.block_with(Arc::clone(&self.blocked));
        loaded
            .service
            .random()
            .block_with(Arc::clone(&self.blocked));
        // Marks this data carried in an earlier run stay in force.
        if storage.given().is_none() {
            match self
                .progress
                .given_kept(loaded.data_id, storage.table(), &self.logger)
            {
                Ok(Some(given)) => {
                    storage.given_or_init(|| given);
                }
                Ok(None) => {}
                Err(e) => error!(self.logger, "progress: the items given before cannot be read, \
                    served as if none were"; "error" => %e),
            }
        }
        if loaded.service.storage().offsets().file().is_some() {
            self.publish.progress(ProgressEvent::Durable);
        }
        let service = Arc::new(loaded.service);
        let service_now = Arc::clone(&service);
        let mut versions = lock(&self.versions);
        if let (Some(file), Some(version)) = (loaded.file, &loaded.info.version)
            && self.snapshots.default.as_deref() == Some(Path::new(&version.source))
        {
            versions.watched = Some(file);
        }
        self.publish
            .serve(Arc::clone(&service), loaded.info.clone());
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
        service_now
    }

    /// The version served now.
    fn current_service(&self) -> Option<Arc<MemoryFeedService<E>>> {
        lock(&self.versions)
            .current
            .as_ref()
            .map(|version| Arc::clone(&version.service))
    }

    /// Before `after` (data `data_id`) is swapped in over `before`: marks
    /// what `before` gave (see `crate::carry`), and logs it. The caller
    /// holds `busy`.
    fn carry(
        &self,
        before: &Arc<MemoryFeedService<E>>,
        after: &MemoryFeedService<E>,
        data_id: u64,
    ) -> Carried {
        let started = Instant::now();
        let storage = after.storage();
        let given = storage.given_or_init(|| {
            self.progress
                .given(data_id, storage.table(), &self.logger)
                .unwrap_or_else(|e| {
                    // A swap (an emergency rollback above all) never fails
                    // for want of this file: the marks are kept in memory.
                    error!(self.logger, "progress: the file of items given before cannot be \
                        used, kept in memory for this run"; "error" => %e);
                    Given::in_memory(storage.table().users(), storage.table().total_items())
                })
        });
        let before: Arc<dyn Served> = Arc::clone(before) as Arc<dyn Served>;
        let carried = carry(&before, storage, given);
        // On disk before the swap: an offset that moved past a marked
        // position must never be durable without the mark.
        if let Err(e) = given.write_rows() {
            // The shadow's blocks were allocated when it was opened: it
            // keeps the marks instead, at one bit a position of the table.
            error!(self.logger, "progress: the rows of items given before could not be written, \
                kept in the files of items given before and of late users instead";
                "file" => given.rows_path().map(log_path), "error" => %e);
            given.rows_to_shadow(storage.table());
        }
        for file in given.files() {
            if let Err(e) = file.sync_all() {
                error!(self.logger, "progress: the items given before could not be synced, \
                    the next sync writes them"; "file" => log_path(file.path()), "error" => %e);
            }
        }
        info!(self.logger, "carried the items given under the version served before";
            "users_with_progress" => carried.users, "positions_marked" => carried.marked,
            "users_with_marks" => carried.rows, "marks_bytes" => given.rows_bytes(),
            "ms" => started.elapsed().as_millis() as u64);
        carried
    }

    /// After the swap to `after`: seals the version before and marks the
    /// users who moved meanwhile, then makes the marks durable.
    fn finish_carry(&self, after: &MemoryFeedStorage) {
        let started = Instant::now();
        let Some(given) = after.given() else {
            return;
        };
        let moved = given.finish(after);
        for file in given.files() {
            if let Err(e) = file.sync_all() {
                error!(self.logger, "progress: the items given before could not be synced, \
                    the next sync writes them"; "file" => log_path(file.path()), "error" => %e);
            }
        }
        info!(self.logger, "sealed the version served before";
            "users_moved_meanwhile" => moved, "ms" => started.elapsed().as_millis() as u64);
    }

    /// Makes the progress of the versions held (current and previous)
    /// durable, and counts it; a no-op for progress in memory. `all` also
    /// folds the journals into the arrays (at shutdown).
    pub fn sync(&self, all: bool) {
        let services: Vec<Arc<MemoryFeedService<E>>> = {
            let versions = lock(&self.versions);
            [&versions.current, &versions.previous]
                .into_iter()
                .flatten()
                .map(|version| Arc::clone(&version.service))
                .collect()
        };
        for service in services {
            self.report_clamped(&service);
            let storage = service.storage();
            let offsets = storage.offsets();
            // Marks first (the shadow before the late bits that point to
            // it): an offset past a marked position is never durable
            // before the mark is, so when a file of marks fails, this
            // version's offsets wait for the next sync.
            let marks = storage.given().into_iter().flat_map(Given::files);
            let mut marks_failed = false;
            for (file, is_marks) in marks.map(|file| (file, true)).chain(
                [offsets.file(), offsets.keys_file()]
                    .into_iter()
                    .flatten()
                    .map(|file| (file, false)),
            ) {
                if marks_failed && !is_marks {
                    continue;
                }
                let synced = if all { file.sync_all() } else { file.sync() };
                match synced {
                    Ok(synced) => self.publish.progress(ProgressEvent::Synced {
                        took: synced.took,
                        bytes: synced.bytes,
                    }),
                    Err(e) => {
                        // Nothing is lost (the next sync writes the whole
                        // array) and the server stays ready: progress lives
                        // on this instance, so a 503 would turn a full disk
                        // into an outage.
                        marks_failed |= is_marks;
                        self.publish.progress(ProgressEvent::SyncFailed);
                        error!(self.logger, "progress: sync failed, the next one rewrites it all";
                            "file" => log_path(file.path()), "error" => %e);
                    }
                }
            }
        }
    }

    /// Logs and counts offsets of `service`'s progress found beyond their
    /// feed's end (a damaged progress file) since the last report.
    fn report_clamped(&self, service: &MemoryFeedService<E>) {
        let offsets = service.storage().offsets();
        let total = offsets.clamped();
        let reported = offsets.clamped_reported(total);
        if total > reported {
            self.publish
                .progress(ProgressEvent::Clamped(total - reported));
            error!(self.logger, "progress: offsets beyond their feed's end, clamped (a damaged progress file?)";
                "file" => offsets.file().map(|f| log_path(f.path())), "clamped" => total - reported);
        }
    }

    /// Opens and fully verifies the snapshot at `path`.
    fn load(&self, path: &Path) -> Result<Loaded<E>, NotLoaded> {
        let started = Instant::now();
        let snapshot = Snapshot::open(path).map_err(|e| e.to_string())?;
        check_fallback(&snapshot, self.limits)?;
        // With items blocked, the fallback list must still fill an answer.
        let unblocked = || {
            snapshot
                .fallback()
                .iter()
                .filter(|&&item| !self.blocked.contains(item))
                .count()
        };
        if !self.blocked.is_empty()
            && let Some(reason) = short_fallback(unblocked(), self.limits.max_size().get())
        {
            return Err(NotLoaded::Failed(format!(
                "{}: with the blocklist, {reason}",
                log_path(path)
            )));
        }
        let meta = *snapshot.meta();
        // The same snapshot as the one served keeps its progress: no new
        // file is opened for it (it would be the one in use).
        {
            let versions = lock(&self.versions);
            let holds = |version: &Option<Version<E>>| {
                version.as_ref().is_some_and(|v| v.holds_snapshot(meta.id))
            };
            if holds(&versions.current) {
                return Err(NotLoaded::Same);
            }
            // The previous version by its data id alone, whatever it is: its
            // progress file is held by it.
            if versions
                .previous
                .as_ref()
                .is_some_and(|v| v.data_id == meta.id)
            {
                return Err(NotLoaded::Previous);
            }
        }
        let offsets = self
            .progress
            .snapshot_offsets(&snapshot, &self.logger)
            .map_err(|e| e.to_string())?;
        // Marks a reload carried into this data in an earlier run: a bad
        // file refuses the reload as a bad progress file does.
        let given = self
            .progress
            .given_kept(meta.id, snapshot.table(), &self.logger)
            .map_err(|e| e.to_string())?;
        let loaded = from_snapshot(
            snapshot,
            started.elapsed(),
            self.limits,
            self.recorder.clone(),
            offsets,
        );
        if let Some(given) = given {
            loaded.service.storage().given_or_init(|| given);
        }
        Ok(loaded)
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
                    "path" => log_path(&path));
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
        info!(self.logger, "reloading"; "path" => log_path(&path));
        match self.load(&path) {
            Err(NotLoaded::Previous) => {
                // Its progress file is held by that version: serve it again.
                let info = self.swap_back()?;
                info!(self.logger, "reloaded";
                    "path" => log_path(&path), "users" => info.users, "items" => info.items,
                    "snapshot_id" => info.version.as_ref().map_or("", |v| v.id.as_str()),
                    "as" => "the previous version, with its progress");
                Ok(info)
            }
            Err(NotLoaded::Same) => {
                info!(self.logger, "reload: the same snapshot is being served, kept with its progress";
                    "path" => log_path(&path));
                lock(&self.versions)
                    .current
                    .as_ref()
                    .map(|version| version.info.clone())
                    .ok_or_else(|| DataControlError::Failed("no data served yet".into()))
            }
            Ok(loaded) => {
                let info = loaded.info.clone();
                let before = self.current_service();
                if let Some(before) = &before {
                    self.carry(before, &loaded.service, loaded.data_id);
                }
                let after = self.install(loaded);
                if before.is_some() {
                    self.finish_carry(after.storage());
                }
                self.publish.changed(DataChange::Reloaded);
                info!(self.logger, "reloaded";
                    "path" => log_path(&path), "users" => info.users, "items" => info.items,
                    "snapshot_id" => info.version.as_ref().map_or("", |v| v.id.as_str()),
                    "load_ms" => (info.load_seconds * 1e3) as u64);
                Ok(info)
            }
            Err(NotLoaded::Failed(reason)) => {
                self.publish.changed(DataChange::Failed);
                warn!(self.logger, "reload failed, still serving the current data";
                    "path" => log_path(&path), "error" => log_escaped(&reason));
                Err(DataControlError::Failed(reason))
            }
        }
    }
}

impl<E: ErrorRecorder + Clone> DataControl for DataManager<E> {
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

impl<E: ErrorRecorder + Clone> DataManager<E> {
    /// Serves the previous version again; the caller holds `busy`. What
    /// the version it replaces gave is carried into it first, and its
    /// sealed cells opened again.
    fn swap_back(&self) -> Result<DataInfo, DataControlError> {
        let (current, previous) = {
            let versions = lock(&self.versions);
            let previous = versions
                .previous
                .as_ref()
                .map(|version| (Arc::clone(&version.service), version.data_id))
                .ok_or(DataControlError::NoPrevious)?;
            (
                versions.current.as_ref().map(|v| Arc::clone(&v.service)),
                previous,
            )
        };
        let (back, back_id) = previous;
        if let Some(current) = &current {
            self.carry(current, &back, back_id);
        }
        back.storage().offsets().unseal_all();
        let mut versions = lock(&self.versions);
        let version = versions
            .previous
            .take()
            .ok_or(DataControlError::NoPrevious)?;
        self.publish
            .serve(Arc::clone(&version.service), version.info.clone());
        let info = version.info.clone();
        versions.previous = versions.current.replace(version);
        drop(versions);
        if current.is_some() {
            self.finish_carry(back.storage());
        }
        self.publish.changed(DataChange::RolledBack);
        info!(self.logger, "rolled back";
            "users" => info.users,
            "snapshot_id" => info.version.as_ref().map_or("", |v| v.id.as_str()));
        Ok(info)
    }
}

impl<E: ErrorRecorder + Clone> BlocklistControl for DataManager<E> {
    fn change(
        &self,
        add: &[ItemId],
        remove: &[ItemId],
        client: &str,
    ) -> Result<usize, BlocklistError> {
        let mut log = lock(&self.block_log);
        let plan = BlocklistPlan::check(
            add,
            remove,
            &*self.blocked,
            self.limits.max_size().get(),
            |after| {
                self.current_service()
                    .map(|current| current.random().unblocked(after))
            },
        )?;
        if let Some(log) = log.as_mut() {
            log.append(&plan.add, &plan.remove)
                .map_err(BlocklistError::Failed)?;
        }
        plan.apply(&*self.blocked);
        let blocked = self.blocked.len();
        // The audit trail: who changed what. The log file holds every change
        // whole; this line names up to 1000 items of each list.
        info!(self.logger, "blocklist changed";
            "client" => log_escaped(client), "blocked" => blocked,
            "added" => plan.add.len(), "removed" => plan.remove.len(),
            "items_added" => BlocklistPlan::shown(&plan.add),
            "items_removed" => BlocklistPlan::shown(&plan.remove));
        Ok(blocked)
    }

    fn blocked(&self) -> &dyn BlockedItems {
        &*self.blocked
    }
}

impl<E: ErrorRecorder> Served for MemoryFeedService<E> {
    fn storage(&self) -> &MemoryFeedStorage {
        feed_domain::FeedService::storage(self)
    }
}

impl<E> Default for Versions<E> {
    fn default() -> Self {
        Self {
            current: None,
            previous: None,
            watched: None,
        }
    }
}

impl<E> std::fmt::Debug for DataManager<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataManager")
            .field("limits", &self.limits)
            .field("snapshots", &self.snapshots)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// The lifecycle's background threads: the progress sync every
/// `progress.sync_ms` (on a thread of its own: an msync can block) and the
/// look at the snapshot file every `data.watch_interval_ms`.
#[derive(Debug)]
pub struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    syncer: Option<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
}

impl<E: ErrorRecorder + Clone> DataManager<E> {
    /// Starts syncing progress every `sync` (none for progress in memory)
    /// and looking at the default snapshot file every `watch` (none without
    /// the watch). Dropping the [`Background`] stops both.
    ///
    /// # Errors
    /// When a thread cannot be started (then none runs).
    pub fn start_background(
        self: &Arc<Self>,
        sync: Option<Duration>,
        watch: Option<Duration>,
    ) -> std::io::Result<Background> {
        let mut background = Background {
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            syncer: None,
            watcher: None,
        };
        background.syncer = self.every(&background, "progress-sync", sync, |manager| {
            manager.sync(false);
        })?;
        background.watcher = self.every(
            &background,
            "snapshot-watch",
            watch,
            Self::reload_if_replaced,
        )?;
        Ok(background)
    }

    /// A thread named `name` that runs `work` every `period` until
    /// `background` stops; none without a period. A panic in `work` is
    /// logged and the next round runs as usual.
    fn every(
        self: &Arc<Self>,
        background: &Background,
        name: &'static str,
        period: Option<Duration>,
        work: fn(&Self),
    ) -> std::io::Result<Option<JoinHandle<()>>> {
        let Some(period) = period else {
            return Ok(None);
        };
        let (manager, stop) = (Arc::clone(self), Arc::clone(&background.stop));
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !stopped_after(&stop, period) {
                    let round =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&manager)));
                    if round.is_err() {
                        error!(manager.logger, "a background task panicked; it runs again next time";
                            "task" => name);
                    }
                }
            })
            .map(Some)
    }
}

/// Waits `period`, or less if a stop comes; whether it came.
fn stopped_after(stop: &(Mutex<bool>, Condvar), period: Duration) -> bool {
    let (stopped, wake) = stop;
    let guard = lock(stopped);
    let (guard, _) = wake
        .wait_timeout_while(guard, period, |stopped| !*stopped)
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *guard
}

impl Background {
    /// Stops both threads and waits for them; whether progress was being
    /// synced (the caller then syncs it all one last time).
    pub fn stop(mut self) -> bool {
        let syncing = self.syncer.is_some();
        self.halt();
        syncing
    }

    /// Tells both threads to stop, and waits for them.
    fn halt(&mut self) {
        let (stopped, wake) = &*self.stop;
        *lock(stopped) = true;
        wake.notify_all();
        for thread in [self.syncer.take(), self.watcher.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_cannot_forge_log_lines() {
        let forged = std::path::Path::new("/srv/a\nlevel=CRIT msg=\"fake\".snap");
        let logged = super::log_path(forged);
        assert!(!logged.contains('\n'), "{logged}");
        assert_eq!(logged, r#"/srv/a\nlevel=CRIT msg=\"fake\".snap"#);
        assert_eq!(
            super::log_path(std::path::Path::new("/srv/feeds.snap")),
            "/srv/feeds.snap"
        );
    }
}

#[cfg(test)]
mod lifecycle_tests {
    //! The lifecycle against a publisher that records what it is told:
    //! start, reload, a reload of the same snapshot, rollback, and what is
    //! refused.

    use std::sync::atomic::AtomicUsize;

    use feed_domain::{FeedError, StorageHealth};

    use super::*;
    use crate::{FeedTable, OffsetMap, OnCorrupt, ProgressFile, snapshot};

    /// Counts errors; nothing else.
    #[derive(Debug, Clone, Default)]
    struct Errors(Arc<AtomicUsize>);

    impl ErrorRecorder for Errors {
        fn record(&self, _: feed_domain::UserId, _: &FeedError) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// What the lifecycle published, in order.
    #[derive(Default)]
    struct Recorded {
        served: Mutex<Vec<(u64, Option<String>)>>,
        changes: Mutex<Vec<DataChange>>,
        ready: Mutex<bool>,
    }

    impl Publish<MemoryFeedService<Errors>> for Recorded {
        fn serve(&self, service: Arc<MemoryFeedService<Errors>>, info: DataInfo) {
            let users = u64::from(service.storage().table().users());
            assert_eq!(users, info.users);
            lock(&self.served).push((users, info.version.map(|v| v.id)));
        }
        fn ready(&self) {
            *lock(&self.ready) = true;
        }
        fn changed(&self, change: DataChange) {
            lock(&self.changes).push(change);
        }
        fn health(&self, _: StorageHealth) {}
        fn progress(&self, _: ProgressEvent) {}
    }

    fn table(users: u32) -> FeedTable {
        let items: Vec<u32> = (0..users * 4).map(|i| i % 50 + 1).collect();
        FeedTable::from_items(items, 4).unwrap()
    }

    #[test]
    fn reloads_swap_versions_and_a_rollback_swaps_back() {
        let dir = crate::files::scratch_dir("lifecycle");
        let (first, second) = (dir.join("first.snap"), dir.join("second.snap"));
        let fallback: Vec<u32> = (1..=100).collect();
        snapshot::write(&first, &table(3), &fallback, 1).unwrap();
        snapshot::write(&second, &table(5), &fallback, 2).unwrap();
        let recorded = Arc::new(Recorded::default());
        let limits = SizeLimits::new(10, 50).unwrap();
        let manager = DataManager::new(
            Arc::clone(&recorded) as Arc<dyn Publish<MemoryFeedService<Errors>>>,
            Errors::default(),
            limits,
            SnapshotPlace {
                default: Some(first.clone()),
                dir: Some(dir.clone()),
            },
            ProgressPlace::MEMORY,
            Logger::root(slog::Discard, slog::o!()),
        );
        assert_eq!(manager.rollback(), Err(DataControlError::NoPrevious));

        let opened = Snapshot::open(&first).unwrap();
        let loaded = from_snapshot(
            opened,
            Duration::ZERO,
            limits,
            Errors::default(),
            OffsetMap::in_memory(3),
        );
        manager.install_first(loaded);
        assert!(*lock(&recorded.ready));
        let first_id = lock(&recorded.served)[0].1.clone();
        assert!(first_id.is_some());

        // The same snapshot again: kept as it is, nothing published.
        let info = manager.reload(None).unwrap();
        assert_eq!((info.users, lock(&recorded.served).len()), (3, 1));

        // Another one: served, and the first becomes the previous version.
        let info = manager.reload(Some("second.snap".into())).unwrap();
        assert_eq!(info.users, 5);
        // A rollback serves the first again, with its id.
        let info = manager.rollback().unwrap();
        assert_eq!(info.users, 3);
        assert_eq!(lock(&recorded.served).last().unwrap().1, first_id);
        // Reloading the version that is now the previous one swaps it back.
        assert_eq!(manager.reload(Some("second.snap".into())).unwrap().users, 5);
        assert_eq!(
            *lock(&recorded.changes),
            [
                DataChange::Reloaded,
                DataChange::RolledBack,
                DataChange::RolledBack
            ]
        );

        // Outside the folder: refused, and nothing changes.
        assert!(matches!(
            manager.reload(Some("../elsewhere.snap".into())),
            Err(DataControlError::Forbidden(_))
        ));
        assert_eq!(lock(&recorded.served).len(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The first `n` items of `user` from the version served now.
    fn take(manager: &DataManager<Errors>, user: u64, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let service = manager.current_service().unwrap();
        service
            .storage()
            .take_now(feed_domain::UserId::new(user), n, &mut out)
            .unwrap();
        out.into_iter().map(feed_domain::ItemId::get).collect()
    }

    /// A manager of `progress`'s files serving `path` first.
    fn serving(path: &Path, dir: &Path, progress: &ProgressPlace) -> DataManager<Errors> {
        let logger = Logger::root(slog::Discard, slog::o!());
        let limits = SizeLimits::new(10, 50).unwrap();
        let manager = DataManager::new(
            Arc::new(Recorded::default()) as Arc<dyn Publish<MemoryFeedService<Errors>>>,
            Errors::default(),
            limits,
            SnapshotPlace {
                default: Some(path.to_owned()),
                dir: Some(dir.to_owned()),
            },
            progress.clone(),
            logger.clone(),
        );
        let opened = Snapshot::open(path).unwrap();
        let offsets = progress.snapshot_offsets(&opened, &logger).unwrap();
        manager.install_first(from_snapshot(
            opened,
            Duration::ZERO,
            limits,
            Errors::default(),
            offsets,
        ));
        manager
    }

    /// In `dir`: `first.snap`, 64 users of items 1-40 in order, and
    /// `second.snap`, the same reversed; progress kept in `dir/progress`.
    fn two_versions(dir: &Path) -> (PathBuf, PathBuf, ProgressPlace) {
        let (first, second) = (dir.join("first.snap"), dir.join("second.snap"));
        let fallback: Vec<u32> = (100..=200).collect();
        for (path, id, item) in [
            (&first, 1, (|i| i % 40 + 1) as fn(u32) -> u32),
            (&second, 2, |i| 40 - i % 40),
        ] {
            let items = (0..64 * 40).map(item).collect();
            let table = FeedTable::from_items(items, 40).unwrap();
            snapshot::write(path, &table, &fallback, id).unwrap();
        }
        let progress = ProgressPlace {
            dir: Some(dir.join("progress")),
            on_corrupt: OnCorrupt::Fail,
        };
        (first, second, progress)
    }

    /// Serves `first`, gives each `(user, n)` their first `n` items, and
    /// reloads `second` (`two_versions`): the manager and the second's data id.
    fn reloaded(
        dir: &Path,
        (first, progress): (&Path, &ProgressPlace),
        takes: &[(u64, usize)],
    ) -> (DataManager<Errors>, u64) {
        let manager = serving(first, dir, progress);
        for &(user, n) in takes {
            assert_eq!(take(&manager, user, n), (1..=n as u32).collect::<Vec<_>>());
        }
        manager.reload(Some("second.snap".into())).unwrap();
        let data_id = lock(&manager.versions).current.as_ref().unwrap().data_id;
        (manager, data_id)
    }

    /// A damaged rows file fails the open under `on_corrupt = "fail"` (the
    /// start stops, a reload is refused), and is put aside under "reset".
    #[test]
    fn a_damaged_rows_file_follows_on_corrupt() {
        let dir = crate::files::scratch_dir("lifecycle-bad-rows");
        let (first, second, progress) = two_versions(&dir);
        let (manager, data_id) = reloaded(&dir, (&first, &progress), &[(40, 7)]);
        drop(manager);
        let path = dir
            .join("progress")
            .join(crate::rows::Rows::file_name(data_id));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let opened = Snapshot::open(&second).unwrap();
        let logger = Logger::root(slog::Discard, slog::o!());
        let kept = progress.given_kept(data_id, opened.table(), &logger);
        assert!(
            matches!(kept, Err(crate::ProgressError::Corrupt { .. })),
            "{kept:?}"
        );
        let reset = ProgressPlace {
            on_corrupt: OnCorrupt::Reset,
            ..progress
        };
        assert!(
            reset
                .given_kept(data_id, opened.table(), &logger)
                .unwrap()
                .is_some()
        );
        assert!(!path.exists(), "put aside");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Rows that could not be written are kept in the shadow instead
    /// (`rows_to_shadow`); and a shadow found without its late bits (as an
    /// earlier build left it) is read for every user: either way a restart
    /// gives nothing twice.
    #[test]
    fn marks_kept_only_in_the_shadow_survive_a_restart() {
        let dir = crate::files::scratch_dir("lifecycle-shadow");
        let (first, second, progress) = two_versions(&dir);
        let (manager, data_id) = reloaded(&dir, (&first, &progress), &[(40, 7)]);
        let service = manager.current_service().unwrap();
        let storage = service.storage();
        storage.given().unwrap().rows_to_shadow(storage.table());
        manager.sync(true);
        drop((service, manager));
        let folder = dir.join("progress");
        std::fs::remove_file(folder.join(crate::rows::Rows::file_name(data_id))).unwrap();
        for (remove_late, page) in [(false, [40, 39, 38]), (true, [37, 36, 35])] {
            if remove_late {
                let late = ProgressFile::kind_file_name(crate::progress::Kind::Late, data_id);
                std::fs::remove_file(folder.join(late)).unwrap();
            }
            let manager = serving(&second, &dir, &progress);
            assert_eq!(take(&manager, 40, 3), page, "{remove_late}");
            drop(manager);
        }
        // 1-7 are never given again.
        let manager = serving(&second, &dir, &progress);
        assert_eq!(take(&manager, 40, 40), (8..=34).rev().collect::<Vec<_>>());
        drop(manager);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What a reload carried is kept in the progress folder, rows only for
    /// the users who have marks: a restart on the new version still gives
    /// nothing twice, to a user who had not asked it yet too.
    #[test]
    fn a_restart_keeps_what_the_carry_marked() {
        let dir = crate::files::scratch_dir("lifecycle-carry");
        let (first, second, progress) = two_versions(&dir);
        // Users 3 and 40 get items 1-5 and 1-7; nobody else asks.
        let (manager, _) = reloaded(&dir, (&first, &progress), &[(3, 5), (40, 7)]);
        let service = manager.current_service().unwrap();
        let given = service.storage().given().unwrap();
        // Two rows of 40 bits (a bitmap of 5 bytes is smaller than a list
        // of 5 or 7 positions), and the index: 4 bits a user.
        assert_eq!(given.rows_bytes(), 2 * 5 + (4 + 4 + 8) * 2);
        assert_eq!(take(&manager, 3, 10), (31..=40).rev().collect::<Vec<_>>());
        manager.sync(true);
        drop((service, manager));

        // A restart on the second version (as after a kill: its progress
        // is its own, the rows say what the first gave).
        let manager = serving(&second, &dir, &progress);
        assert_eq!(take(&manager, 40, 40), (8..=40).rev().collect::<Vec<_>>());
        assert_eq!(take(&manager, 3, 40), (6..=30).rev().collect::<Vec<_>>());
        drop(manager);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_background_threads_stop_when_asked() {
        let recorded = Arc::new(Recorded::default());
        let manager = Arc::new(DataManager::new(
            recorded as Arc<dyn Publish<MemoryFeedService<Errors>>>,
            Errors::default(),
            SizeLimits::new(10, 50).unwrap(),
            SnapshotPlace::default(),
            ProgressPlace::MEMORY,
            Logger::root(slog::Discard, slog::o!()),
        ));
        // Periods far longer than the test: stopping must not wait them out.
        let background = manager
            .start_background(
                Some(Duration::from_secs(3600)),
                Some(Duration::from_secs(3600)),
            )
            .unwrap();
        assert!(background.stop());
        let none = manager.start_background(None, None).unwrap();
        assert!(!none.stop());
    }
}
