//! Writing a snapshot: the sections streamed through one buffer, each
//! block's checksum taken as it passes, then the header, all into a
//! temporary file that replaces the target whole.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::verify::content_id;
use super::{BLOCK, Entry, PAGE, SnapshotError, SnapshotMeta, VERSION, encode_header};
use crate::table::FeedTable;

/// Feeds to write: every user and their feed, in increasing user order,
/// visited once per section.
pub(super) trait Entries {
    fn users(&self) -> u64;
    fn items(&self) -> u64;
    fn each(
        &self,
        visit: &mut dyn FnMut(u64, &[u32]) -> std::io::Result<()>,
    ) -> std::io::Result<()>;
}

impl Entries for FeedTable {
    fn users(&self) -> u64 {
        u64::from(FeedTable::users(self))
    }

    fn items(&self) -> u64 {
        self.total_items() as u64
    }

    fn each(
        &self,
        visit: &mut dyn FnMut(u64, &[u32]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.entries()
            .try_for_each(|(user, feed)| visit(user, feed))
    }
}

/// Compressed sparse rows held by the caller.
struct Csr<'a> {
    user_ids: &'a [u64],
    offsets: &'a [u64],
    items: &'a [u32],
}

impl Entries for Csr<'_> {
    fn users(&self) -> u64 {
        self.user_ids.len() as u64
    }

    fn items(&self) -> u64 {
        self.items.len() as u64
    }

    fn each(
        &self,
        visit: &mut dyn FnMut(u64, &[u32]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        for (at, &user) in self.user_ids.iter().enumerate() {
            visit(
                user,
                &self.items[self.offsets[at] as usize..self.offsets[at + 1] as usize],
            )?;
        }
        Ok(())
    }
}

/// Writes `table` and `fallback` as a snapshot at `path`, through a
/// temporary file beside it that is synced and renamed over `path`.
///
/// # Errors
/// [`SnapshotError::Io`] when a file cannot be written, synced or renamed;
/// the temporary file is removed then.
pub fn write(
    path: &Path,
    table: &FeedTable,
    fallback: &[u32],
    created_unix_ms: u64,
) -> Result<SnapshotMeta, SnapshotError> {
    write_entries(path, table, fallback, created_unix_ms, VERSION)
}

/// Writes compressed sparse rows (user `user_ids[i]` has the feed
/// `items[offsets[i]..offsets[i + 1]]`) and `fallback` as a snapshot at
/// `path`, as [`write()`] does. The caller vouches for the rows: ids strictly
/// increasing, offsets from 0 to `items.len()` never going back, no item 0
/// and no item twice in a feed (an importer's checks); they are written as
/// given.
///
/// # Errors
/// As [`write()`]; and [`SnapshotError::Invalid`] when the offsets do not fit
/// the ids and items.
pub fn write_csr(
    path: &Path,
    user_ids: &[u64],
    offsets: &[u64],
    items: &[u32],
    fallback: &[u32],
    created_unix_ms: u64,
) -> Result<SnapshotMeta, SnapshotError> {
    if offsets.len() != user_ids.len() + 1
        || offsets.first() != Some(&0)
        || offsets.last() != Some(&(items.len() as u64))
        || offsets.windows(2).any(|w| w[0] > w[1])
    {
        return Err(SnapshotError::invalid(
            path,
            "offsets do not fit the users and items",
        ));
    }
    let csr = Csr {
        user_ids,
        offsets,
        items,
    };
    write_entries(path, &csr, fallback, created_unix_ms, VERSION)
}

/// Writes a snapshot of `entries` in format `version` through a temporary
/// file beside `path` (`.{name}.{pid}.tmp`, mode 0640) that replaces it
/// whole.
pub(super) fn write_entries(
    path: &Path,
    entries: &dyn Entries,
    fallback: &[u32],
    created_unix_ms: u64,
    version: u32,
) -> Result<SnapshotMeta, SnapshotError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    crate::files::replace_atomically(path, &temporary, 0o640, |file| {
        write_to(file, entries, fallback, created_unix_ms, version)
    })
    .map_err(|e| SnapshotError::io(path, e))
}

/// One section being written: its length and the checksums of its blocks.
struct SectionWriter<'a, 'f> {
    out: &'a mut BufWriter<&'f File>,
    /// The block being written.
    block: Xxh3,
    /// Bytes in it so far.
    filled: usize,
    /// Bytes in a block: [`BLOCK`], or the whole section in version 1.
    block_bytes: usize,
    /// The finished blocks' checksums (little-endian).
    digests: Vec<u64>,
    bytes: u64,
}

