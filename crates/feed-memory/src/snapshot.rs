//! [`Snapshot`]: the feeds of an import, in one file that is mapped, not
//! parsed. The format is specified in `docs/SNAPSHOT.md`; in short:
//!
//! ```text
//! page 0    header: magic, version, snapshot id, creation time, counts,
//!           four (offset, bytes, checksum) section entries, header checksum
//! then      sorted user ids   u64 x users        (page-aligned)
//!           feed offsets      u64 x (users + 1)  (page-aligned, CSR)
//!           items             u32 x items        (page-aligned)
//!           fallback items    u32 x fallback     (page-aligned)
//! ```
//!
//! All numbers are little-endian; checksums are XXH3-64.
//!
//! [`Snapshot::open`] verifies, before anything is served, the header (magic,
//! version, checksum, section bounds against the file's length) and the
//! user ids and offsets (checksums, ids strictly increasing, offsets within
//! the items): everything a lookup relies on to stay in bounds. The items
//! and the fallback list, the bulk of the file, are verified by
//! [`Snapshot::verify_items`] (checksums, no item 0), which a server runs in
//! the background after it starts serving, or before it swaps a new
//! snapshot in.
//!
//! Writing goes to a temporary file beside the target, is synced, and is
//! renamed over the target: a reader never sees a half-written snapshot.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::table::{FeedTable, Section};

/// The first eight bytes of every snapshot.
const MAGIC: [u8; 8] = *b"FFEEDSNP";
/// The format version this build reads and writes.
const VERSION: u32 = 1;
/// Sections start at multiples of this (and the header fills the first).
const PAGE: u64 = 4096;
/// Bytes of the header that carry data (the rest of the page is zero).
const HEADER_BYTES: usize = 160;
/// The sections, in file order.
const SECTIONS: [&str; 4] = ["user ids", "offsets", "items", "fallback"];

/// What a snapshot's header says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Identifies the content: a hash of the section checksums, so the same
    /// feeds imported twice get the same id.
    pub id: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Users with a feed.
    pub users: u64,
    /// Items in all feeds.
    pub items: u64,
    /// Items in the fallback list.
    pub fallback: u64,
}

/// What tells one file's content from another's without reading it: a
/// file replaced by a rename has another inode, one rewritten in place
/// another length or modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileIdentity {
    /// The identity of the file at `path` now, `None` when there is none.
    pub fn of(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|meta| Self::from(&meta))
    }
}

impl From<&std::fs::Metadata> for FileIdentity {
    fn from(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// A section's place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Entry {
    offset: u64,
    bytes: u64,
    checksum: u64,
}

/// Why a snapshot cannot be used. The message is one line.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be opened, read, mapped or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a snapshot, or not one this build can read.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, in a few words.
        reason: String,
    },
}

impl SnapshotError {
    fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// An opened snapshot: its feed table and fallback list, both reading the
/// file mapping, which lives as long as either does.
#[derive(Debug)]
pub struct Snapshot {
    meta: SnapshotMeta,
    identity: FileIdentity,
    path: PathBuf,
    table: FeedTable,
    fallback: Arc<Section<u32>>,
    map: Arc<Mmap>,
    entries: [Entry; 4],
}

impl Snapshot {
    /// Maps `path` and verifies its header, user ids and offsets (see the
    /// module doc for what is left to [`Self::verify_items`]).
    ///
    /// # Errors
    /// [`SnapshotError`] naming the file and, in one line, the reason: it
    /// cannot be read, wrong magic, unknown version, a header or section
    /// checksum mismatch, truncated, or a malformed section.
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let file = File::open(path).map_err(|e| SnapshotError::io(path, e))?;
        let identity =
            FileIdentity::from(&file.metadata().map_err(|e| SnapshotError::io(path, e))?);
        let map = map_file(&file).map_err(|e| SnapshotError::io(path, e))?;
        // Everything below is checked against the mapping itself, not the
        // length the file had a moment before: a file that changed size in
        // between is refused, never read out of bounds.
        let len = map.len() as u64;
        if len < PAGE {
            return Err(SnapshotError::invalid(
                path,
                format!("truncated: {len} bytes, not even a header"),
            ));
        }
        let (meta, entries) = read_header(&map[..HEADER_BYTES], len)
            .map_err(|reason| SnapshotError::invalid(path, reason))?;
        // The sections every lookup reads: verified before serving.
        for at in 0..2 {
            check_section(&map, &entries[at], SECTIONS[at])
                .map_err(|reason| SnapshotError::invalid(path, reason))?;
        }
        let map = Arc::new(map);
        let section = |at: usize, size: u64| -> (usize, usize) {
            (
                entries[at].offset as usize,
                (entries[at].bytes / size) as usize,
            )
        };
        let ids = {
            let (start, len) = section(0, 8);
            Section::File {
                map: Arc::clone(&map),
                start,
                len,
            }
        };
        let offsets = {
            let (start, len) = section(1, 8);
            Section::File {
                map: Arc::clone(&map),
                start,
                len,
            }
        };
        let items = {
            let (start, len) = section(2, 4);
            Section::File {
                map: Arc::clone(&map),
                start,
                len,
            }
        };
        let fallback = {
            let (start, len) = section(3, 4);
            Section::File {
                map: Arc::clone(&map),
                start,
                len,
            }
        };
        let table = FeedTable::from_sections(ids, offsets, items)
            .map_err(|e| SnapshotError::invalid(path, e.to_string()))?;
        Ok(Self {
            meta,
            identity,
            path: path.to_owned(),
            table,
            fallback: Arc::new(fallback),
            map,
            entries,
        })
    }

