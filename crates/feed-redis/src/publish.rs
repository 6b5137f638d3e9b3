//! The lifecycle of a data version, as the `redis-load` and
//! `redis-rollback` commands run it: number a new version, describe and
//! publish it, delete the version no longer kept; or swap back to the
//! previous one. The feeds are not written anywhere: the version names the
//! snapshot every frontend maps (see the crate doc). [`Loader`] does each
//! step; this module decides their order and what is deleted when one
//! fails.
//!
//! Deletion policy: a version is deleted only when nothing can serve it.
//! A version that failed half-written is deleted only when the pointers,
//! read again, provably name neither it (a publish whose answer was lost
//! may have moved them); when they cannot be read, nothing is deleted and
//! the error says which keys to delete by hand. After a publish, the
//! version it dropped is deleted; a failure there is a warning in the
//! [`LoadSummary`], not a failed load, since the new version is served.
//!
//! It prints nothing and reads no clock but [`Instant`]: the caller
//! describes the data set ([`DataSet`], its creation time included) and
//! says what to print.

use std::fmt;
use std::time::Instant;

use crate::carry::{self, Ahead};
use crate::cluster::{ClusterSettings, VersionInfo};
use crate::error::RedisStoreError;
use crate::export::ScanError;
use crate::load::Loader;

/// A data set to publish, as plain data: the snapshot that holds it.
#[derive(Debug, Clone)]
pub struct DataSet {
    /// Users with a feed.
    pub users: u64,
    /// Items in all feeds.
    pub items: u64,
    /// The caller's wall clock, in milliseconds since the Unix epoch: read
    /// once, when the version is published, for its creation time.
    pub clock: fn() -> u64,
    /// The id of the snapshot holding the feeds and the fallback list,
    /// which every frontend must have.
    pub snapshot: u64,
}

impl DataSet {
    fn into_version(self, version: u64) -> VersionInfo {
        VersionInfo {
            version,
            users: self.users,
            items: self.items,
            created_unix_ms: (self.clock)(),
            snapshot: self.snapshot,
        }
    }
}

/// What [`load`] did.
#[derive(Debug)]
pub struct LoadSummary {
    /// The version published.
    pub version: u64,
    /// Users with a feed.
    pub users: u64,
    /// Items in all feeds.
    pub items: u64,
    /// The snapshot it serves.
    pub snapshot: u64,
    /// The version kept for rollback.
    pub previous: Option<u64>,
    /// The version deleted, and its keys.
    pub deleted: Option<(u64, u64)>,
    /// The version no longer kept that could not be deleted: the load
    /// succeeded, but its keys are left behind.
    pub left_behind: Option<LeftBehind>,
    /// The marks of what the version before gave, written ahead
    /// ([`carry::write_ahead`]), when the caller could make them.
    pub carried: Option<Ahead>,
    /// Seconds it took.
    pub seconds: f64,
}

/// How [`load`] writes the marks of what the version served gave ahead of
/// the publish: `from`, the version served when the caller looked (the
/// one whose snapshot it maps), and `marks(user, offset)`, a user's marks
/// in the new version's feed of the items of `from` up to `offset`.
pub struct Carry<'m> {
    /// The version served, whose snapshot the caller maps.
    pub from: u64,
    /// A user's marks; `None` when the new version has no feed for them.
    pub marks: &'m mut dyn FnMut(u64, u64) -> Option<Vec<u8>>,
}

impl fmt::Debug for Carry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carry").field("from", &self.from).finish()
    }
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "published version {}: snapshot {:016x}, {} users, {} items in {:.1} s",
            self.version, self.snapshot, self.users, self.items, self.seconds
        )?;
        if let Some(previous) = self.previous {
            write!(f, "; version {previous} kept for rollback")?;
        }
        if let Some(Ahead {
            from,
            users,
            marked,
        }) = self.carried
        {
            write!(
                f,
                "; what version {from} gave carried for {users} users ({marked} positions marked)"
            )?;
        }
        if let Some((version, keys)) = self.deleted {
            write!(f, "; version {version} deleted ({keys} keys)")?;
        }
        Ok(())
    }
}

/// A version no longer kept whose deletion failed; its `Display` says
/// which keys to delete by hand.
#[derive(Debug)]
pub struct LeftBehind {
    /// The version.
    pub version: u64,
    /// Why deleting it failed.
    pub error: RedisStoreError,
}

impl fmt::Display for LeftBehind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { version, error } = self;
        write!(
            f,
            "version {version} is no longer kept but deleting it failed ({error}): \
             delete [fo]:{{*}}:{version} and {{ff}}:meta:{version}"
        )
    }
}

