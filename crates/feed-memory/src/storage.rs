//! [`MemoryFeedStorage`]: the feed table plus the offset map, as a
//! [`FeedStorage`].

use feed_domain::{
    BlockedItems, FeedStorage, IdempotencyKey, ItemId, Keyed, StorageError, Taken, UserId,
};

use std::sync::{Arc, OnceLock};

use crate::blocklist::Blocked;
use crate::carry::{Given, Marks, RowsGuard};
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
    /// The items taken down, shared by every version.
    blocked: OnceLock<Arc<Blocked>>,
}

/// What a request passes over in one user's feed: positions given under
/// the version before, and blocked items. Both move the offset past them,
/// neither is served.
#[derive(Clone, Copy)]
struct Skip<'a> {
    given: Option<Marks<'a>>,
    blocked: Option<&'a Blocked>,
    feed: &'a [u32],
    /// The version's marks, and the generation they were read under (none
    /// when it had none yet).
    keeper: &'a OnceLock<Given>,
    generation: Option<u64>,
}

impl Skip<'_> {
    /// Where the step from `from` of a request for `want` items ends: past
    /// what it passes over, at most `len`; at `from` (nothing taken) when
    /// the marks it read are no longer the version's
    /// ([`Given::is_stale`]).
    #[inline]
    fn end(&self, from: u32, want: u32, len: u32) -> u32 {
        // Read after the offset's load: a rollback opens the cells of a
        // version again only after its carry, which makes the marks (the
        // first time) or bumps their generation.
        let stale = match (self.keeper.get(), self.generation) {
            (None, _) => false,
            (Some(given), Some(generation)) => given.is_stale(generation),
            (Some(_), None) => true,
        };
        if stale {
            return from;
        }
        if self.any() {
            self.end_after(from, want, len)
        } else {
            from.saturating_add(want)
        }
    }

    /// Whether there is anything to pass over at all.
    #[inline]
    const fn any(&self) -> bool {
        self.given.is_some() || self.blocked.is_some()
    }

    #[inline]
    fn given(&self, at: usize) -> bool {
        self.given.is_some_and(|given| given.is_given(at))
    }

    #[inline]
    fn blocked(&self, at: usize) -> bool {
        self.blocked
            .is_some_and(|blocked| blocked.contains(self.feed[at]))
    }

    /// Where a step of `want` items not passed over, from `from`, ends (at
    /// most `len`).
    #[inline]
    fn end_after(&self, from: u32, want: u32, len: u32) -> u32 {
        let mut taken = 0;
        let mut at = from;
        while at < len && taken < want {
            if !self.given(at as usize) && !self.blocked(at as usize) {
                taken += 1;
            }
            at += 1;
        }
        at
    }
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
            blocked: OnceLock::new(),
        }
    }

    /// Takes `blocked` into account from now on (once: the list is shared
    /// by every version, and changes in place).
    pub fn block_with(&self, blocked: Arc<Blocked>) {
        let _ = self.blocked.set(blocked);
    }

    /// What a request for the user at `position`, whose feed starts at
    /// `base`, passes over; `rows` from [`Self::marks_of`].
    #[inline]
    fn skip<'a>(
        &'a self,
        rows: &'a Option<(u64, RowsGuard)>,
        position: u32,
        base: usize,
        feed: &'a [u32],
    ) -> Skip<'a> {
        let given = self.given.get().zip(rows.as_ref());
        Skip {
            given: given
                .and_then(|(given, (_, rows))| given.marks(rows, position, base, &self.table)),
            keeper: &self.given,
            generation: rows.as_ref().map(|&(generation, _)| generation),
            blocked: self
                .blocked
                .get()
                .map(Arc::as_ref)
                .filter(|b| !b.is_empty()),
            feed,
        }
    }

    /// The generation and rows of marks a request for `user` (at
    /// `position`) reads, held while it reads them; what the version
    /// before gave the user carried first, while that is being done
    /// (`crate::carry`). The generation is read before the catch-up check:
    /// a request that sees a carry's new generation also sees the catching
    /// up it opened before bumping it.
    #[inline]
    fn marks_of(&self, user: UserId, position: u32) -> Option<(u64, RowsGuard)> {
        let given = self.given.get()?;
        let rows = given.load_rows();
        given.catch_up(user, position, self);
        Some(rows)
    }

    /// The positions given under the version served before, if any.
    pub fn given(&self) -> Option<&Given> {
        self.given.get()
    }

    /// The positions given before, made by `make` on first use.
    pub fn given_or_init(&self, make: impl FnOnce() -> Given) -> &Given {
        self.given.get_or_init(make)
    }

    /// Appends the items of the feed in `range` that are not passed over,
    /// and counts the blocked ones passed over.
    #[inline]
    fn extend(out: &mut Vec<ItemId>, skip: &Skip<'_>, range: std::ops::Range<u32>) {
        let (start, end) = (range.start as usize, range.end as usize);
        if !skip.any() {
            out.extend(skip.feed[start..end].iter().map(|&id| ItemId::new(id)));
            return;
        }
        let mut blocked = 0;
        for at in start..end {
            if skip.given(at) {
                continue;
            }
            if skip.blocked(at) {
                blocked += 1;
                continue;
            }
            out.push(ItemId::new(skip.feed[at]));
        }
        if let Some(list) = skip.blocked {
            list.count_skipped(blocked);
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
    /// What a request for `user` of up to `max` items works with: their
    /// position, the step, their feed's length, where it starts and the
    /// feed.
    ///
    /// # Errors
    /// [`StorageError::UnknownUser`] when the table has no feed for `user`.
    #[inline]
    fn prepare(
        &self,
        user: UserId,
        max: usize,
    ) -> Result<(u32, u32, u32, usize, &[u32]), StorageError> {
        // Look the user up before touching the offset map, so that requests
        // for unknown users never grow it.
        let (position, base, feed) = self
            .table
            .locate(user)
            .ok_or(StorageError::UnknownUser(user))?;
        let want = u32::try_from(max).unwrap_or(u32::MAX);
        // A feed is at most u32::MAX long: the table holds at most that many items per user.
        let len = feed.len() as u32;
        Ok((position, want, len, base, feed))
    }

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
        let (position, want, len, base, feed) = self.prepare(user, max)?;
        let rows = self.marks_of(user, position);
        let skip = self.skip(&rows, position, base, feed);
        let range = self
            .offsets
            .advance_to(position, len, |from| skip.end(from, want, len));
        let before = out.len();
        Self::extend(out, &skip, range.clone());
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
        let (position, want, len, base, feed) = self.prepare(user, max)?;
        let rows = self.marks_of(user, position);
        let skip = self.skip(&rows, position, base, feed);
        let end = |from: u32| skip.end(from, want, len);
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
        Self::extend(out, &skip, range.clone());
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

#[cfg(test)]
mod tests {
    use feed_domain::UserId;

    use crate::carry::tests::{swap, version};

    /// A request that read its version's marks, then stalled while a
    /// reload and a rollback brought the version back, advances nothing:
    /// the marks it holds miss what the version in between gave.
    #[test]
    fn a_request_stalled_across_a_rollback_takes_nothing() {
        let v1 = version(&[7], &[(1..=20).collect()]);
        let v2 = version(&[7], &[(1..=20).rev().collect()]);
        for stall_after_first_rollback in [false, true] {
            let (position, base, feed) = v1.0.table().locate(UserId::new(7)).unwrap();
            let rows = v1.0.marks_of(UserId::new(7), position);
            let skip = v1.0.skip(&rows, position, base, feed);
            swap(&v1, &v2);
            let mut out = Vec::new();
            v2.0.take_now(UserId::new(7), 3, &mut out).unwrap();
            swap(&v2, &v1);
            // The stalled request's step, now that its cell is open again.
            let range =
                v1.0.offsets()
                    .advance_to(position, 20, |from| skip.end(from, 3, 20));
            assert!(range.is_empty(), "{range:?} ({stall_after_first_rollback})");
            // A request that reads the marks now skips what v2 gave.
            let mut fresh = Vec::new();
            v1.0.take_now(UserId::new(7), 3, &mut fresh).unwrap();
            assert!(
                fresh.iter().all(|item| !out.contains(item)),
                "{fresh:?} after {out:?}"
            );
        }
    }
}
