//! Writing a snapshot, streamed: [`SnapshotWriter`] takes the feeds one
//! user at a time, in increasing user order, and holds nothing per user.
//!
//! The sections keep their order in the file (user ids, offsets, items,
//! fallback), which is what every reader of the format expects; the writer
//! is told at most how many users will come, and places the sections for
//! that many before the first feed arrives, so it can write all three
//! feed sections as it goes, each through its own buffer at its own place
//! in the file, each block's checksum taken as it passes. A section placed
//! for more users than came leaves a gap of zeros before the next one
//! (the format allows any gap, as long as sections start on a page and
//! follow each other). The fallback list and the header come last, into a
//! temporary file that replaces the target whole.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::verify::content_id;
use super::{BLOCK, Entry, PAGE, SnapshotError, SnapshotMeta, VERSION, encode_header};
use crate::files::Replacement;
use crate::table::FeedTable;

/// Bytes buffered for each section before a write.
const BUFFER: usize = 1 << 20;

/// The bytes of a snapshot file of `users` users, `items` items over all
/// feeds and `fallback` fallback items: what writing one needs on disk.
pub const fn file_bytes(users: u64, items: u64, fallback: u64) -> u64 {
    let layout = Layout::for_users(users, items);
    layout.fallback + fallback * 4
}

/// Where the sections start, for at most `users` users.
#[derive(Debug, Clone, Copy)]
struct Layout {
    ids: u64,
    offsets: u64,
    items: u64,
    /// Where the fallback list starts for `items` items (after the items
    /// section is written, the writer knows the real count).
    fallback: u64,
}

impl Layout {
    const fn for_users(users: u64, items: u64) -> Self {
        let ids = PAGE;
        let offsets = (ids + users * 8).next_multiple_of(PAGE);
        let items_at = (offsets + (users + 1) * 8).next_multiple_of(PAGE);
        let fallback = (items_at + items * 4).next_multiple_of(PAGE);
        Self {
            ids,
            offsets,
            items: items_at,
            fallback,
        }
    }
}

/// Writes `bytes` at a position of the file that moves along (a section's
/// own cursor), so that several sections can be written at once.
struct At {
    file: File,
    position: u64,
}

impl Write for At {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.file.write_all_at(bytes, self.position)?;
        self.position += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One section being written: its length and the checksums of its blocks.
struct SectionWriter {
    out: BufWriter<At>,
    start: u64,
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

impl SectionWriter {
    fn new(file: &File, start: u64, version: u32) -> std::io::Result<Self> {
        let at = At {
            file: file.try_clone()?,
            position: start,
        };
        Ok(Self {
            out: BufWriter::with_capacity(BUFFER, at),
            start,
            block: Xxh3::new(),
            filled: 0,
            block_bytes: if version == 1 { usize::MAX } else { BLOCK },
            digests: Vec::new(),
            bytes: 0,
        })
    }

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

    /// Writes out what is buffered; the section's entry.
    fn finish(mut self) -> std::io::Result<Entry> {
        self.out.flush()?;
        let checksum = if self.block_bytes == usize::MAX {
            self.block.digest()
        } else {
            if self.filled > 0 {
                self.digests.push(self.block.digest().to_le());
            }
            xxh3_64(bytemuck::cast_slice(&self.digests))
        };
        Ok(Entry {
            offset: self.start,
            bytes: self.bytes,
            checksum,
        })
    }
}

/// A snapshot being written, one user at a time (see the module doc):
/// [`create`](Self::create) it for at most so many users,
/// [`push`](Self::push) every user's feed in increasing user order, and
/// [`finish`](Self::finish) it with the fallback list. Nothing is at the
/// target path until `finish` returns; dropped before, it removes its
/// temporary file.
pub struct SnapshotWriter {
    path: PathBuf,
    file: Replacement,
    version: u32,
    users_at_most: u64,
    users: u64,
    items: u64,
    last_user: Option<u64>,
    ids: SectionWriter,
    offsets: SectionWriter,
    feeds: SectionWriter,
}

impl SnapshotWriter {
    /// Starts a snapshot at `path` of at most `users_at_most` users, in
    /// format version 2, in a temporary file beside it
    /// (`.{name}.{pid}.tmp`, mode 0640).
    ///
    /// # Errors
    /// [`SnapshotError::Invalid`] for more users than a snapshot holds;
    /// [`SnapshotError::Io`] when the temporary file cannot be created.
    pub fn create(path: &Path, users_at_most: u64) -> Result<Self, SnapshotError> {
        Self::create_version(path, users_at_most, VERSION)
    }

