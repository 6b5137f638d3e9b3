//! [`Blocked`]: the items taken down, checked by every request of every
//! version in a few instructions; [`BlockLog`]: the file that keeps them.
//!
//! Architecture Invariant: checking an item costs one load and a bit test,
//! whatever the list holds (up to [`MAX_BLOCKED`] items), and nothing when
//! it is empty. The set is a bitmap over the whole `u32` id space, 512 MiB
//! of address space allocated zeroed: the system gives a page memory only
//! when a bit of it is first set: a page (4 KiB) holds 32,768 ids, so a
//! million items in a catalog of ten million cost 1.2 MiB, and a million
//! spread over the whole id space at most 512 MiB. A hash set would cost a hash and a probe a check; pages
//! made on demand behind a table cost a second load and a check (measured:
//! docs/BENCHMARKS.md, "Blocklist").
//!
//! The file is a log: one line a change, `+ID,ID,...` and `-ID,...`, with
//! its sequence number and an XXH3-64 of the line, appended and synced
//! (`fdatasync`) before the change is applied. A torn last line fails its
//! check and is cut at open; a log much longer than the set is rewritten
//! whole (written beside, synced, renamed) at open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use feed_domain::BlockedItems;
use xxhash_rust::xxh3::xxh3_64;

use crate::files::{replace_atomically, sync_folder};

pub use feed_domain::MAX_BLOCKED;

/// Words of the bitmap: one bit an id of the `u32` space.
const WORDS: usize = (1 << 32) / 64;

/// Words of the bitmap a bit of its summary stands for (32 KiB of it).
const REGION_WORDS: usize = 4096;

/// The items taken down; see the module doc.
#[derive(Debug)]
pub struct Blocked {
    words: Box<[AtomicU64]>,
    /// One bit a region of `words` where a bit was ever set: listing the
    /// items reads those regions only.
    regions: Box<[AtomicU64]>,
    count: AtomicUsize,
    skipped: AtomicU64,
}

impl Default for Blocked {
    fn default() -> Self {
        Self {
            words: zeroed_words(WORDS),
            regions: (0..WORDS / REGION_WORDS / 64)
                .map(|_| AtomicU64::new(0))
                .collect(),
            count: AtomicUsize::new(0),
            skipped: AtomicU64::new(0),
        }
    }
}

/// `len` zeroed words, allocated zeroed: pages nobody writes cost no
/// memory.
#[allow(unsafe_code, reason = "a zeroed allocation seen as atomics")]
fn zeroed_words(len: usize) -> Box<[AtomicU64]> {
    let zeros: Box<[u64]> = vec![0u64; len].into_boxed_slice();
    // SAFETY: `AtomicU64` has the size, alignment and bit validity of
    // `u64` (on the 64-bit targets this crate builds for), and the box is
    // given up whole: the same allocation, the same layout.
    unsafe { Box::from_raw(Box::into_raw(zeros) as *mut [AtomicU64]) }
}

impl BlockedItems for Blocked {
    /// Whether `item` is blocked.
    #[inline]
    fn contains(&self, item: u32) -> bool {
        let item = item as usize;
        self.words[item / 64].load(Ordering::Relaxed) & (1 << (item % 64)) != 0
    }

