//! The loader's side: numbers a data version, describes and publishes it,
//! rolls back, and deletes versions no longer kept. Blocking: it runs in the
//! `feed-server redis-load` command, not in a frontend.
//!
//! A version is a description (its snapshot's id and counts) and its users'
//! progress; the feeds are in the snapshot every frontend maps. It becomes
//! visible only when its description is written and the pointer moves to
//! it ([`Loader::publish`]); frontends poll the pointer. Two versions are
//! kept, the current and the previous one, each with its users' progress;
//! publishing a third deletes the oldest.

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Commands, Script};

use crate::cluster::{ClusterSettings, VersionInfo};
use crate::error::RedisStoreError;
use crate::keys;

/// Moves the pointer to `ARGV[1]`: the current version becomes the
/// previous one. Returns `{old current, old previous}` ('' for none).
const PUBLISH: &str = r"
local current = redis.call('GET', KEYS[1])
local previous = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[3])
if current then redis.call('SET', KEYS[2], current) else redis.call('DEL', KEYS[2]) end
return {current or '', previous or ''}
";

/// Swaps the current and the previous version. Returns `{from, to}`, or nil
/// when there is no previous version.
const ROLLBACK: &str = r"
local current = redis.call('GET', KEYS[1])
local previous = redis.call('GET', KEYS[2])
if not current or not previous then return false end
redis.call('SET', KEYS[1], previous)
redis.call('SET', KEYS[2], current)
redis.call('INCR', KEYS[3])
return {current, previous}
";

/// What [`Loader::publish`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The version now current.
    pub version: u64,
    /// The version now previous (kept for rollback).
    pub previous: Option<u64>,
    /// The version no longer kept, to delete.
    pub dropped: Option<u64>,
}

/// A blocking connection to the cluster for loading.
pub struct Loader {
    connection: ClusterConnection,
    timeout: Duration,
    cluster: ClusterSettings,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").finish_non_exhaustive()
    }
}

fn version_of(raw: &str) -> Result<Option<u64>, RedisStoreError> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .map_err(|_| RedisStoreError::Corrupt(format!("version pointer {raw:?}")))
}

/// One blocking connection to the cluster through `cluster`'s seed nodes,
/// with its credentials and TLS authority, every call bounded by its time
/// limit (the loader's and the export's).
pub(crate) fn blocking_connection(
    cluster: &ClusterSettings,
) -> redis::RedisResult<redis::cluster::ClusterConnection> {
    let builder = ClusterClient::builder(cluster.nodes.iter().map(String::as_str))
        .connection_timeout(cluster.timeout)
        .response_timeout(cluster.timeout);
    cluster.apply(builder).build()?.get_connection()
}

impl Loader {
    /// Connects to the cluster through `cluster`'s seed nodes, with its
    /// credentials (one connection).
    ///
    /// # Errors
    /// The client's error when no node answers in `cluster.timeout`, or
    /// when the nodes refuse the credentials.
    pub fn connect(cluster: &ClusterSettings) -> Result<Self, RedisStoreError> {
        Ok(Self {
            connection: blocking_connection(cluster)?,
            timeout: cluster.timeout,
            cluster: cluster.clone(),
        })
    }

    /// Numbers a new version (nothing refers to it yet).
    ///
    /// # Errors
    /// The cluster's error.
    pub fn new_version(&mut self) -> Result<u64, RedisStoreError> {
        Ok(self.connection.incr(keys::NEXT, 1)?)
    }

    /// Writes `info`'s description and moves the pointer to its version.
    ///
    /// # Errors
    /// The cluster's error, or [`RedisStoreError::Corrupt`] when the
    /// pointers are malformed.
    pub fn publish(&mut self, info: &VersionInfo) -> Result<Published, RedisStoreError> {
        let _: () = self
            .connection
            .hset_multiple(keys::meta(info.version), &info.to_fields())?;
        let (current, previous): (String, String) = Script::new(PUBLISH)
            .key(keys::CURRENT)
            .key(keys::PREVIOUS)
            .key(keys::EPOCH)
            .arg(info.version)
            .invoke(&mut self.connection)?;
        let current = version_of(&current)?;
        Ok(Published {
            version: info.version,
            previous: current,
            dropped: version_of(&previous)?.filter(|&v| Some(v) != current && v != info.version),
        })
    }

    /// The version being served and the one kept before it.
    ///
    /// # Errors
    /// The cluster's error.
    pub fn versions(&mut self) -> Result<(Option<u64>, Option<u64>), RedisStoreError> {
        Ok((
            self.connection.get(keys::CURRENT)?,
            self.connection.get(keys::PREVIOUS)?,
        ))
    }

    /// Serves the previous version again (and keeps the current one as the
    /// previous). Returns `(from, to)`, or `None` when there is no previous
    /// version.
    ///
    /// # Errors
    /// The cluster's error.
    pub fn rollback(&mut self) -> Result<Option<(u64, u64)>, RedisStoreError> {
        let swapped: Option<(u64, u64)> = Script::new(ROLLBACK)
            .key(keys::CURRENT)
            .key(keys::PREVIOUS)
            .key(keys::EPOCH)
            .invoke(&mut self.connection)?;
        Ok(swapped)
    }

    /// Deletes every key of `version` (its users' offsets, its description) from
    /// every master, `SCAN`ning each. Returns the keys deleted.
    ///
    /// # Errors
    /// The cluster's error.
    pub fn delete_version(&mut self, version: u64) -> Result<u64, RedisStoreError> {
        let mut deleted = 0;
        let pattern = keys::version_pattern(version);
        for master in self.masters()? {
            let client = self.cluster.node(&master)?;
            let mut node = client.get_connection_with_timeout(self.timeout)?;
            node.set_read_timeout(Some(self.timeout))?;
            node.set_write_timeout(Some(self.timeout))?;
            let mut cursor = 0u64;
            loop {
                let (next, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut node)?;
                if !found.is_empty() {
                    // Keys of different slots: one UNLINK each, pipelined.
                    let mut pipe = redis::pipe();
                    for key in &found {
                        pipe.unlink(key).ignore();
                    }
                    pipe.exec(&mut node)?;
                    deleted += found.len() as u64;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        let removed: u64 = self.connection.del(keys::meta(version))?;
        Ok(deleted + removed)
    }

    /// The masters' addresses.
    fn masters(&mut self) -> Result<Vec<String>, RedisStoreError> {
        Ok(masters(&mut self.connection)?)
    }
}

/// The addresses of the cluster's masters that are up, from `CLUSTER NODES`.
pub(crate) fn masters(connection: &mut ClusterConnection) -> redis::RedisResult<Vec<String>> {
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(connection)?;
    Ok(nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let master = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            master.then(|| {
                address
                    .split(['@', ','])
                    .next()
                    .unwrap_or(address)
                    .to_owned()
            })
        })
        .collect())
}
