//! [`ProgressFile`]: users' offsets in a file that outlives the process.
//!
//! The file is a header page and then one little-endian `u32` a user (by
//! position in the feed table), mapped shared (`MAP_SHARED`): an advance is
//! a compare-and-swap on the mapped page, which is the page cache itself,
//! so it survives a crash of the process at once (`kill -9`, a panic, the
//! OOM killer) with no write call at all. [`ProgressFile::sync`] makes it
//! durable against a machine crash: the offsets that moved since the last
//! sync (each worker logs the positions it advanced: [`dirty`]) go to a
//! journal beside the file in one checksummed batch, synced with
//! `fdatasync` (group commit, [`journal`]); a server calls it every
//! `progress.sync_ms`, so a power loss costs at most that much progress.
//! The array itself is written to disk (folded) when the journal grows
//! large, when a sync failed, at open (after the journal is replayed) and
//! by [`ProgressFile::sync_all`] at shutdown.
//!
//! What is assumed of the media, and what follows:
//! - a 4-byte aligned write is never torn, so a page written back mixes
//!   older and newer offsets, never a half-written one; offsets only grow,
//!   so replaying the journal takes the larger of the two;
//! - data is durable once `fdatasync`/`msync` returned success, and not
//!   before: after a failure nothing is trusted (the kernel may have marked
//!   the pages clean without writing them), the whole array is dirtied
//!   again and folded, and the journal keeps everything until that worked;
//! - the file's blocks are allocated when it is opened (`fallocate`, or
//!   zeros written where the filesystem has no `fallocate`), so an advance
//!   in the mapping never needs new space: a full disk is an error at
//!   start, never a `SIGBUS` inside a request. That holds on filesystems
//!   that overwrite in place (ext4, XFS, tmpfs); on copy-on-write ones
//!   (btrfs, ZFS) every write-back needs new blocks, so the progress folder
//!   must not live there (or, on btrfs, must be `chattr +C`), as
//!   docs/OPERATIONS.md says.
//!
//! Architecture Invariant: no byte of the file can make a read go out of
//! bounds. The header is checked, and an offset is never trusted as an
//! index: `OffsetMap` clamps each one to its feed's length, at open and
//! again where it is read (the file lock is only advisory).
//!
//! Progress belongs to the data it counts through: the header names the
//! data's id (a snapshot id, or a fingerprint of the synthetic set) and
//! the number of users, and a file for other data is never used. One file a
//! data id, `progress-<id>.bin`, locked while a process uses it, created
//! with mode 0600.
//!
//! The header's layout, and the checks that tell this data's progress from
//! anything else, are in `format`; this module is the [`ProgressFile`]: it
//! opens (creating or putting a bad file aside), replays, folds and syncs.

mod dirty;
mod folder;
mod format;
mod journal;
mod view;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use memmap2::MmapRaw;

use self::dirty::DirtyLog;
use self::format::{CELLS_PER_PAGE, HEADER};
use self::journal::Journal;
pub use self::view::{ProgressView, ViewError};
use crate::clock::now_unix_ms;
use crate::files::{replace_atomically, sync_folder};
use crate::offsets::OFFSET;

/// What to do with a progress file that is torn, truncated or foreign;
/// read from `progress.on_corrupt` as `fail` or `reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCorrupt {
    /// Refuse to start.
    Fail,
    /// Keep the bad file aside (renamed) and start fresh.
    Reset,
}

/// How [`ProgressFile::open`] found the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// No progress for this data yet: everyone starts at the beginning.
    Fresh,
    /// The progress of an earlier run, in use again.
    Restored,
    /// A bad file was moved to `aside` (because of `reason`) and progress
    /// starts fresh.
    Reset {
        /// Why the file was not used.
        reason: String,
        /// Where it was moved.
        aside: PathBuf,
    },
}

/// A progress file that cannot be used. The message is one line naming the
/// file.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The file or its folder could not be created, read, locked or mapped
    /// (no such folder, no permission, in use).
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The filesystem has no room for the whole file.
    #[error("{path}: no room for the progress file, {bytes} bytes are needed ({source})")]
    NoRoom {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is torn, truncated or belongs to other data, and
    /// `on_corrupt` is `fail`.
    #[error(
        "{path}: {reason} (set progress.on_corrupt = \"reset\" to start fresh and keep it aside)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProgressError + '_ {
    move |source| ProgressError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a progress file holds for each user: the cells of its array and
/// of its journal's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The user's offset, one `u32` (`progress-<id>.bin`).
    Offsets,
    /// The user's latest retry key, four `u32` words
    /// (`progress-<id>-keys.bin`): see `crate::offsets`.
    Keys,
    /// The feed positions given under the version served before, one bit
    /// a position over the whole table, in `u32` words; its "users" are the
    /// words (`progress-<id>-given.bin`), read only for the users marked
    /// in [`Kind::Late`]: see `crate::carry`.
    Given,
    /// One bit a user, in `u32` words (the "users" are the words): their
    /// marks are (also) in the [`Kind::Given`] file
    /// (`progress-<id>-late.bin`).
    Late,
}

