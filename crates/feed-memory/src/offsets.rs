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

use crate::progress::ProgressFile;

/// Each user's offset into their feed, by position in the feed table.
///
/// [`OffsetMap::advance`] is one atomic read-modify-write of the user's
/// cell: no window in which two requests can read the same offset.
#[derive(Debug)]
pub struct OffsetMap {
    cells: Cells,
    /// Offsets found beyond their feed's end and clamped to it.
    clamped: AtomicU64,
    /// Of those, how many were already reported ([`Self::clamped_reported`]).
    reported: AtomicU64,
}

#[derive(Debug)]
enum Cells {
    /// Progress that lives as long as the process.
    Memory(Box<[AtomicU32]>),
    /// Progress in a shared file mapping: every advance is in the page
    /// cache at once (it survives the process), and on disk after the next
    /// sync.
    File(ProgressFile),
}

impl OffsetMap {
    /// Offsets for `users` users in memory, all at 0.
    pub fn in_memory(users: u32) -> Self {
        Self {
            cells: Cells::Memory((0..users).map(|_| AtomicU32::new(0)).collect()),
            clamped: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    /// Offsets kept in `file`.
    pub fn in_file(file: ProgressFile) -> Self {
        Self {
            cells: Cells::File(file),
            clamped: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    #[inline]
    fn cells(&self) -> &[AtomicU32] {
        match &self.cells {
            Cells::Memory(cells) => cells,
            Cells::File(file) => file.cells(),
        }
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
        let Some(cell) = self.cells().get(position as usize) else {
            return 0..0;
        };
        // Relaxed is enough: the offset publishes no other memory, and the
        // read-modify-write itself is atomic, so every call sees a distinct
        // previous value.
        let step = |offset: u32| (offset < len).then(|| offset.saturating_add(want).min(len));
        match cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, step) {
            Ok(previous) => {
                if let Cells::File(file) = &self.cells {
                    file.moved(position);
                }
                previous..step(previous).unwrap_or(previous)
            }
            Err(current) if current <= len => current..current,
            Err(_) => self.clamp(position, cell, len),
        }
    }

    /// Puts an offset found beyond its feed's end back at the end.
    #[cold]
    fn clamp(&self, position: u32, cell: &AtomicU32, len: u32) -> Range<u32> {
        if cell.fetch_min(len, Ordering::Relaxed) > len {
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
    pub fn clamp_all(&self, mut len: impl FnMut(u32) -> u32) -> u64 {
        let mut clamped = 0;
        for (position, cell) in self.cells().iter().enumerate() {
            let end = len(position as u32);
            if cell.load(Ordering::Relaxed) > end {
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
            .map_or(0, |cell| cell.load(Ordering::Relaxed))
    }

    /// Users whose offset has moved from 0.
    pub fn started(&self) -> usize {
        self.cells()
            .iter()
            .filter(|cell| cell.load(Ordering::Relaxed) > 0)
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
    fn an_offset_beyond_the_feed_is_clamped_and_counted() {
        let map = OffsetMap::in_memory(3);
        map.cells()[0].store(u32::MAX - 15, Ordering::Relaxed);
        map.cells()[1].store(51, Ordering::Relaxed);
        assert_eq!(map.advance(0, 10, 50), 50..50);
        assert_eq!(map.offset(0), 50);
        assert_eq!(map.clamped(), 1);
        assert_eq!(map.clamp_all(|_| 50), 1);
        assert_eq!(map.offset(1), 50);
        assert_eq!(map.clamped(), 2);
        assert_eq!(map.advance(1, 10, 50), 50..50);
        assert_eq!(map.clamped(), 2);
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
