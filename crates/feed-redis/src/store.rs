//! [`RedisFeedStorage`]: the [`FeedStorage`] port over the cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwapOption;

use feed_domain::{
    BlockedItems, FeedStorage, IdempotencyKey, ItemId, Keyed, RankedFeeds, StorageError, Taken,
    UserId,
};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, ErrorKind, ServerErrorKind};

use crate::breaker::{Admit, Breaker};
use crate::carry::{self, Before, CARRIED};
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
    feeds: Arc<F>,
    cluster: Arc<Cluster>,
    breaker: Arc<Breaker>,
    version: u64,
    /// Set when the cluster no longer keeps `version` (see
    /// [`Self::retire`]).
    retired: Arc<AtomicBool>,
    /// The items taken down, passed over in a page (`crate::blocklist`).
    blocked: Option<Arc<dyn BlockedItems>>,
    /// The version the cluster keeps as previous, while it keeps one: what
    /// it gave is carried ([`crate::carry`]). The watcher sets it at each
    /// switch.
    before: Arc<ArcSwapOption<Before>>,
}

impl<F: RankedFeeds> RedisFeedStorage<F> {
    /// Storage over `version`, whose feeds are `feeds`.
    pub fn new(feeds: F, cluster: Arc<Cluster>, breaker: Arc<Breaker>, version: u64) -> Self {
        Self::retired_by(Arc::new(feeds), cluster, breaker, version, Arc::default())
    }

