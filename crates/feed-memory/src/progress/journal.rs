//! [`Journal`]: the log of changed offsets beside a progress file.
//!
//! A sync appends one batch and makes it durable (`fdatasync`) before
//! anything records it as written: `u32` count, `count` x (`u32` position,
//! then the position's cells: one `u32` offset in a progress file, the four
//! `u32` words of a retry key in a keys file), XXH3-64 of those bytes, all
//! little-endian.
//!
//! Architecture Invariant: the journal's length moves only after a batch
//! is durable. A batch is written at that length, never appended blindly,
//! so a failed write or sync leaves at most a torn tail that the next
//! batch overwrites (and that is cut at once where the system lets us):
//! no partial batch can ever sit in front of good ones. Reading stops at
//! the first batch that is torn or fails its checksum, and everything
//! before it is whole.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

use xxhash_rust::xxh3::xxh3_64;

/// Bytes of a batch around its pairs: the count and the checksum.
pub(crate) const BATCH_OVERHEAD: usize = 4 + 8;

/// The most cells a position has.
pub(crate) const MAX_WIDTH: usize = 4;

/// The journal of one progress file.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes known to be durable: where the next batch goes.
    len: u64,
    /// Cells an entry holds after its position (1 to [`MAX_WIDTH`]).
    width: usize,
}

impl Journal {
    /// Opens the journal at `path`, creating it (mode 0600) if needed;
    /// `fresh` empties one left from other data. Returns whether it was
    /// created, so that the caller syncs the folder.
    pub(crate) fn open(path: PathBuf, fresh: bool, width: usize) -> std::io::Result<(Self, bool)> {
        assert!(
            (1..=MAX_WIDTH).contains(&width),
            "a journal entry holds 1 to 4 cells"
        );
        let created = !path.exists();
        let file = OpenOptions::new()
            .create(true)
            .truncate(fresh)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        Ok((
            Self {
                path,
                file,
                len: 0,
                width,
            },
            created || fresh,
        ))
    }

    /// The file.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole batches written since the journal was last emptied.
    pub(crate) const fn len(&self) -> u64 {
        self.len
    }

    /// Calls `apply(position, cells)` for every entry of every whole
    /// batch, in order, and returns the number of whole batches. A torn or
    /// corrupt batch ends the reading: nothing after it was ever synced.
    pub(crate) fn replay(&self, apply: impl FnMut(u32, &[u32])) -> std::io::Result<usize> {
        Ok(replay_bytes(&std::fs::read(&self.path)?, self.width, apply))
    }

    /// Writes `batch` (from [`encode`]) after the last durable one and
    /// syncs it. On failure the journal's length stays where it was (the
    /// batch is not durable, whatever reached the disk) and the torn tail
    /// is cut if the system allows it; the next batch overwrites it anyway.
    ///
    /// # Errors
    /// The system's error from the write or the sync.
    pub(crate) fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        let written = self
            .file
            .write_all_at(batch, self.len)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += batch.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Swaps the file for one that refuses writes (`broken`) or back, as a
    /// full or failing disk would.
    #[cfg(test)]
    pub(crate) fn break_writes(&mut self, broken: bool) {
        self.file = OpenOptions::new()
            .read(true)
            .write(!broken)
            .open(&self.path)
            .unwrap();
    }

    /// Empties the journal (its batches are all in the array on disk).
    ///
    /// # Errors
    /// The system's error; the journal is then still whole and replayable.
    pub(crate) fn empty(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }
}

