//! [`RedisFeedStorage`]: the [`FeedStorage`] port over the cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::LazyLock;

use feed_domain::{
    BlockedItems, FeedStorage, IdempotencyKey, ItemId, Keyed, RankedFeeds, StorageError, Taken,
    UserId,
};
use redis::AsyncCommands;

use crate::breaker::{Admit, Breaker};
use crate::cluster::Cluster;
use crate::error::RedisStoreError;
use crate::keys;

/// Users' feeds of one data version, read from the snapshot this frontend
/// maps (`F`), with their progress in the cluster.
///
/// The user's key in a version is a hash (see [`crate::keys`]): field `n`
/// is the offset, field `k` the latest retry key.
///
/// A request for a known user is one plain `HINCRBY` of `n` by the most
/// items wanted: Redis answers the new offset, and the items between the
/// old one (the new minus the increment) and the new one, cut at the
/// feed's end, are the user's. `HINCRBY` is atomic on the node that holds
/// the key, so two requests for one user through any frontends get
/// disjoint ranges. A request with a retry key is one small script on the
/// same key instead ([`PAGE`]): the check, the advance and the new `k` in
/// one atomic step, so a retry through another frontend finds it. An
/// unknown user costs the cluster nothing: the snapshot says so. Every
/// call is bounded by the cluster's time limit and guarded by the
/// [`Breaker`] of the user's slots: while those are open the call fails at
/// once, and the service answers from the fallback list.
#[derive(Debug, Clone)]
pub struct RedisFeedStorage<F> {
    feeds: F,
    cluster: Arc<Cluster>,
    breaker: Arc<Breaker>,
    version: u64,
    /// Set when the cluster no longer keeps `version` (see
    /// [`Self::retire`]).
    retired: Arc<AtomicBool>,
    /// The items taken down, passed over in a page (`crate::blocklist`).
    blocked: Option<Arc<dyn BlockedItems>>,
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
            blocked: None,
        }
    }

    /// Passes over the items of `blocked` in every page: the progress moves
    /// past them, and the service fills their places at random.
    #[must_use]
    pub fn block_with(mut self, blocked: Arc<dyn BlockedItems>) -> Self {
        self.blocked = Some(blocked);
        self
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

    /// Moves `user`'s offset `by` items on (`key`: as a keyed request),
    /// and says what happened (a negative offset is someone else's value:
    /// [`RedisStoreError::Corrupt`]). The time limit covers the whole call,
    /// connecting this thread's connection included, so no request waits
    /// longer even while it is made.
    async fn advance(
        &self,
        user: u64,
        by: usize,
        key: Option<IdempotencyKey>,
    ) -> Result<Step, RedisStoreError> {
        let mut name = [0; keys::OFFSET_KEY_BYTES];
        let name = keys::offset_in(user, self.version, &mut name);
        let limit = self.cluster.timeout();
        let corrupt = |what: String| {
            RedisStoreError::Corrupt(format!("user {user}: {what} in version {}", self.version))
        };
        let offset = |end: i64| u64::try_from(end).map_err(|_| corrupt(format!("offset {end}")));
        match tokio::time::timeout(limit, async {
            let mut connection = self.cluster.connection().await?;
            if key.is_none() {
                match connection.hincr(name, keys::OFFSET_FIELD, by).await {
                    Ok(end) => return Ok(Step::Moved(offset(end)?)),
                    // A counter of the earlier layout: the script makes it
                    // a hash first.
                    Err(error) if error.code() == Some("WRONGTYPE") => {}
                    Err(error) => return Err(error.into()),
                }
            }
            let key = key.map_or(String::new(), |key| key.hash().to_string());
            let (tag, value): (i64, i64) = PAGE
                .key(name)
                .arg(by)
                .arg(key)
                .invoke_async(&mut connection)
                .await?;
            match tag {
                0 => Ok(Step::Moved(offset(value)?)),
                1 => Ok(Step::Replayed(offset(value)?)),
                2 => u32::try_from(value)
                    .map(Step::OtherSize)
                    .map_err(|_| corrupt(format!("a retry key of size {value}"))),
                _ => Err(corrupt(format!("answer {tag} from the page script"))),
            }
        })
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(RedisStoreError::Timeout(limit)),
        }
    }

    /// [`Self::advance`] for a user the snapshot knows, unless the version
    /// is retired, behind the breaker of the user's slots.
    async fn guarded(
        &self,
        user: UserId,
        by: usize,
        key: Option<IdempotencyKey>,
    ) -> Result<Step, StorageError> {
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
        match self.advance(user.get(), by, key).await {
            Ok(step) => {
                self.breaker.succeeded(group, admitted);
                Ok(step)
            }
            Err(error) => {
                if error.is_node_failure() {
                    self.breaker.failed(group, admitted);
                } else {
                    // The node answered: it is up, whatever was wrong with this key.
                    self.breaker.succeeded(group, admitted);
                }
                Err(StorageError::backend(error))
            }
        }
    }
}

