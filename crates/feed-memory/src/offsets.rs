//! [`OffsetMap`]: each user's progress through their feed, in memory or in
//! a progress file that survives a crash ([`ProgressFile`]).
//!
//! Architecture Invariant: progress is indexed by the user's position in the
//! feed table, which is dense (`0..users`), so it is a flat array of
//! `AtomicU32`, 4 bytes a user, advanced in place by one compare-and-swap:
//! no lock, no allocation, no hashing. A concurrent hash map (papaya, used
//! by the rate limiter for sparse client addresses) would cost about ten
//! times the memory here for nothing. The same array maps straight onto a
//! file, which is how progress is made durable.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::progress::ProgressFile;

/// Each user's offset into their feed, by position in the feed table.
///
/// [`OffsetMap::advance`] is one atomic read-modify-write of the user's
/// cell: no window in which two requests can read the same offset.
#[derive(Debug)]
pub struct OffsetMap {
    cells: Cells,
    /// Each user's latest retry key: four words a user, see [`KeyedRange`].
    keys: Cells,
    /// Keyed requests of one user take one of these in turn (users share
    /// them by position), so that checking the key, advancing and writing
    /// the key is one step; requests without a key never take one.
    stripes: Box<[Stripe]>,
    /// Offsets found beyond their feed's end and clamped to it.
    clamped: AtomicU64,
    /// Of those, how many were already reported ([`Self::clamped_reported`]).
    reported: AtomicU64,
}

/// `len` zeroed cells, allocated zeroed: pages no user touches cost no
/// memory.
#[allow(unsafe_code, reason = "a zeroed allocation seen as atomics")]
pub(crate) fn zeroed(len: usize) -> Box<[AtomicU32]> {
    let zeros: Box<[u32]> = vec![0u32; len].into_boxed_slice();
    // SAFETY: `AtomicU32` has the size, alignment and bit validity of
    // `u32`, and the box is given up whole: the same allocation, the same
    // layout.
    unsafe { Box::from_raw(Box::into_raw(zeros) as *mut [AtomicU32]) }
}

impl Cells {
    #[inline]
    pub(crate) fn words(&self) -> &[AtomicU32] {
        match self {
            Self::Memory(cells) => cells,
            Self::File(file) => file.cells(),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Cells {
    /// Progress that lives as long as the process.
    Memory(Box<[AtomicU32]>),
    /// Progress in a shared file mapping: every advance is in the page
    /// cache at once (it survives the process), and on disk after the next
    /// sync.
    File(ProgressFile),
}

/// The bits of a cell that hold the offset: feeds are served up to
/// `2^30 - 1` items (a longer feed's tail is never reached).
pub(crate) const OFFSET: u32 = (1 << 30) - 1;
/// Set by every advance, cleared by [`OffsetMap::take_changed`]: whether
/// the user moved since a carry read their offset (see `crate::carry`).
const CHANGED: u32 = 1 << 30;
/// Set by [`OffsetMap::seal`] once a newer version serves this user: no
/// advance moves the cell any more, so what was given under this version
/// is final.
const SEALED: u32 = 1 << 31;

/// One lock of [`OffsetMap::stripes`], alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(Mutex<()>);

/// Locks for keyed requests: a few times more than worker threads, so two
/// keyed requests rarely wait on each other unless they are one user's.
const STRIPES: usize = 256;

/// `u32` words of a user's retry key: key hash, start, size, check.
const KEY_WORDS: usize = 4;

/// What [`OffsetMap::advance_keyed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedRange {
    /// A new page: the range taken, as [`OffsetMap::advance`] takes it.
    Fresh(Range<u32>),
    /// The user's latest key again, with its size: that page's range,
    /// nothing advanced.
    Replayed(Range<u32>),
    /// The user's latest key with another size: nothing advanced.
    OtherSize(u32),
}

/// The check word of a stored key: a torn write (a crash between the
/// words, or a sync reading them mid-write) fails it, and is never taken
/// for a key.
const fn key_check(key: u32, start: u32, size: u32) -> u32 {
    let mixed = (key as u64) << 32 | start as u64;
    let mixed = (mixed ^ size as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed >> 32) as u32) ^ 0x5bd1_e995
}

impl OffsetMap {
    /// Offsets for `users` users in memory, all at 0.
    pub fn in_memory(users: u32) -> Self {
        Self::with_cells(
            Cells::Memory((0..users).map(|_| AtomicU32::new(0)).collect()),
            Cells::Memory(zeroed(users as usize * KEY_WORDS)),
        )
    }