impl Kind {
    /// `u32` cells a user.
    pub(crate) const fn width(self) -> usize {
        match self {
            Self::Offsets | Self::Given | Self::Late => 1,
            Self::Keys => 4,
        }
    }

    const fn magic(self) -> [u8; 8] {
        match self {
            Self::Offsets => *b"FFEEDPRG",
            Self::Keys => *b"FFEEDKEY",
            Self::Given => *b"FFEEDGVN",
            Self::Late => *b"FFEEDLAT",
        }
    }
}

/// Users' offsets (or retry keys) in a shared file mapping. See the
/// module doc.
#[derive(Debug)]
pub struct ProgressFile {
    path: PathBuf,
    map: MmapRaw,
    users: usize,
    kind: Kind,
    /// Held open for its lock, released when the file is dropped.
    _file: File,
    /// The positions advanced since the last sync.
    dirty: DirtyLog,
    /// The syncer's state, one sync at a time.
    state: Mutex<SyncState>,
}

/// What a sync works with between two calls.
#[derive(Debug)]
struct SyncState {
    journal: Journal,
    /// Positions drained from the dirty logs but not yet durable in the
    /// journal (a sync failed): kept until a sync covers them.
    pending: Vec<u32>,
    /// The next sync folds the whole array: a dirty log overflowed, too
    /// many positions are pending, or a write or sync failed.
    fold: bool,
    /// The page cache may hold pages of the array marked clean that never
    /// reached the disk: a write or sync failed since the last good fold,
    /// or the previous process ended without one (the journal was not
    /// empty). The next fold dirties every page first; otherwise it writes
    /// only the pages that changed.
    distrust: bool,
    /// The batch being written (kept for its capacity).
    batch: Vec<u8>,
}

/// A journal past this size is folded into the array (and emptied).
const COMPACT_JOURNAL_BYTES: u64 = 64 << 20;

/// What one call of [`ProgressFile::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// How long it took.
    pub took: Duration,
    /// Bytes written: a journal batch, or the whole array when folded.
    pub bytes: u64,
    /// Offsets it made durable (every user's when folded).
    pub offsets: u64,
}

impl ProgressFile {
    /// The file name of the progress of data `id`.
    pub fn file_name(id: u64) -> String {
        format!("progress-{id:016x}.bin")
    }

    /// The file name of the `kind` file of data `id`.
    pub fn kind_file_name(kind: Kind, id: u64) -> String {
        match kind {
            Kind::Offsets => Self::file_name(id),
            Kind::Keys => format!("progress-{id:016x}-keys.bin"),
            Kind::Given => format!("progress-{id:016x}-given.bin"),
            Kind::Late => format!("progress-{id:016x}-late.bin"),
        }
    }

    /// Opens (or creates) the progress of data `id` with `users` users in
    /// `dir`, creating the folder if needed. The file's blocks are
    /// allocated before it is mapped.
    ///
    /// # Errors
    /// [`ProgressError::Io`] when the folder or file cannot be created,
    /// read, locked (another process uses it) or mapped;
    /// [`ProgressError::NoRoom`] when the filesystem cannot hold it;
    /// [`ProgressError::Corrupt`] for a bad file when `on_corrupt` is
    /// [`OnCorrupt::Fail`].
    pub fn open(
        dir: &Path,
        id: u64,
        users: u32,
        on_corrupt: OnCorrupt,
    ) -> Result<(Self, Opened), ProgressError> {
        Self::open_kind(Kind::Offsets, dir, id, users, on_corrupt)
    }

