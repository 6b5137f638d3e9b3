//! Opening a snapshot: the file opened without blocking and mapped, the
//! header read, every section verified, and only then a [`Snapshot`] over
//! the mapping.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use super::verify::{first_repeat, verify_sections};
use super::{
    Entry, FileIdentity, HEADER_BYTES, PAGE, Snapshot, SnapshotError, SnapshotMeta, read_header,
};
use crate::table::{FeedTable, Section};

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
        let (file, metadata) = open_regular(path)?;
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
}

impl Snapshot {
    /// The header of the snapshot at `path`, read and checked (its
    /// checksum, and its sections against the file's length) without
    /// mapping or verifying the sections: cheap, for finding a snapshot
    /// by its id. Trust nothing of it before [`Snapshot::open`].
    ///
    /// # Errors
    /// [`SnapshotError`] naming the file: it cannot be read, is not a
    /// regular file, or its header is not a snapshot's.
    pub fn peek(path: &Path) -> Result<SnapshotMeta, SnapshotError> {
        use std::io::Read;
        let (mut file, metadata) = open_regular(path)?;
        let mut header = [0u8; HEADER_BYTES];
        file.read_exact(&mut header).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                SnapshotError::invalid(path, "truncated: not even a header")
            } else {
                SnapshotError::io(path, e)
            }
        })?;
        read_header(&header, metadata.len())
            .map(|(_, meta, _)| meta)
            .map_err(|reason| SnapshotError::invalid(path, reason))
    }

    /// The snapshot whose id is `id` among the files of `dir` (any names:
    /// each file's header says which snapshot it is), opened and verified.
    /// Files that are not snapshots are passed over, and so are the files
    /// for which `skip` says yes (say, one that failed verification and has
    /// not changed since: verifying it again would read it all again).
    ///
    /// # Errors
    /// [`SnapshotError`]: `dir` cannot be listed, no file in it is
    /// snapshot `id`, or the one that is fails [`Snapshot::open`] (or
    /// turns out to be another snapshot once verified); its
    /// [`SnapshotError::path`] names that file.
    pub fn find(
        dir: &Path,
        id: u64,
        skip: impl Fn(&FileIdentity) -> bool,
    ) -> Result<Self, SnapshotError> {
        let listing = std::fs::read_dir(dir).map_err(|e| SnapshotError::io(dir, e))?;
        let mut names: Vec<_> = listing
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        names.sort();
        let found = names
            .into_iter()
            .filter(|path| !FileIdentity::of(path).is_some_and(|identity| skip(&identity)))
            .find(|path| Self::peek(path).is_ok_and(|meta| meta.id == id))
            .ok_or_else(|| {
                SnapshotError::invalid(dir, format!("no snapshot {id:016x} in this folder"))
            })?;
        let snapshot = Self::open(&found)?;
        if snapshot.meta().id != id {
            return Err(SnapshotError::invalid(
                &found,
                format!(
                    "changed while opened: now snapshot {:016x}",
                    snapshot.meta().id
                ),
            ));
        }
        Ok(snapshot)
    }
}

/// Opens `path` for reading without blocking (so a FIFO or a device is
/// refused at once) and checks that it is a regular file.
fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), SnapshotError> {
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
    Ok((file, metadata))
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

#[cfg(test)]
mod tests {
    use xxhash_rust::xxh3::xxh3_64;

    use super::*;
    use crate::snapshot::testing::{dir, one_long_feed, refusal, sample};
    use crate::snapshot::{read_u64, write};

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

    /// A frontend over the cluster finds the snapshot a version names by
    /// the id in its header, whatever the file is called; other files are
    /// passed over, and one whose content does not match its header is
    /// refused.
    #[test]
    fn a_snapshot_is_found_in_a_folder_by_its_id() {
        let folder = dir();
        let one = write(&folder.join("a.snap"), &sample(), &[9, 8], 1).unwrap();
        let two = write(&folder.join("z"), &one_long_feed(3), &[9, 8], 1).unwrap();
        std::fs::write(folder.join("notes.txt"), "not a snapshot").unwrap();
        std::fs::create_dir(folder.join("old")).unwrap();
        assert_eq!(Snapshot::peek(&folder.join("z")).unwrap(), two);
        let find = |id| Snapshot::find(&folder, id, |_| false);
        assert_eq!(find(two.id).unwrap().meta(), &two);
        assert_eq!(find(one.id).unwrap().meta(), &one);
        // A file the caller passes over is not found.
        let z = FileIdentity::of(&folder.join("z")).unwrap();
        let error = Snapshot::find(&folder, two.id, |file| *file == z).unwrap_err();
        assert!(error.to_string().contains("no snapshot"), "{error}");
        let error = find(7).unwrap_err().to_string();
        assert!(error.contains("no snapshot 0000000000000007"), "{error}");
        // The header found, the content damaged: refused by the
        // verification, naming the file.
        let mut bytes = std::fs::read(folder.join("a.snap")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(folder.join("a.snap"), bytes).unwrap();
        let error = find(one.id).unwrap_err();
        assert_eq!(error.path(), folder.join("a.snap"));
        assert!(error.to_string().contains("checksum"), "{error}");
        let error = Snapshot::find(&folder.join("none"), one.id, |_| false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("none"), "{error}");
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
}