    /// Offsets kept in `file`, retry keys in memory.
    pub fn in_file(file: ProgressFile) -> Self {
        let keys = zeroed(file.cells().len() * KEY_WORDS);
        Self::with_cells(Cells::File(file), Cells::Memory(keys))
    }

    /// Offsets kept in `file`, and retry keys in `keys` (a
    /// [`crate::progress::Kind::Keys`] file for as many users).
    pub fn in_files(file: ProgressFile, keys: ProgressFile) -> Self {
        Self::with_cells(Cells::File(file), Cells::File(keys))
    }

    fn with_cells(cells: Cells, keys: Cells) -> Self {
        Self {
            cells,
            keys,
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            clamped: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    /// The retry keys' file, when they are durable.
    pub fn keys_file(&self) -> Option<&ProgressFile> {
        match &self.keys {
            Cells::Memory(_) => None,
            Cells::File(file) => Some(file),
        }
    }

    /// [`Self::advance`] for a request with a retry key (its hash, never
    /// 0): if `key` is the user's latest with the same `want`, that page's
    /// range again and nothing moves; with another `want`, nothing;
    /// otherwise a new range, and `key`, where it starts and `want` become
    /// the user's latest. One step for the user's keyed requests (they
    /// take the user's stripe lock); requests without a key do not wait.
    /// The key is kept as the offsets are: in memory, or in the keys file,
    /// written before the position is logged for the next sync.
    pub fn advance_keyed(&self, position: u32, want: u32, len: u32, key: u32) -> KeyedRange {
        self.advance_keyed_to(position, want, len, key, |offset| {
            offset.saturating_add(want)
        })
    }

    /// [`Self::advance_keyed`], a page from `offset` ending at
    /// `end(offset)` (as [`Self::advance_to`]); a replay's range is
    /// `start..end(start)` again.
    pub fn advance_keyed_to(
        &self,
        position: u32,
        want: u32,
        len: u32,
        key: u32,
        end: impl Fn(u32) -> u32,
    ) -> KeyedRange {
        let at = position as usize * KEY_WORDS;
        let Some(words) = self.keys.words().get(at..at + KEY_WORDS) else {
            return KeyedRange::Fresh(self.advance_to(position, len, end));
        };
        let len = len.min(OFFSET);
        let _one_at_a_time = self.stripe(position);
        let [stored, start, size, check] = [0, 1, 2, 3].map(|i| words[i].load(Ordering::Relaxed));
        if stored == key && check == key_check(stored, start, size) {
            if size != want {
                return KeyedRange::OtherSize(size);
            }
            let start = start.min(len);
            let range = start..end(start).min(len).max(start);
            // The key may have reached the disk while the offset did not (a
            // power loss between their syncs): the offset is moved past the
            // page, never to give it again.
            if let Some(cell) = self.cells().get(position as usize)
                && cell
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |raw| {
                        (raw & SEALED == 0 && raw & OFFSET < range.end)
                            .then_some((raw & !OFFSET) | range.end | CHANGED)
                    })
                    .is_ok()
                && let Cells::File(file) = &self.cells
            {
                file.moved(position);
            }
            return KeyedRange::Replayed(range);
        }
        let range = self.advance_to(position, len, &end);
        for (word, value) in
            words
                .iter()
                .zip([key, range.start, want, key_check(key, range.start, want)])
        {
            word.store(value, Ordering::Relaxed);
        }
        if let Cells::File(file) = &self.keys {
            file.moved(position);
        }
        KeyedRange::Fresh(range)
    }

    #[inline]
    fn cells(&self) -> &[AtomicU32] {
        self.cells.words()
    }

    /// The progress file, when progress is durable.
    pub fn file(&self) -> Option<&ProgressFile> {
        match &self.cells {
            Cells::Memory(_) => None,
            Cells::File(file) => Some(file),
        }
    }

    /// Moves the offset of the user at `position` forward by up to `want`,
    /// never past `len`, and returns the range of feed positions this call
    /// now owns, always within `0..len`. The range is empty once the feed
    /// is exhausted, and for a position beyond the users. Concurrent calls
    /// get disjoint ranges. An offset found beyond `len` (a damaged
    /// progress file) is clamped to `len` and counted ([`Self::clamped`]).
    #[inline]
    pub fn advance(&self, position: u32, want: u32, len: u32) -> Range<u32> {
        self.advance_to(position, len, |offset| offset.saturating_add(want))
    }

    /// [`Self::advance`] where the new offset, from `offset`, is
    /// `end(offset)` (cut at `len`): a caller that skips positions already
    /// given passes where its `want` items not given end.
    #[inline]
    pub fn advance_to(&self, position: u32, len: u32, end: impl Fn(u32) -> u32) -> Range<u32> {
        let Some(cell) = self.cells().get(position as usize) else {
            return 0..0;
        };
        let len = len.min(OFFSET);
        // The read-modify-write is atomic, so every call sees a distinct
        // previous value; Acquire/Release order it with a carry's seal and
        // the marks that go with it (`crate::carry`). Every advance sets
        // CHANGED in the same write.
        // The new value is kept from the last call of the step (the one
        // that succeeded): `end` may be a walk, done once, not again.
        let mut stepped = 0;
        let step = |raw: u32| {
            let offset = raw & OFFSET;
            let next = (raw & SEALED == 0 && offset < len).then(|| end(offset).min(len) | CHANGED);
            stepped = next.unwrap_or(raw);
            next
        };
        match cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, step) {
            Ok(previous) => {
                if let Cells::File(file) = &self.cells {
                    file.moved(position);
                }
                (previous & OFFSET)..(stepped & OFFSET)
            }
            // A newer version serves this user: nothing more from here.
            Err(current) if current & SEALED != 0 => len..len,
            Err(current) if current & OFFSET <= len => current & OFFSET..current & OFFSET,
            Err(_) => self.clamp(position, cell, len),
        }
    }

