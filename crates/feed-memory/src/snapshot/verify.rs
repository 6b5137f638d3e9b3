//! The checks of a snapshot's content: the id derived from the section
//! checksums, every section's checksum (version 2 block by block on every
//! core, version 1 in one pass) with no item 0, and no fallback item twice.

use xxhash_rust::xxh3::xxh3_64;

use super::{BLOCK, Entry, SECTIONS};

/// The id of a snapshot whose sections have these checksums.
pub(super) fn content_id(entries: &[Entry; 4]) -> u64 {
    xxh3_64(bytemuck::cast_slice(&entries.map(|e| e.checksum.to_le())))
}

/// Verifies every section of `map` against its entry, as `version`
/// defines the checksum: version 2 block by block on every core, version 1
/// one section at a time. Items and fallback items must not be 0.
pub(super) fn verify_sections(
    map: &[u8],
    entries: &[Entry; 4],
    version: u32,
) -> Result<(), String> {
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
pub(super) fn first_repeat(items: &[u32]) -> Option<u32> {
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
pub(super) fn has_zero(bytes: &[u8]) -> bool {
    bytes.chunks_exact(4).any(|value| value == [0, 0, 0, 0])
}

/// The version-2 checksum of `bytes` (the XXH3-64 of its blocks'
/// XXH3-64s), computed on up to `threads` threads; and, when `items`, whether
/// it holds a `u32` 0 (checked in the same pass, while each block is in the
/// cache).
pub(super) fn block_checksum(bytes: &[u8], items: bool, threads: usize) -> (u64, bool) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testing::{dir, one_long_feed, refusal, sample};
    use crate::snapshot::write::write_entries;
    use crate::snapshot::{Snapshot, read_u32, read_u64, write};

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
}
