//! [`CatalogRandomFeed`]: uniform random items from the catalog.

use feed_domain::{ItemId, RandomFeed, RandomFillError};

/// Random items drawn uniformly from the catalog `1..=catalog_size`, using
/// each thread's own `fastrand` generator (no shared state, no lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogRandomFeed {
    catalog_size: u32,
}

impl CatalogRandomFeed {
    /// Draws from `1..=catalog_size`; a size of 0 is an empty catalog.
    pub const fn new(catalog_size: u32) -> Self {
        Self { catalog_size }
    }

    /// The number of items in the catalog.
    pub const fn catalog_size(&self) -> u32 {
        self.catalog_size
    }
}

impl RandomFeed for CatalogRandomFeed {
    /// Draws at random, rejecting items already present; after a bounded
    /// number of rejections it walks the catalog from a random start instead,
    /// so it ends even when the catalog is nearly used up.
    ///
    /// The duplicate check is a linear scan of `items` for small answers;
    /// from `SCAN_LIMIT` items on, a bitmap over a hash of the ids
    /// answers "certainly new" for almost every candidate and the scan runs
    /// only when its bit is set. The `random_fill` benchmark measured the
    /// plain scan at 8.6 µs for 200 items against 1.5 µs with a set.
    fn fill(&self, items: &mut Vec<ItemId>, count: usize) -> Result<(), RandomFillError> {
        let target = items.len() + count;
        if self.catalog_size == 0 {
            return shortfall(items.len(), target);
        }
        let mut seen = Seen::new(items, target);
        let mut draws = count.saturating_mul(4).saturating_add(32);
        while items.len() < target && draws > 0 {
            draws -= 1;
            let candidate = ItemId::new(fastrand::u32(1..=self.catalog_size));
            seen.push_if_new(items, candidate);
        }
        if items.len() < target {
            // Rejections piled up: the catalog is small next to the answer.
            // Every catalog item is looked at most once, and the walk stops
            // as soon as the answer is full.
            let start = fastrand::u32(0..self.catalog_size);
            for step in 0..self.catalog_size {
                if items.len() == target {
                    break;
                }
                let position = (u64::from(start) + u64::from(step)) % u64::from(self.catalog_size);
                seen.push_if_new(items, ItemId::new(position as u32 + 1));
            }
        }
        shortfall(items.len(), target)
    }
}

/// Answers at and above this many items use the bitmap.
const SCAN_LIMIT: usize = 32;

/// Bits in the bitmap: at most an eighth of them are set for answers of up
/// to 512 items, so nearly every new candidate is told apart at once.
const BITS: usize = 4096;

/// The duplicate check of one fill: nothing for small answers (plain scan),
/// else a bitmap of hashed ids backed by the scan. It lives on the stack
/// (512 bytes): the fill allocates nothing.
#[allow(
    clippy::large_enum_variant,
    reason = "it lives on the stack for one call; boxing it would allocate on every fill"
)]
enum Seen {
    Scan,
    Bitmap([u64; BITS / 64]),
}

impl Seen {
    fn new(items: &[ItemId], target: usize) -> Self {
        if target < SCAN_LIMIT {
            return Self::Scan;
        }
        let mut bits = [0u64; BITS / 64];
        for &item in items {
            let (word, bit) = Self::slot(item);
            bits[word] |= bit;
        }
        Self::Bitmap(bits)
    }

    #[inline]
    fn slot(item: ItemId) -> (usize, u64) {
        let hash = (item.get().wrapping_mul(0x9E37_79B1) >> 20) as usize; // 12 bits
        (hash / 64, 1 << (hash % 64))
    }

    #[inline]
    fn push_if_new(&mut self, items: &mut Vec<ItemId>, candidate: ItemId) {
        match self {
            Self::Scan => {
                if !items.contains(&candidate) {
                    items.push(candidate);
                }
            }
            Self::Bitmap(bits) => {
                let (word, bit) = Self::slot(candidate);
                if bits[word] & bit == 0 || !items.contains(&candidate) {
                    bits[word] |= bit;
                    items.push(candidate);
                }
            }
        }
    }
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