    /// Reads the offset of the user at `position` and clears its CHANGED
    /// flag in one step: a later advance sets it again. 0 beyond the users.
    pub(crate) fn take_changed(&self, position: u32) -> u32 {
        self.cells().get(position as usize).map_or(0, |cell| {
            // A user who never moved has nothing to clear: their page of a
            // progress file is not dirtied.
            let raw = cell.load(Ordering::Acquire);
            if raw & CHANGED == 0 {
                return raw & OFFSET;
            }
            cell.fetch_and(!CHANGED, Ordering::AcqRel) & OFFSET
        })
    }

    /// Seals the cell of the user at `position`: from now on no advance
    /// moves it. Returns the final offset, and whether the user moved since
    /// [`Self::take_changed`] (or was sealed before: `None`).
    ///
    /// A seal that found CHANGED leaves it set until [`Self::settle`]:
    /// [`Self::is_settled`] tells a reader whether what the cell gave is
    /// carried already. Flags are never journaled (a restart clears them),
    /// so a seal logs nothing for the next sync.
    pub(crate) fn seal(&self, position: u32) -> Option<(u32, bool)> {
        let cell = self.cells().get(position as usize)?;
        let previous = cell.fetch_or(SEALED, Ordering::AcqRel);
        (previous & SEALED == 0).then_some((previous & OFFSET, previous & CHANGED != 0))
    }

    /// After a seal that found CHANGED: what the cell gave is carried.
    pub(crate) fn settle(&self, position: u32) {
        if let Some(cell) = self.cells().get(position as usize) {
            cell.fetch_and(!CHANGED, Ordering::Release);
        }
    }

    /// Whether the cell at `position` is sealed and what it gave carried
    /// (sealed, CHANGED clear); a reader that sees it needs no lock.
    pub(crate) fn is_settled(&self, position: u32) -> bool {
        self.cells()
            .get(position as usize)
            .is_none_or(|cell| cell.load(Ordering::Acquire) & (SEALED | CHANGED) == SEALED)
    }

    /// Forgets every user's retry key: this version becomes the target of
    /// a carry, which may mark positions inside a page it answered, so no
    /// answer of it can be replayed exactly any more (a retry gets a new
    /// page). Reads every key word; writes only those in use.
    pub(crate) fn forget_keys(&self) {
        for (position, words) in self.keys.words().chunks(KEY_WORDS).enumerate() {
            if words.iter().any(|word| word.load(Ordering::Relaxed) != 0) {
                for word in words {
                    word.store(0, Ordering::Relaxed);
                }
                if let Cells::File(file) = &self.keys {
                    file.moved(position as u32);
                }
            }
        }
    }

