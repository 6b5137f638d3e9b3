//! [`CatalogRandomFeed`]: uniform random items from the catalog.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use feed_domain::{BlockedItems, ItemId, RandomFeed, RandomFillError};

use crate::blocklist::Blocked;
use crate::seen::{SCAN_LIMIT, SeenSet};
use crate::snapshot::FallbackList;

/// Random items drawn uniformly from a catalog, using each thread's own
/// `fastrand` generator (no shared state, no lock). The catalog is either
/// the range `1..=catalog_size` (the synthetic set) or a list of items (a
/// snapshot's fallback list: the items to fill with, e.g. the most popular).
#[derive(Debug, Clone)]
pub struct CatalogRandomFeed {
    catalog: Catalog,
    /// Items never drawn: the blocklist, shared by every version.
    blocked: OnceLock<Arc<Blocked>>,
}

#[derive(Debug, Clone)]
enum Catalog {
    Range(u32),
    List(FallbackList),
}

impl CatalogRandomFeed {
    /// Draws from `1..=catalog_size`; a size of 0 is an empty catalog.
    pub const fn new(catalog_size: u32) -> Self {
        Self {
            catalog: Catalog::Range(catalog_size),
            blocked: OnceLock::new(),
        }
    }

    /// Draws from the items of `list` (which should be distinct: a repeated
    /// item is only ever served once in an answer all the same).
    pub fn from_list(list: FallbackList) -> Self {
        Self {
            catalog: Catalog::List(list),
            blocked: OnceLock::new(),
        }
    }

    /// Never draws an item of `blocked` from now on (set once).
    pub fn block_with(&self, blocked: Arc<Blocked>) {
        let _ = self.blocked.set(blocked);
    }

    /// How many catalog items `blocked` leaves to draw from.
    pub fn unblocked(&self, blocked: impl Fn(u32) -> bool) -> usize {
        match &self.catalog {
            Catalog::Range(size) => (1..=*size).filter(|&item| !blocked(item)).count(),
            Catalog::List(list) => list.items().iter().filter(|&&item| !blocked(item)).count(),
        }
    }

    /// The number of items in the catalog.
    fn catalog_size(&self) -> u32 {
        match &self.catalog {
            Catalog::Range(size) => *size,
            Catalog::List(list) => u32::try_from(list.items().len()).unwrap_or(u32::MAX),
        }
    }

    /// The catalog item at `position` (below [`Self::catalog_size`]).
    #[inline]
    fn at(&self, position: u32) -> ItemId {
        match &self.catalog {
            Catalog::Range(_) => ItemId::new(position + 1),
            Catalog::List(list) => ItemId::new(list.items()[position as usize]),
        }
    }
}

impl RandomFeed for CatalogRandomFeed {
    /// Draws at random, rejecting items already present; after a bounded
    /// number of rejections it walks the catalog from a random start instead,
    /// so it ends even when the catalog is nearly used up.
    ///
    /// Invariant: the work is linear in the answer's size `N` (the items
    /// already there plus `count`), whatever the catalog's size: at most
    /// `4 * count + 32` draws, then a walk of at most `2 * N` catalog items
    /// (each step either adds an item or meets one already in the answer,
    /// each at most once), and every duplicate check costs O(1) (see
    /// `seen.rs`), whether the answer holds 10 items or 10,000.
    ///
    /// The check's buffers belong to the thread and are reused: they are
    /// made with room for answers of up to `SCAN_LIMIT` items on the
    /// thread's first fill, and grow only when a larger answer comes, so a
    /// warmed-up thread's fill allocates nothing.
    fn fill(&self, items: &mut Vec<ItemId>, count: usize) -> Result<(), RandomFillError> {
        self.fill_from(items, count, fastrand::u32)
    }

    /// Draws from a generator of its own seeded with `seed` (`fastrand`'s
    /// Wyrand: a few instructions to seed), so that the same seed over the
    /// same catalog and `items` gives the same items.
    fn fill_seeded(
        &self,
        items: &mut Vec<ItemId>,
        count: usize,
        seed: u64,
    ) -> Result<(), RandomFillError> {
        let mut rng = fastrand::Rng::with_seed(seed);
        self.fill_from(items, count, |range| rng.u32(range))
    }
}