/// What became of a version whose load failed.
#[derive(Debug)]
pub enum Cleanup {
    /// Nothing named it: its keys were deleted.
    Deleted(u64),
    /// Nothing named it, but deleting it failed too.
    DeleteFailed(RedisStoreError),
    /// A version pointer names it (a publish whose answer was lost): kept.
    Kept,
    /// The pointers could not be read, so nothing was deleted.
    Unchecked {
        /// The version left as it is.
        version: u64,
        /// Why the pointers could not be read.
        error: RedisStoreError,
    },
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deleted(keys) => write!(f, "its {keys} keys were deleted"),
            Self::DeleteFailed(error) => {
                write!(f, "deleting what was written failed too: {error}")
            }
            Self::Kept => f.write_str("yet a version pointer names it: it was kept"),
            Self::Unchecked { version, error } => write!(
                f,
                "the version pointers could not be read ({error}), so nothing was deleted: \
                 if neither {{ff}}:current nor {{ff}}:previous is {version}, delete \
                 [fo]:{{*}}:{version} and {{ff}}:meta:{version}"
            ),
        }
    }
}

/// Why [`load`] or [`rollback`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No seed node answered; nothing was done.
    #[error("{0}")]
    Connect(RedisStoreError),
    /// The cluster failed before anything was written, or during a
    /// rollback (which then did not happen).
    #[error("{0}")]
    Cluster(RedisStoreError),
    /// Publishing `version` failed; `cleanup` says what became of it.
    #[error("loading version {version}: {cause}; {cleanup}")]
    Load {
        /// The version that was being loaded.
        version: u64,
        /// The cluster's error.
        cause: RedisStoreError,
        /// What became of it.
        cleanup: Cleanup,
    },
    /// A rollback found no previous version.
    #[error("there is no previous version to roll back to")]
    NoPrevious,
}

/// Publishes `data` in the cluster `cluster` reaches as a new version:
/// numbers it, writes the marks of what the version served gave
/// (`carry`, when the caller maps that version's snapshot), writes its
/// description, moves the pointer to it and deletes the version before
/// the previous one. `started` is when the
/// caller began (opening the snapshot counts too): the summary's seconds
/// run from it.
///
/// # Errors
/// [`PublishError::Connect`] when no node answers in `cluster.timeout`,
/// [`PublishError::Cluster`] when no version could be numbered, and
/// [`PublishError::Load`] when publishing failed, after the half-written
/// version was deleted if nothing can name it.
pub fn load(
    cluster: &ClusterSettings,
    started: Instant,
    data: DataSet,
    carry: Option<Carry<'_>>,
) -> Result<LoadSummary, PublishError> {
    let mut loader = Loader::connect(cluster).map_err(PublishError::Connect)?;
    let version = loader.new_version().map_err(PublishError::Cluster)?;
    let (users, items, snapshot) = (data.users, data.items, data.snapshot);
    let carried = match carry {
        None => None,
        Some(Carry { from, marks }) => match carry::write_ahead(cluster, (from, version), marks) {
            Ok(ahead) => Some(ahead),
            Err(error) => {
                let cause = match error {
                    ScanError::Cluster(cause) => cause,
                    other => RedisStoreError::Corrupt(other.to_string()),
                };
                return Err(PublishError::Load {
                    version,
                    cause,
                    cleanup: clean_up(&mut loader, version),
                });
            }
        },
    };
    let published = loader.publish(&data.into_version(version));
    let published = match published {
        Ok(published) => published,
        Err(cause) => {
            return Err(PublishError::Load {
                version,
                cause,
                cleanup: clean_up(&mut loader, version),
            });
        }
    };
    // Published: from here on a failure is a warning, not a failed load.
    let (deleted, left_behind) = match published
        .dropped
        .map(|old| (old, loader.delete_version(old)))
    {
        None => (None, None),
        Some((old, Ok(keys))) => (Some((old, keys)), None),
        Some((old, Err(error))) => (
            None,
            Some(LeftBehind {
                version: old,
                error,
            }),
        ),
    };
    Ok(LoadSummary {
        version,
        users,
        items,
        snapshot,
        previous: published.previous,
        deleted,
        left_behind,
        carried,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Takes the half-written `version` out again (best effort: the cluster
/// may be what failed), only when the pointers provably name neither it.
fn clean_up(loader: &mut Loader, version: u64) -> Cleanup {
    match loader.versions() {
        Ok((current, previous)) if current != Some(version) && previous != Some(version) => {
            match loader.delete_version(version) {
                Ok(keys) => Cleanup::Deleted(keys),
                Err(error) => Cleanup::DeleteFailed(error),
            }
        }
        Ok(_) => Cleanup::Kept,
        Err(error) => Cleanup::Unchecked { version, error },
    }
}

/// The versions a [`rollback`] swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledBack {
    /// The version served before, now kept for a roll forward.
    pub from: u64,
    /// The version served now.
    pub to: u64,
}

impl fmt::Display for RolledBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "now serving version {} (was {}, kept for a roll forward)",
            self.to, self.from
        )
    }
}

