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
    /// The duplicate check is a linear scan of `items`: answers hold at most
    /// a few hundred items, and a scan of a few hundred `u32` is faster than
    /// hashing them (see the `random_fill` benchmark).
    fn fill(&self, items: &mut Vec<ItemId>, count: usize) -> Result<(), RandomFillError> {
        let target = items.len() + count;
        if self.catalog_size == 0 {
            return shortfall(items.len(), target);
        }
        let mut draws = count.saturating_mul(4).saturating_add(32);
        while items.len() < target && draws > 0 {
            draws -= 1;
            let candidate = ItemId::new(fastrand::u32(1..=self.catalog_size));
            if !items.contains(&candidate) {
                items.push(candidate);
            }
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
                let candidate = ItemId::new(position as u32 + 1);
                if !items.contains(&candidate) {
                    items.push(candidate);
                }
            }
        }
        shortfall(items.len(), target)
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
    fn the_whole_catalog_can_be_drawn() {
        let random = CatalogRandomFeed::new(1000);
        let mut items = Vec::new();
        random.fill(&mut items, 1000).unwrap();
        let mut ids: Vec<u32> = items.iter().map(|i| i.get()).collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
    }
}
