//! The progress file's format: a header page, then the cells.
//!
//! Header (all little-endian): magic (`FFEEDPRG` for offsets, `FFEEDKEY`
//! for retry keys), version `u32` (1), 4 zero bytes, data id `u64`, users
//! `u64`, creation time `u64` (ms since the Unix epoch), XXH3-64 of the 40
//! bytes before it; zeros to 4096 bytes. Then, by position in the feed
//! table, each user's cells: one `u32` offset, or the four `u32` words of
//! the user's latest retry key.
//!
//! [`header`] writes a header and [`check`] reads one back and says why a
//! file is not the progress it should be.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use super::Kind;

const VERSION: u32 = 1;
/// The offsets start here: a page, so they are aligned for `AtomicU32`.
pub(super) const HEADER: usize = 4096;
/// Bytes of the header that carry data, checksum included.
const HEADER_BYTES: usize = 48;
/// Offsets in one page of the array.
pub(super) const CELLS_PER_PAGE: usize = 4096 / 4;

/// Bytes of the `kind` file of `users` users.
pub(super) const fn file_len(kind: Kind, users: u32) -> u64 {
    (HEADER + users as usize * 4 * kind.width()) as u64
}

/// The header page of the `kind` file of data `id` with `users` users,
/// created at `created_unix_ms`.
pub(super) fn header(kind: Kind, id: u64, users: u32, created_unix_ms: u64) -> Vec<u8> {
    let mut header = vec![0u8; HEADER];
    header[..8].copy_from_slice(&kind.magic());
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&id.to_le_bytes());
    header[24..32].copy_from_slice(&u64::from(users).to_le_bytes());
    header[32..40].copy_from_slice(&created_unix_ms.to_le_bytes());
    let checksum = xxh3_64(&header[..HEADER_BYTES - 8]);
    header[HEADER_BYTES - 8..HEADER_BYTES].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// Why the file at `path` is not the `kind` file of data `id` with `users`
/// users, if it is not.
pub(super) fn check(kind: Kind, path: &Path, id: u64, users: u32) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("unreadable: {e}"))?;
    check_file(kind, &file, id, users)
}

/// [`check`] of a file already open (so that what is checked is what is
/// then mapped, whatever is renamed over its path meanwhile).
pub(super) fn check_file(kind: Kind, mut file: &File, id: u64, users: u32) -> Result<(), String> {
    let len = file
        .metadata()
        .map_err(|e| format!("unreadable: {e}"))?
        .len();
    let mut bytes = [0u8; HEADER_BYTES];
    if file.read_exact(&mut bytes).is_err() || bytes[..8] != kind.magic() {
        return Err("not a progress file (wrong magic number or truncated header)".into());
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
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
    let expected = file_len(kind, users);
    if len != expected {
        return Err(format!("{len} bytes, expected {expected} (truncated?)"));
    }
    Ok(())
}
