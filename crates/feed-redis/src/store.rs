//! [`RedisFeedStorage`]: the [`FeedStorage`] port over the cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use feed_domain::{FeedStorage, ItemId, RankedFeeds, StorageError, Taken, UserId};
use redis::AsyncCommands;

use crate::breaker::{Admit, Breaker};
use crate::cluster::Cluster;
use crate::error::RedisStoreError;
use crate::keys;

/// Users' feeds of one data version, read from the snapshot this frontend
/// maps (`F`), with their progress in the cluster.
///
/// A request for a known user is one plain `INCRBY` of their offset key
/// by the most items wanted: Redis answers the new offset, and the items
/// between the old one (the new minus the increment) and the new one, cut
/// at the feed's end, are the user's. `INCRBY` is atomic on the node that
/// holds the key, so two requests for one user through any frontends get
/// disjoint ranges. An unknown user costs the cluster nothing: the
/// snapshot says so. Every call is bounded by the cluster's time limit and
/// guarded by the [`Breaker`] of the user's slots: while those are open
/// the call fails at once, and the service answers from the fallback list.
#[derive(Debug, Clone)]
pub struct RedisFeedStorage<F> {
    feeds: F,
    cluster: Arc<Cluster>,
    breaker: Arc<Breaker>,
    version: u64,
    /// Set when the cluster no longer keeps `version` (see
    /// [`Self::retire`]).
    retired: Arc<AtomicBool>,
}

impl<F: RankedFeeds> RedisFeedStorage<F> {
    /// Storage over `version`, whose feeds are `feeds`.
    pub fn new(feeds: F, cluster: Arc<Cluster>, breaker: Arc<Breaker>, version: u64) -> Self {
        Self::retired_by(feeds, cluster, breaker, version, Arc::default())
    }

    /// [`Self::new`], retired when `retired` is set (the watcher keeps it).
    pub(crate) const fn retired_by(
        feeds: F,
        cluster: Arc<Cluster>,
        breaker: Arc<Breaker>,
        version: u64,
        retired: Arc<AtomicBool>,
    ) -> Self {
        Self {
            feeds,
            cluster,
            breaker,
            version,
            retired,
        }
    }

    /// From now on every call fails with [`RedisStoreError::Retired`]
    /// (the service answers from the fallback list), it and its clones
    /// alike: the cluster no longer keeps this version, so its progress
    /// may be deleted, and moving it again would start users over. The
    /// watcher calls it when a publish dropped the version this frontend
    /// still serves.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// The data version it serves.
    pub const fn version(&self) -> u64 {
        self.version
    }

    /// The breaker guarding it.
    pub const fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Moves `user`'s offset `by` items on: the new offset (a negative one
    /// is someone else's value: [`RedisStoreError::Corrupt`]). The time limit
    /// covers the whole call, connecting this thread's connection
    /// included, so no request waits longer even while it is made.
    async fn advance(&self, user: u64, by: usize) -> Result<u64, RedisStoreError> {
        let mut key = [0; keys::OFFSET_KEY_BYTES];
        let key = keys::offset_in(user, self.version, &mut key);
        let limit = self.cluster.timeout();
        match tokio::time::timeout(limit, async {
            let mut connection = self.cluster.connection().await?;
            let end: i64 = connection.incr(key, by).await?;
            u64::try_from(end).map_err(|_| {
                RedisStoreError::Corrupt(format!(
                    "user {user}: offset {end} in version {}",
                    self.version
                ))
            })
        })
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(RedisStoreError::Timeout(limit)),
        }
    }
}

impl<F: RankedFeeds> FeedStorage for RedisFeedStorage<F> {
    async fn take_next(
        &self,
        user: UserId,
        max: usize,
        out: &mut Vec<ItemId>,
    ) -> Result<Taken, StorageError> {
        let feed = self
            .feeds
            .feed(user)
            .ok_or(StorageError::UnknownUser(user))?;
        if self.retired.load(Ordering::Relaxed) {
            return Err(StorageError::backend(RedisStoreError::Retired(
                self.version,
            )));
        }
        let group = Breaker::group_of(keys::slot(user.get()));
        let admitted = self.breaker.admit(group);
        if admitted == Admit::Refuse {
            return Err(StorageError::backend(RedisStoreError::BreakerOpen));
        }
        let end = match self.advance(user.get(), max).await {
            Ok(end) => {
                self.breaker.succeeded(group, admitted);
                end
            }
            Err(error) => {
                if error.is_node_failure() {
                    self.breaker.failed(group, admitted);
                } else {
                    // The node answered: it is up, whatever was wrong with this key.
                    self.breaker.succeeded(group, admitted);
                }
                return Err(StorageError::backend(error));
            }
        };
        let len = feed.len() as u64;
        // The offset only grows, by at most `max` a call: anything below
        // `max` is a key someone else wrote. Its items are not handed out.
        let Some(start) = end.checked_sub(max as u64) else {
            return Err(StorageError::backend(RedisStoreError::Corrupt(format!(
                "user {user}: offset {end} after a step of {max}"
            ))));
        };
        let taken = &feed[start.min(len) as usize..end.min(len) as usize];
        out.extend(taken.iter().map(|&id| ItemId::new(id)));
        Ok(Taken {
            count: taken.len(),
            remaining: (len - end.min(len)) as usize,
        })
    }
}