    /// Verifies the items and the fallback list: their checksums, and that
    /// none of them is item 0. Reads the bulk of the file once.
    ///
    /// # Errors
    /// [`SnapshotError::Invalid`] naming the section.
    pub fn verify_items(&self) -> Result<(), SnapshotError> {
        self.verifier().verify()
    }

    /// What [`Self::verify_items`] checks, as a value that can go to another
    /// thread and outlive the snapshot's other parts (it shares the mapping).
    pub fn verifier(&self) -> ItemsVerifier {
        ItemsVerifier {
            path: self.path.clone(),
            map: Arc::clone(&self.map),
            entries: [self.entries[2], self.entries[3]],
        }
    }

    /// What the header says.
    pub const fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The identity of the file as it was opened (what is mapped, whatever
    /// has since been renamed over its path).
    pub const fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// The file it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The feeds.
    pub const fn table(&self) -> &FeedTable {
        &self.table
    }

    /// The fallback items.
    pub fn fallback(&self) -> &[u32] {
        self.fallback.get()
    }

    /// Splits the snapshot into its table and its fallback list (which keep
    /// the mapping alive between them).
    pub fn into_parts(self) -> (SnapshotMeta, FeedTable, FallbackList) {
        (self.meta, self.table, FallbackList(self.fallback))
    }
}

/// Verifies a snapshot's items and fallback list (see
/// [`Snapshot::verify_items`]).
#[derive(Debug, Clone)]
pub struct ItemsVerifier {
    path: PathBuf,
    map: Arc<Mmap>,
    entries: [Entry; 2],
}

impl ItemsVerifier {
    /// Checks the checksums of the items and the fallback list, that
    /// neither holds item 0, and that the fallback list holds no item twice
    /// (the random fill's walk over it is bounded by the answer's size only
    /// for a list of distinct items).
    ///
    /// # Errors
    /// [`SnapshotError::Invalid`] naming the section.
    pub fn verify(&self) -> Result<(), SnapshotError> {
        let invalid = |reason: String| SnapshotError::invalid(&self.path, reason);
        for (entry, name) in self.entries.iter().zip(&SECTIONS[2..]) {
            check_section(&self.map, entry, name).map_err(invalid)?;
            let bytes = &self.map[entry.offset as usize..(entry.offset + entry.bytes) as usize];
            let values: &[u32] = bytemuck::cast_slice(bytes);
            if values.contains(&0) {
                return Err(invalid(format!("item 0 in the {name} section")));
            }
        }
        let fallback = &self.entries[1];
        let bytes =
            &self.map[fallback.offset as usize..(fallback.offset + fallback.bytes) as usize];
        let mut sorted: Vec<u32> = bytemuck::cast_slice(bytes).to_vec();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(format!(
                "item {} twice in the fallback section",
                pair[0]
            )));
        }
        Ok(())
    }
}

/// A snapshot's fallback items, sharing its file mapping.
#[derive(Debug, Clone)]
pub struct FallbackList(Arc<Section<u32>>);

impl FallbackList {
    /// A list held on the heap.
    pub fn from_vec(items: Vec<u32>) -> Self {
        Self(Arc::new(Section::Heap(items.into_boxed_slice())))
    }

    /// The items.
    #[inline]
    pub fn items(&self) -> &[u32] {
        self.0.get()
    }
}

/// Maps `file` read-only.
#[allow(
    unsafe_code,
    reason = "mapping a file is unsafe because another process could change it under us"
)]
fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: a snapshot file is never modified in place: writers (this
    // module, `write`) create a new file and rename it over the old one, so
    // the inode we map keeps its content; the format doc says so, and an
    // operator who edits a snapshot in place breaks that contract. Reading
    // through the mapping is then reading immutable memory.
    unsafe { Mmap::map(file) }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default())
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

