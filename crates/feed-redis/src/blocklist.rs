//! The blocklist over the cluster: the set of items taken down, changed by
//! any frontend's `POST /admin/blocklist` ([`RedisBlocklist`]) and followed
//! by every frontend ([`Follower`]), each of which checks its own copy (a
//! [`BlockedItems`]) on its request path.
//!
//! Two keys under `{ff}` (one slot, so a change is one atomic script):
//! [`keys::BLOCKED`], the set, and [`keys::BLOCK_LOG`], a stream of the
//! changes (fields `add` and `remove`, comma lists), trimmed to about
//! [`LOG_ENTRIES`]. A frontend reads the set whole once, then every
//! `redis.poll_ms` only the changes after the last one it applied: a
//! change reaches every frontend within a poll (plus a round trip), and
//! nobody rereads the whole set. If the log was trimmed past the last
//! change a frontend applied, or its count differs from the set's once
//! caught up, it reads the set whole again.

use std::sync::Arc;

use feed_domain::{BlockedItems, BlocklistControl, BlocklistError, BlocklistPlan, ItemId};
use slog::{Logger, info};

use crate::ClusterSettings;
use crate::cluster::Cluster;
use crate::error::RedisStoreError;
use crate::keys;

/// Changes the log keeps for frontends that fall behind.
pub const LOG_ENTRIES: u64 = 100_000;

/// Changes read a poll, at most.
const BATCH: usize = 1_000;

