//! [`Rows`]: the marks a carry (`crate::carry`) made, kept only for the
//! users who have any: one bit a feed position of those users, back to
//! back in position order, plus an index of three bits a user.
//!
//! Architecture Invariant: the memory is one bit a feed position of the
//! users with a mark, plus 3 bits a user of the version (whether the user
//! has a row, and every 32 users the bit where their rows start), whatever
//! share of users has progress. Finding a user's row is one bit test for a
//! user without one; for a user with one, a load of the block's start plus
//! the lengths of the rows before it in its block of 32 (at most 31 feed
//! lengths, read from the table's offsets, which are in cache together).
//! A dense bitmap over every position of the table, as before this type,
//! cost one bit a position of every user: twice the budget when half the
//! users have progress.
//!
//! Rows are built once, in position order ([`RowsBuilder`]), and never
//! change: marks made after the build go to [`crate::Given`]'s dense
//! shadow instead. On disk ([`Rows::write`], [`Rows::read`]) they are one
//! file, `progress-<id>-rows.bin`, replaced whole and checked whole: a
//! header (magic `FFEEDROW`, version, data id, users, words of the bits,
//! XXH3-64 of everything after the header), then the three arrays
//! little-endian. A file whose index does not match the table's feed
//! lengths is refused.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use crate::files::replace_atomically;
use crate::table::FeedTable;

/// Users a block of the index: one `u32` of "has a row" bits.
const BLOCK: usize = 32;

const MAGIC: [u8; 8] = *b"FFEEDROW";
const VERSION: u32 = 1;
/// Magic, version, 4 zero bytes, data id, users, bits' words, checksum.
const HEADER: usize = 48;

/// See the module doc.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rows {
    /// Bit `j` of word `w`: the user at position `32 w + j` has a row.
    has: Box<[u32]>,
    /// For each block of 32 users: the bit where the rows of its users
    /// start (the positions of all rows of the users before it).
    starts: Box<[u64]>,
    /// The rows, one bit a feed position, back to back.
    bits: Box<[u64]>,
}

impl Rows {
    /// Where the row of the user at `position` of `table` starts in the
    /// bits, if the user has one.
    #[inline]
    pub(crate) fn row(&self, position: u32, table: &FeedTable) -> Option<u64> {
        let block = position as usize / BLOCK;
        let has = *self.has.get(block)?;
        let bit = 1u32 << (position as usize % BLOCK);
        if has & bit == 0 {
            return None;
        }
        let mut start = self.starts[block];
        let mut before = has & (bit - 1);
        if let Some(feed_len) = table.fixed_len() {
            return Some(start + u64::from(before.count_ones()) * feed_len as u64);
        }
        while before != 0 {
            let user = block * BLOCK + before.trailing_zeros() as usize;
            start += table.feed_len(user) as u64;
            before &= before - 1;
        }
        Some(start)
    }

    /// Whether bit `at` of the rows is set (false beyond them).
    #[inline]
    pub(crate) fn is_set(&self, at: u64) -> bool {
        self.bits
            .get((at / 64) as usize)
            .is_some_and(|word| word & (1 << (at % 64)) != 0)
    }

    /// ORs the `len` bits from `start` into `out` (one bit a position,
    /// from bit 0).
    pub(crate) fn or_into(&self, start: u64, len: usize, out: &mut [u64]) {
        let shift = (start % 64) as u32;
        let first = (start / 64) as usize;
        for (i, word) in out.iter_mut().enumerate().take(len.div_ceil(64)) {
            let low = self.bits.get(first + i).copied().unwrap_or(0) >> shift;
            let high = if shift == 0 {
                0
            } else {
                self.bits.get(first + i + 1).copied().unwrap_or(0) << (64 - shift)
            };
            let mut bits = low | high;
            if (i + 1) * 64 > len {
                bits &= (1 << (len % 64)) - 1;
            }
            *word |= bits;
        }
    }

    /// Bytes held: the index and the bits.
    pub(crate) fn bytes(&self) -> usize {
        size_of_val(&*self.has) + size_of_val(&*self.starts) + size_of_val(&*self.bits)
    }