impl SectionWriter<'_, '_> {
    fn put(&mut self, mut chunk: &[u8]) -> std::io::Result<()> {
        self.out.write_all(chunk)?;
        self.bytes += chunk.len() as u64;
        while !chunk.is_empty() {
            let take = chunk.len().min(self.block_bytes - self.filled);
            self.block.update(&chunk[..take]);
            self.filled += take;
            chunk = &chunk[take..];
            if self.filled == self.block_bytes {
                self.digests.push(self.block.digest().to_le());
                self.block.reset();
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// The section's checksum.
    fn checksum(mut self) -> u64 {
        if self.block_bytes == usize::MAX {
            return self.block.digest();
        }
        if self.filled > 0 {
            self.digests.push(self.block.digest().to_le());
        }
        xxh3_64(bytemuck::cast_slice(&self.digests))
    }
}

/// Writes the snapshot into `file` (synced by the caller).
fn write_to(
    file: &File,
    feeds: &dyn Entries,
    fallback: &[u32],
    created_unix_ms: u64,
    version: u32,
) -> std::io::Result<SnapshotMeta> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0; PAGE as usize])?;
    let mut position = PAGE;
    let mut entries = [Entry::default(); 4];
    for (at, entry) in entries.iter_mut().enumerate() {
        let padding = position.next_multiple_of(PAGE) - position;
        out.write_all(&vec![0; padding as usize])?;
        position += padding;
        let mut section = SectionWriter {
            out: &mut out,
            block: Xxh3::new(),
            filled: 0,
            block_bytes: if version == 1 { usize::MAX } else { BLOCK },
            digests: Vec::new(),
            bytes: 0,
        };
        match at {
            0 => feeds.each(&mut |user, _| section.put(&user.to_le_bytes()))?,
            1 => {
                let mut offset = 0u64;
                section.put(&offset.to_le_bytes())?;
                feeds.each(&mut |_, feed| {
                    offset += feed.len() as u64;
                    section.put(&offset.to_le_bytes())
                })?;
            }
            2 => feeds.each(&mut |_, feed| section.put(bytemuck::cast_slice(&to_le(feed))))?,
            _ => section.put(bytemuck::cast_slice(&to_le(fallback)))?,
        }
        let bytes = section.bytes;
        *entry = Entry {
            offset: position,
            bytes,
            checksum: section.checksum(),
        };
        position += bytes;
    }

    let id = content_id(&entries);
    let meta = SnapshotMeta {
        id,
        created_unix_ms,
        users: feeds.users(),
        items: feeds.items(),
        fallback: fallback.len() as u64,
    };
    let header = encode_header(version, &meta, &entries);
    let mut file = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    Ok(meta)
}

/// `values` in little-endian byte order (a copy only on big-endian machines).
fn to_le(values: &[u32]) -> std::borrow::Cow<'_, [u32]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(values)
    } else {
        values.iter().map(|v| v.to_le()).collect()
    }
}

#[cfg(test)]
mod tests {
    use feed_domain::UserId;
    use proptest::prelude::*;

    use super::*;
    use crate::snapshot::Snapshot;
    use crate::snapshot::testing::{dir, sample};

    #[test]
    fn a_written_snapshot_reads_back() {
        let path = dir().join("a.snap");
        let meta = write(&path, &sample(), &[9, 8], 1234).unwrap();
        let snapshot = Snapshot::open(&path).unwrap();
        assert_eq!(snapshot.meta(), &meta);
        assert_eq!((meta.users, meta.items, meta.fallback), (3, 5, 2));
        assert_eq!(snapshot.table(), &sample());
        assert_eq!(
            snapshot.table().feed(UserId::new(u64::MAX)),
            Some(&[4, 5, u32::MAX][..])
        );
        assert_eq!(snapshot.fallback(), &[9, 8]);
        // The same content, written again later, has the same id.
        let again = write(&dir().join("b.snap"), &sample(), &[9, 8], 99).unwrap();
        assert_eq!(again.id, meta.id);
        let other = write(&dir().join("c.snap"), &sample(), &[9], 99).unwrap();
        assert_ne!(other.id, meta.id);
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        // The rename fails: the target is a directory that is not empty.
        let dir = dir();
        let target = dir.join("x.snap");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"").unwrap();
        assert!(write(&target, &sample(), &[], 1).is_err());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["x.snap"], "the temporary file was left behind");
    }

    #[test]
    fn written_snapshots_are_not_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let path = dir().join("mode.snap");
        write(&path, &sample(), &[9], 1).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "{mode:o}");
    }

    #[test]
    fn rows_written_as_csr_read_back() {
        let path = dir().join("csr.snap");
        let meta = write_csr(
            &path,
            &[3, 1 << 33, u64::MAX],
            &[0, 2, 2, 5],
            &[7, 1, 4, 5, u32::MAX],
            &[9, 8],
            1,
        )
        .unwrap();
        let snapshot = Snapshot::open(&path).unwrap();
        assert_eq!(snapshot.table(), &sample());
        assert_eq!(
            meta.id,
            write(&dir().join("t.snap"), &sample(), &[9, 8], 2)
                .unwrap()
                .id
        );
        assert!(write_csr(&path, &[1], &[0, 3], &[1], &[], 1).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_feeds_round_trip(
            feeds in prop::collection::btree_map(any::<u64>(), prop::collection::hash_set(1u32.., 0..20), 0..30),
            fallback in prop::collection::hash_set(1u32.., 0..10),
        ) {
            let mut ids = Vec::new();
            let mut offsets = vec![0u64];
            let mut items = Vec::new();
            for (user, feed) in &feeds {
                ids.push(*user);
                items.extend(feed.iter().copied());
                offsets.push(items.len() as u64);
            }
            let fallback: Vec<u32> = fallback.into_iter().collect();
            let table = FeedTable::from_csr(ids, offsets, items).unwrap();
            let path = dir().join("p.snap");
            write(&path, &table, &fallback, 5).unwrap();
            let snapshot = Snapshot::open(&path).unwrap();
            prop_assert_eq!(snapshot.table(), &table);
            prop_assert_eq!(snapshot.fallback(), &fallback[..]);
            for (user, feed) in snapshot.table().entries() {
                prop_assert_eq!(snapshot.table().feed(UserId::new(user)), Some(feed));
            }
        }
    }
}
