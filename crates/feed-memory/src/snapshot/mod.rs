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
//! All numbers are little-endian; checksums are XXH3-64. In version 2 a
//! section's checksum is the XXH3-64 of the list of its 1 MiB blocks'
//! XXH3-64s, so that the blocks are verified on every core at once;
//! version 1 (one XXH3-64 over the whole section) is still read, and
//! verified on one core.
//!
//! Architecture Invariant: nothing is served from a snapshot before every
//! byte of it is verified. [`Snapshot::open`] checks the header (magic,
//! version, checksum, section bounds against the file's length, and the
//! id against the section checksums, so a hand-made header cannot claim
//! another snapshot's id and with it its progress), every section's
//! checksum, the ids strictly increasing and the offsets within the items,
//! no item 0, and no fallback item twice; only then does it return. A
//! lookup never trusts a stored number it has not checked.
//!
//! Writing goes to a temporary file beside the target (mode 0640), is
//! synced, and is renamed over the target, and the folder is synced: a
//! reader never sees a half-written snapshot. A snapshot is never changed
//! in place (a mapping of it would change under the server): replace it by
//! a rename.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::table::{FeedTable, Section};

/// The first eight bytes of every snapshot.
const MAGIC: [u8; 8] = *b"FFEEDSNP";
/// The format version this build writes; it reads this one and 1.
const VERSION: u32 = 2;
/// Bytes of a checksummed block in version 2.
const BLOCK: usize = 1 << 20;
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
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileIdentity {
    /// The identity of the file at `path` now, `None` when there is none.
    pub fn of(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|meta| Self::from(&meta))
    }

    /// Whether both are the same file (inode), whatever its length or
    /// modification time: a file changed in place, not replaced.
    pub const fn same_file(&self, other: &Self) -> bool {
        self.device == other.device && self.inode == other.inode
    }
}

