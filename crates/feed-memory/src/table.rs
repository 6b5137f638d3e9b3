//! [`FeedTable`]: every user's feed, read-only, in a few flat blocks.
//!
//! The layout is compressed sparse rows: the items of all feeds back to
//! back in one `u32` block, each user's feed a slice of it. Users come in
//! two shapes:
//!
//! - dense (the synthetic set): users `0..n`, every feed the same length,
//!   so a user's slice is found by arithmetic;
//! - sparse (an imported snapshot): sorted 64-bit user ids anywhere in the
//!   range, with a CSR offset array for feeds of any length, including 0.
//!   A user is found through a [`BucketIndex`] over the high bits of the
//!   id: a direct jump to a bucket, then a binary search inside it. For ids
//!   spread evenly over their range (hashed or random ids, the usual case)
//!   a bucket holds a few ids and a lookup touches two or three cache lines,
//!   not the twenty-odd of a binary search over millions of ids; ids
//!   clustered in a small part of their range fall back towards a plain
//!   binary search, still O(log n).
//!
//! The blocks live on the heap, in an anonymous mapping (generated tables,
//! advised to use huge pages) or in a read-only file mapping (snapshots).

use std::sync::Arc;

use bytemuck::Pod;
use feed_domain::{RankedFeeds, UserId};
use memmap2::{Advice, Mmap, MmapMut};

/// A block of `T`s: on the heap, in an anonymous mapping, or a range of a
/// shared file mapping.
#[derive(Debug)]
pub(crate) enum Section<T> {
    /// An ordinary allocation.
    Heap(Box<[T]>),
    /// An anonymous mapping (page-aligned, a whole number of `T`s).
    Anon(MmapMut),
    /// `len` values at byte `start` of a file mapping; `start` is aligned
    /// for `T` (the snapshot's sections are page-aligned).
    File {
        /// The whole file.
        map: Arc<Mmap>,
        /// Byte offset of the first value.
        start: usize,
        /// Number of values.
        len: usize,
    },
}

impl<T: Pod> Section<T> {
    /// A zeroed block of `len` values, in a huge-page-advised anonymous
    /// mapping where the system gives one.
    fn zeroed(len: usize) -> Self {
        let bytes = len * size_of::<T>();
        if bytes == 0 {
            return Self::Heap(Box::default());
        }
        match MmapMut::map_anon(bytes) {
            Ok(map) => {
                // Only advice: without transparent huge pages the mapping
                // still works with ordinary pages.
                let _ = map.advise(Advice::HugePage);
                Self::Anon(map)
            }
            Err(_) => Self::Heap(vec![T::zeroed(); len].into_boxed_slice()),
        }
    }

    #[inline]
    pub(crate) fn get(&self) -> &[T] {
        match self {
            Self::Heap(values) => values,
            Self::Anon(map) => bytemuck::cast_slice(map),
            Self::File { map, start, len } => {
                bytemuck::cast_slice(&map[*start..*start + *len * size_of::<T>()])
            }
        }
    }

    fn get_mut(&mut self) -> &mut [T] {
        match self {
            Self::Heap(values) => values,
            Self::Anon(map) => bytemuck::cast_slice_mut(map),
            // Never built mutable: only the generator writes, into its own block.
            Self::File { .. } => &mut [],
        }
    }

    fn copy(&self) -> Self {
        Self::Heap(self.get().into())
    }
}

/// A direct index into sorted 64-bit ids: the ids' offset from the smallest
/// one, shifted right, picks a bucket; each bucket holds the position of its
/// first id. About one bucket per two ids; buckets split the id range
/// evenly, so evenly spread ids get a few per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BucketIndex {
    min: u64,
    shift: u32,
    /// `starts[b]..starts[b + 1]` are the positions of bucket `b`'s ids.
    starts: Box<[u32]>,
}

impl BucketIndex {
    /// The largest number of buckets (64 MiB of index).
    const MAX_BUCKETS_LOG2: u32 = 24;

