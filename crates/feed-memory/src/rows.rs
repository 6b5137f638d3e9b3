//! [`Rows`]: the marks a carry (`crate::carry`) made, kept only for the
//! users who have any, each row in the smaller of two forms, plus an index
//! of four bits a user.
//!
//! A row is either a bitmap, one bit a position of the user's feed
//! (`ceil(len / 8)` bytes), or a list of the positions marked: a count
//! byte, then each position in one byte (feeds of up to 256), two (up to
//! 65,536) or four, ascending. The list is taken when it is smaller, which
//! it is whenever under one position in eight is marked: a user who was
//! given two pages of a day's ranking has a few marks in the next day's
//! 200 positions, and their row is a handful of bytes.
//!
//! Architecture Invariant: the memory is at most one bit a feed position
//! of the users with a mark (the bitmap bounds every row), plus 4 bits a
//! user of the version (whether the user has a row, whether it is a list,
//! and every 32 users the byte where their rows start), whatever share of
//! users has progress. Finding a user's row is one bit test for a user
//! without one; for a user with one, a load of the block's start plus the
//! sizes of the rows before it in its block of 32 (at most 31: a bitmap's
//! from its feed's length, a list's from its count byte). A dense bitmap
//! over every position of the table, as before this type, cost one bit a
//! position of every user: twice the budget when half the users have
//! progress.
//!
//! Rows are built once, in position order ([`RowsBuilder`]), and never
//! change: marks made after the build go to [`crate::Given`]'s dense
//! shadow instead. On disk ([`Rows::write`], [`Rows::read`]) they are one
//! file, `progress-<id>-rows.bin`, replaced whole and checked whole: a
//! header (magic `FFEEDROW`, version, data id, users, bytes of the rows,
//! XXH3-64 of everything after the header), then the index's three arrays
//! and the rows, little-endian. A file whose rows do not fit the table's
//! feed lengths (sizes, starts, list positions in order and in the feed)
//! is refused.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use crate::files::replace_atomically;
use crate::table::FeedTable;

/// Users a block of the index: one `u32` of "has a row" bits.
const BLOCK: usize = 32;

const MAGIC: [u8; 8] = *b"FFEEDROW";
const VERSION: u32 = 2;
/// Magic, version, 4 zero bytes, data id, users, bytes of the rows,
/// checksum.
const HEADER: usize = 48;

/// See the module doc.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rows {
    /// Bit `j` of word `w`: the user at position `32 w + j` has a row.
    has: Box<[u32]>,
    /// The same bit: that row is a list.
    list: Box<[u32]>,
    /// For each block of 32 users: the byte where the rows of its users
    /// start (the sizes of all rows of the users before it).
    starts: Box<[u64]>,
    /// The rows, back to back.
    bytes: Box<[u8]>,
}

/// One user's row, as [`Rows::row`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    /// Where it starts in the rows' bytes.
    start: usize,
    /// A list's entry width in bytes; 0 for a bitmap.
    width: u8,
}

/// Bytes a position of a list of a feed of `len`.
const fn width(len: usize) -> usize {
    if len <= 1 << 8 {
        1
    } else if len <= 1 << 16 {
        2
    } else {
        4
    }
}

/// Bytes of a bitmap row of a feed of `len`.
const fn bitmap_bytes(len: usize) -> usize {
    len.div_ceil(8)
}

impl Rows {
    /// The row of the user at `position` of `table`, if they have one.
    #[inline]
    pub(crate) fn row(&self, position: u32, table: &FeedTable) -> Option<Row> {
        let block = position as usize / BLOCK;
        let has = *self.has.get(block)?;
        let bit = 1u32 << (position as usize % BLOCK);
        if has & bit == 0 {
            return None;
        }
        let list = self.list[block];
        let mut start = self.starts[block] as usize;
        let mut before = has & (bit - 1);
        while before != 0 {
            let j = before.trailing_zeros();
            let len = table.feed_len(block * BLOCK + j as usize);
            start += self.size(start, len, list & (1 << j) != 0)?;
            before &= before - 1;
        }
        let len = table.feed_len(position as usize);
        let width = if list & bit == 0 { 0 } else { width(len) as u8 };
        Some(Row { start, width })
    }