    /// How many items are blocked.
    fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether none is.
    #[inline]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks (`on`) or unblocks `item`; whether that changed anything.
    /// One writer at a time (the caller's lock).
    fn set(&self, item: u32, on: bool) -> bool {
        let item = item as usize;
        let bit = 1 << (item % 64);
        let word = &self.words[item / 64];
        if !on && word.load(Ordering::Relaxed) & bit == 0 {
            // Nothing to clear: the page is not written (nor given memory).
            return false;
        }
        let before = if on {
            let region = item / 64 / REGION_WORDS;
            self.regions[region / 64].fetch_or(1 << (region % 64), Ordering::Relaxed);
            word.fetch_or(bit, Ordering::Relaxed)
        } else {
            word.fetch_and(!bit, Ordering::Relaxed)
        };
        let changed = (before & bit != 0) != on;
        if changed {
            if on {
                self.count.fetch_add(1, Ordering::Relaxed);
            } else {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        changed
    }

    /// Every blocked item, in id order.
    fn items(&self) -> Vec<u32> {
        let mut items = Vec::with_capacity(self.len());
        if self.is_empty() {
            return items;
        }
        for (at, summary) in self.regions.iter().enumerate() {
            let mut regions = summary.load(Ordering::Relaxed);
            while regions != 0 {
                let region = at * 64 + regions.trailing_zeros() as usize;
                regions &= regions - 1;
                let first = region * REGION_WORDS;
                for (w, word) in self.words[first..first + REGION_WORDS].iter().enumerate() {
                    let mut bits = word.load(Ordering::Relaxed);
                    while bits != 0 {
                        items.push(((first + w) * 64 + bits.trailing_zeros() as usize) as u32);
                        bits &= bits - 1;
                    }
                }
            }
        }
        items
    }

    /// Counts `n` personal items skipped because they were blocked.
    #[inline]
    fn count_skipped(&self, n: usize) {
        if n > 0 {
            self.skipped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Personal items skipped because they were blocked, since start.
    fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

/// The file that keeps the list; see the module doc.
#[derive(Debug)]
pub struct BlockLog {
    path: PathBuf,
    file: File,
    /// The next change's sequence number.
    next: u64,
}

impl BlockLog {
    /// The log's file name in the progress folder.
    pub const FILE_NAME: &'static str = "blocklist.log";

    /// Opens (or creates) the log in `dir` and replays it into `blocked`;
    /// a torn last line is cut, and a long log rewritten whole.
    ///
    /// # Errors
    /// The system's error, naming the file.
    pub fn open(dir: &Path, blocked: &Blocked) -> Result<Self, String> {
        let path = dir.join(Self::FILE_NAME);
        let named = |e: std::io::Error| format!("{}: {e}", path.display());
        std::fs::create_dir_all(dir).map_err(named)?;
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(named(e)),
        };
        let mut good = 0;
        let mut next = 1;
        let mut lines = 0usize;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let Some(change) = parse_line(line) else {
                break;
            };
            for (item, on) in change.items {
                blocked.set(item, on);
            }
            next = change.seq + 1;
            good += line.len();
            lines += 1;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(named)?;
        if good < text.len() {
            // A torn tail: never synced, never applied.
            file.set_len(good as u64).map_err(named)?;
        }
        let mut log = Self { path, file, next };
        if lines > 64 && good > 4 * (blocked.len() * 8 + 64) {
            log.rewrite(blocked)?;
        }
        sync_folder(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(log)
    }

    /// Appends one change and syncs it.
    ///
    /// # Errors
    /// The system's error: the change is not durable (a torn tail is cut at
    /// the next open).
    pub fn append(&mut self, add: &[u32], remove: &[u32]) -> Result<(), String> {
        let line = line(self.next, add, remove);
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.next += 1;
        Ok(())
    }

    /// Replaces the log by one line holding every blocked item.
    fn rewrite(&mut self, blocked: &Blocked) -> Result<(), String> {
        let items = blocked.items();
        let line = line(self.next, &items, &[]);
        let temporary = self.path.with_extension("log.tmp");
        replace_atomically(&self.path, &temporary, 0o600, |mut file| {
            file.write_all(&line)
        })
        .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.next += 1;
        Ok(())
    }
}

/// One change as a line: `SEQ CHECK +ID,ID -ID\n`, CHECK the XXH3-64 (hex)
/// of what follows it.
fn line(seq: u64, add: &[u32], remove: &[u32]) -> Vec<u8> {
    let list = |sign: char, items: &[u32]| {
        let ids: Vec<String> = items.iter().map(u32::to_string).collect();
        format!("{sign}{}", ids.join(","))
    };
    let body = format!("{} {}", list('+', add), list('-', remove));
    format!("{seq} {:016x} {body}\n", xxh3_64(body.as_bytes())).into_bytes()
}

/// A line read back.
struct Change {
    seq: u64,
    items: Vec<(u32, bool)>,
}

/// The change a whole, intact line holds; `None` for anything else.
fn parse_line(line: &[u8]) -> Option<Change> {
    let line = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
    let mut parts = line.splitn(3, ' ');
    let seq = parts.next()?.parse().ok()?;
    let check = u64::from_str_radix(parts.next()?, 16).ok()?;
    let body = parts.next()?;
    if xxh3_64(body.as_bytes()) != check {
        return None;
    }
    let (add, remove) = body.split_once(' ')?;
    let ids = |text: &str, sign: char, on: bool| -> Option<Vec<(u32, bool)>> {
        let text = text.strip_prefix(sign)?;
        if text.is_empty() {
            return Some(Vec::new());
        }
        text.split(',')
            .map(|id| id.parse().ok().map(|id| (id, on)))
            .collect()
    };
    // Removals first: an item in both lists is blocked, as the change said.
    let mut items = ids(remove, '-', false)?;
    items.extend(ids(add, '+', true)?);
    Some(Change { seq, items })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_log_keeps_the_list_and_cuts_a_torn_tail() {
        let dir = crate::files::scratch_dir("blocklist");
        let blocked = Blocked::default();
        let mut log = BlockLog::open(&dir, &blocked).unwrap();
        for (add, remove) in [(vec![5, 7, 4_000_000_000], vec![]), (vec![9], vec![7])] {
            for &item in &remove {
                blocked.set(item, false);
            }
            for &item in &add {
                blocked.set(item, true);
            }
            log.append(&add, &remove).unwrap();
        }
        drop(log);
        let path = dir.join(BlockLog::FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"3 00000000000000 +1"); // torn
        std::fs::write(&path, &bytes).unwrap();
        let again = Blocked::default();
        let _log = BlockLog::open(&dir, &again).unwrap();
        assert_eq!(again.items(), [5, 9, 4_000_000_000]);
        assert_eq!(again.len(), 3);
        assert!(
            std::fs::read(&path).unwrap().ends_with(b"\n"),
            "the torn line is cut"
        );
    }

    proptest! {
        /// The bitmap answers as a set does, and its items come back in order.
        #[test]
        fn the_bitmap_is_a_set(ops in prop::collection::vec((any::<u32>(), any::<bool>()), 0..200)) {
            let blocked = Blocked::default();
            let mut model = std::collections::BTreeSet::new();
            for (item, on) in ops {
                let changed = blocked.set(item, on);
                let was = if on { !model.insert(item) } else { !model.remove(&item) };
                prop_assert_eq!(changed, !was);
                prop_assert!(model.contains(&item) == on && blocked.contains(item) == on);
            }
            prop_assert_eq!(blocked.items(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(blocked.len(), model.len());
        }

        /// No bytes make the log's reader panic or apply a damaged line.
        #[test]
        fn any_line_parses_or_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_line(&bytes);
        }
    }
}