    pub(super) fn create_version(
        path: &Path,
        users_at_most: u64,
        version: u32,
    ) -> Result<Self, SnapshotError> {
        if users_at_most > u64::from(u32::MAX) {
            return Err(SnapshotError::invalid(
                path,
                format!(
                    "{users_at_most} users: a snapshot holds at most {}",
                    u32::MAX
                ),
            ));
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
        let io = |e| SnapshotError::io(path, e);
        let file = Replacement::create(path, &temporary, 0o640).map_err(io)?;
        let layout = Layout::for_users(users_at_most, 0);
        let section = |start| SectionWriter::new(file.file(), start, version).map_err(io);
        let mut offsets = section(layout.offsets)?;
        offsets.put(&0u64.to_le_bytes()).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            version,
            users_at_most,
            users: 0,
            items: 0,
            last_user: None,
            ids: section(layout.ids)?,
            offsets,
            feeds: section(layout.items)?,
            file,
        })
    }

    /// Appends `user`'s feed. The caller vouches for the items (no item 0,
    /// none twice in the feed: an importer's checks); the writer checks the
    /// order of the users and their number.
    ///
    /// # Errors
    /// [`SnapshotError::Invalid`] when `user` is not above the last one or
    /// is one more than the writer was created for; [`SnapshotError::Io`]
    /// when the file cannot be written.
    pub fn push(&mut self, user: u64, feed: &[u32]) -> Result<(), SnapshotError> {
        if self.last_user.is_some_and(|last| last >= user) {
            return Err(SnapshotError::invalid(
                &self.path,
                format!(
                    "user {user} does not come after user {}",
                    self.last_user.unwrap_or(0)
                ),
            ));
        }
        if self.users == self.users_at_most {
            return Err(SnapshotError::invalid(
                &self.path,
                format!("more than the {} users announced", self.users_at_most),
            ));
        }
        self.last_user = Some(user);
        self.users += 1;
        self.items += feed.len() as u64;
        let io = |e| SnapshotError::io(&self.path, e);
        self.ids.put(&user.to_le_bytes()).map_err(io)?;
        self.offsets.put(&self.items.to_le_bytes()).map_err(io)?;
        self.feeds
            .put(bytemuck::cast_slice(&to_le(feed)))
            .map_err(io)?;
        Ok(())
    }