/// What one call did to a user's key.
enum Step {
    /// The offset moved; its new value.
    Moved(u64),
    /// The retry key was the latest: where its page starts.
    Replayed(u64),
    /// The retry key was the latest, with this other size.
    OtherSize(u32),
}

/// The items of `feed` from `start`, at most `max`, appended to `out`,
/// but for those `blocked` holds (counted there).
fn page(
    feed: &[u32],
    start: u64,
    max: usize,
    blocked: Option<&dyn BlockedItems>,
    out: &mut Vec<ItemId>,
) -> Taken {
    let len = feed.len() as u64;
    let end = start.saturating_add(max as u64).min(len);
    let taken = &feed[start.min(len) as usize..end as usize];
    let before = out.len();
    match blocked.filter(|list| !list.is_empty()) {
        None => out.extend(taken.iter().map(|&id| ItemId::new(id))),
        Some(list) => {
            out.extend(
                taken
                    .iter()
                    .filter(|&&id| !list.contains(id))
                    .map(|&id| ItemId::new(id)),
            );
            list.count_skipped(taken.len() - (out.len() - before));
        }
    }
    Taken {
        count: out.len() - before,
        remaining: (len - end) as usize,
    }
}

/// The page of a keyed request, as one atomic step on the user's key
/// (`KEYS[1]`) by `ARGV[1]` items with the key's hash `ARGV[2]`, answering
/// `{0, new offset}` for a new page, `{1, start}` for the latest key's
/// page again and `{2, its size}` for the latest key with another size.
/// With an empty `ARGV[2]` it only moves the offset. A counter of the
/// layout before keys (a string) becomes the hash's `n` first.
static PAGE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local name = KEYS[1]
if redis.call('TYPE', name).ok == 'string' then
  local n = redis.call('GET', name)
  redis.call('DEL', name)
  redis.call('HSET', name, 'n', n)
end
local size, key = ARGV[1], ARGV[2]
if key ~= '' then
  local latest = redis.call('HGET', name, 'k')
  if latest then
    local k, start, was = string.match(latest, '^(%d+):(%d+):(%d+)$')
    if k == key then
      if was ~= size then return {2, tonumber(was)} end
      return {1, tonumber(start)}
    end
  end
end
local n = redis.call('HINCRBY', name, 'n', size)
if key ~= '' then
  redis.call('HSET', name, 'k', key .. ':' .. string.format('%d', n - size) .. ':' .. size)
end
return {0, n}
",
    )
});

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
        match self.guarded(user, max, None).await? {
            Step::Moved(end) => Ok(page(
                feed,
                start_of(user, end, max)?,
                max,
                self.blocked.as_deref(),
                out,
            )),
            Step::Replayed(_) | Step::OtherSize(_) => Err(StorageError::backend(
                RedisStoreError::Corrupt(format!("user {user}: a page without a key replayed")),
            )),
        }
    }

    async fn take_keyed(
        &self,
        user: UserId,
        max: usize,
        key: IdempotencyKey,
        out: &mut Vec<ItemId>,
    ) -> Result<Keyed, StorageError> {
        let feed = self
            .feeds
            .feed(user)
            .ok_or(StorageError::UnknownUser(user))?;
        let step = self.guarded(user, max, Some(key)).await?;
        let (start, replayed) = match step {
            Step::Moved(end) => (start_of(user, end, max)?, false),
            Step::Replayed(start) => (start, true),
            Step::OtherSize(first) => return Ok(Keyed::OtherSize { first }),
        };
        let taken = page(feed, start, max, self.blocked.as_deref(), out);
        // A start past u32::MAX is past every feed's end: the page is empty.
        let start = u32::try_from(start).unwrap_or(u32::MAX);
        Ok(if replayed {
            Keyed::Replayed { taken, start }
        } else {
            Keyed::Fresh { taken, start }
        })
    }
}

/// Where the page that moved the offset to `end` by `max` starts. The
/// offset only grows, by at most `max` a call: anything below `max` is a
/// key someone else wrote, and its items are not handed out.
fn start_of(user: UserId, end: u64, max: usize) -> Result<u64, StorageError> {
    end.checked_sub(max as u64).ok_or_else(|| {
        StorageError::backend(RedisStoreError::Corrupt(format!(
            "user {user}: offset {end} after a step of {max}"
        )))
    })
}