    /// Bytes of the row at `start` of a feed of `len`, a list or a bitmap;
    /// `None` when a list's count lies beyond the rows. The one measure
    /// both [`Self::row`] and [`Self::check`] walk by.
    #[inline]
    fn size(&self, start: usize, len: usize, is_list: bool) -> Option<usize> {
        if is_list {
            Some(1 + usize::from(*self.bytes.get(start)?) * width(len))
        } else {
            Some(bitmap_bytes(len))
        }
    }

    /// Whether position `at` of the user's feed is marked in `row`.
    #[inline]
    pub(crate) fn is_set(&self, row: Row, at: usize) -> bool {
        if row.width == 0 {
            return self
                .bytes
                .get(row.start + at / 8)
                .is_some_and(|byte| byte & (1 << (at % 8)) != 0);
        }
        let count = self.bytes.get(row.start).map_or(0, |&c| usize::from(c));
        let width = usize::from(row.width);
        let Some(entries) = self.bytes.get(row.start + 1..row.start + 1 + count * width) else {
            return false;
        };
        // Ascending: a binary search of at most 255 entries.
        let (mut low, mut high) = (0, count);
        while low < high {
            let middle = (low + high) / 2;
            match entry(entries, width, middle).cmp(&at) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// ORs the marks of `row` (a feed of `len`) into `out`, one bit a
    /// position from bit 0.
    pub(crate) fn or_into(&self, row: Row, len: usize, out: &mut [u64]) {
        if row.width == 0 {
            let bytes = self.bytes.get(row.start..).unwrap_or_default();
            for (at, &byte) in bytes.iter().take(bitmap_bytes(len)).enumerate() {
                if let Some(word) = out.get_mut(at / 8) {
                    *word |= u64::from(byte) << (8 * (at % 8));
                }
            }
            return;
        }
        let count = self.bytes.get(row.start).map_or(0, |&c| usize::from(c));
        let width = usize::from(row.width);
        let entries = self
            .bytes
            .get(row.start + 1..row.start + 1 + count * width)
            .unwrap_or_default();
        for i in 0..entries.len() / width {
            let at = entry(entries, width, i);
            if at < len
                && let Some(word) = out.get_mut(at / 64)
            {
                *word |= 1 << (at % 64);
            }
        }
    }

    /// Bytes held: the index and the rows.
    pub(crate) fn bytes(&self) -> usize {
        size_of_val(&*self.has)
            + size_of_val(&*self.list)
            + size_of_val(&*self.starts)
            + self.bytes.len()
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
            for word in self.has.iter().chain(&self.list) {
                body(&mut out, &mut hash, &word.to_le_bytes())?;
            }
            for word in &self.starts {
                body(&mut out, &mut hash, &word.to_le_bytes())?;
            }
            body(&mut out, &mut hash, &self.bytes)?;
            let mut header = [0u8; HEADER];
            header[..8].copy_from_slice(&MAGIC);
            header[8..12].copy_from_slice(&VERSION.to_le_bytes());
            header[16..24].copy_from_slice(&id.to_le_bytes());
            header[24..32].copy_from_slice(&(self.has.len() as u64 * BLOCK as u64).to_le_bytes());
            header[32..40].copy_from_slice(&(self.bytes.len() as u64).to_le_bytes());
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
    /// damaged (the checksum), or rows that do not fit the table.
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
        // At most a bitmap a user: checked before any arithmetic with it,
        // so no header can make it overflow.
        let rows = word(32);
        let most = (table.total_items() as u64).div_ceil(8) + u64::from(table.users());
        if rows > most {
            return Err("more bytes of rows than the table has positions".into());
        }
        let expected = (HEADER + blocks * 16) as u64 + rows;
        if len != expected {
            return Err(format!("{len} bytes, the header says {expected}"));
        }
        let mut body = Vec::new();
        file.read_to_end(&mut body)
            .map_err(|e| format!("unreadable: {e}"))?;
        // The file may have changed since its length was read.
        if body.len() as u64 != expected - HEADER as u64 {
            return Err("changed while it was read".into());
        }
        if xxhash_rust::xxh3::xxh3_64(&body) != word(40) {
            return Err("damaged: its checksum does not match".into());
        }
        let (has, rest) = body.split_at(blocks * 4);
        let (list, rest) = rest.split_at(blocks * 4);
        let (starts, bytes) = rest.split_at(blocks * 8);
        let words = |bytes: &[u8]| -> Box<[u32]> {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect()
        };
        let rows = Self {
            has: words(has),
            list: words(list),
            starts: starts
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
            bytes: bytes.into(),
        };
        rows.check(table)?;
        Ok(Some(rows))
    }

    /// Whether every row fits the table: starts that are the sizes of the
    /// rows before, lists with positions ascending and in the feed, and no
    /// byte left over. What makes [`Self::row`] trustworthy.
    fn check(&self, table: &FeedTable) -> Result<(), String> {
        let users = table.users() as usize;
        let mut start = 0usize;
        for (block, (&has, (&list, &at))) in self
            .has
            .iter()
            .zip(self.list.iter().zip(&self.starts))
            .enumerate()
        {
            if at != start as u64 {
                return Err(format!(
                    "the index of block {block} does not match the rows"
                ));
            }
            if list & !has != 0 {
                return Err(format!("a list without a row in block {block}"));
            }
            let mut rest = has;
            while rest != 0 {
                let j = rest.trailing_zeros();
                let user = block * BLOCK + j as usize;
                if user >= users {
                    return Err(format!("a row for user position {user}, beyond the table"));
                }
                let len = table.feed_len(user);
                let is_list = list & (1 << j) != 0;
                let size = self.size(start, len, is_list).ok_or("rows cut short")?;
                if is_list {
                    let width = width(len);
                    let entries = self
                        .bytes
                        .get(start + 1..start + size)
                        .ok_or("rows cut short")?;
                    let ascending = (0..entries.len() / width).all(|i| {
                        entry(entries, width, i) < len
                            && (i == 0 || entry(entries, width, i - 1) < entry(entries, width, i))
                    });
                    if !ascending {
                        return Err(format!("the list of user position {user} is not in order"));
                    }
                }
                start += size;
                rest &= rest - 1;
            }
        }
        if start != self.bytes.len() {
            return Err("the rows' bytes do not match the index".into());
        }
        Ok(())
    }
}

/// Entry `i` of a list's entries of `width` bytes.
#[inline]
fn entry(entries: &[u8], width: usize, i: usize) -> usize {
    let bytes = &entries[i * width..(i + 1) * width];
    let mut value = 0usize;
    for (k, &byte) in bytes.iter().enumerate() {
        value |= usize::from(byte) << (8 * k);
    }
    value
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
    list: Vec<u32>,
    starts: Vec<u64>,
    bytes: Vec<u8>,
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
            list: vec![0; blocks],
            starts: Vec::with_capacity(blocks),
            bytes: Vec::new(),
            last: None,
        }
    }