/// Reads and checks the header against a file of `len` bytes.
fn read_header(header: &[u8], len: u64) -> Result<(SnapshotMeta, [Entry; 4]), String> {
    if header[..8] != MAGIC {
        return Err("not a feed snapshot (wrong magic number)".into());
    }
    let version = read_u32(header, 8);
    if version != VERSION {
        return Err(format!(
            "snapshot format version {version}, this build reads version {VERSION}"
        ));
    }
    let stored = read_u64(header, HEADER_BYTES - 8);
    if xxh3_64(&header[..HEADER_BYTES - 8]) != stored {
        return Err("header checksum mismatch".into());
    }
    let meta = SnapshotMeta {
        id: read_u64(header, 16),
        created_unix_ms: read_u64(header, 24),
        users: read_u64(header, 32),
        items: read_u64(header, 40),
        fallback: read_u64(header, 48),
    };
    let mut entries = [Entry::default(); 4];
    for (at, entry) in entries.iter_mut().enumerate() {
        let base = 56 + at * 24;
        *entry = Entry {
            offset: read_u64(header, base),
            bytes: read_u64(header, base + 8),
            checksum: read_u64(header, base + 16),
        };
    }
    let expected = [
        meta.users.checked_mul(8),
        meta.users.checked_add(1).and_then(|n| n.checked_mul(8)),
        meta.items.checked_mul(4),
        meta.fallback.checked_mul(4),
    ];
    let mut end = PAGE;
    for ((entry, expected), name) in entries.iter().zip(expected).zip(SECTIONS) {
        if Some(entry.bytes) != expected {
            return Err(format!(
                "the {name} section's size does not match the counts"
            ));
        }
        if entry.offset % PAGE != 0 || entry.offset < end {
            return Err(format!("the {name} section is misplaced"));
        }
        end = entry
            .offset
            .checked_add(entry.bytes)
            .ok_or_else(|| format!("the {name} section is misplaced"))?;
        if end > len {
            return Err(format!(
                "truncated: the {name} section ends at byte {end}, the file has {len}"
            ));
        }
    }
    if meta.users > u64::from(u32::MAX) {
        return Err(format!(
            "{} users, at most {} are supported",
            meta.users,
            u32::MAX
        ));
    }
    Ok((meta, entries))
}

/// Checks a section's checksum.
fn check_section(map: &[u8], entry: &Entry, name: &str) -> Result<(), String> {
    let bytes = &map[entry.offset as usize..(entry.offset + entry.bytes) as usize];
    if xxh3_64(bytes) != entry.checksum {
        return Err(format!("the {name} section's checksum does not match"));
    }
    Ok(())
}

/// Feeds to write: every user and their feed, in increasing user order,
/// visited once per section.
trait Entries {
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
    write_entries(path, table, fallback, created_unix_ms)
}

/// Writes compressed sparse rows (user `user_ids[i]` has the feed
/// `items[offsets[i]..offsets[i + 1]]`) and `fallback` as a snapshot at
/// `path`, as [`write`] does. The caller vouches for the rows: ids strictly
/// increasing, offsets from 0 to `items.len()` never going back, no item 0
/// and no item twice in a feed (an importer's checks); they are written as
/// given.
///
/// # Errors
/// As [`write`]; and [`SnapshotError::Invalid`] when the offsets do not fit
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
    write_entries(path, &csr, fallback, created_unix_ms)
}

fn write_entries(
    path: &Path,
    entries: &dyn Entries,
    fallback: &[u32],
    created_unix_ms: u64,
) -> Result<SnapshotMeta, SnapshotError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = write_to(&temporary, entries, fallback, created_unix_ms).and_then(|meta| {
        std::fs::rename(&temporary, path)?;
        // Make the rename itself durable.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(meta)
    });
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        SnapshotError::io(path, e)
    })
}

/// One section being written: where it started, its length and checksum.
struct SectionWriter<'a> {
    out: &'a mut BufWriter<File>,
    hasher: Xxh3,
    bytes: u64,
}

impl SectionWriter<'_> {
    fn put(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        self.out.write_all(chunk)
    }
}