/// Applies a change: SREM then SADD in chunks (Lua's `unpack` limit), one
/// log entry, and the set's size.
const CHANGE: &str = r"
local function ids(text)
  local list = {}
  for id in string.gmatch(text, '%d+') do list[#list + 1] = id end
  return list
end
local add, remove = ids(ARGV[1]), ids(ARGV[2])
for i = 1, #remove, 5000 do
  redis.call('SREM', KEYS[1], unpack(remove, i, math.min(i + 4999, #remove)))
end
for i = 1, #add, 5000 do
  redis.call('SADD', KEYS[1], unpack(add, i, math.min(i + 4999, #add)))
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'add', ARGV[1], 'remove', ARGV[2])
return redis.call('SCARD', KEYS[1])
";

/// A frontend's place in the change log.
#[derive(Debug, Default)]
pub struct Follower {
    /// The id of the last change applied; `None` before the first read.
    last: Option<String>,
}

impl Follower {
    /// Brings `local` up to date with the cluster: the whole set on the
    /// first call (or when behind beyond the log), the new changes after.
    /// Returns how many changes it applied.
    ///
    /// # Errors
    /// The cluster's error; `local` is then as it was, or part of the way:
    /// the next call goes on from the last change applied.
    pub async fn catch_up(
        &mut self,
        cluster: &Cluster,
        local: &dyn BlockedItems,
    ) -> Result<usize, RedisStoreError> {
        let mut connection = cluster.connection().await?;
        let limit = cluster.timeout();
        let Some(last) = self.last.clone() else {
            return self.reread(cluster, local).await;
        };
        let changes = range(
            &mut connection,
            limit,
            "XRANGE",
            &format!("({last}"),
            "+",
            BATCH,
        )
        .await?;
        if changes.is_empty() {
            return Ok(0);
        }
        // The first entry left must follow ours: if the log was trimmed
        // past it, changes were lost to us.
        let first = range(&mut connection, limit, "XRANGE", "-", "+", 1).await?;
        if first.first().is_some_and(|(id, _)| newer(id, &last)) {
            return self.reread(cluster, local).await;
        }
        let applied = changes.len();
        for (id, fields) in changes {
            apply(local, &fields);
            self.last = Some(id);
        }
        if applied < BATCH {
            let count: usize = crate::error::within(
                limit,
                redis::cmd("SCARD")
                    .arg(keys::BLOCKED)
                    .query_async(&mut connection),
            )
            .await?;
            if count != local.len() {
                return self.reread(cluster, local).await;
            }
        }
        Ok(applied)
    }

    /// Reads the set whole: the log's last id first, so that changes made
    /// meanwhile are applied again after it (in order: the same end).
    async fn reread(
        &mut self,
        cluster: &Cluster,
        local: &dyn BlockedItems,
    ) -> Result<usize, RedisStoreError> {
        let mut connection = cluster.connection().await?;
        let limit = cluster.timeout();
        let newest = range(&mut connection, limit, "XREVRANGE", "+", "-", 1).await?;
        let members: Vec<u32> = crate::error::within(
            limit,
            redis::cmd("SMEMBERS")
                .arg(keys::BLOCKED)
                .query_async(&mut connection),
        )
        .await?;
        let wanted: std::collections::HashSet<u32> = members.iter().copied().collect();
        for item in local.items() {
            if !wanted.contains(&item) {
                local.set(item, false);
            }
        }
        for item in members {
            local.set(item, true);
        }
        self.last = Some(
            newest
                .into_iter()
                .next()
                .map_or_else(|| "0-0".to_owned(), |(id, _)| id),
        );
        Ok(1)
    }
}

/// Up to `count` entries of the change log from `from` to `to` (`command`
/// `XRANGE`, or `XREVRANGE` newest first): id and fields.
async fn range(
    connection: &mut redis::cluster_async::ClusterConnection,
    limit: std::time::Duration,
    command: &str,
    from: &str,
    to: &str,
    count: usize,
) -> Result<Vec<(String, Vec<String>)>, RedisStoreError> {
    crate::error::within(
        limit,
        redis::cmd(command)
            .arg(keys::BLOCK_LOG)
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(count)
            .query_async(connection),
    )
    .await
}

/// Whether stream id `a` comes after `b` (`MS-SEQ`).
fn newer(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) > parse(b)
}

/// Applies one log entry's fields (`add`, `remove`) to `local`.
fn apply(local: &dyn BlockedItems, fields: &[String]) {
    let ids =
        |text: &str| -> Vec<u32> { text.split(',').filter_map(|id| id.parse().ok()).collect() };
    let field = |name: &str| {
        fields
            .chunks_exact(2)
            .find(|pair| pair[0] == name)
            .map(|pair| ids(&pair[1]))
            .unwrap_or_default()
    };
    for item in field("remove") {
        local.set(item, false);
    }
    for item in field("add") {
        local.set(item, true);
    }
}

/// How many fallback items of the version served would stay unblocked if
/// `blocked` said which are; `None` before a version is served.
pub type UnblockedLeft = dyn Fn(&dyn Fn(u32) -> bool) -> Option<usize> + Send + Sync;

/// `POST`/`GET /admin/blocklist` of a frontend: a change goes to the
/// cluster (every frontend follows it) and to this frontend's copy at once.
pub struct RedisBlocklist {
    cluster: ClusterSettings,
    local: Arc<dyn BlockedItems>,
    left: Arc<UnblockedLeft>,
    max_size: usize,
    logger: Logger,
}

impl std::fmt::Debug for RedisBlocklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBlocklist").finish_non_exhaustive()
    }
}

impl RedisBlocklist {
    /// Changes through `cluster`, this frontend's copy `local`; a change
    /// must leave at least `max_size` fallback items of the version served
    /// unblocked (`left` counts them).
    pub fn new(
        cluster: ClusterSettings,
        local: Arc<dyn BlockedItems>,
        left: Arc<UnblockedLeft>,
        max_size: usize,
        logger: Logger,
    ) -> Self {
        Self {
            cluster,
            local,
            left,
            max_size,
            logger,
        }
    }
}

impl BlocklistControl for RedisBlocklist {
    fn change(
        &self,
        add: &[ItemId],
        remove: &[ItemId],
        client: &str,
    ) -> Result<usize, BlocklistError> {
        let plan = BlocklistPlan::check(add, remove, &*self.local, self.max_size, |after| {
            (self.left)(after)
        })?;
        let list = |items: &[u32]| {
            items
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let blocked: usize = crate::load::blocking_connection(&self.cluster)
            .and_then(|mut connection| {
                redis::Script::new(CHANGE)
                    .key(keys::BLOCKED)
                    .key(keys::BLOCK_LOG)
                    .arg(list(&plan.add))
                    .arg(list(&plan.remove))
                    .arg(LOG_ENTRIES)
                    .invoke(&mut connection)
            })
            .map_err(|e| BlocklistError::Failed(format!("redis: {e}")))?;
        plan.apply(&*self.local);
        info!(self.logger, "blocklist changed";
            "client" => client.escape_debug().to_string(), "blocked" => blocked,
            "added" => plan.add.len(), "removed" => plan.remove.len(),
            "items_added" => BlocklistPlan::shown(&plan.add),
            "items_removed" => BlocklistPlan::shown(&plan.remove));
        Ok(blocked)
    }

    fn blocked(&self) -> &dyn BlockedItems {
        &*self.local
    }
}
