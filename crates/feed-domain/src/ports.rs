//! The ports: what [`crate::FeedService`] needs from the outside world.
//!
//! Every port is `Send + Sync + 'static`, because one service value is shared
//! by every worker thread. Implementations must never block: they run on the
//! request path.
//!
//! [`FeedStorage`] is async-capable: a store across the network answers with a
//! future the request awaits, so no worker thread waits on a socket, while an
//! in-process store returns a future that is already complete
//! ([`std::future::Ready`]). The future is the implementation's own concrete
//! type (return-position `impl Future` in the trait): nothing is boxed and
//! nothing allocated, and no runtime is named here.

use std::future::Future;
use std::sync::Arc;

use crate::error::{FeedError, RandomFillError, StorageError};
use crate::types::{IdempotencyKey, ItemId, UserId};

/// What [`FeedStorage::take_next`] handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Personal items appended to the buffer.
    pub count: usize,
    /// Personal items still left for the user after this call.
    pub remaining: usize,
}

/// What [`FeedStorage::take_keyed`] did with a request that carries an
/// idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyed {
    /// The key is not the user's latest: a new page was taken exactly as
    /// [`FeedStorage::take_next`] takes one, starting at feed position
    /// `start`, and the store now remembers the key, `start` and the size
    /// as the user's latest keyed request.
    Fresh {
        /// The items taken.
        taken: Taken,
        /// The feed position the page starts at.
        start: u32,
    },
    /// The key is the user's latest, with the same size: the items of that
    /// page were appended again (the feed from `start`, at most the size,
    /// from the same data version), and nothing advanced.
    Replayed {
        /// The items appended again.
        taken: Taken,
        /// The feed position the page starts at.
        start: u32,
    },
    /// The key is the user's latest but was used with another size: nothing
    /// was appended and nothing advanced.
    OtherSize {
        /// The size the key was used with.
        first: u32,
    },
}

/// Where users' personal feeds live, together with each user's progress.
pub trait FeedStorage: Send + Sync + 'static {
    /// Appends up to `max` of `user`'s next personal items to `out`, in feed
    /// order, and advances the user's saved offset by exactly the number
    /// appended.
    ///
    /// Taking and advancing is one atomic step: two concurrent calls for the
    /// same user never hand out the same item. The offset never moves back
    /// and never passes the end of the feed. The items of one feed are
    /// distinct.
    ///
    /// The returned future must be `Send` and must not wait longer than the
    /// store's own time limit: a caller awaits it on the request path.
    ///
    /// # Errors
    /// [`StorageError::UnknownUser`] when the storage has no feed for `user`;
    /// [`StorageError::Backend`] when it cannot be read (or did not answer in
    /// time). On error nothing is appended; the offset is unchanged unless
    /// the store cannot tell (a remote store that timed out may have
    /// advanced it: those items are skipped, never handed out twice).
    fn take_next(
        &self,
        user: UserId,
        max: usize,
        out: &mut Vec<ItemId>,
    ) -> impl Future<Output = Result<Taken, StorageError>> + Send;

    /// [`Self::take_next`] for a request that carries an idempotency key:
    /// if `key` is the user's latest keyed request in the data version
    /// served now, its page again ([`Keyed::Replayed`], or
    /// [`Keyed::OtherSize`] when `max` differs), otherwise a new page
    /// ([`Keyed::Fresh`]) and `key` becomes the latest. The check, the
    /// advance and the new memory are one atomic step per user, kept as
    /// durably as the user's offset. A store keeps one key a user: a retry
    /// must come before the user's next keyed request.
    ///
    /// # Errors
    /// As [`Self::take_next`]; on error the latest key is unchanged unless
    /// the store cannot tell.
    fn take_keyed(
        &self,
        user: UserId,
        max: usize,
        key: IdempotencyKey,
        out: &mut Vec<ItemId>,
    ) -> impl Future<Output = Result<Keyed, StorageError>> + Send;
}