    /// Adds the row of the user at `position` (after every position added
    /// before, below the table's users): `marks`, one bit a position of
    /// their feed, `feed_len` bits (bits beyond are ignored).
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
            self.starts.push(self.bytes.len() as u64);
        }
        let bit = 1 << (position % BLOCK);
        self.has[block] |= bit;
        let marked = (0..feed_len).filter(|&at| marks[at / 64] & (1 << (at % 64)) != 0);
        let count = marked.clone().count();
        let width = width(feed_len);
        if count <= usize::from(u8::MAX) && 1 + count * width < bitmap_bytes(feed_len) {
            self.list[block] |= bit;
            self.bytes.push(count as u8);
            for at in marked {
                self.bytes.extend_from_slice(&at.to_le_bytes()[..width]);
            }
        } else {
            let start = self.bytes.len();
            self.bytes.resize(start + bitmap_bytes(feed_len), 0);
            for at in marked {
                self.bytes[start + at / 8] |= 1 << (at % 8);
            }
        }
    }

    /// The rows.
    pub(crate) fn finish(mut self) -> Rows {
        while self.starts.len() < self.has.len() {
            self.starts.push(self.bytes.len() as u64);
        }
        Rows {
            has: self.has.into_boxed_slice(),
            list: self.list.into_boxed_slice(),
            starts: self.starts.into_boxed_slice(),
            bytes: self.bytes.into_boxed_slice(),
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

    /// Feeds of up to 600 (lists of one and two bytes a position), some
    /// users with a few marks (lists), some with many (bitmaps).
    fn case() -> impl Strategy<Value = (Vec<usize>, Vec<Option<Vec<usize>>>)> {
        prop::collection::vec(prop_oneof![0usize..150, 250usize..600], 1..120).prop_flat_map(
            |lens| {
                let marks: Vec<_> = lens
                    .iter()
                    .map(|&len| {
                        let many = len.min(300);
                        prop::option::of(prop_oneof![
                            prop::collection::vec(0..len.max(1), 0..20),
                            prop::collection::vec(0..len.max(1), 0..=many),
                        ])
                    })
                    .collect();
                (Just(lens), marks)
            },
        )
    }

    proptest! {
        /// Every user's row gives back exactly their marks, and the bits
        /// are one a position of the users with a row.
        #[test]
        fn a_row_holds_exactly_its_marks((lens, marks) in case()) {
            let table = table(&lens);
            let rows = build(&lens, &marks);
            let mut bound = 0;
            for (user, row) in marks.iter().enumerate() {
                let found = rows.row(user as u32, &table);
                prop_assert_eq!(found.is_some(), row.is_some());
                let (Some(found), Some(row)) = (found, row) else { continue };
                bound += lens[user].div_ceil(8);
                let mut words = vec![0u64; lens[user].div_ceil(64)];
                rows.or_into(found, lens[user], &mut words);
                for at in 0..lens[user] {
                    prop_assert_eq!(words[at / 64] & (1 << (at % 64)) != 0, row.contains(&at));
                }
                for at in 0..lens[user] {
                    let want = row.contains(&at);
                    prop_assert_eq!(rows.is_set(found, at), want, "user {} at {}", user, at);
                }
            }
            // Never more than one bit a position of the users with a row.
            prop_assert!(rows.bytes.len() <= bound, "{} > {}", rows.bytes.len(), bound);
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

    /// Fixed-length and listed feeds of the same lengths find the same
    /// rows.
    #[test]
    fn fixed_length_feeds_find_the_same_rows() {
        let lens = [7usize; 100];
        let marks: Vec<Option<Vec<usize>>> = (0..100)
            .map(|u| (u % 3 != 1).then(|| vec![u % 7]))
            .collect();
        let rows = build(&lens, &marks);
        let fixed = FeedTable::from_items((1..=700).collect(), 7).unwrap();
        let csr = table(&lens);
        for user in 0..100 {
            assert_eq!(rows.row(user, &fixed), rows.row(user, &csr), "user {user}");
        }
    }

    /// A few marks make a list of a few bytes; many, a bitmap.
    #[test]
    fn the_smaller_form_is_kept() {
        let lens = [200usize, 200, 1000];
        let marks = [
            Some(vec![3, 150, 7]),
            Some((0..100).collect()),
            Some(vec![999]),
        ];
        let rows = build(&lens, &marks);
        let table = table(&lens);
        let forms: Vec<u8> = (0..3).map(|u| rows.row(u, &table).unwrap().width).collect();
        assert_eq!(forms, [1, 0, 2]);
        // 1 + 3, then 25, then 1 + 2.
        assert_eq!(rows.bytes.len(), 4 + 25 + 3);
    }

    #[test]
    fn no_file_is_no_rows() {
        let dir = scratch_dir("rows-none");
        assert_eq!(Rows::read(&dir.join("x"), 1, &table(&[3])), Ok(None));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