    /// The index of `ids`, which must be sorted and at most `u32::MAX` long.
    pub(crate) fn build(ids: &[u64]) -> Self {
        let (Some(&min), Some(&max)) = (ids.first(), ids.last()) else {
            return Self {
                min: 0,
                shift: 0,
                starts: Box::new([0]),
            };
        };
        let buckets_log2 = ids.len().ilog2().min(Self::MAX_BUCKETS_LOG2);
        let span_bits = u64::BITS - (max - min).leading_zeros();
        let shift = span_bits.saturating_sub(buckets_log2);
        let bucket_of = |id: u64| ((id - min).checked_shr(shift).unwrap_or(0)) as usize;
        let buckets = bucket_of(max) + 1;
        let mut starts = vec![0u32; buckets + 1];
        // Count each bucket's ids, then turn counts into starting positions.
        for &id in ids {
            starts[bucket_of(id) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        Self {
            min,
            shift,
            starts: starts.into_boxed_slice(),
        }
    }

    /// The position of `id` in `ids` (the ids this index was built from).
    #[inline]
    pub(crate) fn find(&self, ids: &[u64], id: u64) -> Option<usize> {
        let offset = id.checked_sub(self.min)?;
        let bucket = offset.checked_shr(self.shift).unwrap_or(0);
        let bucket = usize::try_from(bucket).ok()?;
        let (&start, &end) = (self.starts.get(bucket)?, self.starts.get(bucket + 1)?);
        let (start, end) = (start as usize, end as usize);
        ids.get(start..end)?
            .binary_search(&id)
            .ok()
            .map(|at| start + at)
    }
}

/// Who the users are.
#[derive(Debug)]
enum Users {
    /// Users `0..count`.
    Dense,
    /// Sorted ids, found through their index.
    Sparse {
        ids: Section<u64>,
        index: BucketIndex,
    },
}

/// Where each feed lies in the items.
#[derive(Debug)]
enum Shape {
    /// Every feed `feed_len` long: user `i` at `[i * feed_len, (i + 1) * feed_len)`.
    Fixed { feed_len: usize },
    /// User `i` at `[offsets[i], offsets[i + 1])`.
    Csr { offsets: Section<u64> },
}

/// Every user's feed, in a few flat blocks. See the module doc.
#[derive(Debug)]
pub struct FeedTable {
    users: Users,
    shape: Shape,
    items: Section<u32>,
    count: u32,
}

/// The table's feeds for a storage that keeps progress elsewhere (a
/// frontend over the cluster).
impl RankedFeeds for FeedTable {
    #[inline]
    fn feed(&self, user: UserId) -> Option<&[u32]> {
        Self::feed(self, user)
    }

    fn users(&self) -> u32 {
        Self::users(self)
    }

    #[inline]
    fn lookup(&self, user: UserId) -> Option<(u32, &[u32])> {
        Self::lookup(self, user)
    }
}

impl PartialEq for FeedTable {
    /// Tables are equal when they hold the same feeds for the same users.
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.entries().eq(other.entries())
    }
}

impl Eq for FeedTable {}

impl Clone for FeedTable {
    /// A copy on the heap (a mapping is not copied as a mapping).
    fn clone(&self) -> Self {
        Self {
            users: match &self.users {
                Users::Dense => Users::Dense,
                Users::Sparse { ids, index } => Users::Sparse {
                    ids: ids.copy(),
                    index: index.clone(),
                },
            },
            shape: match &self.shape {
                Shape::Fixed { feed_len } => Shape::Fixed {
                    feed_len: *feed_len,
                },
                Shape::Csr { offsets } => Shape::Csr {
                    offsets: offsets.copy(),
                },
            },
            items: self.items.copy(),
            count: self.count,
        }
    }
}

/// A block of ids that is not a valid table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// `feed_len` is 0.
    #[error("feed length must be at least 1")]
    EmptyFeeds,
    /// The block is not a whole number of feeds, the offsets do not cover
    /// the items, or there are more than `u32::MAX` users.
    #[error("{items} items do not make the feeds of at most u32::MAX users: {reason}")]
    Shape {
        /// Items in the block.
        items: usize,
        /// What does not fit.
        reason: &'static str,
    },
    /// User ids are not strictly increasing.
    #[error("user id {user} is not above the one before it")]
    Unsorted {
        /// The offending id.
        user: u64,
    },
    /// Item 0 is not an item.
    #[error("the feed of user {user} holds item 0")]
    ZeroItem {
        /// The user whose feed it is.
        user: u64,
    },
    /// A feed names one item twice.
    #[error("the feed of user {user} holds item {item} twice")]
    Duplicate {
        /// The user whose feed it is.
        user: u64,
        /// The repeated item.
        item: u32,
    },
}

