//! [`MemoryFeedStorage`]: the feed table plus the offset map, as a
//! [`FeedStorage`].

use feed_domain::{FeedStorage, IdempotencyKey, ItemId, Keyed, StorageError, Taken, UserId};

use std::sync::OnceLock;

use crate::carry::Given;
use crate::offsets::{KeyedRange, OffsetMap};
use crate::table::FeedTable;

/// Personal feeds served from a [`FeedTable`], progress kept in an
/// [`OffsetMap`]. Never fails for a user it knows: the only error it returns
/// is [`StorageError::UnknownUser`].
#[derive(Debug)]
pub struct MemoryFeedStorage {
    table: FeedTable,
    offsets: OffsetMap,
    /// The positions given under the version served before this one
    /// (`crate::carry`), once there was one.
    given: OnceLock<Given>,
}

impl MemoryFeedStorage {
    /// Storage over `table`, every user starting at offset 0, progress in
    /// memory.
    pub fn new(table: FeedTable) -> Self {
        let offsets = OffsetMap::in_memory(table.users());
        Self::with_offsets(table, offsets)
    }

    /// Storage over `table` with the progress in `offsets` (which must be
    /// for as many users as the table has: a user beyond them never
    /// advances). Every offset beyond its feed's end (a damaged progress
    /// file) is clamped to it first; [`OffsetMap::clamped`] counts them.
    pub fn with_offsets(table: FeedTable, offsets: OffsetMap) -> Self {
        let mut feeds = table.entries();
        offsets.clamp_all(|_| {
            // Positions are visited in order, once each.
            feeds.next().map_or(0, |(_, feed)| feed.len() as u32)
        });
        drop(feeds);
        Self {
            table,
            offsets,
            given: OnceLock::new(),
        }
    }

    /// The positions given under the version served before, if any.
    pub fn given(&self) -> Option<&Given> {
        self.given.get()
    }

    /// The positions given before, made by `make` on first use.
    pub fn given_or_init(&self, make: impl FnOnce() -> Given) -> &Given {
        self.given.get_or_init(make)
    }

    /// Appends the items of `feed` (starting at `base` in the table) in
    /// `range` that were not given before.
    #[inline]
    fn extend(
        &self,
        out: &mut Vec<ItemId>,
        feed: &[u32],
        base: usize,
        range: std::ops::Range<u32>,
    ) {
        let taken = &feed[range.start as usize..range.end as usize];
        match self.given.get() {
            None => out.extend(taken.iter().map(|&id| ItemId::new(id))),
            Some(given) => out.extend(
                taken
                    .iter()
                    .enumerate()
                    .filter(|&(at, _)| !given.is_given(base + range.start as usize + at))
                    .map(|(_, &id)| ItemId::new(id)),
            ),
        }
    }

    /// The feeds.
    pub const fn table(&self) -> &FeedTable {
        &self.table
    }

    /// The users' progress.
    pub const fn offsets(&self) -> &OffsetMap {
        &self.offsets
    }
}

impl FeedStorage for MemoryFeedStorage {
    /// Answers at once: the future is [`std::future::Ready`].
    #[inline]
    fn take_next(
        &self,
        user: UserId,
        max: usize,
        out: &mut Vec<ItemId>,
    ) -> impl Future<Output = Result<Taken, StorageError>> + Send {
        std::future::ready(self.take_now(user, max, out))
    }

    /// Answers at once: the future is [`std::future::Ready`].
    #[inline]
    fn take_keyed(
        &self,
        user: UserId,
        max: usize,
        key: IdempotencyKey,
        out: &mut Vec<ItemId>,
    ) -> impl Future<Output = Result<Keyed, StorageError>> + Send {
        std::future::ready(self.take_keyed_now(user, max, key, out))
    }
}

impl MemoryFeedStorage {
    /// [`FeedStorage::take_next`] without the future: appends up to `max` of
    /// `user`'s next items to `out` and advances the user's offset.
    ///
    /// # Errors
    /// [`StorageError::UnknownUser`] when the table has no feed for `user`.
    #[inline]
    pub fn take_now(
        &self,
        user: UserId,
        max: usize,
        out: &mut Vec<ItemId>,
    ) -> Result<Taken, StorageError> {
        // Look the user up before touching the offset map, so that requests
        // for unknown users never grow it.
        let (position, base, feed) = self
            .table
            .locate(user)
            .ok_or(StorageError::UnknownUser(user))?;
        let want = u32::try_from(max).unwrap_or(u32::MAX);
        // A feed is at most u32::MAX long: the table holds at most that many items per user.
        let len = feed.len() as u32;
        let range = match self.given.get() {
            None => self.offsets.advance(position, want, len),
            Some(given) => {
                given.catch_up(user, position, self);
                self.offsets
                    .advance_to(position, len, |from| given.end_after(base, from, want, len))
            }
        };
        let before = out.len();
        self.extend(out, feed, base, range.clone());
        Ok(Taken {
            count: out.len() - before,
            remaining: (len - range.end) as usize,
        })
    }

    /// [`FeedStorage::take_keyed`] without the future.
    ///
    /// # Errors
    /// [`StorageError::UnknownUser`] when the table has no feed for `user`.
    pub fn take_keyed_now(
        &self,
        user: UserId,
        max: usize,
        key: IdempotencyKey,
        out: &mut Vec<ItemId>,
    ) -> Result<Keyed, StorageError> {
        let (position, base, feed) = self
            .table
            .locate(user)
            .ok_or(StorageError::UnknownUser(user))?;
        let want = u32::try_from(max).unwrap_or(u32::MAX);
        let len = feed.len() as u32;
        let given = self.given.get();
        if let Some(given) = given {
            given.catch_up(user, position, self);
        }
        let end = |from: u32| match given {
            None => from.saturating_add(want),
            Some(given) => given.end_after(base, from, want, len),
        };
        let (range, replayed) =
            match self
                .offsets
                .advance_keyed_to(position, want, len, key.hash(), end)
            {
                KeyedRange::Fresh(range) => (range, false),
                KeyedRange::Replayed(range) => (range, true),
                KeyedRange::OtherSize(first) => return Ok(Keyed::OtherSize { first }),
            };
        let before = out.len();
        self.extend(out, feed, base, range.clone());
        let taken = Taken {
            count: out.len() - before,
            remaining: (len - range.end) as usize,
        };
        Ok(if replayed {
            Keyed::Replayed {
                taken,
                start: range.start,
            }
        } else {
            Keyed::Fresh {
                taken,
                start: range.start,
            }
        })
    }
}