/// Encodes `count` entries as one batch into `out` (cleared first): for
/// each position of `positions`, the position, then the `width` cells
/// `cells(position)` writes.
pub(crate) fn encode(
    positions: &[u32],
    width: usize,
    mut cells: impl FnMut(u32, &mut [u32]),
    out: &mut Vec<u8>,
) {
    out.clear();
    out.reserve(positions.len() * 4 * (1 + width) + BATCH_OVERHEAD);
    out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    let mut words = [0u32; MAX_WIDTH];
    for &position in positions {
        out.extend_from_slice(&position.to_le_bytes());
        cells(position, &mut words[..width]);
        for word in &words[..width] {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
    let checksum = xxh3_64(out);
    out.extend_from_slice(&checksum.to_le_bytes());
}

/// [`Journal::replay`] of a journal's `bytes` whose entries hold `width`
/// cells (read by a process that does not own it, too).
pub(crate) fn replay_bytes(
    bytes: &[u8],
    width: usize,
    mut apply: impl FnMut(u32, &[u32]),
) -> usize {
    let entry = 4 * (1 + width);
    let mut at = 0;
    let mut batches = 0;
    let mut cells = [0u32; MAX_WIDTH];
    while let Some(entries) = batch_at(bytes, at, entry) {
        for bytes in entries.chunks_exact(entry) {
            for (i, cell) in cells[..width].iter_mut().enumerate() {
                *cell = u32_at(bytes, 4 + 4 * i);
            }
            apply(u32_at(bytes, 0), &cells[..width]);
        }
        at += entries.len() + BATCH_OVERHEAD;
        batches += 1;
    }
    batches
}

/// The entries (of `entry` bytes each) of the whole batch starting at
/// `at`, if there is one.
fn batch_at(bytes: &[u8], at: usize, entry: usize) -> Option<&[u8]> {
    let count = bytes.get(at..at.checked_add(4)?)?;
    let count = u32::from_le_bytes(count.try_into().ok()?) as usize;
    let body = at + 4;
    let end = body.checked_add(count.checked_mul(entry)?)?;
    let stored = bytes.get(end..end.checked_add(8)?)?;
    let stored = u64::from_le_bytes(stored.try_into().ok()?);
    (xxh3_64(&bytes[at..end]) == stored).then(|| &bytes[body..end])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn journal() -> Journal {
        let dir = crate::files::scratch_dir("journal");
        Journal::open(dir.join("j.journal"), true, 1).unwrap().0
    }

    fn pairs(journal: &Journal) -> Vec<(u32, u32)> {
        let mut pairs = Vec::new();
        journal.replay(|p, o| pairs.push((p, o[0]))).unwrap();
        pairs
    }

    /// Encodes (position, offset) pairs.
    fn encode_pairs(pairs: &[(u32, u32)], batch: &mut Vec<u8>) {
        let positions: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let offset = |position| pairs.iter().find(|p| p.0 == position).unwrap().1;
        encode(&positions, 1, |p, cells| cells[0] = offset(p), batch);
    }

    #[test]
    fn a_torn_tail_is_overwritten_by_the_next_batch() {
        let mut journal = journal();
        let mut batch = Vec::new();
        encode_pairs(&[(1, 2), (3, 4)], &mut batch);
        journal.append(&batch).unwrap();
        // A write that failed half-way: bytes past the durable length.
        journal.file.write_all_at(&batch[..7], journal.len).unwrap();
        assert_eq!(pairs(&journal), [(1, 2), (3, 4)]);
        encode_pairs(&[(5, 6)], &mut batch);
        journal.append(&batch).unwrap();
        assert_eq!(pairs(&journal), [(1, 2), (3, 4), (5, 6)]);
        journal.empty().unwrap();
        assert!(pairs(&journal).is_empty());
    }

    #[test]
    fn entries_of_several_cells_come_back_whole() {
        let dir = crate::files::scratch_dir("journal");
        let mut journal = Journal::open(dir.join("k.journal"), true, 4).unwrap().0;
        let mut batch = Vec::new();
        encode(&[7, 9], 4, |p, cells| cells.fill(p * 10), &mut batch);
        journal.append(&batch).unwrap();
        let mut entries = Vec::new();
        journal
            .replay(|p, cells| entries.push((p, cells.to_vec())))
            .unwrap();
        assert_eq!(entries, [(7, vec![70; 4]), (9, vec![90; 4])]);
    }

    proptest! {
        /// No bytes at all make the reader panic, read out of bounds, or
        /// accept a batch whose checksum fails.
        #[test]
        fn any_bytes_replay_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let journal = journal();
            std::fs::write(journal.path(), &bytes).unwrap();
            let mut seen = 0;
            journal.replay(|_, _| seen += 1).unwrap();
            prop_assert!(seen * 8 + BATCH_OVERHEAD <= bytes.len().max(BATCH_OVERHEAD));
        }
    }
}