    /// The file name of the rows of data `id`.
    pub(crate) fn file_name(id: u64) -> String {
        format!("progress-{id:016x}-rows.bin")
    }

    /// Writes the rows of data `id` to `path`, replacing it whole.
    ///
    /// # Errors
    /// The system's error.
    pub(crate) fn write(&self, path: &Path, id: u64) -> io::Result<()> {
        let temporary = temporary(path);
        replace_atomically(path, &temporary, 0o600, |file| {
            // Held until it is renamed: the folder's cleaning never removes
            // a temporary file another process holds.
            file.try_lock()
                .map_err(|e| io::Error::other(e.to_string()))?;
            let mut out = io::BufWriter::with_capacity(1 << 20, file);
            let mut hash = Xxh3::new();
            let body = |out: &mut io::BufWriter<&File>, hash: &mut Xxh3, bytes: &[u8]| {
                hash.update(bytes);
                out.write_all(bytes)
            };
            // The header's checksum covers the body: written after it.
            out.write_all(&[0u8; HEADER])?;
            for word in &self.has {
                body(&mut out, &mut hash, &word.to_le_bytes())?;
            }
            for word in &self.starts {
                body(&mut out, &mut hash, &word.to_le_bytes())?;
            }
            for word in &self.bits {
                body(&mut out, &mut hash, &word.to_le_bytes())?;
            }
            let mut header = [0u8; HEADER];
            header[..8].copy_from_slice(&MAGIC);
            header[8..12].copy_from_slice(&VERSION.to_le_bytes());
            header[16..24].copy_from_slice(&id.to_le_bytes());
            header[24..32].copy_from_slice(&(self.has.len() as u64 * BLOCK as u64).to_le_bytes());
            header[32..40].copy_from_slice(&(self.bits.len() as u64).to_le_bytes());
            header[40..48].copy_from_slice(&hash.digest().to_le_bytes());
            let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            std::os::unix::fs::FileExt::write_all_at(file, &header, 0)
        })
    }

    /// The rows of data `id` over `table` kept at `path`; `Ok(None)` when
    /// there is no such file.
    ///
    /// # Errors
    /// A message naming what is wrong: unreadable, not rows of this data,
    /// damaged (the checksum), or an index that does not match the table.
    pub(crate) fn read(path: &Path, id: u64, table: &FeedTable) -> Result<Option<Self>, String> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("unreadable: {e}")),
        };
        let mut header = [0u8; HEADER];
        file.read_exact(&mut header)
            .map_err(|e| format!("no header: {e}"))?;
        let word =
            |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
        if header[..8] != MAGIC
            || header[8..12] != VERSION.to_le_bytes()
            || header[12..16] != [0; 4]
        {
            return Err("not a rows file of this version".into());
        }
        if word(16) != id {
            return Err(format!("rows of data {:016x}, not of this data", word(16)));
        }
        let blocks = (table.users() as usize).div_ceil(BLOCK);
        if word(24) != (blocks * BLOCK) as u64 {
            return Err("rows for another number of users".into());
        }
        let len = file
            .metadata()
            .map_err(|e| format!("unreadable: {e}"))?
            .len();
        // At most one bit a position of the table: checked before any
        // arithmetic with it, so no header can make it overflow.
        let bits = word(32);
        if bits > (table.total_items() as u64).div_ceil(64) {
            return Err("more bits than the table has positions".into());
        }
        let bits = bits as usize;
        let expected = (HEADER + blocks * 12) as u64 + bits as u64 * 8;
        if len != expected {
            return Err(format!("{len} bytes, the header says {expected}"));
        }
        let mut body = Vec::new();
        file.read_to_end(&mut body)
            .map_err(|e| format!("unreadable: {e}"))?;
        if xxhash_rust::xxh3::xxh3_64(&body) != word(40) {
            return Err("damaged: its checksum does not match".into());
        }
        let (has, rest) = body.split_at(blocks * 4);
        let (starts, bits_bytes) = rest.split_at(blocks * 8);
        let rows = Self {
            has: has
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
            starts: starts
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
            bits: bits_bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        };
        rows.check(table)?;
        Ok(Some(rows))
    }

    /// Whether the index is the one the table's feed lengths give, and the
    /// bits hold every row: what makes [`Self::row`] safe to trust.
    fn check(&self, table: &FeedTable) -> Result<(), String> {
        let users = table.users() as usize;
        let mut start = 0u64;
        for (block, (&has, &at)) in self.has.iter().zip(&self.starts).enumerate() {
            if at != start {
                return Err(format!(
                    "the index of block {block} does not match the feeds"
                ));
            }
            let mut rest = has;
            while rest != 0 {
                let user = block * BLOCK + rest.trailing_zeros() as usize;
                if user >= users {
                    return Err(format!("a row for user position {user}, beyond the table"));
                }
                start += table.feed_len(user) as u64;
                rest &= rest - 1;
            }
        }
        if start.div_ceil(64) != self.bits.len() as u64 {
            return Err("the rows' bits do not match the index".into());
        }
        Ok(())
    }
}

