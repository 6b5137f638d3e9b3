//! [`ProgressView`]: a progress file read by a process that does not own
//! it (`feed-server export-delivered`), while the server that owns it may
//! be moving it.
//!
//! The view takes no lock. The owner holds the file's advisory lock
//! exclusively for as long as it serves the data, so a shared lock would
//! fail exactly when the export is needed, and holding one while no
//! server runs would stop a server from starting. No lock is needed to
//! read: the view maps the file read-only and shared, which is the very
//! page cache the owner's mapping writes, and reads each offset with one
//! aligned 4-byte atomic load, so every offset read is one the owner
//! stored at some moment (never half of one). The offsets are read one by
//! one while the owner moves them, so the view is not one instant of the
//! whole array: each user's offset is at least what it was when the view
//! was opened.
//!
//! After a machine crash the array on disk may be older than the last
//! sync: the journal beside it holds the rest until the next owner
//! replays it. So the view reads the journal too (whole batches only, as
//! the owner does) and takes, for each user, the larger of the two
//! (offsets only grow, so this is right whether or not a server has
//! replayed it since). The journal's pairs are held sorted by position:
//! at most the journal's size, which the owner keeps bounded by folding.
//!
//! Architecture Invariant: the view never writes, creates or removes a
//! file, and no byte of the file is trusted: the header is checked as the
//! owner checks it, the length against the mapping, and every offset is
//! only a number for the caller to clamp to its feed's length.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::format::{self, HEADER};
use super::{Kind, ProgressFile, journal};
use crate::offsets::OFFSET;

/// Why another process's progress file cannot be read. One line naming
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The file or its journal could not be opened, read or mapped.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not this data's progress: damaged, truncated, or of
    /// other data.
    #[error("{}: not the progress of this data: {reason}", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Another process's progress of one data set, read-only. See the module
/// doc.
#[derive(Debug)]
pub struct ProgressView {
    path: PathBuf,
    map: MmapRaw,
    users: usize,
    /// The journal's (position, offset) pairs, by position, one a
    /// position (the largest offset).
    journal: Vec<(u32, u32)>,
}