fn write_to(
    path: &Path,
    feeds: &dyn Entries,
    fallback: &[u32],
    created_unix_ms: u64,
) -> std::io::Result<SnapshotMeta> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    out.write_all(&[0; PAGE as usize])?;
    let mut position = PAGE;
    let mut entries = [Entry::default(); 4];
    for (at, entry) in entries.iter_mut().enumerate() {
        let padding = position.next_multiple_of(PAGE) - position;
        out.write_all(&vec![0; padding as usize])?;
        position += padding;
        let mut section = SectionWriter {
            out: &mut out,
            hasher: Xxh3::new(),
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
        *entry = Entry {
            offset: position,
            bytes: section.bytes,
            checksum: section.hasher.digest(),
        };
        position += section.bytes;
    }

    let id = xxh3_64(bytemuck::cast_slice(&entries.map(|e| e.checksum)));
    let meta = SnapshotMeta {
        id,
        created_unix_ms,
        users: feeds.users(),
        items: feeds.items(),
        fallback: fallback.len() as u64,
    };
    let mut header = vec![0u8; HEADER_BYTES];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
    for (at, value) in [
        meta.id,
        meta.created_unix_ms,
        meta.users,
        meta.items,
        meta.fallback,
    ]
    .into_iter()
    .enumerate()
    {
        header[16 + at * 8..24 + at * 8].copy_from_slice(&value.to_le_bytes());
    }
    for (at, entry) in entries.iter().enumerate() {
        let base = 56 + at * 24;
        header[base..base + 8].copy_from_slice(&entry.offset.to_le_bytes());
        header[base + 8..base + 16].copy_from_slice(&entry.bytes.to_le_bytes());
        header[base + 16..base + 24].copy_from_slice(&entry.checksum.to_le_bytes());
    }
    let checksum = xxh3_64(&header[..HEADER_BYTES - 8]);
    header[HEADER_BYTES - 8..].copy_from_slice(&checksum.to_le_bytes());
    let mut file = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    file.sync_all()?;
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

    fn sample() -> FeedTable {
        FeedTable::from_csr(
            vec![3, 1 << 33, u64::MAX],
            vec![0, 2, 2, 5],
            vec![7, 1, 4, 5, u32::MAX],
        )
        .unwrap()
    }

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "feed-snapshot-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_written_snapshot_reads_back() {
        let path = dir().join("a.snap");
        let meta = write(&path, &sample(), &[9, 8], 1234).unwrap();
        let snapshot = Snapshot::open(&path).unwrap();
        assert_eq!(snapshot.meta(), &meta);
        assert_eq!((meta.users, meta.items, meta.fallback), (3, 5, 2));
        snapshot.verify_items().unwrap();
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

    /// Opens `bytes` as a snapshot file and returns the error's message.
    fn refusal(bytes: &[u8]) -> String {
        let path = dir().join("bad.snap");
        std::fs::write(&path, bytes).unwrap();
        match Snapshot::open(&path).and_then(|s| s.verify_items()) {
            Ok(()) => panic!("accepted"),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.starts_with(&path.display().to_string()),
                    "{message}"
                );
                assert!(!message.contains('\n'));
                message
            }
        }
    }

    #[test]
    fn corrupt_snapshots_are_refused_with_a_reason() {
        let path = dir().join("good.snap");
        write(&path, &sample(), &[9, 8], 1).unwrap();
        let good = std::fs::read(&path).unwrap();
        let with = |at: usize, byte: u8| {
            let mut bytes = good.clone();
            bytes[at] ^= byte;
            bytes
        };
        assert!(refusal(&with(0, 1)).contains("wrong magic"));
        let mut version = good.clone();
        version[8] = 2;
        assert!(refusal(&version).contains("version 2"));
        assert!(refusal(&with(40, 1)).contains("header checksum"));
        assert!(refusal(&good[..good.len() - 4]).contains("truncated"));
        assert!(refusal(&good[..100]).contains("truncated"));
        let section = |at: usize| read_u64(&good, 56 + at * 24) as usize;
        assert!(refusal(&with(section(0), 1)).contains("user ids section's checksum"));
        assert!(refusal(&with(section(1) + 8, 1)).contains("offsets section's checksum"));
        assert!(refusal(&with(section(2), 1)).contains("items section's checksum"));
        assert!(refusal(&with(section(3), 1)).contains("fallback section's checksum"));
        assert!(refusal(b"").contains("truncated"));
        let missing = dir().join("none.snap");
        let error = Snapshot::open(&missing).unwrap_err().to_string();
        assert!(error.contains("none.snap"), "{error}");
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
    fn a_fallback_list_with_a_repeat_is_refused() {
        let path = dir().join("repeat.snap");
        write(&path, &sample(), &[9, 8, 9], 1).unwrap();
        let error = Snapshot::open(&path).unwrap().verify_items().unwrap_err();
        assert!(error.to_string().contains("item 9 twice"), "{error}");
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
            snapshot.verify_items().unwrap();
            prop_assert_eq!(snapshot.table(), &table);
            prop_assert_eq!(snapshot.fallback(), &fallback[..]);
            for (user, feed) in snapshot.table().entries() {
                prop_assert_eq!(snapshot.table().feed(UserId::new(user)), Some(feed));
            }
        }
    }
}
