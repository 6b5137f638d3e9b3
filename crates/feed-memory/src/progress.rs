//! [`ProgressFile`]: users' offsets in a file that outlives the process.
//!
//! The file is a header page and then one little-endian `u32` a user (by
//! position in the feed table), mapped shared (`MAP_SHARED`): an advance is
//! a compare-and-swap on the mapped page, which is the page cache itself,
//! so it survives a crash of the process at once (`kill -9`, a panic, the
//! OOM killer) with no write call at all. [`ProgressFile::sync`] makes it
//! durable against a machine crash: the offsets changed since the last
//! sync go to a journal beside the file in one checksummed batch, synced
//! with `fdatasync` (group commit); a server calls it every
//! `progress.sync_ms`, so a power loss costs at most that much progress.
//! The array is written to disk when the journal grows large, at open
//! (after the journal is replayed) and by [`ProgressFile::sync_all`] at
//! shutdown. Each 4-byte offset is written whole, so a torn page mixes
//! older and newer offsets, never a half-written one, and offsets only
//! grow, so replaying takes the larger of the two.
//!
//! Progress belongs to the data it counts through: the header names the
//! data's id (a snapshot id, or a fingerprint of the synthetic set) and
//! the number of users, and a file for other data is never used. One file a
//! data id, `progress-<id>.bin`, locked while a process uses it.
//!
//! Header (all little-endian): magic `FFEEDPRG`, version `u32` (1), 4 zero
//! bytes, data id `u64`, users `u64`, creation time `u64` (ms since the Unix
//! epoch), XXH3-64 of the 40 bytes before it; zeros to 4096 bytes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::MmapRaw;
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: [u8; 8] = *b"FFEEDPRG";
const VERSION: u32 = 1;
/// The offsets start here: a page, so they are aligned for `AtomicU32`.
const HEADER: usize = 4096;
/// Bytes of the header that carry data, checksum included.
const HEADER_BYTES: usize = 48;

/// What to do with a progress file that is torn, truncated or foreign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// (no such folder, no permission, no space, in use).
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
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

/// Users' offsets in a shared file mapping. See the module doc.
#[derive(Debug)]
pub struct ProgressFile {
    path: PathBuf,
    map: MmapRaw,
    users: usize,
    /// Held open for its lock, released when the file is dropped.
    _file: File,
    /// The journal of changed offsets, written by [`Self::sync`].
    journal: std::sync::Mutex<Journal>,
}

/// The journal beside a progress file: batches of (position, offset) pairs
/// appended and made durable (`fdatasync`) at every sync, so that the mapped
/// array itself is written to disk only now and then (a compaction). An
/// `msync` of the array every `sync_ms` would rewrite every page with a
/// change, which at random users is all of them, and make every request
/// that dirties a page again take a fault.
///
/// A batch: `u32` count, `count` x (`u32` position, `u32` offset), XXH3-64
/// of those bytes. A torn last batch (a crash mid-write) fails its checksum
/// and is ignored with the rest of the file: everything before it was
/// synced whole.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: File,
    /// The offsets as of the last sync: what the journal and the array on
    /// disk together hold.
    shadow: Vec<u32>,
    /// Bytes in the journal since the last compaction.
    len: u64,
}

/// A journal past this size is folded into the array (and emptied).
const COMPACT_JOURNAL_BYTES: u64 = 64 << 20;

impl ProgressFile {
    /// The file name of the progress of data `id`.
    pub fn file_name(id: u64) -> String {
        format!("progress-{id:016x}.bin")
    }