/// Serves the previous version again through the cluster `cluster` reaches; the
/// current one becomes the previous. Nothing is deleted.
///
/// # Errors
/// [`PublishError::Connect`] when no node answers in `cluster.timeout`,
/// [`PublishError::NoPrevious`], or [`PublishError::Cluster`].
pub fn rollback(cluster: &ClusterSettings) -> Result<RolledBack, PublishError> {
    let mut loader = Loader::connect(cluster).map_err(PublishError::Connect)?;
    match loader.rollback().map_err(PublishError::Cluster)? {
        Some((from, to)) => Ok(RolledBack { from, to }),
        None => Err(PublishError::NoPrevious),
    }
}

#[cfg(test)]
mod tests {
    use super::{Cleanup, LeftBehind, LoadSummary, PublishError, RolledBack};
    use crate::error::RedisStoreError;

    fn corrupt() -> RedisStoreError {
        RedisStoreError::Corrupt("x".into())
    }

    fn check(shown: &dyn std::fmt::Display, expected: &str) {
        assert_eq!(shown.to_string(), expected);
    }

    #[test]
    fn a_summary_names_what_was_kept_and_deleted() {
        let mut summary = LoadSummary {
            version: 3,
            users: 10,
            items: 2_000,
            snapshot: 0xab,
            previous: None,
            deleted: None,
            left_behind: None,
            carried: None,
            seconds: 1.26,
        };
        check(
            &summary,
            "published version 3: snapshot 00000000000000ab, 10 users, 2000 items in 1.3 s",
        );
        summary.previous = Some(2);
        summary.deleted = Some((1, 21));
        check(
            &summary,
            "published version 3: snapshot 00000000000000ab, 10 users, 2000 items in 1.3 s; \
             version 2 kept for rollback; version 1 deleted (21 keys)",
        );
        summary.carried = Some(crate::carry::Ahead {
            from: 2,
            users: 7,
            marked: 40,
        });
        check(
            &summary,
            "published version 3: snapshot 00000000000000ab, 10 users, 2000 items in 1.3 s; \
             version 2 kept for rollback; what version 2 gave carried for 7 users (40 positions \
             marked); version 1 deleted (21 keys)",
        );
        summary.carried = None;
        // A failed deletion is a separate warning, not part of the summary.
        summary.deleted = None;
        summary.left_behind = Some(LeftBehind {
            version: 1,
            error: corrupt(),
        });
        check(
            &summary,
            "published version 3: snapshot 00000000000000ab, 10 users, 2000 items in 1.3 s; version 2 kept for rollback",
        );
    }

    #[test]
    fn a_version_left_behind_names_its_keys() {
        check(
            &LeftBehind {
                version: 7,
                error: corrupt(),
            },
            "version 7 is no longer kept but deleting it failed \
             (corrupt data in the cluster: x): delete [fo]:{*}:7 and {ff}:meta:7",
        );
    }

    #[test]
    fn a_failed_load_says_what_became_of_the_version() {
        let failed = |cleanup| PublishError::Load {
            version: 5,
            cause: corrupt(),
            cleanup,
        };
        let prefix = "loading version 5: corrupt data in the cluster: x; ";
        check(
            &failed(Cleanup::Deleted(12)),
            &format!("{prefix}its 12 keys were deleted"),
        );
        check(
            &failed(Cleanup::DeleteFailed(corrupt())),
            &format!(
                "{prefix}deleting what was written failed too: corrupt data in the cluster: x"
            ),
        );
        check(
            &failed(Cleanup::Kept),
            &format!("{prefix}yet a version pointer names it: it was kept"),
        );
        check(
            &failed(Cleanup::Unchecked {
                version: 5,
                error: corrupt(),
            }),
            &format!(
                "{prefix}the version pointers could not be read (corrupt data in the cluster: x), \
                 so nothing was deleted: if neither {{ff}}:current nor {{ff}}:previous is 5, \
                 delete [fo]:{{*}}:5 and {{ff}}:meta:5"
            ),
        );
    }

    #[test]
    fn rollback_reads_as_before() {
        check(
            &RolledBack { from: 9, to: 8 },
            "now serving version 8 (was 9, kept for a roll forward)",
        );
        check(
            &PublishError::NoPrevious,
            "there is no previous version to roll back to",
        );
        check(
            &PublishError::Connect(corrupt()),
            "corrupt data in the cluster: x",
        );
    }
}