impl From<&std::fs::Metadata> for FileIdentity {
    fn from(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            device: meta.dev(),
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
}

impl Snapshot {
    /// Maps `path` and verifies all of it (see the module doc), on every
    /// core. The path must name a regular file; it is opened without
    /// blocking, so a FIFO or a device is refused at once.
    ///
    /// # Errors
    /// [`SnapshotError`] naming the file and, in one line, the reason: it
    /// cannot be read, not a regular file, wrong magic, unknown version, a
    /// header or section checksum mismatch, an id that does not match the
    /// content, truncated, a malformed section, item 0, or a repeated
    /// fallback item.
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
            .map_err(|e| SnapshotError::io(path, e))?;
        let metadata = file.metadata().map_err(|e| SnapshotError::io(path, e))?;
        if !metadata.is_file() {
            return Err(SnapshotError::invalid(path, "not a regular file"));
        }
        let identity = FileIdentity::from(&metadata);
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
        let (version, meta, entries) = read_header(&map[..HEADER_BYTES], len)
            .map_err(|reason| SnapshotError::invalid(path, reason))?;
        verify_sections(&map, &entries, version)
            .map_err(|reason| SnapshotError::invalid(path, reason))?;
        let map = Arc::new(map);
        fn section<T>(map: &Arc<Mmap>, entry: &Entry) -> Section<T> {
            Section::File {
                map: Arc::clone(map),
                start: entry.offset as usize,
                len: (entry.bytes / size_of::<T>() as u64) as usize,
            }
        }
        let table = FeedTable::from_sections(
            section(&map, &entries[0]),
            section(&map, &entries[1]),
            section(&map, &entries[2]),
        )
        .map_err(|e| SnapshotError::invalid(path, e.to_string()))?;
        let fallback: Section<u32> = section(&map, &entries[3]);
        if let Some(item) = first_repeat(fallback.get()) {
            return Err(SnapshotError::invalid(
                path,
                format!("item {item} twice in the fallback section"),
            ));
        }
        Ok(Self {
            meta,
            identity,
            path: path.to_owned(),
            table,
            fallback: Arc::new(fallback),
        })
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
fn read_header(header: &[u8], len: u64) -> Result<(u32, SnapshotMeta, [Entry; 4]), String> {
    if header[..8] != MAGIC {
        return Err("not a feed snapshot (wrong magic number)".into());
    }
    let version = read_u32(header, 8);
    if !(1..=VERSION).contains(&version) {
        return Err(format!(
            "snapshot format version {version}, this build reads versions 1 to {VERSION}"
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
    // The id is derived from the content: checked here against the section
    // checksums, which are checked against the bytes before anything is
    // served.
    if content_id(&entries) != meta.id {
        return Err("the snapshot id does not match its content".into());
    }
    Ok((version, meta, entries))
}

/// The id of a snapshot whose sections have these checksums.
fn content_id(entries: &[Entry; 4]) -> u64 {
    xxh3_64(bytemuck::cast_slice(&entries.map(|e| e.checksum.to_le())))
}

/// Verifies every section of `map` against its entry, as `version`
/// defines the checksum: version 2 block by block on every core, version 1
/// one section at a time. Items and fallback items must not be 0.
fn verify_sections(map: &[u8], entries: &[Entry; 4], version: u32) -> Result<(), String> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    for (at, (entry, name)) in entries.iter().zip(SECTIONS).enumerate() {
        let bytes = &map[entry.offset as usize..(entry.offset + entry.bytes) as usize];
        let items = at >= 2;
        let (checksum, zero) = if version == 1 {
            (xxh3_64(bytes), items && has_zero(bytes))
        } else {
            block_checksum(bytes, items, threads)
        };
        if checksum != entry.checksum {
            return Err(format!("the {name} section's checksum does not match"));
        }
        if zero {
            return Err(format!("item 0 in the {name} section"));
        }
    }
    Ok(())
}

/// An item `items` holds twice, if any (the random fill's walk over the
/// fallback list is bounded by the answer's size only for distinct items).
/// A bitmap over the ids when the largest is small enough for it (one pass,
/// in cache: a fallback list of a whole 10M catalog takes milliseconds),
/// else a sorted copy.
fn first_repeat(items: &[u32]) -> Option<u32> {
    let largest = *items.iter().max()?;
    let words = largest as usize / 64 + 1;
    if words <= 4 * items.len() + 1024 {
        let mut bits = vec![0u64; words];
        for &item in items {
            let (word, bit) = (item as usize / 64, 1u64 << (item % 64));
            if bits[word] & bit != 0 {
                return Some(item);
            }
            bits[word] |= bit;
        }
        return None;
    }
    let mut sorted = items.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// Whether the little-endian `u32`s of `bytes` hold a 0.
fn has_zero(bytes: &[u8]) -> bool {
    bytes.chunks_exact(4).any(|value| value == [0, 0, 0, 0])
}

/// The version-2 checksum of `bytes` (the XXH3-64 of its blocks'
/// XXH3-64s), computed on up to `threads` threads; and, when `items`, whether
/// it holds a `u32` 0 (checked in the same pass, while each block is in the
/// cache).
fn block_checksum(bytes: &[u8], items: bool, threads: usize) -> (u64, bool) {
    let blocks: Vec<&[u8]> = bytes.chunks(BLOCK).collect();
    let mut digests = vec![0u64; blocks.len()];
    let per_thread = blocks.len().div_ceil(threads.max(1)).max(1);
    let zero = std::thread::scope(|scope| {
        let workers: Vec<_> = blocks
            .chunks(per_thread)
            .zip(digests.chunks_mut(per_thread))
            .map(|(blocks, digests)| {
                scope.spawn(move || {
                    let mut zero = false;
                    for (block, digest) in blocks.iter().zip(digests) {
                        *digest = xxh3_64(block).to_le();
                        zero |= items && has_zero(block);
                    }
                    zero
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(true))
            .fold(false, |a, b| a | b)
    });
    (xxh3_64(bytemuck::cast_slice(&digests)), zero)
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
    write_entries(path, table, fallback, created_unix_ms, VERSION)
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
    write_entries(path, &csr, fallback, created_unix_ms, VERSION)
}

fn write_entries(
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
    let result =
        write_to(&temporary, entries, fallback, created_unix_ms, version).and_then(|meta| {
            std::fs::rename(&temporary, path)?;
            // Make the rename itself durable.
            crate::files::sync_folder(path.parent().unwrap_or(Path::new("")))?;
            Ok(meta)
        });
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        SnapshotError::io(path, e)
    })
}

/// One section being written: its length and the checksums of its blocks.
struct SectionWriter<'a> {
    out: &'a mut BufWriter<File>,
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

impl SectionWriter<'_> {
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

fn write_to(
    path: &Path,
    feeds: &dyn Entries,
    fallback: &[u32],
    created_unix_ms: u64,
    version: u32,
) -> std::io::Result<SnapshotMeta> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(path)?;
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
    let mut header = vec![0u8; HEADER_BYTES];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&version.to_le_bytes());
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
        crate::files::scratch_dir("snapshot")
    }

    /// One user with the feed `1..=len`: a large items section.
    fn one_long_feed(len: u32) -> FeedTable {
        let items: Vec<u32> = (1..=len).collect();
        FeedTable::from_csr(vec![5], vec![0, items.len() as u64], items).unwrap()
    }

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

    /// Opens `bytes` as a snapshot file and returns the error's message.
    fn refusal(bytes: &[u8]) -> String {
        let path = dir().join("bad.snap");
        std::fs::write(&path, bytes).unwrap();
        match Snapshot::open(&path) {
            Ok(_) => panic!("accepted"),
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
        version[8] = 3;
        assert!(refusal(&version).contains("version 3"));
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
    fn repeats_are_found_by_either_way() {
        assert_eq!(first_repeat(&[]), None);
        assert_eq!(first_repeat(&[5, 9, 1]), None);
        assert_eq!(first_repeat(&[5, 9, 1, 9]), Some(9));
        // Ids too large for a bitmap of this list: the sorted copy.
        assert_eq!(first_repeat(&[u32::MAX, 3, u32::MAX]), Some(u32::MAX));
        assert_eq!(first_repeat(&[u32::MAX, 3, 7]), None);
    }

    #[test]
    fn a_fallback_list_with_a_repeat_is_refused() {
        let path = dir().join("repeat.snap");
        write(&path, &sample(), &[9, 8, 9], 1).unwrap();
        let error = Snapshot::open(&path).unwrap_err();
        assert!(error.to_string().contains("item 9 twice"), "{error}");
    }

    /// A header that names another snapshot's id (its checksum made to
    /// match) is refused: progress is keyed on the id.
    #[test]
    fn an_id_that_does_not_match_the_content_is_refused() {
        let path = dir().join("id.snap");
        write(&path, &sample(), &[9, 8], 1).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[16] ^= 1;
        let checksum = xxh3_64(&bytes[..HEADER_BYTES - 8]);
        bytes[HEADER_BYTES - 8..HEADER_BYTES].copy_from_slice(&checksum.to_le_bytes());
        assert!(refusal(&bytes).contains("id does not match"));
    }

    /// Version 1 files (one checksum a section) still load, and their
    /// damage is found just the same.
    #[test]
    fn version_1_still_loads_and_is_verified() {
        let path = dir().join("v1.snap");
        let table = one_long_feed(700_000);
        let meta = write_entries(&path, &table, &[9], 1, 1).unwrap();
        let snapshot = Snapshot::open(&path).unwrap();
        assert_eq!(snapshot.meta(), &meta);
        assert_eq!(snapshot.table(), &table);
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(read_u32(&bytes, 8), 1);
        let items_at = read_u64(&bytes, 56 + 2 * 24) as usize;
        bytes[items_at + 2_000_000] ^= 4;
        assert!(refusal(&bytes).contains("items section's checksum"));
    }

    /// Damage anywhere in a large section (many blocks, verified on
    /// several threads) is found, and the same pass reports an item 0.
    #[test]
    fn damage_in_any_block_is_found() {
        let path = dir().join("big.snap");
        let table = one_long_feed(1_500_000);
        write(&path, &table, &[9], 1).unwrap();
        let good = std::fs::read(&path).unwrap();
        let items_at = read_u64(&good, 56 + 2 * 24) as usize;
        for offset in [0, BLOCK - 1, BLOCK, 3 * BLOCK + 5, 6_000_000 - 1] {
            let mut bytes = good.clone();
            bytes[items_at + offset] ^= 0x10;
            assert!(
                refusal(&bytes).contains("items section's checksum"),
                "{offset}"
            );
        }
        assert_eq!(
            block_checksum(&[1, 0, 0, 0, 0, 0, 0, 0], true, 2),
            (block_checksum(&[1, 0, 0, 0, 0, 0, 0, 0], false, 1).0, true)
        );
    }

    #[test]
    fn a_fifo_or_a_folder_is_refused_at_once() {
        let dir = dir();
        let fifo = dir.join("fifo.snap");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opened without blocking: no writer ever comes.
        let error = Snapshot::open(&fifo).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        let error = Snapshot::open(&dir).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
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
