//! Reading every user's progress in one data version, for
//! `feed-server export-delivered` in the Redis mode. Blocking: it runs in
//! a command, not in a frontend, and may run while frontends serve.
//!
//! [`ProgressScan`] reads the version being served (the pointer and its
//! description), then `SCAN`s every master for the version's offset keys
//! (`o:{USER}:V`), a page of keys at a time, and reads each page's offsets
//! in one pipelined round trip to that master ([`read_offsets`]). Nothing
//! is held but a page: memory does not grow with the users.
//!
//! `SCAN` gives every key that exists from its start to its end at least
//! once, maybe twice (and a key that moves between masters during a
//! resharding may be met on both): the caller passes over repeats (it
//! knows the users, `feed_memory::delivered::Join`). Keys come in no
//! order. A key deleted between its page and its read is passed over. If
//! the version is deleted while it is read (a publish dropped it), the
//! scan fails rather than give a part of it.

use std::time::Duration;

use redis::Commands;
use redis::cluster::ClusterConnection;

use crate::cluster::{ClusterSettings, VersionInfo};
use crate::error::RedisStoreError;
use crate::keys;
use crate::load::masters;

/// Keys asked of a master by one `SCAN` call, and read in one round trip.
pub const PAGE: usize = 1_000;

/// Why the progress of the version served cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The cluster or the client failed.
    #[error(transparent)]
    Cluster(#[from] RedisStoreError),
    /// No version has been published.
    #[error("no data version is published in the cluster (run redis-load first)")]
    NoVersion,
    /// The version was deleted while it was read.
    #[error(
        "version {0} was deleted while its progress was read (a publish dropped it): export again"
    )]
    Dropped(u64),
    /// An offset key whose value is not an offset.
    #[error("corrupt data in the cluster: {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
}

impl From<redis::RedisError> for ScanError {
    fn from(error: redis::RedisError) -> Self {
        Self::Cluster(error.into())
    }
}

/// What a scan met besides the offsets it gave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCounts {
    /// Masters scanned.
    pub masters: usize,
    /// Offset keys read.
    pub keys: u64,
    /// Keys that matched the pattern but are not a user's offset key.
    pub foreign: u64,
}

/// A blocking reader of the users' progress. See the module doc.
pub struct ProgressScan {
    connection: ClusterConnection,
    cluster: ClusterSettings,
}

impl std::fmt::Debug for ProgressScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressScan").finish_non_exhaustive()
    }
}

impl ProgressScan {
    /// Connects to the cluster through `cluster`'s seed nodes, with its
    /// credentials and TLS authority.
    ///
    /// # Errors
    /// The client's error when no node answers in `cluster.timeout`, or
    /// when the nodes refuse the credentials.
    pub fn connect(cluster: &ClusterSettings) -> Result<Self, ScanError> {
        Ok(Self {
            connection: crate::load::blocking_connection(cluster)?,
            cluster: cluster.clone(),
        })
    }

    /// The version being served, as its loader described it.
    ///
    /// # Errors
    /// [`ScanError::NoVersion`], or the cluster's error (a malformed
    /// pointer or description is [`RedisStoreError::Corrupt`]).
    pub fn current(&mut self) -> Result<VersionInfo, ScanError> {
        let current: Option<String> = self.connection.get(keys::CURRENT)?;
        let current = current.ok_or(ScanError::NoVersion)?;
        let version = current
            .parse()
            .map_err(|_| RedisStoreError::Corrupt(format!("version pointer {current:?}")))?;
        self.description(version)
    }

    fn description(&mut self, version: u64) -> Result<VersionInfo, ScanError> {
        let fields: std::collections::HashMap<String, Vec<u8>> =
            self.connection.hgetall(keys::meta(version))?;
        Ok(VersionInfo::from_fields(version, &fields)?)
    }