impl ProgressView {
    /// The progress of data `id` with `users` users in `dir`; `None` when
    /// there is none (no user of this data has been served with progress
    /// kept there).
    ///
    /// # Errors
    /// [`ViewError::Io`] when the file exists but cannot be read or
    /// mapped; [`ViewError::Foreign`] when it is not the progress of this
    /// data (its header, or its length).
    pub fn open(dir: &Path, id: u64, users: u32) -> Result<Option<Self>, ViewError> {
        let path = dir.join(ProgressFile::file_name(id));
        let io = |source| ViewError::Io {
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        format::check_file(Kind::Offsets, &file, id, users).map_err(|reason| {
            ViewError::Foreign {
                path: path.clone(),
                reason,
            }
        })?;
        let map = MmapOptions::new().map_raw_read_only(&file).map_err(io)?;
        if map.len() as u64 != format::file_len(Kind::Offsets, users) {
            return Err(ViewError::Foreign {
                path,
                reason: "its length changed while it was opened".into(),
            });
        }
        let journal_path = path.with_extension("journal");
        let bytes = match std::fs::read(&journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(ViewError::Io {
                    path: journal_path,
                    source,
                });
            }
        };
        let mut pairs = Vec::new();
        journal::replay_bytes(&bytes, 1, |position, cells| {
            if (position as usize) < users as usize {
                pairs.push((position, cells[0] & OFFSET));
            }
        });
        drop(bytes);
        // By position, the largest offset of each first; then one a position.
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        pairs.dedup_by_key(|pair| pair.0);
        Ok(Some(Self {
            path,
            map,
            users: users as usize,
            journal: pairs,
        }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users' offsets as read now, by position: the larger of the
    /// array's and the journal's. Unchecked numbers: clamp each to its
    /// feed's length.
    pub fn offsets(&self) -> impl Iterator<Item = u32> + '_ {
        let mut journal = self.journal.iter().peekable();
        self.cells()
            .iter()
            .enumerate()
            .map(move |(position, cell)| {
                // The top bits are a swap's flags (`crate::carry`).
                let offset = cell.load(Ordering::Relaxed) & OFFSET;
                match journal.next_if(|(at, _)| *at as usize == position) {
                    Some(&(_, logged)) => offset.max(logged),
                    None => offset,
                }
            })
    }

    /// The offsets, one a user, loaded only.
    #[allow(
        unsafe_code,
        reason = "atomic loads over another process's shared mapping"
    )]
    fn cells(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is `HEADER + users * 4` bytes (checked
        // against the mapping itself in `open`) and lives as long as
        // `self`, which the returned slice borrows; `HEADER` is a multiple
        // of 4 and the mapping page-aligned, so the cells are aligned for
        // `AtomicU32`, which has the layout of `u32`. Other processes write
        // these bytes concurrently, through atomics of their own on the
        // same shared pages, which is why they are read as atomics and
        // never as plain `u32`s. The mapping is read-only: this module
        // only loads, and the slice never leaves it.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(HEADER).cast::<AtomicU32>(),
                self.users,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OffsetMap, OnCorrupt};

    #[test]
    fn a_view_sees_the_owners_moves_and_the_journals_while_it_holds_the_file() {
        let dir = crate::files::scratch_dir("view");
        assert!(ProgressView::open(&dir, 4, 10).unwrap().is_none());
        let (file, _) = ProgressFile::open(&dir, 4, 10, OnCorrupt::Fail).unwrap();
        let owner = OffsetMap::in_file(file);
        owner.advance(2, 5, 50);
        owner.file().unwrap().sync().unwrap();
        // The owner holds the lock; the view needs none.
        let view = ProgressView::open(&dir, 4, 10).unwrap().unwrap();
        let offsets = |view: &ProgressView| view.offsets().collect::<Vec<_>>();
        assert_eq!(offsets(&view), [0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        // A move after the view opened: read through the shared mapping.
        owner.advance(7, 3, 50);
        assert_eq!(offsets(&view)[7], 3);
        drop(view);
        drop(owner);

        // A power loss: the array on disk is stale, the journal has more.
        let path = dir.join(ProgressFile::file_name(4));
        let mut batch = Vec::new();
        let mut values = [9, 4, 8, 1].into_iter();
        journal::encode(
            &[1, 2, 1, 99],
            1,
            |_, cells| cells[0] = values.next().unwrap(),
            &mut batch,
        );
        std::fs::write(path.with_extension("journal"), &batch).unwrap();
        let view = ProgressView::open(&dir, 4, 10).unwrap().unwrap();
        // Position 1 from the journal (largest), 2 from the array (larger
        // than the journal's), 99 beyond the users ignored.
        assert_eq!(offsets(&view), [0, 9, 5, 0, 0, 0, 0, 3, 0, 0]);
        // The view wrote nothing: the journal is as it was.
        assert_eq!(
            std::fs::read(path.with_extension("journal")).unwrap(),
            batch
        );
    }

    #[test]
    fn a_foreign_or_damaged_file_is_named_never_read() {
        let dir = crate::files::scratch_dir("view");
        drop(ProgressFile::open(&dir, 4, 10, OnCorrupt::Fail).unwrap());
        let path = dir.join(ProgressFile::file_name(4));
        let good = std::fs::read(&path).unwrap();
        for (bytes, users, reason) in [
            (good.clone(), 11, "users"),
            (good[..good.len() - 1].to_vec(), 10, "expected"),
            (b"garbage".to_vec(), 10, "not a progress file"),
            (
                {
                    let mut b = good.clone();
                    b[17] ^= 1;
                    b
                },
                10,
                "checksum",
            ),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let error = ProgressView::open(&dir, 4, users).unwrap_err().to_string();
            assert!(
                error.contains(reason) && error.contains("progress-"),
                "{error}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
        }
    }
}
