//! The Redis Cluster adapter of Fast Feed.
//!
//! Users' progress lives in a Redis Cluster, so that any number of
//! frontends serve them with nothing of their own to lose. The feeds do
//! not: a data version names a snapshot, and every frontend maps that
//! snapshot itself (the pattern LinkedIn's Venice calls Da Vinci). A request
//! costs the cluster one plain command on one key, not a script that reads
//! and returns a slice of the feed.
//!
//! - [`RedisFeedStorage`] is the domain's `FeedStorage` port over a
//!   version's feeds (any `RankedFeeds`: the caller's mapped snapshot):
//!   each call for a known user is one round trip, a `HINCRBY` of the
//!   user's offset (or, with a retry key, one small script on the same
//!   key) that the node holding it applies atomically, so two
//!   requests for one user through different frontends get disjoint
//!   ranges. (Replication is asynchronous, so after a failover the last
//!   moves may be lost and their items handed out again; a call whose
//!   answer is lost may have moved the offset, and those items are
//!   skipped.) Every call has a time limit, and a [`Breaker`] per group of
//!   slots fails calls at once while those slots' node is down; a version
//!   the cluster no longer keeps is retired, its calls failing at once.
//! - [`Cluster`] holds the frontends' connections (one per worker thread,
//!   driven by that thread) and reads the version pointer; [`Loader`]
//!   describes, publishes, rolls back and deletes versions ([`keys`] says
//!   where everything lives).
//! - [`Watcher`] is a frontend's data lifecycle: it follows the version
//!   pointer and serves each version whose snapshot the caller can open
//!   ([`NewVersion`], [`Unservable`]).
//! - [`publish`] owns a data version's lifecycle as the `redis-load` and
//!   `redis-rollback` commands run it: the order of [`Loader`]'s steps and
//!   the deletion policy (what is deleted when a load fails, and after a
//!   publish). The caller hands it the data set as plain data
//!   ([`DataSet`]: the snapshot's id and counts) and prints what it
//!   returns.
//!
//! - [`export`] reads every user's offset in the version served
//!   ([`ProgressScan`]: `SCAN` on each master, offsets read a page at a
//!   time), for `feed-server export-delivered`.
//!
//! - [`settings`] is its section of the configuration, `[redis]`
//!   ([`RedisSettings`]): the serde type, the checks of its keys and the
//!   [`ClusterSettings`] and [`BreakerSettings`] it builds.
//!
//! It knows the domain and the Redis client, and nothing of HTTP, the
//! configuration library (it only declares its section as a serde type) or
//! the in-memory adapters.

pub mod blocklist;
pub mod breaker;
pub mod carry;
pub mod cluster;
pub mod error;
pub mod export;
pub mod keys;
pub mod load;
pub mod publish;
pub mod settings;
pub mod store;
mod watch;

pub use blocklist::{Follower, RedisBlocklist, UnblockedLeft};
pub use breaker::{Admit, Breaker, BreakerSettings, BreakerState};
pub use carry::Before;
pub use cluster::{Cluster, ClusterSettings, Credentials, Pointers, VersionInfo};
pub use error::RedisStoreError;
pub use export::{ProgressScan, ScanCounts, ScanError};
pub use feed_domain::MAX_BLOCKED;
pub use load::{Loader, Published};
pub use publish::{Carry, Cleanup, DataSet, LeftBehind, LoadSummary, PublishError, RolledBack};
pub use settings::{RedisSettings, parse_nodes};
pub use store::RedisFeedStorage;
pub use watch::{NewVersion, Unservable, Watcher};