    /// [`Self::new`], retired when `retired` is set (the watcher keeps it).
    pub(crate) fn retired_by(
        feeds: Arc<F>,
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
            before: Arc::default(),
        }
    }

    /// Carries from the version `before` holds, whenever it holds one
    /// (see [`crate::carry`]); shared with whoever switches versions.
    #[must_use]
    pub fn carry_from(mut self, before: Arc<ArcSwapOption<Before>>) -> Self {
        self.before = before;
        self
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
    /// [`RedisStoreError::Corrupt`]). With a previous version kept, that
    /// is the carried request ([`carry::CARRIED`]) over the user's keys in
    /// both. The time limit covers the whole call, connecting this
    /// thread's connection included, so no request waits longer even
    /// while it is made.
    async fn advance(
        &self,
        user: UserId,
        (position, feed): (u32, &[u32]),
        by: usize,
        key: Option<IdempotencyKey>,
    ) -> Result<Step, RedisStoreError> {
        let limit = self.cluster.timeout();
        let before = self.before.load();
        let call = async {
            let mut connection = self.cluster.connection().await?;
            match before.as_deref() {
                // Settled with nothing marked ahead (see `Before`): the
                // plain command gives what the carried request would.
                Some(before) if key.is_some() || !before.is_clear(position) => {
                    let (step, clear) = self
                        .advance_carried(&mut connection, user, feed, by, key, before)
                        .await?;
                    if clear {
                        before.set_clear(position, self.feeds.users());
                    }
                    Ok(step)
                }
                _ => self.advance_alone(&mut connection, user, by, key).await,
            }
        };
        match tokio::time::timeout(limit, call).await {
            Ok(answer) => answer,
            Err(_) => Err(RedisStoreError::Timeout(limit)),
        }
    }

    /// [`Self::advance`] with no previous version: one `HINCRBY`, or the
    /// [`PAGE`] script with a retry key.
    async fn advance_alone(
        &self,
        connection: &mut ClusterConnection,
        user: UserId,
        by: usize,
        key: Option<IdempotencyKey>,
    ) -> Result<Step, RedisStoreError> {
        let mut name = [0; keys::OFFSET_KEY_BYTES];
        let name = keys::offset_in(user.get(), self.version, &mut name);
        let corrupt = |what: String| self.corrupt(user, &what);
        let offset = |end: i64| self.offset(user, end);
        let moved = |end: u64| {
            let start = end
                .checked_sub(by as u64)
                .ok_or_else(|| corrupt(format!("offset {end} after a step of {by}")))?;
            Ok(Step::fresh(start, end))
        };
        if key.is_none() {
            match connection.hincr(name, keys::OFFSET_FIELD, by).await {
                Ok(end) => return moved(offset(end)?),
                // A counter of the earlier layout, or a key another
                // version sealed: the script says which.
                Err(error)
                    if error.code() == Some("WRONGTYPE")
                        || error.kind() == ErrorKind::Server(ServerErrorKind::ResponseError) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let key = key.map_or(String::new(), |key| key.hash().to_string());
        let (tag, value): (i64, i64) = PAGE
            .key(name)
            .arg(by)
            .arg(key)
            .invoke_async(connection)
            .await?;
        match tag {
            carry::tag::PAGE => moved(offset(value)?),
            carry::tag::REPLAYED => {
                let start = offset(value)?;
                Ok(Step::Page {
                    start,
                    end: start.saturating_add(by as u64),
                    marks: Vec::new(),
                    replayed: true,
                })
            }
            carry::tag::OTHER_SIZE => self.other_size(user, value),
            carry::tag::SEALED => Err(RedisStoreError::Sealed(self.version)),
            _ => Err(corrupt(format!("answer {tag} from the page script"))),
        }
    }

    /// [`Self::advance`] while the cluster keeps `before`: the carried
    /// request, and its second call with the marks it asks for.
    async fn advance_carried(
        &self,
        connection: &mut ClusterConnection,
        user: UserId,
        feed: &[u32],
        by: usize,
        key: Option<IdempotencyKey>,
        before: &Before,
    ) -> Result<(Step, bool), RedisStoreError> {
        let mut name = [0; keys::OFFSET_KEY_BYTES];
        let name = keys::offset_in(user.get(), self.version, &mut name);
        let mut old = [0; keys::OFFSET_KEY_BYTES];
        let old = keys::offset_in(user.get(), before.version, &mut old);
        let corrupt = |what: String| self.corrupt(user, &what);
        let offset = |at: i64| self.offset(user, at);
        let key = key.map_or(String::new(), |key| key.hash().to_string());
        // The marks the script asked for: (marks, to, from).
        let mut sent: Option<(Vec<u8>, u64, u64)> = None;
        for _ in 0..3 {
            let mut call = CARRIED.key(name);
            call.key(old)
                .arg(by)
                .arg(&key)
                .arg(feed.len())
                .arg(before.version)
                .arg(before.epoch)
                .arg(u8::from(before.gone));
            if let Some((marks, to, from)) = &sent {
                call.arg(marks.as_slice()).arg(*to).arg(*from);
            }
            let (tag, first, second, marks, clear): (i64, i64, i64, Vec<u8>, i64) =
                call.invoke_async(connection).await?;
            match tag {
                carry::tag::PAGE | carry::tag::REPLAYED => {
                    let step = Step::Page {
                        start: offset(first)?,
                        end: offset(second)?,
                        marks,
                        replayed: tag == carry::tag::REPLAYED,
                    };
                    return Ok((step, clear == 1));
                }
                carry::tag::OTHER_SIZE => {
                    return self.other_size(user, first).map(|step| (step, false));
                }
                carry::tag::SEALED => return Err(RedisStoreError::Sealed(self.version)),
                carry::tag::MISSING => {
                    let Some(feeds) = &before.feeds else {
                        return Err(RedisStoreError::NotMapped(before.version));
                    };
                    let (from, to) = (offset(first)?, offset(second)?);
                    let given = feeds.feed(user).unwrap_or_default();
                    let end = (to as usize).min(given.len());
                    let given = &given[(from as usize).min(end)..end];
                    sent = Some((carry::marks(given, feed), to, from));
                }
                _ => return Err(corrupt(format!("answer {tag} from the carried script"))),
            }
        }
        Err(corrupt(
            "the previous version's offset kept moving while its marks were sent".to_owned(),
        ))
    }

    /// The error of data in the cluster that no frontend writes.
    fn corrupt(&self, user: UserId, what: &str) -> RedisStoreError {
        RedisStoreError::Corrupt(format!("user {user}: {what} in version {}", self.version))
    }

    /// An offset a script or `HINCRBY` answered: never negative.
    fn offset(&self, user: UserId, value: i64) -> Result<u64, RedisStoreError> {
        u64::try_from(value).map_err(|_| self.corrupt(user, &format!("offset {value}")))
    }

    /// The size of the latest retry key's page, answered for another size.
    fn other_size(&self, user: UserId, value: i64) -> Result<Step, RedisStoreError> {
        u32::try_from(value)
            .map(Step::OtherSize)
            .map_err(|_| self.corrupt(user, &format!("a retry key of size {value}")))
    }

    /// [`Self::advance`] for a user the snapshot knows, unless the version
    /// is retired, behind the breaker of the user's slots.
    async fn guarded(
        &self,
        user: UserId,
        found: (u32, &[u32]),
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
        match self.advance(user, found, by, key).await {
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
    /// The page is positions `start..end` of the feed but those marked in
    /// `marks` (from `start`'s byte on; see [`carry::is_marked`]): a new
    /// one, or the latest retry key's again (`replayed`).
    Page {
        start: u64,
        end: u64,
        marks: Vec<u8>,
        replayed: bool,
    },
    /// The retry key was the latest, with this other size.
    OtherSize(u32),
}

impl Step {
    const fn fresh(start: u64, end: u64) -> Self {
        Self::Page {
            start,
            end,
            marks: Vec::new(),
            replayed: false,
        }
    }
}

/// The items of `feed` at positions `start..end` (cut at its end), but
/// those `marks` marks (given under the version before) and those
/// `blocked` holds (counted there), appended to `out`.
fn page(
    feed: &[u32],
    (start, end): (u64, u64),
    marks: &[u8],
    blocked: Option<&dyn BlockedItems>,
    out: &mut Vec<ItemId>,
) -> Taken {
    let len = feed.len() as u64;
    let end = end.min(len);
    let start = start.min(end);
    let taken = &feed[start as usize..end as usize];
    let before = out.len();
    let blocked = blocked.filter(|list| !list.is_empty());
    if marks.is_empty() && blocked.is_none() {
        out.extend(taken.iter().map(|&id| ItemId::new(id)));
    } else {
        let mut skipped = 0;
        for (at, &id) in (start..).zip(taken) {
            if carry::is_marked(marks, start, at) {
                continue;
            }
            if blocked.is_some_and(|list| list.contains(id)) {
                skipped += 1;
                continue;
            }
            out.push(ItemId::new(id));
        }
        if let Some(list) = blocked {
            list.count_skipped(skipped);
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
/// page again, `{2, its size}` for the latest key with another size and
/// `{3, 0}` for a key another version sealed (`crate::carry`).
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
local n = redis.call('HGET', name, 'n')
if n and string.match(n, '^[su]%d+:%d+$') then return {3, 0} end
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
        let found = self
            .feeds
            .lookup(user)
            .ok_or(StorageError::UnknownUser(user))?;
        let feed = found.1;
        match self.guarded(user, found, max, None).await? {
            Step::Page {
                start,
                end,
                marks,
                replayed: false,
            } => Ok(page(
                feed,
                (start, end),
                &marks,
                self.blocked.as_deref(),
                out,
            )),
            Step::Page { .. } | Step::OtherSize(_) => Err(StorageError::backend(
                self.corrupt(user, "a page without a key replayed"),
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
        let found = self
            .feeds
            .lookup(user)
            .ok_or(StorageError::UnknownUser(user))?;
        let feed = found.1;
        let (start, end, marks, replayed) = match self.guarded(user, found, max, Some(key)).await? {
            Step::Page {
                start,
                end,
                marks,
                replayed,
            } => (start, end, marks, replayed),
            Step::OtherSize(first) => return Ok(Keyed::OtherSize { first }),
        };
        let taken = page(feed, (start, end), &marks, self.blocked.as_deref(), out);
        // A start past u32::MAX is past every feed's end: the page is empty.
        let start = u32::try_from(start).unwrap_or(u32::MAX);
        Ok(if replayed {
            Keyed::Replayed { taken, start }
        } else {
            Keyed::Fresh { taken, start }
        })
    }
}
