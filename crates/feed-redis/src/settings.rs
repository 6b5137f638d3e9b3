//! The `[redis]` section of the configuration ([`RedisSettings`]): the
//! cluster's seed nodes, time limits, pool and circuit breaker, with the
//! checks of their keys and the [`ClusterSettings`] and [`BreakerSettings`]
//! they build.
//!
//! A plain serde type: `feed-server` reads the file and the environment
//! into it; this crate knows nothing of how it was read.

use std::time::Duration;

use feed_domain::InvalidSetting;
use serde::Deserialize;

use crate::{BreakerSettings, ClusterSettings};

/// `[redis]`: the Redis Cluster, for `storage.kind = "redis"` and
/// `feed-server redis-load`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Seed nodes, `redis://HOST:PORT`, separated by commas.
    pub nodes: String,
    /// The longest a call to the cluster may take.
    pub timeout_ms: u64,
    /// Multiplexed cluster connections calls are spread over.
    pub pool_size: usize,
    /// How often the version pointer is read.
    pub poll_ms: u64,
    /// Failed calls in a row that open a slot group's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before a probe.
    pub breaker_open_ms: u64,
}

impl RedisSettings {
    /// Checks that every number of `[redis]` is in its range. The node
    /// list is checked by [`Self::node_list`], only where the cluster is
    /// used.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first key out of range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        for (key, value, low, high) in [
            ("redis.timeout_ms", self.timeout_ms, 1, 60_000),
            ("redis.pool_size", self.pool_size as u64, 1, 64),
            ("redis.poll_ms", self.poll_ms, 10, 1_000),
            (
                "redis.breaker_failures",
                u64::from(self.breaker_failures),
                1,
                1_000_000,
            ),
            ("redis.breaker_open_ms", self.breaker_open_ms, 1, 3_600_000),
        ] {
            if !(low..=high).contains(&value) {
                return Err(InvalidSetting {
                    key,
                    reason: format!("{value} is not between {low} and {high}"),
                });
            }
        }
        Ok(())
    }

    /// The seed nodes, checked: each `redis://HOST:PORT`.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `redis.nodes`.
    pub fn node_list(&self) -> Result<Vec<String>, InvalidSetting> {
        parse_nodes(&self.nodes).map_err(|reason| InvalidSetting {
            key: "redis.nodes",
            reason,
        })
    }

    /// The cluster connection settings.
    ///
    /// # Errors
    /// As [`Self::node_list`].
    pub fn cluster(&self) -> Result<ClusterSettings, InvalidSetting> {
        Ok(ClusterSettings {
            nodes: self.node_list()?,
            timeout: Duration::from_millis(self.timeout_ms),
            pool_size: self.pool_size,
        })
    }

    /// The circuit breaker's settings.
    pub const fn breaker(&self) -> BreakerSettings {
        BreakerSettings {
            failures: self.breaker_failures,
            open_for: Duration::from_millis(self.breaker_open_ms),
        }
    }
}

/// `redis://HOST:PORT[,...]` as a list, or why not.
///
/// # Errors
/// Why the list is empty, or which node is not `redis://HOST:PORT`.
pub fn parse_nodes(nodes: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = nodes
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err("must name at least one node, as redis://HOST:PORT".into());
    }
    for node in &list {
        let address = node
            .strip_prefix("redis://")
            .ok_or_else(|| format!("`{node}` does not start with redis://"))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("`{node}` has no :PORT"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{node}` is not redis://HOST:PORT"));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis() -> RedisSettings {
        RedisSettings {
            nodes: "redis://127.0.0.1:7000, redis://127.0.0.1:7001".into(),
            timeout_ms: 200,
            pool_size: 4,
            poll_ms: 100,
            breaker_failures: 5,
            breaker_open_ms: 1_000,
        }
    }

    /// `outcome` is the error whose whole message is `expected`.
    fn check<T: std::fmt::Debug>(outcome: Result<T, InvalidSetting>, expected: &str) {
        assert_eq!(outcome.unwrap_err().to_string(), expected);
    }

    #[test]
    fn numbers_out_of_range_name_their_key() {
        assert!(redis().validate().is_ok());
        let mut slow = redis();
        slow.poll_ms = 5;
        check(
            slow.validate(),
            "configuration: redis.poll_ms: 5 is not between 10 and 1000",
        );
        let mut pool = redis();
        pool.pool_size = 0;
        check(
            pool.validate(),
            "configuration: redis.pool_size: 0 is not between 1 and 64",
        );
    }

    #[test]
    fn nodes_are_redis_urls_with_a_port() {
        assert_eq!(redis().cluster().unwrap().nodes.len(), 2);
        for (nodes, expected) in [
            (" , ", "must name at least one node, as redis://HOST:PORT"),
            (
                "127.0.0.1:7000",
                "`127.0.0.1:7000` does not start with redis://",
            ),
            ("redis://host", "`redis://host` has no :PORT"),
            (
                "redis://host:0",
                "`redis://host:0` is not redis://HOST:PORT",
            ),
            ("redis://:7000", "`redis://:7000` is not redis://HOST:PORT"),
        ] {
            let settings = RedisSettings {
                nodes: nodes.into(),
                ..redis()
            };
            check(
                settings.node_list(),
                &format!("configuration: redis.nodes: {expected}"),
            );
        }
    }
}
