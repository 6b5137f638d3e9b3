//! [`FeedTable`]: all feeds in one block.

use feed_domain::UserId;
use memmap2::{Advice, MmapMut};

/// Where the block of ids lives.
#[derive(Debug)]
enum Block {
    /// An ordinary allocation (tables built from given items).
    Heap(Box<[u32]>),
    /// An anonymous mapping advised to use huge pages (generated tables):
    /// 2 MiB pages mean a thousandth of the page faults while the table is
    /// written and far fewer TLB misses when random users are read.
    Mapped(MmapMut),
}

impl Block {
    /// A zeroed block of `len` ids.
    fn zeroed(len: usize) -> Self {
        let bytes = len * size_of::<u32>();
        if bytes == 0 {
            return Self::Heap(Box::default());
        }
        match MmapMut::map_anon(bytes) {
            Ok(map) => {
                // Only advice: without transparent huge pages the mapping
                // still works with ordinary pages.
                let _ = map.advise(Advice::HugePage);
                Self::Mapped(map)
            }
            Err(_) => Self::Heap(vec![0; len].into_boxed_slice()),
        }
    }

    fn ids(&self) -> &[u32] {
        match self {
            Self::Heap(ids) => ids,
            // A mapping is page-aligned and a whole number of ids long.
            Self::Mapped(map) => bytemuck::cast_slice(map),
        }
    }

    fn ids_mut(&mut self) -> &mut [u32] {
        match self {
            Self::Heap(ids) => ids,
            Self::Mapped(map) => bytemuck::cast_slice_mut(map),
        }
    }
}

/// Every user's feed, `feed_len` item ids each, in one contiguous block.
/// Users are `0..users()`.
#[derive(Debug)]
pub struct FeedTable {
    items: Block,
    feed_len: usize,
    users: u32,
}

impl PartialEq for FeedTable {
    fn eq(&self, other: &Self) -> bool {
        self.feed_len == other.feed_len && self.items.ids() == other.items.ids()
    }
}

impl Eq for FeedTable {}

impl Clone for FeedTable {
    /// A copy on the heap (a mapping is not copied as a mapping).
    fn clone(&self) -> Self {
        Self::from_parts(Block::Heap(self.items.ids().into()), self.feed_len)
    }
}

/// A block of ids that is not a valid table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// `feed_len` is 0.
    #[error("feed length must be at least 1")]
    EmptyFeeds,
    /// The block is not a whole number of feeds, or holds more than `u32::MAX` users.
    #[error("{items} items do not make whole feeds of {feed_len} for at most u32::MAX users")]
    Shape {
        /// Items in the block.
        items: usize,
        /// The feed length.
        feed_len: usize,
    },
    /// A feed names one item twice.
    #[error("the feed of user {user} holds item {item} twice")]
    Duplicate {
        /// The user whose feed it is.
        user: u32,
        /// The repeated item.
        item: u32,
    },
}

impl FeedTable {
    /// A table over `items`, read as consecutive feeds of `feed_len` ids.
    ///
    /// # Errors
    /// [`TableError`] when `feed_len` is 0, the block is not a whole number
    /// of feeds, or a feed holds an item twice.
    pub fn from_items(items: Vec<u32>, feed_len: usize) -> Result<Self, TableError> {
        if feed_len == 0 {
            return Err(TableError::EmptyFeeds);
        }
        let users = items.len() / feed_len;
        if !items.len().is_multiple_of(feed_len) || u32::try_from(users).is_err() {
            return Err(TableError::Shape {
                items: items.len(),
                feed_len,
            });
        }
        let mut sorted = Vec::with_capacity(feed_len);
        for (user, feed) in items.chunks_exact(feed_len).enumerate() {
            sorted.clear();
            sorted.extend_from_slice(feed);
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(TableError::Duplicate {
                    user: user as u32,
                    item: pair[0],
                });
            }
        }
        Ok(Self::from_parts(
            Block::Heap(items.into_boxed_slice()),
            feed_len,
        ))
    }

    /// A zeroed table for `users` feeds of `feed_len`, for the generator to
    /// fill through [`Self::ids_mut`].
    pub(crate) fn zeroed(users: usize, feed_len: usize) -> Self {
        Self::from_parts(Block::zeroed(users * feed_len), feed_len)
    }

    /// Trusted construction: the caller guarantees the shape and distinctness.
    fn from_parts(items: Block, feed_len: usize) -> Self {
        let len = items.ids().len();
        debug_assert!(feed_len > 0 && len.is_multiple_of(feed_len));
        let users = (len / feed_len) as u32;
        Self {
            items,
            feed_len,
            users,
        }
    }

    /// The whole block, for the generator.
    pub(crate) fn ids_mut(&mut self) -> &mut [u32] {
        self.items.ids_mut()
    }

    /// `user`'s whole feed, or `None` when the table has no such user.
    #[inline]
    pub fn feed(&self, user: UserId) -> Option<&[u32]> {
        let start = (user.get() as usize).checked_mul(self.feed_len)?;
        self.items.ids().get(start..start + self.feed_len)
    }

    /// The number of users: ids `0..users()` have a feed.
    pub const fn users(&self) -> u32 {
        self.users
    }

    /// The length of every feed.
    pub const fn feed_len(&self) -> usize {
        self.feed_len
    }

    /// All item ids in the table.
    pub fn total_items(&self) -> usize {
        self.items.ids().len()
    }

    /// Bytes of feed data held.
    pub fn bytes(&self) -> usize {
        self.total_items() * size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_are_consecutive_slices() {
        let table = FeedTable::from_items(vec![1, 2, 3, 4, 5, 6], 3).unwrap();
        assert_eq!(table.users(), 2);
        assert_eq!(table.feed(UserId::new(0)), Some(&[1, 2, 3][..]));
        assert_eq!(table.feed(UserId::new(1)), Some(&[4, 5, 6][..]));
        assert_eq!(table.feed(UserId::new(2)), None);
        assert_eq!(table.feed(UserId::new(u32::MAX)), None);
        assert_eq!(table.bytes(), 24);
    }

    #[test]
    fn malformed_blocks_are_rejected() {
        assert_eq!(
            FeedTable::from_items(vec![1], 0),
            Err(TableError::EmptyFeeds)
        );
        assert!(matches!(
            FeedTable::from_items(vec![1, 2, 3], 2),
            Err(TableError::Shape { .. })
        ));
        assert_eq!(
            FeedTable::from_items(vec![1, 2, 3, 4, 9, 4], 3),
            Err(TableError::Duplicate { user: 1, item: 4 })
        );
    }
}