    /// [`Self::open`] for the file of `kind`.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_kind(
        kind: Kind,
        dir: &Path,
        id: u64,
        users: u32,
        on_corrupt: OnCorrupt,
    ) -> Result<(Self, Opened), ProgressError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(Self::kind_file_name(kind, id));
        let mut opened = Opened::Fresh;
        if path.exists() {
            match format::check(kind, &path, id, users) {
                Ok(()) => opened = Opened::Restored,
                Err(reason) if on_corrupt == OnCorrupt::Reset => {
                    let aside = folder::aside_name(&path, now_unix_ms());
                    std::fs::rename(&path, &aside).map_err(io(&path))?;
                    opened = Opened::Reset { reason, aside };
                }
                Err(reason) => return Err(ProgressError::Corrupt { path, reason }),
            }
        }
        let bytes = format::file_len(kind, users);
        if opened != Opened::Restored {
            Self::create(kind, &path, id, users)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        folder::lock(&file).map_err(io(&path))?;
        // A file written by an older build (sparse) gets its blocks now.
        allocate(&file, bytes).map_err(|source| no_room(&path, bytes, source))?;
        let map = MmapRaw::map_raw(&file).map_err(io(&path))?;
        let users = users as usize;
        if map.len() as u64 != bytes {
            // Changed under us between the check and the mapping.
            return Err(ProgressError::Corrupt {
                path,
                reason: "its length changed while it was opened".into(),
            });
        }
        // A journal of earlier data under this name means nothing now.
        let (journal, created) = Journal::open(
            path.with_extension("journal"),
            opened != Opened::Restored,
            kind.width(),
        )
        .map_err(io(&path))?;
        if created {
            sync_folder(dir).map_err(io(dir))?;
        }
        let progress = Self {
            path,
            map,
            users,
            kind,
            _file: file,
            dirty: DirtyLog::new(),
            state: Mutex::new(SyncState {
                journal,
                pending: Vec::new(),
                fold: false,
                distrust: false,
                batch: Vec::new(),
            }),
        };
        progress.replay().map_err(io(&progress.path))?;
        Ok((progress, opened))
    }

    /// Applies the journal to the array (offsets only grow, so the larger
    /// of the two wins; a retry key is replaced, so the latest wins), then
    /// folds the array to disk and empties the journal. A journal with
    /// batches means the previous process ended without a last fold, so
    /// none of its page cache is trusted.
    fn replay(&self) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let cells = self.cells();
        let width = self.kind.width();
        let batches = state.journal.replay(|position, entry| {
            let at = position as usize * width;
            let Some(user) = cells.get(at..at + width) else {
                return;
            };
            match self.kind {
                Kind::Offsets => {
                    // The array may hold a carry's flags: only offsets compare.
                    let _ = user[0].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |raw| {
                        Some((raw & OFFSET).max(entry[0] & OFFSET))
                    });
                }
                Kind::Given | Kind::Late => {
                    user[0].fetch_or(entry[0], Ordering::Relaxed);
                }
                Kind::Keys => {
                    for (cell, &word) in user.iter().zip(entry) {
                        cell.store(word, Ordering::Relaxed);
                    }
                }
            }
        })?;
        state.distrust = batches > 0;
        self.fold(&mut state)
    }

    /// Writes the array to disk, then empties the journal. After a failure
    /// ([`SyncState::distrust`]) every page is dirtied again first: after a
    /// failed `msync` or `fdatasync` the kernel may hold pages marked clean
    /// that never reached the disk, and a fold must not trust it. On
    /// failure the journal stays whole and the next sync folds again.
    fn fold(&self, state: &mut SyncState) -> std::io::Result<()> {
        state.fold = true;
        if state.distrust {
            self.dirty_every_page();
        }
        if let Err(e) = self.map.flush().and_then(|()| state.journal.empty()) {
            state.distrust = true;
            return Err(e);
        }
        state.fold = false;
        state.distrust = false;
        state.pending.clear();
        Ok(())
    }

    /// Marks every page of the array dirty, changing no offset.
    fn dirty_every_page(&self) {
        for page in self.cells().chunks(CELLS_PER_PAGE) {
            // A write that changes nothing, to mark the page dirty. Not
            // `fetch_or(0)`: the compiler may turn an idempotent
            // read-modify-write into a plain load (it does on x86-64, and
            // drops it when the result is unused); a compare-and-exchange
            // stays a locked write (`lock cmpxchg`) whatever the values.
            let cell = &page[0];
            let value = cell.load(Ordering::Relaxed);
            let _ = cell.compare_exchange(value, value, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Writes a fresh file (all offsets 0, every block allocated) beside
    /// `path`, syncs it and renames it over `path`, then syncs the folder.
    fn create(kind: Kind, path: &Path, id: u64, users: u32) -> Result<(), ProgressError> {
        let header = format::header(kind, id, users, now_unix_ms());
        let bytes = format::file_len(kind, users);
        replace_atomically(path, &folder::temporary_name(path), 0o600, |file| {
            // Locked, so that cleaning never takes it for a leftover.
            folder::lock(file)?;
            file.write_all_at(&header, 0)?;
            file.set_len(bytes)?;
            allocate(file, bytes)
        })
        .map_err(|e| no_room(path, bytes, e))
    }

    /// The cells, [`Kind::width`] a user.
    #[inline]
    #[allow(unsafe_code, reason = "atomics over a shared file mapping")]
    pub(crate) fn cells(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is `HEADER + users * width * 4` bytes (checked when
        // opened) and lives as long as `self`, which the returned slice
        // borrows; `HEADER` is a multiple of 4 and the mapping is
        // page-aligned, so the cells are aligned for `AtomicU32`, which has
        // the layout of `u32`. `MmapRaw` hands out no references to the
        // bytes, so every access goes through these atomics; the file is
        // locked against other processes that would write it, and its
        // blocks are allocated, so a write never faults for want of space.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_mut_ptr().add(HEADER).cast::<AtomicU32>(),
                self.users * self.kind.width(),
            )
        }
    }

    /// Notes that the offset at `position` moved, for the next sync.
    #[inline]
    pub(crate) fn moved(&self, position: u32) {
        self.dirty.record(position);
    }

    /// Makes the progress so far durable: appends the offsets that moved
    /// since the last sync to the journal and syncs it (group commit); now
    /// and then, and after any failure, folds the whole array instead.
    /// Nothing to write costs no I/O and no scan.
    ///
    /// # Errors
    /// The system's error. Nothing is lost: the offsets stay in the page
    /// cache, and the next sync folds the whole array.
    pub fn sync(&self) -> std::io::Result<Synced> {
        let started = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        if !self.dirty.drain(&mut state.pending) || state.pending.len() > self.pending_limit() {
            state.fold = true;
        }
        if state.fold || state.journal.len() > COMPACT_JOURNAL_BYTES {
            state.pending.clear();
            self.fold(state)?;
            return Ok(Synced {
                took: started.elapsed(),
                bytes: self.bytes() as u64,
                offsets: self.users as u64,
            });
        }
        if state.pending.is_empty() {
            return Ok(Synced {
                took: started.elapsed(),
                bytes: 0,
                offsets: 0,
            });
        }
        // Offsets are written once each, in order. A retry key or a word of
        // marks logged twice is written twice, both copies the same value
        // read now (replay keeps the latest, or ORs them): cheaper than the
        // sort for entries that rarely repeat between two syncs.
        if self.kind == Kind::Offsets {
            state.pending.sort_unstable();
            state.pending.dedup();
        }
        let cells = self.cells();
        let width = self.kind.width();
        // A key's words may be read while a request rewrites them: the
        // words carry their own check (`crate::offsets`), so a torn copy
        // is never taken for a key, and the request that wrote them logs
        // the position again, so the next batch has them whole.
        journal::encode(
            &state.pending,
            width,
            |position, words| {
                let at = position as usize * width;
                for (word, cell) in words.iter_mut().zip(&cells[at..at + width]) {
                    *word = cell.load(Ordering::Relaxed);
                }
                if self.kind == Kind::Offsets {
                    words[0] &= OFFSET;
                }
            },
            &mut state.batch,
        );
        if let Err(e) = state.journal.append(&state.batch) {
            // Nothing of that batch is trusted: the next sync writes every
            // offset again, the array whole.
            state.fold = true;
            state.distrust = true;
            return Err(e);
        }
        let offsets = state.pending.len() as u64;
        state.pending.clear();
        Ok(Synced {
            took: started.elapsed(),
            bytes: state.batch.len() as u64,
            offsets,
        })
    }
}

impl Drop for ProgressFile {
    /// A version dropped while requests still held it (a third one swapped
    /// in) may have moved after its last sync: one more sync journals what
    /// moved, so that its progress, kept for a restart or a later rollback,
    /// loses nothing.
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

impl ProgressFile {
    /// Past this many pending positions a fold is cheaper, and the memory
    /// held for them stays within one bit a user.
    fn pending_limit(&self) -> usize {
        (self.users / 32).max(dirty::SHARD_CAPACITY)
    }

    /// Folds everything into the array on disk and empties the journal: the
    /// state a clean shutdown leaves.
    ///
    /// # Errors
    /// The system's error.
    pub fn sync_all(&self) -> std::io::Result<Synced> {
        let started = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut drained = Vec::new();
        self.dirty.drain(&mut drained);
        self.fold(&mut state)?;
        Ok(Synced {
            took: started.elapsed(),
            bytes: self.bytes() as u64,
            offsets: self.users as u64,
        })
    }

    /// Bytes of progress the array holds.
    pub const fn bytes(&self) -> usize {
        self.users * 4 * self.kind.width()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes, from `dir`, the progress files of data other than `keep`
    /// except the newest of them (the progress of the data served before,
    /// for a rollback or a restart on it), never one another process holds;
    /// leftover temporary files; and all but the newest few files kept
    /// aside as corrupt. Returns the files removed.
    ///
    /// # Errors
    /// The system's error for the folder (a file that cannot be removed is
    /// left, not an error).
    pub fn clean(dir: &Path, keep: &[u64]) -> std::io::Result<Vec<PathBuf>> {
        let keep: Vec<String> = keep
            .iter()
            .flat_map(|&id| {
                [Kind::Offsets, Kind::Keys, Kind::Given, Kind::Late]
                    .map(|kind| Self::kind_file_name(kind, id))
                    .into_iter()
                    .chain([crate::rows::Rows::file_name(id)])
            })
            .collect();
        folder::clean(dir, &keep)
    }
}

/// The error of a file that could not be given its `bytes`: no room when
/// the system says so.
fn no_room(path: &Path, bytes: u64, source: std::io::Error) -> ProgressError {
    match source.raw_os_error() {
        Some(code)
            if [
                rustix::io::Errno::NOSPC,
                rustix::io::Errno::DQUOT,
                rustix::io::Errno::FBIG,
            ]
            .iter()
            .any(|e| e.raw_os_error() == code) =>
        {
            ProgressError::NoRoom {
                path: path.to_owned(),
                bytes,
                source,
            }
        }
        _ => io(path)(source),
    }
}

/// Gives `file` real blocks for its first `len` bytes: `fallocate`, or,
/// where the filesystem has none, every byte read and written back.
fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    use rustix::io::Errno;
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
            let mut chunk = vec![0u8; 1 << 20];
            let mut at = 0;
            while at < len {
                let n = chunk.len().min((len - at) as usize);
                file.read_exact_at(&mut chunk[..n], at)?;
                file.write_all_at(&chunk[..n], at)?;
                at += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use proptest::prelude::*;

    use super::*;
    use crate::offsets::OffsetMap;

    fn dir() -> PathBuf {
        crate::files::scratch_dir("progress")
    }

    fn open(
        dir: &Path,
        id: u64,
        users: u32,
        on_corrupt: OnCorrupt,
    ) -> Result<(OffsetMap, Opened), ProgressError> {
        ProgressFile::open(dir, id, users, on_corrupt)
            .map(|(file, opened)| (OffsetMap::in_file(file), opened))
    }

    #[test]
    fn progress_survives_reopening_and_belongs_to_its_data() {
        let dir = dir();
        let (map, opened) = open(&dir, 7, 100, OnCorrupt::Fail).unwrap();
        assert_eq!(opened, Opened::Fresh);
        assert_eq!(map.advance(42, 5, 200), 0..5);
        // A second process may not use it at the same time.
        assert!(matches!(
            open(&dir, 7, 100, OnCorrupt::Fail),
            Err(ProgressError::Io { .. })
        ));
        drop(map);
        let (map, opened) = open(&dir, 7, 100, OnCorrupt::Fail).unwrap();
        assert_eq!(opened, Opened::Restored);
        assert_eq!(map.advance(42, 5, 200), 5..10);
        assert!(map.file().unwrap().sync().is_ok());
        drop(map);
        // Other data: its own file, from the start.
        let (other, opened) = open(&dir, 8, 100, OnCorrupt::Fail).unwrap();
        assert_eq!(opened, Opened::Fresh);
        assert_eq!(other.offset(42), 0);
        drop(other);
        // Cleaning keeps the data named and the newest other file.
        assert!(ProgressFile::clean(&dir, &[8]).unwrap().is_empty());
        drop(open(&dir, 9, 100, OnCorrupt::Fail).unwrap());
        // 8 is the newest of the others (set, not waited for).
        let ages = [(7, 300), (8, 200), (9, 100)];
        for (id, seconds_ago) in ages {
            let file = File::options()
                .write(true)
                .open(dir.join(ProgressFile::file_name(id)))
                .unwrap();
            file.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago))
                .unwrap();
        }
        let removed = ProgressFile::clean(&dir, &[9]).unwrap();
        assert_eq!(removed, [dir.join(ProgressFile::file_name(7))]);
    }

    /// A power loss: the array on disk is older than the last sync (the
    /// kernel had not written its pages back), the journal has every sync,
    /// and its last batch may be torn. Reopening recovers the offsets of the
    /// last sync.
    #[test]
    fn the_journal_recovers_what_a_power_loss_took_from_the_array() {
        let dir = dir();
        let path = dir.join(ProgressFile::file_name(5));
        let (map, _) = open(&dir, 5, 1000, OnCorrupt::Fail).unwrap();
        let stale_array = std::fs::read(&path).unwrap();
        for position in 0..1000 {
            map.advance(position, position % 7 + 1, 50);
        }
        let synced = map.file().unwrap().sync().unwrap();
        assert_eq!((synced.bytes, synced.offsets), (4 + 1000 * 8 + 8, 1000));
        // Nothing moved since: nothing to write.
        let synced = map.file().unwrap().sync().unwrap();
        assert_eq!((synced.bytes, synced.offsets), (0, 0));
        map.advance(3, 1, 50); // after the last sync: may be lost
        let journal = std::fs::read(path.with_extension("journal")).unwrap();
        drop(map);
        std::fs::write(&path, &stale_array).unwrap();
        let mut torn = journal.clone();
        torn.extend_from_slice(&[9, 0, 0, 0, 1, 2, 3]);
        std::fs::write(path.with_extension("journal"), &torn).unwrap();
        let (map, opened) = open(&dir, 5, 1000, OnCorrupt::Fail).unwrap();
        assert_eq!(opened, Opened::Restored);
        for position in 0..1000 {
            assert_eq!(map.offset(position), position % 7 + 1, "{position}");
        }
        // Replaying folded the journal into the array and emptied it.
        assert_eq!(
            std::fs::metadata(path.with_extension("journal"))
                .unwrap()
                .len(),
            0
        );
    }

    /// Retry keys are kept as offsets are: a power loss after a sync
    /// loses neither, and the journal's latest key wins.
    #[test]
    fn retry_keys_come_back_from_the_journal() {
        use crate::offsets::KeyedRange;
        let dir = dir();
        let open_both = || {
            let (file, _) = ProgressFile::open(&dir, 8, 100, OnCorrupt::Fail).unwrap();
            let (keys, _) =
                ProgressFile::open_kind(Kind::Keys, &dir, 8, 100, OnCorrupt::Fail).unwrap();
            OffsetMap::in_files(file, keys)
        };
        let path = dir.join(ProgressFile::kind_file_name(Kind::Keys, 8));
        let map = open_both();
        let stale_keys = std::fs::read(&path).unwrap();
        assert_eq!(map.advance_keyed(4, 3, 50, 77), KeyedRange::Fresh(0..3));
        map.keys_file().unwrap().sync().unwrap();
        assert_eq!(map.advance_keyed(4, 3, 50, 78), KeyedRange::Fresh(3..6));
        assert_eq!(map.advance_keyed(5, 2, 50, 78), KeyedRange::Fresh(0..2));
        let synced = map.keys_file().unwrap().sync().unwrap();
        assert_eq!(synced.offsets, 2);
        map.file().unwrap().sync().unwrap();
        let journal = std::fs::read(path.with_extension("journal")).unwrap();
        drop(map);
        std::fs::write(&path, &stale_keys).unwrap();
        std::fs::write(path.with_extension("journal"), &journal).unwrap();
        let map = open_both();
        assert_eq!(map.advance_keyed(4, 3, 50, 78), KeyedRange::Replayed(3..6));
        assert_eq!(map.advance_keyed(5, 2, 50, 78), KeyedRange::Replayed(0..2));
        assert_eq!(map.advance_keyed(4, 3, 50, 77), KeyedRange::Fresh(6..9));
    }

    /// Marks of items given before come back from the journal too, OR-ed
    /// into the array.
    #[test]
    fn marks_come_back_from_the_journal() {
        let dir = dir();
        let path = dir.join(ProgressFile::kind_file_name(Kind::Given, 9));
        let (file, _) = ProgressFile::open_kind(Kind::Given, &dir, 9, 10, OnCorrupt::Fail).unwrap();
        let stale = std::fs::read(&path).unwrap();
        file.cells()[3].fetch_or(0b1010, Ordering::Relaxed);
        file.moved(3);
        file.sync().unwrap();
        file.cells()[3].fetch_or(0b0100, Ordering::Relaxed);
        file.moved(3);
        file.sync().unwrap();
        let journal = std::fs::read(path.with_extension("journal")).unwrap();
        drop(file);
        let mut stale_with_one = stale.clone();
        stale_with_one[format::HEADER + 12] = 0b0001;
        std::fs::write(&path, &stale_with_one).unwrap();
        std::fs::write(path.with_extension("journal"), &journal).unwrap();
        let (file, opened) =
            ProgressFile::open_kind(Kind::Given, &dir, 9, 10, OnCorrupt::Fail).unwrap();
        assert_eq!(opened, Opened::Restored);
        assert_eq!(file.cells()[3].load(Ordering::Relaxed), 0b1111);
    }

    /// A failed write loses nothing: the batch is not counted as written,
    /// the next sync folds the whole array, and a restart has every offset.
    #[test]
    fn a_failed_sync_is_folded_by_the_next_one() {
        let dir = dir();
        let (map, _) = open(&dir, 6, 100, OnCorrupt::Fail).unwrap();
        let file = map.file().unwrap();
        map.advance(7, 3, 50);
        file.sync().unwrap();
        map.advance(8, 4, 50);
        file.state.lock().unwrap().journal.break_writes(true);
        assert!(file.sync().is_err());
        assert!(file.state.lock().unwrap().fold);
        assert!(file.state.lock().unwrap().distrust);
        // Still failing: still an error, nothing claimed.
        map.advance(9, 5, 50);
        assert!(file.sync().is_err());
        file.state.lock().unwrap().journal.break_writes(false);
        let synced = file.sync().unwrap();
        assert_eq!(synced.offsets, 100, "the whole array was folded");
        assert!(!file.state.lock().unwrap().fold);
        assert!(!file.state.lock().unwrap().distrust);
        assert_eq!(file.state.lock().unwrap().journal.len(), 0);
        drop(map);
        let (map, _) = open(&dir, 6, 100, OnCorrupt::Fail).unwrap();
        assert_eq!((map.offset(7), map.offset(8), map.offset(9)), (3, 4, 5));
    }

    /// Cleaning never removes a file another holder has locked, removes
    /// leftover temporaries, and keeps only the newest few corrupt files.
    #[test]
    fn cleaning_spares_files_in_use_and_bounds_what_is_kept_aside() {
        let dir = dir();
        let (held, _) = open(&dir, 1, 10, OnCorrupt::Fail).unwrap();
        drop(open(&dir, 2, 10, OnCorrupt::Fail).unwrap());
        drop(open(&dir, 3, 10, OnCorrupt::Fail).unwrap());
        std::fs::write(dir.join("progress-0000000000000009.77.tmp"), b"x").unwrap();
        for ms in 0..5 {
            std::fs::write(
                dir.join(format!("progress-0000000000000004.corrupt-{ms}")),
                b"x",
            )
            .unwrap();
        }
        // Keep 3: of 1 and 2, the newest stays anyway and the other is held.
        let removed = ProgressFile::clean(&dir, &[3]).unwrap();
        assert!(
            dir.join(ProgressFile::file_name(1)).exists(),
            "held by `held`"
        );
        assert!(dir.join(ProgressFile::file_name(2)).exists() || !removed.is_empty());
        assert!(!dir.join("progress-0000000000000009.77.tmp").exists());
        let aside = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".corrupt-")
            })
            .count();
        assert_eq!(aside, 3);
        drop(held);
        // Released: now it can go (2 is newer and stays).
        let removed = ProgressFile::clean(&dir, &[3]).unwrap();
        assert!(
            removed.contains(&dir.join(ProgressFile::file_name(1)))
                || removed.contains(&dir.join(ProgressFile::file_name(2))),
            "{removed:?}"
        );
    }

    /// The late bits and rows of a data id go with its file of items given
    /// before, and only then: never a half of one id's marks kept.
    #[test]
    fn cleaning_removes_a_data_ids_marks_together() {
        let dir = dir();
        let name = |kind, id| dir.join(ProgressFile::kind_file_name(kind, id));
        let rows = |id| dir.join(crate::rows::Rows::file_name(id));
        for (id, age) in [(5, 200), (6, 100)] {
            for path in [name(Kind::Given, id), name(Kind::Late, id), rows(id)] {
                let file = File::create(&path).unwrap();
                let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
                file.set_modified(when).unwrap();
            }
        }
        // Another id's rows with no file of items given: nothing to go with.
        std::fs::write(rows(8), b"x").unwrap();
        let removed = ProgressFile::clean(&dir, &[]).unwrap();
        // 6's are the newest and stay; 5's go, all three; 8's rows go.
        for path in [name(Kind::Given, 6), name(Kind::Late, 6), rows(6)] {
            assert!(path.exists(), "{path:?}");
        }
        for path in [name(Kind::Given, 5), name(Kind::Late, 5), rows(5), rows(8)] {
            assert!(
                !path.exists() && removed.contains(&path),
                "{path:?} {removed:?}"
            );
        }
    }

    #[test]
    fn files_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir();
        drop(open(&dir, 1, 10, OnCorrupt::Fail).unwrap());
        let path = dir.join(ProgressFile::file_name(1));
        for path in [path.clone(), path.with_extension("journal")] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{}: {mode:o}", path.display());
        }
    }

    #[test]
    fn bad_files_fail_or_are_kept_aside() {
        let dir = dir();
        let path = dir.join(ProgressFile::file_name(3));
        let (map, _) = open(&dir, 3, 10, OnCorrupt::Fail).unwrap();
        map.advance(1, 2, 9);
        drop(map);
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..100].to_vec(), "expected"),
            (b"garbage".to_vec(), "not a progress file"),
            (
                {
                    let mut b = good.clone();
                    b[20] ^= 1;
                    b
                },
                "checksum",
            ),
            (
                {
                    let mut b = good.clone();
                    b.extend([0; 4]);
                    b
                },
                "expected",
            ),
        ];
        for (bytes, reason) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let error = open(&dir, 3, 10, OnCorrupt::Fail).unwrap_err().to_string();
            assert!(
                error.contains(reason) && error.contains("progress-"),
                "{error}"
            );
            let (map, opened) = open(&dir, 3, 10, OnCorrupt::Reset).unwrap();
            let Opened::Reset { aside, .. } = opened else {
                panic!("{opened:?}")
            };
            assert_eq!(std::fs::read(&aside).unwrap(), bytes);
            assert_eq!(map.offset(1), 0);
            drop(map);
        }
        // Progress of another size of data is foreign too.
        assert!(
            open(&dir, 3, 11, OnCorrupt::Fail)
                .unwrap_err()
                .to_string()
                .contains("users")
        );
    }

    #[test]
    fn an_unusable_folder_is_an_error_naming_it() {
        let dir = dir();
        let file = dir.join("not-a-folder");
        std::fs::write(&file, b"").unwrap();
        let error = open(&file.join("progress"), 1, 1, OnCorrupt::Fail)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not-a-folder"), "{error}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any interleaving of takes, syncs and restarts (dropping the file
        /// and opening it again, as a crashed process's successor does)
        /// hands every position out once and only once.
        #[test]
        fn takes_syncs_and_restarts_never_repeat_an_item(
            ops in prop::collection::vec((0u32..4, 1u32..6, 0u8..10), 1..80),
        ) {
            let dir = dir();
            const LEN: u32 = 20;
            let mut map = Some(open(&dir, 9, 4, OnCorrupt::Fail).unwrap().0);
            let mut handed: Vec<Vec<u32>> = vec![Vec::new(); 4];
            for (user, want, op) in ops {
                match op {
                    0 => { map.as_ref().unwrap().file().unwrap().sync().unwrap(); }
                    9 => { map.as_ref().unwrap().file().unwrap().sync_all().unwrap(); }
                    1 => {
                        drop(map.take());
                        map = Some(open(&dir, 9, 4, OnCorrupt::Fail).unwrap().0);
                    }
                    _ => handed[user as usize].extend(map.as_ref().unwrap().advance(user, want, LEN)),
                }
            }
            for (user, positions) in handed.iter().enumerate() {
                let expected: Vec<u32> = (0..positions.len() as u32).collect();
                prop_assert_eq!(positions, &expected, "user {}", user);
                prop_assert_eq!(map.as_ref().unwrap().offset(user as u32), positions.len() as u32);
            }
            let cells = map.as_ref().unwrap().file().unwrap().cells();
            prop_assert!(cells.iter().all(|c| c.load(Ordering::Relaxed) & OFFSET <= LEN));
        }
    }
}
