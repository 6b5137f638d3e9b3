//! [`ItemSet`]: a set of item ids in bounded memory, for the distinct items
//! of the feeds (the fallback list when none is given) and for dropping
//! repeats from a given fallback list.

/// Item ids per page of the bitmap: 2^16, so a page is 8 KiB.
const PAGE_BITS: u32 = 16;
const PAGE_WORDS: usize = (1 << PAGE_BITS) / 64;

/// A set of `u32` item ids: a bitmap of all 2^32 ids, cut into pages of
/// 2^16 ids (8 KiB) that are allocated when an id in them is first added.
/// Memory is a 512 KiB page table plus 8 KiB for every page in use: about
/// `largest id / 8` bytes for the dense ids of a catalog, and never more
/// than 512 MiB whatever the ids, so it does not grow with the number of
/// feeds or items. Iteration is in increasing order.
#[derive(Clone, Default)]
pub struct ItemSet {
    pages: Vec<Option<Box<[u64; PAGE_WORDS]>>>,
}

impl std::fmt::Debug for ItemSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemSet").field("len", &self.len()).finish()
    }
}

impl ItemSet {
    /// An empty set (nothing allocated yet).
    pub const fn new() -> Self {
        Self { pages: Vec::new() }
    }

    /// Adds `item`; true if it was not there yet.
    #[inline]
    pub fn insert(&mut self, item: u32) -> bool {
        if self.pages.is_empty() {
            self.pages.resize_with(1 << (32 - PAGE_BITS), || None);
        }
        let page = self.pages[(item >> PAGE_BITS) as usize]
            .get_or_insert_with(|| Box::new([0; PAGE_WORDS]));
        let low = item & ((1 << PAGE_BITS) - 1);
        let (word, bit) = ((low / 64) as usize, 1u64 << (low % 64));
        let fresh = page[word] & bit == 0;
        page[word] |= bit;
        fresh
    }

    /// Adds every item of `items`.
    pub fn extend_from_slice(&mut self, items: &[u32]) {
        for &item in items {
            self.insert(item);
        }
    }

    /// The number of items in the set.
    pub fn len(&self) -> u64 {
        self.pages
            .iter()
            .flatten()
            .map(|page| {
                page.iter()
                    .map(|word| u64::from(word.count_ones()))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.pages
            .iter()
            .flatten()
            .all(|page| page.iter().all(|&word| word == 0))
    }

    /// The items, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.pages
            .iter()
            .enumerate()
            .filter_map(|(at, page)| page.as_ref().map(|page| (at, page)))
            .flat_map(|(at, page)| {
                page.iter().enumerate().flat_map(move |(word_at, &word)| {
                    let base = ((at << PAGE_BITS) + word_at * 64) as u32;
                    Bits(word).map(move |bit| base + bit)
                })
            })
    }
}

/// The set bits of a word, lowest first.
struct Bits(u64);

impl Iterator for Bits {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(items: &[u32]) {
        let mut set = ItemSet::new();
        let mut expected: Vec<u32> = Vec::new();
        for &item in items {
            assert_eq!(set.insert(item), !expected.contains(&item));
            expected.push(item);
        }
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(set.iter().collect::<Vec<_>>(), expected);
        assert_eq!(set.len(), expected.len() as u64);
        assert_eq!(set.is_empty(), expected.is_empty());
    }

    proptest! {
        #[test]
        fn holds_each_item_once_in_order_dense(items in proptest::collection::vec(0u32..200_000, 0..500)) {
            check(&items);
        }

        #[test]
        fn holds_each_item_once_in_order_sparse(items in proptest::collection::vec(any::<u32>(), 0..200)) {
            check(&items);
        }
    }

    #[test]
    fn the_edges() {
        check(&[]);
        check(&[u32::MAX, 0, u32::MAX, 65_535, 65_536, 63, 64]);
    }
}