    /// Calls `each(user, offset)` for every offset key of `version` on
    /// every master, in no order, a user maybe twice (see the module doc),
    /// and returns what it met. The first error of `each` stops it.
    ///
    /// # Errors
    /// `each`'s, or a [`ScanError`] (made into `E`): the cluster's, an
    /// offset that is not a number, or the version deleted meanwhile.
    pub fn offsets<E: From<ScanError>>(
        &mut self,
        version: u64,
        mut each: impl FnMut(u64, u64) -> Result<(), E>,
    ) -> Result<ScanCounts, E> {
        let mut counts = ScanCounts::default();
        let pattern = keys::offset_pattern(version);
        let timeout = self.cluster.timeout;
        for master in masters(&mut self.connection).map_err(ScanError::from)? {
            counts.masters += 1;
            let mut node = node(&self.cluster, &master, timeout)?;
            let mut cursor = 0u64;
            loop {
                let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query(&mut node)
                    .map_err(ScanError::from)?;
                let mut page = Vec::with_capacity(found.len());
                for key in found {
                    match keys::offset_user(&key, version) {
                        Some(user) => page.push((user, key)),
                        None => counts.foreign += 1,
                    }
                }
                let offsets = read_offsets(&mut node, page.iter().map(|(_, key)| key.as_str()))?;
                for ((user, _), offset) in page.iter().zip(offsets) {
                    if let Some(offset) = offset {
                        counts.keys += 1;
                        each(*user, offset)?;
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        // A version dropped meanwhile may have lost keys already scanned
        // past: refuse the part read.
        let exists: bool = self
            .connection
            .exists(keys::meta(version))
            .map_err(ScanError::from)?;
        if !exists {
            return Err(ScanError::Dropped(version).into());
        }
        Ok(counts)
    }
}

/// A connection to the single node at `address`, with `timeout` on every
/// read and write.
fn node(
    cluster: &ClusterSettings,
    address: &str,
    timeout: Duration,
) -> Result<redis::Connection, ScanError> {
    let node = cluster
        .node(address)?
        .get_connection_with_timeout(timeout)?;
    node.set_read_timeout(Some(timeout))?;
    node.set_write_timeout(Some(timeout))?;
    Ok(node)
}

/// The offsets at `keys` (all on the node `connection` reaches), in one
/// round trip: `None` for a key that is gone.
///
/// An offset is a plain counter (`GET`) or, in the layout that keeps
/// more per user under one key, the field `n` of a hash (`HGET key n`):
/// both are read, so that an export works across the change. Keys of the
/// other type come back `WRONGTYPE` from the first read and are read again
/// the other way, in a second round trip only when there are any.
///
/// # Errors
/// The cluster's error, or [`ScanError::Corrupt`] for a value that is
/// not an unsigned number.
pub fn read_offsets<'k>(
    connection: &mut impl redis::ConnectionLike,
    keys: impl Iterator<Item = &'k str>,
) -> Result<Vec<Option<u64>>, ScanError> {
    let keys: Vec<&str> = keys.collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // Hashes first (the layout of retry keys, `crate::keys`); a plain
    // counter of the layout before answers WRONGTYPE and is read again.
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for key in &keys {
        pipe.hget(*key, crate::keys::OFFSET_FIELD);
    }
    let answers: Vec<redis::RedisResult<Option<Vec<u8>>>> = pipe.query(connection)?;
    let mut offsets = vec![None; keys.len()];
    let mut counters = Vec::new();
    for (at, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(value) => offsets[at] = parse(keys[at], value)?,
            Err(e) if e.code() == Some("WRONGTYPE") => counters.push(at),
            Err(e) => return Err(e.into()),
        }
    }
    if !counters.is_empty() {
        let mut pipe = redis::pipe();
        for &at in &counters {
            pipe.get(keys[at]);
        }
        let answers: Vec<Option<Vec<u8>>> = pipe.query(connection)?;
        for (at, value) in counters.into_iter().zip(answers) {
            offsets[at] = parse(keys[at], value)?;
        }
    }
    Ok(offsets)
}

/// A stored offset: decimal digits (a counter may be negative only if
/// something else wrote it: corrupt), a sealed one, `sEPOCH:OFFSET`, or
/// one of a version served again after a rollback, `uEPOCH:OFFSET`
/// (`crate::carry`).
fn parse(key: &str, value: Option<Vec<u8>>) -> Result<Option<u64>, ScanError> {
    let Some(bytes) = value else {
        return Ok(None);
    };
    std::str::from_utf8(&bytes)
        .ok()
        .map(|text| {
            text.strip_prefix(['s', 'u'])
                .and_then(|sealed| sealed.split_once(':'))
                .filter(|(epoch, _)| epoch.parse::<u64>().is_ok())
                .map_or(text, |(_, offset)| offset)
        })
        .and_then(|text| text.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| ScanError::Corrupt {
            key: key.to_owned(),
            reason: format!("{:?} is not an offset", String::from_utf8_lossy(&bytes)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_unsigned_numbers_and_nothing_else() {
        assert_eq!(parse("k", None).unwrap(), None);
        assert_eq!(parse("k", Some(b"17".to_vec())).unwrap(), Some(17));
        assert_eq!(parse("k", Some(b"s4:17".to_vec())).unwrap(), Some(17));
        assert_eq!(parse("k", Some(b"u5:18".to_vec())).unwrap(), Some(18));
        for bad in [
            &b"-1"[..],
            b"x",
            b"",
            b"1.5",
            b"\xff",
            b"s:17",
            b"s4:",
            b"s4:x",
        ] {
            let error = parse("o:{1}:2", Some(bad.to_vec()))
                .unwrap_err()
                .to_string();
            assert!(error.contains("o:{1}:2"), "{error}");
        }
    }
}
