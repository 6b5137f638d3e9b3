//! [`FeedTable`]: all feeds in one block.

use feed_domain::UserId;

/// Every user's feed, `feed_len` item ids each, in one contiguous block.
/// Users are `0..users()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedTable {
    items: Box<[u32]>,
    feed_len: usize,
    users: u32,
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
        Ok(Self::from_parts(items.into_boxed_slice(), feed_len))
    }

    /// Trusted construction: the caller guarantees the shape and distinctness.
    pub(crate) fn from_parts(items: Box<[u32]>, feed_len: usize) -> Self {
        debug_assert!(feed_len > 0 && items.len().is_multiple_of(feed_len));
        let users = (items.len() / feed_len) as u32;
        Self {
            items,
            feed_len,
            users,
        }
    }

    /// `user`'s whole feed, or `None` when the table has no such user.
    #[inline]
    pub fn feed(&self, user: UserId) -> Option<&[u32]> {
        let start = (user.get() as usize).checked_mul(self.feed_len)?;
        self.items.get(start..start + self.feed_len)
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
    pub const fn total_items(&self) -> usize {
        self.items.len()
    }

    /// Bytes of feed data held.
    pub const fn bytes(&self) -> usize {
        self.items.len() * size_of::<u32>()
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