impl FeedTable {
    /// A dense table over `items`, read as consecutive feeds of `feed_len`
    /// ids for users `0..`.
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
                reason: "not a whole number of feeds",
            });
        }
        let table = Self {
            users: Users::Dense,
            shape: Shape::Fixed { feed_len },
            items: Section::Heap(items.into_boxed_slice()),
            count: users as u32,
        };
        table.check_feeds()?;
        Ok(table)
    }

    /// A sparse table: user `user_ids[i]` has the feed
    /// `items[offsets[i]..offsets[i + 1]]`.
    ///
    /// # Errors
    /// [`TableError`] when the ids are not strictly increasing, the offsets
    /// do not run from 0 to `items.len()` without going back, a feed holds
    /// item 0 or an item twice, or there are more than `u32::MAX` users.
    pub fn from_csr(
        user_ids: Vec<u64>,
        offsets: Vec<u64>,
        items: Vec<u32>,
    ) -> Result<Self, TableError> {
        Self::check_shape(&user_ids, &offsets, items.len())?;
        let index = BucketIndex::build(&user_ids);
        let table = Self {
            count: user_ids.len() as u32,
            users: Users::Sparse {
                ids: Section::Heap(user_ids.into_boxed_slice()),
                index,
            },
            shape: Shape::Csr {
                offsets: Section::Heap(offsets.into_boxed_slice()),
            },
            items: Section::Heap(items.into_boxed_slice()),
        };
        table.check_feeds()?;
        Ok(table)
    }

    /// A sparse table over sections of a snapshot's file mapping. Checks
    /// the shape (ids sorted, offsets within the items); the caller has
    /// checked the sizes, and checks the items themselves with
    /// [`Self::check_feeds`] when it chooses.
    pub(crate) fn from_sections(
        ids: Section<u64>,
        offsets: Section<u64>,
        items: Section<u32>,
    ) -> Result<Self, TableError> {
        Self::check_shape(ids.get(), offsets.get(), items.get().len())?;
        let index = BucketIndex::build(ids.get());
        Ok(Self {
            count: ids.get().len() as u32,
            users: Users::Sparse { ids, index },
            shape: Shape::Csr { offsets },
            items,
        })
    }

    fn check_shape(ids: &[u64], offsets: &[u64], items: usize) -> Result<(), TableError> {
        let shape = |reason| TableError::Shape { items, reason };
        if u32::try_from(ids.len()).is_err() {
            return Err(shape("more than u32::MAX users"));
        }
        if offsets.len() != ids.len() + 1 {
            return Err(shape("not one offset more than users"));
        }
        if offsets.first() != Some(&0) || offsets.last() != Some(&(items as u64)) {
            return Err(shape("offsets do not run from 0 to the number of items"));
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(shape("offsets go back"));
        }
        if offsets
            .windows(2)
            .any(|w| w[1] - w[0] > u64::from(u32::MAX))
        {
            return Err(shape("a feed longer than u32::MAX items"));
        }
        if let Some(pair) = ids.windows(2).find(|w| w[0] >= w[1]) {
            return Err(TableError::Unsorted { user: pair[1] });
        }
        Ok(())
    }

    /// Checks every feed: no item 0, no item twice.
    ///
    /// # Errors
    /// The first [`TableError::ZeroItem`] or [`TableError::Duplicate`].
    pub(crate) fn check_feeds(&self) -> Result<(), TableError> {
        let mut sorted = Vec::new();
        for (user, feed) in self.entries() {
            if feed.contains(&0) {
                return Err(TableError::ZeroItem { user });
            }
            sorted.clear();
            sorted.extend_from_slice(feed);
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(TableError::Duplicate {
                    user,
                    item: pair[0],
                });
            }
        }
        Ok(())
    }

    /// A zeroed dense table for `users` feeds of `feed_len`, for the
    /// generator to fill through [`Self::ids_mut`].
    pub(crate) fn zeroed(users: usize, feed_len: usize) -> Self {
        Self {
            users: Users::Dense,
            shape: Shape::Fixed { feed_len },
            items: Section::zeroed(users * feed_len),
            count: users as u32,
        }
    }

    /// The whole block of items, for the generator.
    pub(crate) fn ids_mut(&mut self) -> &mut [u32] {
        self.items.get_mut()
    }

    /// The position of `user` in the table, and their whole feed; `None`
    /// when the table has no such user.
    #[inline]
    pub fn lookup(&self, user: UserId) -> Option<(u32, &[u32])> {
        let position = match &self.users {
            Users::Dense => {
                let position = u32::try_from(user.get()).ok()?;
                (position < self.count).then_some(position as usize)?
            }
            Users::Sparse { ids, index } => index.find(ids.get(), user.get())?,
        };
        Some((position as u32, self.feed_at(position)))
    }

    /// [`Self::lookup`], with where the user's feed starts among all the
    /// table's items (their positions are numbered across the table).
    #[inline]
    pub fn locate(&self, user: UserId) -> Option<(u32, usize, &[u32])> {
        let (position, feed) = self.lookup(user)?;
        Some((position, self.start_at(position as usize), feed))
    }

    /// Where the feed at `position` starts among all the table's items.
    #[inline]
    pub(crate) fn start_at(&self, position: usize) -> usize {
        match &self.shape {
            Shape::Fixed { feed_len } => position * feed_len,
            Shape::Csr { offsets } => offsets.get()[position] as usize,
        }
    }

    /// The length of the feed at `position` (below the number of users).
    #[inline]
    pub(crate) fn feed_len(&self, position: usize) -> usize {
        match &self.shape {
            Shape::Fixed { feed_len } => *feed_len,
            Shape::Csr { offsets } => {
                let offsets = offsets.get();
                (offsets[position + 1] - offsets[position]) as usize
            }
        }
    }

    /// `user`'s whole feed, or `None` when the table has no such user.
    #[inline]
    pub fn feed(&self, user: UserId) -> Option<&[u32]> {
        self.lookup(user).map(|(_, feed)| feed)
    }

    /// The feed at `position` (below the number of users).
    #[inline]
    fn feed_at(&self, position: usize) -> &[u32] {
        let items = self.items.get();
        let (start, end) = match &self.shape {
            Shape::Fixed { feed_len } => (position * feed_len, (position + 1) * feed_len),
            Shape::Csr { offsets } => {
                let offsets = offsets.get();
                (offsets[position] as usize, offsets[position + 1] as usize)
            }
        };
        &items[start..end]
    }

    /// The user id at `position`.
    fn user_at(&self, position: usize) -> u64 {
        match &self.users {
            Users::Dense => position as u64,
            Users::Sparse { ids, .. } => ids.get()[position],
        }
    }

    /// Every user and their feed, in id order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &[u32])> {
        (0..self.count as usize).map(|position| (self.user_at(position), self.feed_at(position)))
    }

    /// The largest user id (`None` for no users).
    pub fn largest_user(&self) -> Option<u64> {
        (self.count > 0).then(|| self.user_at(self.count as usize - 1))
    }

    /// The number of users.
    pub const fn users(&self) -> u32 {
        self.count
    }

    /// All item ids in the table.
    pub fn total_items(&self) -> usize {
        self.items.get().len()
    }

    /// Bytes of feed data held: items, and user ids and offsets where the
    /// table has them.
    pub fn bytes(&self) -> usize {
        let ids = match &self.users {
            Users::Dense => 0,
            Users::Sparse { ids, .. } => size_of_val(ids.get()),
        };
        let offsets = match &self.shape {
            Shape::Fixed { .. } => 0,
            Shape::Csr { offsets } => size_of_val(offsets.get()),
        };
        self.total_items() * size_of::<u32>() + ids + offsets
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn feeds_are_consecutive_slices() {
        let table = FeedTable::from_items(vec![1, 2, 3, 4, 5, 6], 3).unwrap();
        assert_eq!(table.users(), 2);
        assert_eq!(table.feed(UserId::new(0)), Some(&[1, 2, 3][..]));
        assert_eq!(table.lookup(UserId::new(1)), Some((1, &[4, 5, 6][..])));
        assert_eq!(table.feed(UserId::new(2)), None);
        assert_eq!(table.feed(UserId::new(u64::MAX)), None);
        assert_eq!(table.bytes(), 24);
    }

    #[test]
    fn sparse_users_have_feeds_of_any_length() {
        let table = FeedTable::from_csr(
            vec![0, 7, 1 << 40, u64::MAX],
            vec![0, 2, 2, 5, 6],
            vec![9, 8, 1, 2, 3, u32::MAX],
        )
        .unwrap();
        assert_eq!(table.feed(UserId::new(0)), Some(&[9, 8][..]));
        assert_eq!(table.feed(UserId::new(7)), Some(&[][..]));
        assert_eq!(
            table.lookup(UserId::new(1 << 40)),
            Some((2, &[1, 2, 3][..]))
        );
        assert_eq!(table.feed(UserId::new(u64::MAX)), Some(&[u32::MAX][..]));
        for absent in [1, 6, 8, (1 << 40) - 1, (1 << 40) + 1, u64::MAX - 1] {
            assert_eq!(table.feed(UserId::new(absent)), None, "{absent}");
        }
        let entries: Vec<_> = table.entries().map(|(u, f)| (u, f.len())).collect();
        assert_eq!(entries, [(0, 2), (7, 0), (1 << 40, 3), (u64::MAX, 1)]);
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
        let csr = FeedTable::from_csr;
        assert_eq!(
            csr(vec![5, 5], vec![0, 1, 2], vec![1, 2]),
            Err(TableError::Unsorted { user: 5 })
        );
        assert_eq!(
            csr(vec![5], vec![0, 2], vec![1, 0]),
            Err(TableError::ZeroItem { user: 5 })
        );
        for (offsets, items) in [
            (vec![0, 1], vec![1, 2]),
            (vec![1, 2], vec![1, 2]),
            (vec![0], vec![]),
        ] {
            assert!(
                matches!(csr(vec![5], offsets, items), Err(TableError::Shape { .. })),
                "accepted"
            );
        }
        assert!(matches!(
            csr(vec![1, 2], vec![0, 2, 1], vec![1]),
            Err(TableError::Shape { .. })
        ));
    }

    proptest! {
        /// Every id is found at its position and no other id is found,
        /// whatever the ids' spread: clustered, dense, or over all of u64.
        #[test]
        fn the_bucket_index_finds_exactly_the_ids(
            mut ids in prop::collection::vec(prop_oneof![any::<u64>(), 0u64..1000, (u64::MAX - 1000)..=u64::MAX], 0..400),
            probes in prop::collection::vec(any::<u64>(), 0..100),
        ) {
            ids.sort_unstable();
            ids.dedup();
            let index = BucketIndex::build(&ids);
            for (position, &id) in ids.iter().enumerate() {
                prop_assert_eq!(index.find(&ids, id), Some(position));
                for near in [id.wrapping_sub(1), id.wrapping_add(1)] {
                    prop_assert_eq!(index.find(&ids, near), ids.binary_search(&near).ok());
                }
            }
            for probe in probes {
                prop_assert_eq!(index.find(&ids, probe), ids.binary_search(&probe).ok());
            }
        }
    }
}
