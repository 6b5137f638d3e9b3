//! [`OffsetMap`]: each user's progress through their feed.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

/// Each user's offset into their feed: a lock-free `papaya` map from the
/// user's position in the feed table (not the 64-bit id: a position fits in
/// a `u32` and belongs to one table, as progress belongs to one data set) to
/// an `AtomicU32`.
///
/// A user's entry is created on their first request (the only allocation)
/// and from then on updated in place by [`OffsetMap::advance`], one atomic
/// read-modify-write: no lock, no allocation, and no window in which two
/// requests can read the same offset.
#[derive(Debug, Default)]
pub struct OffsetMap {
    map: papaya::HashMap<u32, AtomicU32, foldhash::fast::RandomState>,
}

impl OffsetMap {
    /// An empty map with room for `users` entries before it must grow.
    pub fn with_capacity(users: usize) -> Self {
        Self {
            map: papaya::HashMap::with_capacity_and_hasher(users, Default::default()),
        }
    }

    /// Moves `user`'s offset forward by up to `want`, never past `len`, and
    /// returns the range of feed positions this call now owns. The range is
    /// empty once the feed is exhausted. Concurrent calls get disjoint ranges.
    #[inline]
    pub fn advance(&self, position: u32, want: u32, len: u32) -> Range<u32> {
        let map = self.map.pin();
        let key = position;
        let cell = match map.get(&key) {
            Some(cell) => cell,
            None => map.get_or_insert_with(key, || AtomicU32::new(0)),
        };
        // Relaxed is enough: the offset publishes no other memory, and the
        // read-modify-write itself is atomic, so every call sees a distinct
        // previous value.
        let step = |offset: u32| (offset < len).then(|| offset.saturating_add(want).min(len));
        match cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, step) {
            Ok(previous) => previous..step(previous).unwrap_or(previous),
            Err(current) => current..current,
        }
    }

    /// The current offset of the user at `position` (0 for one not seen yet).
    pub fn offset(&self, position: u32) -> u32 {
        self.map
            .pin()
            .get(&position)
            .map_or(0, |cell| cell.load(Ordering::Relaxed))
    }

    /// The number of users with an entry.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No user has an entry yet.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
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
        let map = OffsetMap::default();
        let u = 4;
        assert_eq!(map.advance(u, 3, 7), 0..3);
        assert_eq!(map.advance(u, 3, 7), 3..6);
        assert_eq!(map.advance(u, 3, 7), 6..7);
        assert_eq!(map.advance(u, 3, 7), 7..7);
        assert_eq!(map.offset(u), 7);
        assert_eq!(map.offset(5), 0);
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn concurrent_advances_get_disjoint_ranges() {
        const LEN: u32 = 5_000;
        let map = Arc::new(OffsetMap::default());
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
            let map = OffsetMap::default();
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