    /// Opens (or creates) the progress of data `id` with `users` users in
    /// `dir`, creating the folder if needed.
    ///
    /// # Errors
    /// [`ProgressError::Io`] when the folder or file cannot be created,
    /// read, locked (another process uses it) or mapped;
    /// [`ProgressError::Corrupt`] for a bad file when `on_corrupt` is
    /// [`OnCorrupt::Fail`].
    pub fn open(
        dir: &Path,
        id: u64,
        users: u32,
        on_corrupt: OnCorrupt,
    ) -> Result<(Self, Opened), ProgressError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(Self::file_name(id));
        let mut opened = Opened::Fresh;
        if path.exists() {
            match Self::check(&path, id, users) {
                Ok(()) => opened = Opened::Restored,
                Err(reason) if on_corrupt == OnCorrupt::Reset => {
                    let aside = path.with_extension(format!("corrupt-{}", now_ms()));
                    std::fs::rename(&path, &aside).map_err(io(&path))?;
                    opened = Opened::Reset { reason, aside };
                }
                Err(reason) => return Err(ProgressError::Corrupt { path, reason }),
            }
        }
        if opened != Opened::Restored {
            Self::create(&path, id, users)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        file.try_lock().map_err(|e| ProgressError::Io {
            path: path.clone(),
            source: match e {
                std::fs::TryLockError::WouldBlock => std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    "another process is using this progress file",
                ),
                std::fs::TryLockError::Error(e) => e,
            },
        })?;
        let map = MmapRaw::map_raw(&file).map_err(io(&path))?;
        let users = users as usize;
        if map.len() != HEADER + users * 4 {
            // Changed under us between the check and the mapping.
            return Err(ProgressError::Corrupt {
                path,
                reason: "its length changed while it was opened".into(),
            });
        }
        let journal_path = path.with_extension("journal");
        if opened != Opened::Restored {
            // A journal of earlier data under this name means nothing now.
            let _ = std::fs::remove_file(&journal_path);
        }
        let journal_file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&journal_path)
            .map_err(io(&journal_path))?;
        let progress = Self {
            path,
            map,
            users,
            _file: file,
            journal: std::sync::Mutex::new(Journal {
                path: journal_path,
                file: journal_file,
                shadow: Vec::new(),
                len: 0,
            }),
        };
        progress.replay().map_err(io(&progress.path))?;
        Ok((progress, opened))
    }

    /// Applies the journal to the array (offsets only grow, so the larger
    /// of the two wins), writes the array to disk, empties the journal, and
    /// takes the shadow copy.
    fn replay(&self) -> std::io::Result<()> {
        let mut journal = self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = std::fs::read(&journal.path)?;
        let cells = self.cells();
        let mut at = 0;
        while at + 4 <= bytes.len() {
            let count =
                u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
            let body = at + 4;
            let end = body + count * 8;
            if end + 8 > bytes.len() {
                break; // torn: never synced whole
            }
            let stored = u64::from_le_bytes(bytes[end..end + 8].try_into().unwrap_or_default());
            if xxh3_64(&bytes[at..end]) != stored {
                break;
            }
            for pair in bytes[body..end].chunks_exact(8) {
                let position =
                    u32::from_le_bytes(pair[..4].try_into().unwrap_or_default()) as usize;
                let offset = u32::from_le_bytes(pair[4..].try_into().unwrap_or_default());
                if let Some(cell) = cells.get(position) {
                    cell.fetch_max(offset, Ordering::Relaxed);
                }
            }
            at = end + 8;
        }
        journal.shadow = cells.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        self.compact(&mut journal)
    }

    /// Writes the array to disk, then empties the journal.
    fn compact(&self, journal: &mut Journal) -> std::io::Result<()> {
        self.map.flush()?;
        journal.file.set_len(0)?;
        journal.file.sync_all()?;
        journal.len = 0;
        Ok(())
    }

    /// Why the file at `path` is not the progress of data `id` with
    /// `users` users, if it is not.
    fn check(path: &Path, id: u64, users: u32) -> Result<(), String> {
        let bytes = std::fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
        if bytes.len() < HEADER_BYTES || bytes[..8] != MAGIC {
            return Err("not a progress file (wrong magic number or truncated header)".into());
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        if xxh3_64(&bytes[..HEADER_BYTES - 8]) != u64_at(HEADER_BYTES - 8) {
            return Err("header checksum mismatch (a torn write?)".into());
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(format!(
                "progress format version {version}, this build reads {VERSION}"
            ));
        }
        if u64_at(16) != id {
            return Err(format!("progress of other data ({:016x})", u64_at(16)));
        }
        if u64_at(24) != u64::from(users) {
            return Err(format!(
                "progress of {} users, the data has {users}",
                u64_at(24)
            ));
        }
        let expected = HEADER + users as usize * 4;
        if bytes.len() != expected {
            return Err(format!(
                "{} bytes, expected {expected} (truncated?)",
                bytes.len()
            ));
        }
        Ok(())
    }

    /// Writes a fresh file (all offsets 0) beside `path`, syncs it and
    /// renames it over `path`.
    fn create(path: &Path, id: u64, users: u32) -> Result<(), ProgressError> {
        let mut header = vec![0u8; HEADER];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&id.to_le_bytes());
        header[24..32].copy_from_slice(&u64::from(users).to_le_bytes());
        header[32..40].copy_from_slice(&now_ms().to_le_bytes());
        let checksum = xxh3_64(&header[..HEADER_BYTES - 8]);
        header[HEADER_BYTES - 8..HEADER_BYTES].copy_from_slice(&checksum.to_le_bytes());
        let temporary = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(&header)?;
            // Sparse zeros: no write for the offsets themselves.
            file.set_len((HEADER + users as usize * 4) as u64)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            io(path)(e)
        })
    }

    /// The offsets, one a user.
    #[inline]
    #[allow(unsafe_code, reason = "atomics over a shared file mapping")]
    pub(crate) fn cells(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is `HEADER + users * 4` bytes (checked when
        // opened) and lives as long as `self`, which the returned slice
        // borrows; `HEADER` is a multiple of 4 and the mapping is
        // page-aligned, so the cells are aligned for `AtomicU32`, which has
        // the layout of `u32`. `MmapRaw` hands out no references to the
        // bytes, so every access goes through these atomics; the file is
        // locked against other processes that would write it.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_mut_ptr().add(HEADER).cast::<AtomicU32>(),
                self.users,
            )
        }
    }

    /// Makes the progress so far durable: appends the offsets that changed
    /// since the last sync to the journal and syncs it (group commit); now
    /// and then folds the journal into the array. Returns how long it took
    /// and the bytes written.
    ///
    /// # Errors
    /// The system's error (the progress stays in the page cache, and the
    /// next sync writes it).
    pub fn sync(&self) -> std::io::Result<(Duration, u64)> {
        let started = Instant::now();
        let mut journal = self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let journal = &mut *journal;
        let mut batch = vec![0u8; 4];
        for (position, (cell, seen)) in self
            .cells()
            .iter()
            .zip(journal.shadow.iter_mut())
            .enumerate()
        {
            let offset = cell.load(Ordering::Relaxed);
            if offset != *seen {
                *seen = offset;
                batch.extend_from_slice(&(position as u32).to_le_bytes());
                batch.extend_from_slice(&offset.to_le_bytes());
            }
        }
        let count = (batch.len() - 4) / 8;
        if count == 0 {
            return Ok((started.elapsed(), 0));
        }
        batch[..4].copy_from_slice(&(count as u32).to_le_bytes());
        let checksum = xxh3_64(&batch);
        batch.extend_from_slice(&checksum.to_le_bytes());
        journal.file.write_all(&batch)?;
        journal.file.sync_data()?;
        journal.len += batch.len() as u64;
        let mut written = batch.len() as u64;
        if journal.len > COMPACT_JOURNAL_BYTES {
            self.compact(journal)?;
            written += self.bytes() as u64;
        }
        Ok((started.elapsed(), written))
    }

    /// Folds everything into the array on disk and empties the journal: the
    /// state a clean shutdown leaves.
    ///
    /// # Errors
    /// The system's error.
    pub fn sync_all(&self) -> std::io::Result<(Duration, u64)> {
        let started = Instant::now();
        let (_, written) = self.sync()?;
        let mut journal = self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.compact(&mut journal)?;
        Ok((started.elapsed(), written + self.bytes() as u64))
    }

    /// Bytes of progress the array holds.
    pub const fn bytes(&self) -> usize {
        self.users * 4
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the progress files in `dir` other than those of the data ids
    /// in `keep` and the newest of the others (the progress of the data
    /// served before, for a rollback or a restart on it), and returns the
    /// ones removed.
    ///
    /// # Errors
    /// The system's error for the folder (a file that cannot be removed is
    /// left, not an error).
    pub fn clean(dir: &Path, keep: &[u64]) -> std::io::Result<Vec<PathBuf>> {
        let keep: Vec<String> = keep.iter().map(|&id| Self::file_name(id)).collect();
        let mut others = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("progress-") && name.ends_with(".bin") && !keep.contains(&name) {
                let modified = entry.metadata().and_then(|m| m.modified()).ok();
                others.push((modified, dir.join(&name)));
            }
        }
        // Newest first; the newest stays.
        others.sort_by(|a, b| b.cmp(a));
        let mut removed = Vec::new();
        for (_, path) in others.into_iter().skip(1) {
            if std::fs::remove_file(&path).is_ok() {
                let _ = std::fs::remove_file(path.with_extension("journal"));
                removed.push(path);
            }
        }
        Ok(removed)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::offsets::OffsetMap;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "feed-progress-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
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
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(open(&dir, 9, 100, OnCorrupt::Fail).unwrap());
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
        let (_, written) = map.file().unwrap().sync().unwrap();
        assert_eq!(written, 4 + 1000 * 8 + 8);
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
            prop_assert!(cells.iter().all(|c| c.load(Ordering::Relaxed) <= LEN));
        }
    }
}