impl CatalogRandomFeed {
    /// [`RandomFeed::fill`], drawing catalog positions with `draw`.
    #[inline]
    fn fill_from(
        &self,
        items: &mut Vec<ItemId>,
        count: usize,
        draw: impl FnMut(std::ops::Range<u32>) -> u32,
    ) -> Result<(), RandomFillError> {
        // One copy of the loop without the blocklist's check, one with it:
        // an empty list costs a branch a fill, not one a draw.
        match self.blocked.get().filter(|b| !b.is_empty()) {
            None => self.fill_allowed(items, count, draw, |_| true),
            Some(blocked) => {
                self.fill_allowed(items, count, draw, |item| !blocked.contains(item.get()))
            }
        }
    }

    /// [`Self::fill_from`] drawing only items `allowed` accepts.
    #[inline]
    fn fill_allowed(
        &self,
        items: &mut Vec<ItemId>,
        count: usize,
        mut draw: impl FnMut(std::ops::Range<u32>) -> u32,
        allowed: impl Fn(ItemId) -> bool,
    ) -> Result<(), RandomFillError> {
        let target = items.len() + count;
        let catalog_size = self.catalog_size();
        // Items beyond the catalog's size can never be added.
        let addable = count.min(catalog_size as usize);
        if addable == 0 {
            return shortfall(items.len(), target);
        }
        // `allowed` is asked before the set takes note of a candidate: a
        // blocked one is never held.
        SEEN.with_borrow_mut(|seen| {
            let mut seen = seen.start(items.len() + addable);
            seen.hold_all(items);
            let mut draws = addable * 4 + 32;
            while items.len() < target && draws > 0 {
                draws -= 1;
                let candidate = self.at(draw(0..catalog_size));
                if allowed(candidate) && seen.insert(candidate, items) {
                    items.push(candidate);
                }
            }
            if items.len() < target {
                // Rejections piled up: the catalog is small next to the
                // answer. Every catalog item is looked at most once, and the
                // walk stops as soon as the answer is full.
                let start = draw(0..catalog_size);
                for position in (start..catalog_size).chain(0..start) {
                    if items.len() == target {
                        break;
                    }
                    let candidate = self.at(position);
                    if allowed(candidate) && seen.insert(candidate, items) {
                        items.push(candidate);
                    }
                }
            }
        });
        shortfall(items.len(), target)
    }
}

thread_local! {
    /// The duplicate check of this thread's fills, reused from one to the
    /// next.
    static SEEN: RefCell<SeenSet> = RefCell::new(SeenSet::with_capacity(SCAN_LIMIT));
}

