//! [`RedisFeedStorage`]: the [`FeedStorage`] port over the cluster.

use std::sync::Arc;

use feed_domain::{FeedStorage, ItemId, StorageError, Taken, UserId};
use redis::Script;

use crate::breaker::{Admit, Breaker};
use crate::cluster::Cluster;
use crate::error::{RedisStoreError, within};
use crate::keys;

/// Takes the next items of one user's feed and advances their offset, in
/// one atomic step on the node that holds both keys.
///
/// KEYS: the feed, the offset. ARGV: the most items to take. Returns nil
/// for a user without a feed (an empty feed is a feed: `{'', 0}`), else
/// `{items, remaining}` where `items` is the little-endian slice taken.
pub const TAKE_NEXT: &str = r"
local len = redis.call('STRLEN', KEYS[1])
if len == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
  return {'', 0}
end
local total = math.floor(len / 4)
local start = tonumber(redis.call('GET', KEYS[2]) or '0')
local stop = math.min(start + tonumber(ARGV[1]), total)
if stop <= start then return {'', total - math.min(start, total)} end
redis.call('SET', KEYS[2], stop)
return {redis.call('GETRANGE', KEYS[1], start * 4, stop * 4 - 1), total - stop}
";

/// Users' feeds of one data version in the cluster, with their progress.
///
/// Every call is one `EVALSHA` of [`TAKE_NEXT`], bounded by the cluster's
/// time limit and guarded by the [`Breaker`] of the user's slots: while
/// those are open the call fails at once, and the service answers from the
/// fallback list.
#[derive(Debug, Clone)]
pub struct RedisFeedStorage {
    cluster: Arc<Cluster>,
    breaker: Arc<Breaker>,
    script: Arc<Script>,
    version: u64,
}

impl RedisFeedStorage {
    /// Storage over `version`'s feeds.
    pub fn new(cluster: Arc<Cluster>, breaker: Arc<Breaker>, version: u64) -> Self {
        Self {
            cluster,
            breaker,
            script: Arc::new(Script::new(TAKE_NEXT)),
            version,
        }
    }

    /// The data version it serves.
    pub const fn version(&self) -> u64 {
        self.version
    }

    /// The breaker guarding it.
    pub const fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Loads [`TAKE_NEXT`] on every node, so that the first calls need no
    /// second round trip.
    ///
    /// # Errors
    /// The cluster's error or a timeout.
    pub async fn prepare(&self) -> Result<(), RedisStoreError> {
        let mut connection = self.cluster.connection();
        let invocation = self.script.prepare_invoke();
        within(
            self.cluster.timeout(),
            invocation.load_async(&mut connection),
        )
        .await
        .map(drop)
    }

    async fn call(&self, user: u64, max: usize) -> Result<Option<(Vec<u8>, u64)>, RedisStoreError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(keys::feed(user, self.version))
            .key(keys::offset(user, self.version))
            .arg(max);
        let mut connection = self.cluster.connection();
        within(
            self.cluster.timeout(),
            invocation.invoke_async(&mut connection),
        )
        .await
    }
}

impl FeedStorage for RedisFeedStorage {
    async fn take_next(
        &self,
        user: UserId,
        max: usize,
        out: &mut Vec<ItemId>,
    ) -> Result<Taken, StorageError> {
        let group = Breaker::group_of(keys::slot(user.get()));
        let admitted = self.breaker.admit(group);
        if admitted == Admit::Refuse {
            return Err(StorageError::backend(RedisStoreError::BreakerOpen));
        }
        let answer = self.call(user.get(), max).await;
        let (items, remaining) = match answer {
            Ok(Some(taken)) => taken,
            Ok(None) => {
                self.breaker.succeeded(group, admitted);
                return Err(StorageError::UnknownUser(user));
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
        self.breaker.succeeded(group, admitted);
        if items.len() % 4 != 0 || items.len() / 4 > max {
            return Err(StorageError::backend(RedisStoreError::Corrupt(format!(
                "user {user}: a slice of {} bytes for at most {max} items",
                items.len()
            ))));
        }
        let before = out.len();
        out.extend(
            items
                .chunks_exact(4)
                .map(|b| ItemId::new(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        );
        Ok(Taken {
            count: out.len() - before,
            remaining: usize::try_from(remaining).unwrap_or(usize::MAX),
        })
    }
}