/// The users' ranked feeds of one data version, read-only: for a storage
/// that keeps the users' progress elsewhere (a frontend over the cluster
/// reads the items from a snapshot it maps and moves the progress in the
/// cluster).
pub trait RankedFeeds: Send + Sync + 'static {
    /// `user`'s whole feed as raw item ids ([`ItemId::get`]), distinct and
    /// never 0, in rank order; `None` for a user without a feed. Never
    /// fails and never blocks: the feeds are in memory.
    fn feed(&self, user: UserId) -> Option<&[u32]>;

    /// How many users have a feed: their positions are `0..users()`.
    fn users(&self) -> u32 {
        0
    }

    /// [`Self::feed`], with the user's position among the users (below
    /// [`Self::users`]), so that a storage can keep a bit a user. By
    /// default no user has a position: `u32::MAX`.
    fn lookup(&self, user: UserId) -> Option<(u32, &[u32])> {
        self.feed(user).map(|feed| (u32::MAX, feed))
    }
}

/// The items taken down, as requests check them (in a few instructions:
/// every request asks for each item it would serve) and as the owner of a
/// blocklist changes them. Shared by every version a server holds.
pub trait BlockedItems: std::fmt::Debug + Send + Sync + 'static {
    /// Whether `item` (a raw [`ItemId`]) is blocked.
    fn contains(&self, item: u32) -> bool;
    /// Blocks (`on`) or unblocks `item`; whether that changed anything.
    fn set(&self, item: u32, on: bool) -> bool;
    /// How many items are blocked.
    fn len(&self) -> usize;
    /// Whether none is.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every blocked item, in id order.
    fn items(&self) -> Vec<u32>;
    /// Counts `n` personal items passed over because they were blocked.
    fn count_skipped(&self, n: usize);
    /// Personal items passed over because they were blocked, since start.
    fn skipped(&self) -> u64;
}

/// A source of random catalog items, used when a personal feed runs short.
pub trait RandomFeed: Send + Sync + 'static {
    /// Appends `count` random catalog items to `items`, each distinct from
    /// every item already in `items` and from each other. Terminates in
    /// bounded time whatever is in `items`.
    ///
    /// # Errors
    /// [`RandomFillError::Shortfall`] when the catalog cannot supply that
    /// many distinct items; the items it could supply are still appended.
    fn fill(&self, items: &mut Vec<ItemId>, count: usize) -> Result<(), RandomFillError>;

    /// [`Self::fill`], drawing from a generator seeded with `seed`: the same
    /// seed, catalog and `items` give the same items, so that a retried
    /// request is answered with the same fill.
    ///
    /// # Errors
    /// As [`Self::fill`].
    fn fill_seeded(
        &self,
        items: &mut Vec<ItemId>,
        count: usize,
        seed: u64,
    ) -> Result<(), RandomFillError>;
}

/// Told about every failure on the feed path, for counting and logging.
pub trait ErrorRecorder: Send + Sync + 'static {
    /// Records that serving `user` met `error`. Must not fail or block.
    fn record(&self, user: UserId, error: &FeedError);
}

impl<T: FeedStorage> FeedStorage for Arc<T> {
    fn take_next(
        &self,
        user: UserId,
        max: usize,
        out: &mut Vec<ItemId>,
    ) -> impl Future<Output = Result<Taken, StorageError>> + Send {
        (**self).take_next(user, max, out)
    }

    fn take_keyed(
        &self,
        user: UserId,
        max: usize,
        key: IdempotencyKey,
        out: &mut Vec<ItemId>,
    ) -> impl Future<Output = Result<Keyed, StorageError>> + Send {
        (**self).take_keyed(user, max, key, out)
    }
}

impl<T: RankedFeeds + ?Sized> RankedFeeds for Arc<T> {
    fn feed(&self, user: UserId) -> Option<&[u32]> {
        (**self).feed(user)
    }

    fn users(&self) -> u32 {
        (**self).users()
    }

    fn lookup(&self, user: UserId) -> Option<(u32, &[u32])> {
        (**self).lookup(user)
    }
}

impl<T: RandomFeed + ?Sized> RandomFeed for Arc<T> {
    fn fill(&self, items: &mut Vec<ItemId>, count: usize) -> Result<(), RandomFillError> {
        (**self).fill(items, count)
    }

    fn fill_seeded(
        &self,
        items: &mut Vec<ItemId>,
        count: usize,
        seed: u64,
    ) -> Result<(), RandomFillError> {
        (**self).fill_seeded(items, count, seed)
    }
}

impl<T: ErrorRecorder + ?Sized> ErrorRecorder for Arc<T> {
    fn record(&self, user: UserId, error: &FeedError) {
        (**self).record(user, error);
    }
}