/// The temporary file beside `path` that replaces it.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Builds [`Rows`] user by user, in position order.
#[derive(Debug)]
pub(crate) struct RowsBuilder {
    users: usize,
    has: Vec<u32>,
    starts: Vec<u64>,
    bits: Vec<u64>,
    /// Bits used so far.
    len: u64,
    /// The position of the last row added.
    last: Option<usize>,
}

impl RowsBuilder {
    /// No rows yet, for a table of `users` users.
    pub(crate) fn new(users: u32) -> Self {
        let blocks = (users as usize).div_ceil(BLOCK);
        Self {
            users: users as usize,
            has: vec![0; blocks],
            starts: Vec::with_capacity(blocks),
            bits: Vec::new(),
            len: 0,
            last: None,
        }
    }

    /// Adds the row of the user at `position` (after every position added
    /// before, below the table's users): `marks`, one bit a position of
    /// their feed, `feed_len` bits, the rest of the last word clear.
    ///
    /// # Panics
    /// When `position` is not after the last one added, or beyond the
    /// table: a bug of the caller.
    pub(crate) fn push(&mut self, position: u32, marks: &[u64], feed_len: usize) {
        let position = position as usize;
        assert!(position < self.users, "a row beyond the table");
        assert!(
            self.last.is_none_or(|last| last < position),
            "rows out of order"
        );
        self.last = Some(position);
        let block = position / BLOCK;
        while self.starts.len() <= block {
            self.starts.push(self.len);
        }
        self.has[block] |= 1 << (position % BLOCK);
        let shift = (self.len % 64) as u32;
        let words = feed_len.div_ceil(64);
        self.bits
            .resize((self.len + feed_len as u64).div_ceil(64) as usize, 0);
        let first = (self.len / 64) as usize;
        for (i, &word) in marks[..words].iter().enumerate() {
            // Bits beyond the feed would land in the next row.
            let word = if i + 1 == words && !feed_len.is_multiple_of(64) {
                word & ((1 << (feed_len % 64)) - 1)
            } else {
                word
            };
            let at = first + i;
            self.bits[at] |= word << shift;
            if shift != 0 && at + 1 < self.bits.len() {
                self.bits[at + 1] |= word >> (64 - shift);
            }
        }
        self.len += feed_len as u64;
    }

