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
//!
//! The code is split by job: this module holds the format (constants, the
//! header written and read), the types and the errors; `write` writes a
//! snapshot as a stream of users ([`SnapshotWriter`], nothing held per
//! user), `read` opens and maps one, and `verify` checks its sections
//! (the checksums, on every core, and the fallback list's repeats).

mod read;
mod verify;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use self::verify::content_id;
pub use self::write::{SnapshotWriter, file_bytes, write, write_csr};
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
    /// The file (or folder) it is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::Invalid { path, .. } => path,
        }
    }

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

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default())
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

/// The header page's first [`HEADER_BYTES`] of a snapshot in format
/// `version` with these counts and sections.
fn encode_header(version: u32, meta: &SnapshotMeta, entries: &[Entry; 4]) -> Vec<u8> {
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
    header
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

/// What the tests of the snapshot's modules share.
#[cfg(test)]
mod testing {
    use std::path::PathBuf;

    use super::*;

    pub(super) fn sample() -> FeedTable {
        FeedTable::from_csr(
            vec![3, 1 << 33, u64::MAX],
            vec![0, 2, 2, 5],
            vec![7, 1, 4, 5, u32::MAX],
        )
        .unwrap()
    }

    pub(super) fn dir() -> PathBuf {
        crate::files::scratch_dir("snapshot")
    }

    /// One user with the feed `1..=len`: a large items section.
    pub(super) fn one_long_feed(len: u32) -> FeedTable {
        let items: Vec<u32> = (1..=len).collect();
        FeedTable::from_csr(vec![5], vec![0, items.len() as u64], items).unwrap()
    }

    /// Opens `bytes` as a snapshot file and returns the error's message.
    pub(super) fn refusal(bytes: &[u8]) -> String {
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
}