fn shortfall(len: usize, target: usize) -> Result<(), RandomFillError> {
    match target - len {
        0 => Ok(()),
        missing => Err(RandomFillError::Shortfall { missing }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A blocked item is never drawn, by the draws or by the walk that
        /// ends a fill over a catalog nearly used up.
        #[test]
        fn a_blocked_item_is_never_drawn(catalog in 1u32..200, blocked in prop::collection::hash_set(1u32..200, 0..150), count in 1usize..200) {
            let random = CatalogRandomFeed::new(catalog);
            let list = Arc::new(Blocked::default());
            for &item in &blocked {
                list.set(item, true);
            }
            random.block_with(Arc::clone(&list));
            let mut items = Vec::new();
            let _ = random.fill(&mut items, count);
            prop_assert!(items.iter().all(|i| !blocked.contains(&i.get())));
            let free = (1..=catalog).filter(|i| !blocked.contains(i)).count();
            prop_assert_eq!(items.len(), count.min(free));
            prop_assert_eq!(random.unblocked(|i| list.contains(i)), free);
        }

        /// The same seed gives the same fill, and it is a fill like any
        /// other: distinct, from the catalog, nothing already there.
        #[test]
        fn a_seeded_fill_repeats_itself(catalog in 1u32..500, existing in prop::collection::vec(1u32..600, 0..20), count in 0usize..100, seed in any::<u64>()) {
            let random = CatalogRandomFeed::new(catalog);
            let start: Vec<ItemId> = existing.iter().copied().map(ItemId::new).collect();
            let mut first = start.clone();
            let mut second = start.clone();
            let a = random.fill_seeded(&mut first, count, seed);
            let b = random.fill_seeded(&mut second, count, seed);
            prop_assert_eq!(&first, &second);
            prop_assert_eq!(a, b);
            prop_assert!(first[start.len()..].iter().all(|i| (1..=catalog).contains(&i.get()) && !start.contains(i)));
        }

        #[test]
        fn fills_distinct_catalog_items(catalog in 0u32..300, existing in prop::collection::hash_set(1u32..400, 0..50), count in 0usize..300) {
            let random = CatalogRandomFeed::new(catalog);
            let mut items: Vec<ItemId> = existing.iter().copied().map(ItemId::new).collect();
            let before = items.clone();
            let result = random.fill(&mut items, count);

            prop_assert_eq!(&items[..before.len()], &before[..]);
            let added = &items[before.len()..];
            prop_assert!(added.iter().all(|i| (1..=catalog).contains(&i.get())));
            prop_assert_eq!(items.iter().collect::<HashSet<_>>().len(), items.len());

            let free = (1..=catalog).filter(|i| !existing.contains(i)).count();
            prop_assert_eq!(added.len(), count.min(free));
            match result {
                Ok(()) => prop_assert_eq!(added.len(), count),
                Err(RandomFillError::Shortfall { missing }) => {
                    prop_assert!(missing > 0);
                    prop_assert_eq!(missing, count - added.len());
                }
            }
        }
    }

    #[test]
    fn large_fills_over_large_answers_stay_distinct() {
        let random = CatalogRandomFeed::new(5_000);
        let mut items: Vec<ItemId> = (1..=300).map(ItemId::new).collect();
        random.fill(&mut items, 700).unwrap();
        assert_eq!(items.len(), 1000);
        assert_eq!(items.iter().collect::<HashSet<_>>().len(), 1000);
    }

    proptest! {
        #[test]
        fn fills_distinct_items_of_a_list(list in prop::collection::hash_set(1u32.., 0..60), existing in prop::collection::hash_set(1u32..400, 0..30), count in 0usize..100) {
            let list: Vec<u32> = list.into_iter().collect();
            let random = CatalogRandomFeed::from_list(FallbackList::from_vec(list.clone()));
            let mut items: Vec<ItemId> = existing.iter().copied().map(ItemId::new).collect();
            let before = items.len();
            let result = random.fill(&mut items, count);
            let added = &items[before..];
            prop_assert!(added.iter().all(|i| list.contains(&i.get())));
            prop_assert_eq!(items.iter().collect::<HashSet<_>>().len(), items.len());
            let free = list.iter().filter(|i| !existing.contains(i)).count();
            prop_assert_eq!(added.len(), count.min(free));
            prop_assert_eq!(result.is_ok(), added.len() == count);
        }
    }

    #[test]
    fn the_largest_answers_fill_with_distinct_items() {
        let largest = feed_domain::SizeLimits::CEILING;
        // A catalog far larger than the answer, and one exactly as large
        // (the walk finishes it), each after some personal items.
        for catalog in [10_000_000, largest] {
            let random = CatalogRandomFeed::new(catalog);
            let mut items: Vec<ItemId> = (1..=190).map(|i| ItemId::new(i * 7)).collect();
            random.fill(&mut items, largest as usize - 190).unwrap();
            assert_eq!(items.len(), largest as usize);
            assert_eq!(items.iter().collect::<HashSet<_>>().len(), items.len());
            assert!(items.iter().all(|i| (1..=catalog).contains(&i.get())));
        }
    }

    #[test]
    fn the_whole_catalog_can_be_drawn() {
        let random = CatalogRandomFeed::new(1000);
        let mut items = Vec::new();
        random.fill(&mut items, 1000).unwrap();
        let mut ids: Vec<u32> = items.iter().map(|i| i.get()).collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
    }
}