    /// The rows.
    pub(crate) fn finish(mut self) -> Rows {
        while self.starts.len() < self.has.len() {
            self.starts.push(self.len);
        }
        Rows {
            has: self.has.into_boxed_slice(),
            starts: self.starts.into_boxed_slice(),
            bits: self.bits.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::files::scratch_dir;

    /// A table of feeds of the lengths `lens`.
    fn table(lens: &[usize]) -> FeedTable {
        let mut offsets = vec![0u64];
        let mut items = Vec::new();
        for (user, &len) in lens.iter().enumerate() {
            items.extend((1..=len as u32).map(|i| i + user as u32 * 1000));
            offsets.push(items.len() as u64);
        }
        FeedTable::from_csr((0..lens.len() as u64).collect(), offsets, items).unwrap()
    }

    /// Rows for `marks` (per user: `None`, or their marked positions) over
    /// feeds of `lens`.
    fn build(lens: &[usize], marks: &[Option<Vec<usize>>]) -> Rows {
        let mut builder = RowsBuilder::new(lens.len() as u32);
        for (user, row) in marks.iter().enumerate() {
            if let Some(row) = row {
                let mut words = vec![0u64; lens[user].div_ceil(64)];
                for &at in row.iter().filter(|&&at| at < lens[user]) {
                    words[at / 64] |= 1 << (at % 64);
                }
                builder.push(user as u32, &words, lens[user]);
            }
        }
        builder.finish()
    }

    fn case() -> impl Strategy<Value = (Vec<usize>, Vec<Option<Vec<usize>>>)> {
        prop::collection::vec(0usize..150, 1..200).prop_flat_map(|lens| {
            let marks: Vec<_> = lens
                .iter()
                .map(|&len| prop::option::of(prop::collection::vec(0..len.max(1), 0..20)))
                .collect();
            (Just(lens), marks)
        })
    }

    proptest! {
        /// Every user's row gives back exactly their marks, and the bits
        /// are one a position of the users with a row.
        #[test]
        fn a_row_holds_exactly_its_marks((lens, marks) in case()) {
            let table = table(&lens);
            let rows = build(&lens, &marks);
            let mut total = 0;
            for (user, row) in marks.iter().enumerate() {
                let start = rows.row(user as u32, &table);
                prop_assert_eq!(start.is_some(), row.is_some());
                let (Some(start), Some(row)) = (start, row) else { continue };
                total += lens[user];
                let mut words = vec![0u64; lens[user].div_ceil(64)];
                rows.or_into(start, lens[user], &mut words);
                for at in 0..lens[user] {
                    prop_assert_eq!(words[at / 64] & (1 << (at % 64)) != 0, row.contains(&at));
                }
                for at in 0..lens[user] {
                    let want = row.contains(&at);
                    prop_assert_eq!(rows.is_set(start + at as u64), want, "user {} at {}", user, at);
                }
            }
            prop_assert_eq!(rows.bits.len(), total.div_ceil(64));
            prop_assert!(rows.row(lens.len() as u32 + 40, &table).is_none());
        }

        /// What is written is read back the same; another table's or a
        /// damaged file is refused.
        #[test]
        fn rows_read_back_and_refuse_damage((lens, marks) in case(), flip in any::<prop::sample::Index>()) {
            let dir = scratch_dir("rows");
            let path = dir.join(Rows::file_name(7));
            let table = table(&lens);
            let rows = build(&lens, &marks);
            rows.write(&path, 7).unwrap();
            let back = Rows::read(&path, 7, &table).unwrap();
            prop_assert_eq!(back.as_ref(), Some(&rows));
            prop_assert!(Rows::read(&path, 8, &table).is_err());
            let mut bytes = std::fs::read(&path).unwrap();
            let at = flip.index(bytes.len());
            bytes[at] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            prop_assert!(Rows::read(&path, 7, &table).is_err());
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// Feeds of one length find their rows by a count of the block's
    /// bits, the same rows as a walk of the feeds' lengths finds.
    #[test]
    fn fixed_length_feeds_find_the_same_rows() {
        let lens = [7usize; 100];
        let marks: Vec<Option<Vec<usize>>> = (0..100)
            .map(|u| (u % 3 != 1).then(|| vec![u % 7]))
            .collect();
        let rows = build(&lens, &marks);
        let fixed = FeedTable::from_items((1..=700).collect(), 7).unwrap();
        let csr = table(&lens);
        assert!(fixed.fixed_len().is_some() && csr.fixed_len().is_none());
        for user in 0..100 {
            assert_eq!(rows.row(user, &fixed), rows.row(user, &csr), "user {user}");
        }
    }

    #[test]
    fn no_file_is_no_rows() {
        let dir = scratch_dir("rows-none");
        assert_eq!(Rows::read(&dir.join("x"), 1, &table(&[3])), Ok(None));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