    /// Opens every sealed cell again (before this version is served again,
    /// on a rollback).
    pub(crate) fn unseal_all(&self) {
        for cell in self.cells() {
            cell.fetch_and(!SEALED, Ordering::AcqRel);
        }
    }

    /// The stripe lock of the user at `position`: keyed requests and a
    /// carry's catching up of one user take it.
    pub(crate) fn stripe(&self, position: u32) -> std::sync::MutexGuard<'_, ()> {
        self.stripes[position as usize % STRIPES]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts an offset found beyond its feed's end back at the end.
    #[cold]
    fn clamp(&self, position: u32, cell: &AtomicU32, len: u32) -> Range<u32> {
        let beyond = |raw: u32| (raw & OFFSET > len).then_some(len | (raw & !OFFSET));
        if cell
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, beyond)
            .is_ok()
        {
            self.clamped.fetch_add(1, Ordering::Relaxed);
            if let Cells::File(file) = &self.cells {
                file.moved(position);
            }
        }
        len..len
    }

    /// Clamps every offset beyond its feed's end (`len(position)`) to that
    /// end, and returns how many were. Run once at start, before serving:
    /// after it, an offset beyond its feed can only come from the file being
    /// changed under the server, which [`Self::advance`] clamps again.
    ///
    /// It also clears the flags a carry left (`crate::carry`): opened, the
    /// version is the one served.
    pub fn clamp_all(&self, mut len: impl FnMut(u32) -> u32) -> u64 {
        let mut clamped = 0;
        for (position, cell) in self.cells().iter().enumerate() {
            let end = len(position as u32).min(OFFSET);
            let raw = cell.load(Ordering::Relaxed);
            if raw & !OFFSET != 0 {
                cell.fetch_and(OFFSET, Ordering::Relaxed);
            }
            if raw & OFFSET > end {
                self.clamp(position as u32, cell, end);
                clamped += 1;
            }
        }
        clamped
    }

    /// Offsets found beyond their feed's end and clamped, so far.
    pub fn clamped(&self) -> u64 {
        self.clamped.load(Ordering::Relaxed)
    }

    /// Marks `total` clamped offsets as reported and returns how many were
    /// reported before, so that a reporter logs each one once.
    pub fn clamped_reported(&self, total: u64) -> u64 {
        self.reported.fetch_max(total, Ordering::Relaxed)
    }

    /// The current offset of the user at `position` (0 beyond the users).
    pub fn offset(&self, position: u32) -> u32 {
        self.cells()
            .get(position as usize)
            .map_or(0, |cell| cell.load(Ordering::Relaxed) & OFFSET)
    }

