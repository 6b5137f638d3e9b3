//! The Redis Cluster adapter of Fast Feed.
//!
//! Feeds and progress live in a Redis Cluster, so that any number of
//! stateless frontends can serve them:
//!
//! - [`RedisFeedStorage`] is the domain's `FeedStorage` port: each call is
//!   one round trip, a server-side script ([`store::TAKE_NEXT`]) that reads
//!   the slice and advances the offset atomically on the node holding the
//!   user, so requests for one user through different frontends never get
//!   the same item. Every call has a time limit, and a [`Breaker`] per
//!   group of slots fails calls at once while those slots' node is down.
//! - [`Cluster`] holds the frontends' connections and reads the version
//!   pointer; [`Loader`] writes, publishes, rolls back and deletes versions
//!   ([`keys`] says where everything lives).
//! - [`publish`] owns a data version's lifecycle as the `redis-load` and
//!   `redis-rollback` commands run it: the order of [`Loader`]'s steps and
//!   the deletion policy (what is deleted when a load fails, and after a
//!   publish). The caller hands it the data set as plain data
//!   ([`DataSet`] and `(user, items)` entries) and prints what it returns.
//!
//! - [`settings`] is its section of the configuration, `[redis]`
//!   ([`RedisSettings`]): the serde type, the checks of its keys and the
//!   [`ClusterSettings`] and [`BreakerSettings`] it builds.
//!
//! It knows the domain and the Redis client, and nothing of HTTP, the
//! configuration library (it only declares its section as a serde type) or
//! the in-memory adapters.

pub mod breaker;
pub mod cluster;
pub mod error;
pub mod keys;
pub mod load;
pub mod publish;
pub mod settings;
pub mod store;
mod watch;

pub use breaker::{Admit, Breaker, BreakerSettings, BreakerState};
pub use cluster::{Cluster, ClusterSettings, Credentials, VersionInfo};
pub use error::RedisStoreError;
pub use load::{Loader, Published};
pub use publish::{Cleanup, DataSet, LeftBehind, LoadSummary, Progress, PublishError, RolledBack};
pub use settings::{RedisSettings, parse_nodes};
pub use store::RedisFeedStorage;
pub use watch::Watcher;

/// `items` as the cluster stores them: little-endian `u32`s back to back.
pub fn encode_items(items: &[u32]) -> Vec<u8> {
    items.iter().flat_map(|item| item.to_le_bytes()).collect()
}

/// The items of a string written by [`encode_items`]; `None` when its
/// length is not a multiple of 4.
pub fn decode_items(bytes: &[u8]) -> Option<Vec<u32>> {
    bytes.len().is_multiple_of(4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn items_round_trip(items in prop::collection::vec(any::<u32>(), 0..300)) {
            prop_assert_eq!(super::decode_items(&super::encode_items(&items)), Some(items));
        }
    }

    #[test]
    fn a_ragged_string_is_refused() {
        assert_eq!(super::decode_items(&[1, 2, 3]), None);
    }
}