    /// Writes `fallback` (the caller vouches: no item 0, none twice) and
    /// the header, syncs the file and renames it over the target, then syncs
    /// the folder.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] when a file cannot be written, synced or
    /// renamed; the temporary file is removed then.
    pub fn finish(
        self,
        fallback: impl IntoIterator<Item = u32>,
        created_unix_ms: u64,
    ) -> Result<SnapshotMeta, SnapshotError> {
        let io = |e| SnapshotError::io(&self.path, e);
        let ids = self.ids.finish().map_err(io)?;
        let offsets = self.offsets.finish().map_err(io)?;
        let items = self.feeds.finish().map_err(io)?;
        let start = (items.offset + items.bytes).next_multiple_of(PAGE);
        let mut section = SectionWriter::new(self.file.file(), start, self.version).map_err(io)?;
        let mut chunk = Vec::with_capacity(BUFFER / 4);
        let mut count = 0u64;
        for item in fallback {
            chunk.push(item.to_le());
            if chunk.len() == chunk.capacity() {
                section.put(bytemuck::cast_slice(&chunk)).map_err(io)?;
                count += chunk.len() as u64;
                chunk.clear();
            }
        }
        section.put(bytemuck::cast_slice(&chunk)).map_err(io)?;
        count += chunk.len() as u64;
        let entries = [ids, offsets, items, section.finish().map_err(io)?];
        let meta = SnapshotMeta {
            id: content_id(&entries),
            created_unix_ms,
            users: self.users,
            items: self.items,
            fallback: count,
        };
        let header = encode_header(self.version, &meta, &entries);
        let file = self.file.file();
        file.write_all_at(&header, 0).map_err(io)?;
        // A file with an empty last section ends where that section starts.
        let end = entries[3].offset + entries[3].bytes;
        if file.metadata().map_err(io)?.len() < end {
            file.set_len(end).map_err(io)?;
        }
        self.file.commit().map_err(io)?;
        Ok(meta)
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
    let mut writer = SnapshotWriter::create(path, user_ids.len() as u64)?;
    for (at, &user) in user_ids.iter().enumerate() {
        writer.push(user, &items[offsets[at] as usize..offsets[at + 1] as usize])?;
    }
    writer.finish(fallback.iter().copied(), created_unix_ms)
}

/// Writes a snapshot of `table` in format `version` (see [`write()`]).
pub(super) fn write_entries(
    path: &Path,
    table: &FeedTable,
    fallback: &[u32],
    created_unix_ms: u64,
    version: u32,
) -> Result<SnapshotMeta, SnapshotError> {
    let mut writer = SnapshotWriter::create_version(path, u64::from(table.users()), version)?;
    for (user, feed) in table.entries() {
        writer.push(user, feed)?;
    }
    writer.finish(fallback.iter().copied(), created_unix_ms)
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
    use crate::files::names;
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

    /// Fewer users than announced leave gaps between the sections, which
    /// the reader takes; the content (and so the id) is the same.
    #[test]
    fn a_stream_of_fewer_users_than_announced_reads_back() {
        let dir = dir();
        let path = dir.join("gap.snap");
        let mut writer = SnapshotWriter::create(&path, 5000).unwrap();
        for (user, feed) in sample().entries() {
            writer.push(user, feed).unwrap();
        }
        assert_eq!(
            names(&dir),
            [format!(".gap.snap.{}.tmp", std::process::id())]
        );
        let meta = writer.finish([9, 8], 1).unwrap();
        let snapshot = Snapshot::open(&path).unwrap();
        assert_eq!(snapshot.table(), &sample());
        assert_eq!(snapshot.fallback(), &[9, 8]);
        assert_eq!(
            meta.id,
            write(&dir.join("whole.snap"), &sample(), &[9, 8], 1)
                .unwrap()
                .id
        );
        assert_eq!(
            file_bytes(3, 5, 2),
            std::fs::metadata(dir.join("whole.snap")).unwrap().len()
        );
    }

    #[test]
    fn users_out_of_order_or_beyond_the_announced_are_refused() {
        let dir = dir();
        let path = dir.join("order.snap");
        let mut writer = SnapshotWriter::create(&path, 2).unwrap();
        writer.push(5, &[1]).unwrap();
        let error = writer.push(5, &[2]).unwrap_err().to_string();
        assert!(
            error.contains("user 5 does not come after user 5"),
            "{error}"
        );
        writer.push(6, &[]).unwrap();
        let error = writer.push(7, &[2]).unwrap_err().to_string();
        assert!(error.contains("more than the 2 users announced"), "{error}");
        drop(writer);
        assert!(names(&dir).is_empty(), "the temporary file was left behind");
        assert!(SnapshotWriter::create(&path, u64::from(u32::MAX) + 1).is_err());
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