    /// Users whose offset has moved from 0.
    pub fn started(&self) -> usize {
        self.cells()
            .iter()
            .filter(|cell| cell.load(Ordering::Relaxed) & OFFSET > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn advances_and_stops_at_the_end() {
        let map = OffsetMap::in_memory(10);
        let u = 4;
        assert_eq!(map.advance(u, 3, 7), 0..3);
        assert_eq!(map.advance(u, 3, 7), 3..6);
        assert_eq!(map.advance(u, 3, 7), 6..7);
        assert_eq!(map.advance(u, 3, 7), 7..7);
        assert_eq!(map.offset(u), 7);
        assert_eq!(map.offset(5), 0);
        assert_eq!(map.started(), 1);
        // Beyond the users: nothing, and no panic.
        assert_eq!(map.advance(10, 3, 7), 0..0);
        assert_eq!(map.offset(u32::MAX), 0);
    }

    #[test]
    fn a_retry_key_replays_its_page_and_moves_nothing() {
        let map = OffsetMap::in_memory(4);
        assert_eq!(map.advance_keyed(2, 3, 7, 11), KeyedRange::Fresh(0..3));
        assert_eq!(map.advance_keyed(2, 3, 7, 11), KeyedRange::Replayed(0..3));
        assert_eq!(map.advance_keyed(2, 4, 7, 11), KeyedRange::OtherSize(3));
        assert_eq!(map.offset(2), 3);
        // Unkeyed requests move on; the key still replays its own page.
        assert_eq!(map.advance(2, 2, 7), 3..5);
        assert_eq!(map.advance_keyed(2, 3, 7, 11), KeyedRange::Replayed(0..3));
        // A new key takes a new page, even one cut at the end.
        assert_eq!(map.advance_keyed(2, 3, 7, 12), KeyedRange::Fresh(5..7));
        assert_eq!(map.advance_keyed(2, 3, 7, 12), KeyedRange::Replayed(5..7));
        assert_eq!(map.advance_keyed(2, 3, 7, 11), KeyedRange::Fresh(7..7));
        assert_eq!(map.advance_keyed(2, 3, 7, 11), KeyedRange::Replayed(7..7));
        // Another user's key is theirs alone; beyond the users, nothing.
        assert_eq!(map.advance_keyed(1, 3, 7, 11), KeyedRange::Fresh(0..3));
        assert_eq!(map.advance_keyed(9, 3, 7, 11), KeyedRange::Fresh(0..0));
    }

    #[test]
    fn a_torn_key_is_never_taken_for_one() {
        let map = OffsetMap::in_memory(2);
        assert_eq!(map.advance_keyed(0, 3, 10, 5), KeyedRange::Fresh(0..3));
        // A crash between the words: the start is new, the check is not.
        map.keys.words()[1].store(3, Ordering::Relaxed);
        assert_eq!(map.advance_keyed(0, 3, 10, 5), KeyedRange::Fresh(3..6));
    }

    #[test]
    fn concurrent_retries_of_one_key_get_one_page() {
        let map = Arc::new(OffsetMap::in_memory(1));
        for key in 1..=20u32 {
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let answers: Vec<KeyedRange> = (0..8)
                .map(|_| {
                    let (map, barrier) = (Arc::clone(&map), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        map.advance_keyed(0, 5, 10_000, key)
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            let page = (key - 1) * 5..key * 5;
            let fresh = answers
                .iter()
                .filter(|a| **a == KeyedRange::Fresh(page.clone()));
            assert_eq!(fresh.count(), 1, "{answers:?}");
            let replayed = answers
                .iter()
                .filter(|a| **a == KeyedRange::Replayed(page.clone()));
            assert_eq!(replayed.count(), 7, "{answers:?}");
            assert_eq!(map.offset(0), key * 5);
        }
    }

    #[test]
    fn an_offset_beyond_the_feed_is_clamped_and_counted() {
        let map = OffsetMap::in_memory(3);
        map.cells()[0].store(OFFSET - 15, Ordering::Relaxed);
        map.cells()[1].store(51, Ordering::Relaxed);
        // Garbage in the flag bits: never a read beyond the feed either.
        map.cells()[2].store(u32::MAX - 15, Ordering::Relaxed);
        assert_eq!(map.advance(2, 10, 50), 50..50);
        assert_eq!(map.advance(0, 10, 50), 50..50);
        assert_eq!(map.offset(0), 50);
        assert_eq!(map.clamped(), 1);
        assert_eq!(map.clamp_all(|_| 50), 2);
        assert_eq!(map.offset(1), 50);
        assert_eq!(map.offset(2), 50);
        assert_eq!(map.clamped(), 3);
        assert_eq!(map.advance(1, 10, 50), 50..50);
        assert_eq!(map.clamped(), 3);
    }

    #[test]
    fn concurrent_advances_get_disjoint_ranges() {
        const LEN: u32 = 5_000;
        let map = Arc::new(OffsetMap::in_memory(4));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let map = Arc::clone(&map);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        let range = map.advance(1, 1 + t % 3, LEN);
                        if range.is_empty() {
                            return got;
                        }
                        got.extend(range);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.join().unwrap());
        }
        assert_eq!(all.len(), LEN as usize);
        assert_eq!(all.into_iter().collect::<HashSet<_>>().len(), LEN as usize);
    }

    proptest! {
        #[test]
        fn offsets_never_go_back_or_past_the_end(len in 0u32..500, wants in prop::collection::vec(0u32..300, 1..50)) {
            let map = OffsetMap::in_memory(1);
            let mut last = 0;
            for want in wants {
                let range = map.advance(0, want, len);
                prop_assert_eq!(range.start, last);
                prop_assert!(range.end >= range.start && range.end <= len);
                prop_assert_eq!(range.len() as u32, want.min(len - last));
                last = range.end;
            }
        }
    }
}
