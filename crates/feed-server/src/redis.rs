//! Storage in a Redis Cluster (`storage.kind = "redis"`): the service a
//! frontend's [`feed_redis::Watcher`] serves for each version (over the
//! snapshot it names, mapped from `redis.snapshots`), and the
//! `redis-load` / `redis-rollback` commands over [`feed_redis::publish`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use feed_domain::{FeedService, SizeLimits, UserId, short_fallback};
use feed_memory::{Blocked, CatalogRandomFeed, FeedTable, FileIdentity, Snapshot};
use feed_redis::{
    Carry, ClusterSettings, DataSet, LoadSummary, NewVersion, ProgressScan, PublishError,
    RedisFeedStorage, ScanError, Unservable, carry, publish,
};

use crate::recorder::LoggingRecorder;

/// The feed service of a frontend over the cluster: feeds from the mapped
/// snapshot, progress in the cluster.
pub type RedisFeedService =
    FeedService<RedisFeedStorage<FeedTable>, CatalogRandomFeed, Arc<LoggingRecorder>>;

/// Makes the service of each version a frontend is told to serve: finds
/// the snapshot the version names in `snapshots` (`redis.snapshots`),
/// opens and verifies it, and serves its feeds, with random fills from its
/// fallback list and errors to `recorder`. A snapshot that is missing or
/// cannot be read is [`Unservable::Missing`] (the frontend tries again,
/// passing over a file that failed verification until it changes); a
/// fallback list shorter than the largest answer is
/// [`Unservable::Refused`].
pub fn version_service(
    recorder: &Arc<LoggingRecorder>,
    limits: SizeLimits,
    snapshots: PathBuf,
    blocked: Arc<Blocked>,
) -> impl Fn(&NewVersion) -> Result<RedisFeedService, Unservable> + use<> {
    let recorder = Arc::clone(recorder);
    // Files that failed verification, as they were: passed over until they
    // change, so a damaged file is not read whole again at every retry.
    let damaged = Mutex::new(Vec::<FileIdentity>::new());
    move |version| {
        let id = version.info.snapshot;
        let known_bad = |file: &FileIdentity| damaged.lock().is_ok_and(|list| list.contains(file));
        let snapshot = Snapshot::find(&snapshots, id, known_bad).map_err(|e| {
            if let (Some(file), Ok(mut list)) = (FileIdentity::of(e.path()), damaged.lock())
                && e.path() != snapshots
            {
                list.push(file);
            }
            Unservable::Missing(e.to_string())
        })?;
        if let Some(reason) = short_fallback(snapshot.fallback().len(), limits.max_size().get()) {
            return Err(Unservable::Refused(format!(
                "{}: {reason}",
                snapshot.path().display()
            )));
        }
        let (_, table, fallback) = snapshot.into_parts();
        let random = CatalogRandomFeed::from_list(fallback);
        random.block_with(Arc::clone(&blocked));
        Ok(FeedService::new(
            version.storage(table),
            random,
            Arc::clone(&recorder),
            limits,
        ))
    }
}

/// `feed-server redis-load`: publishes the snapshot at `path` in the
/// cluster as a new version ([`feed_redis::publish::load`]). The cluster
/// holds only its description: every frontend must have the snapshot in
/// its `redis.snapshots` folder first (a frontend without it keeps serving
/// the version it has). A snapshot whose fallback list is shorter than
/// `max_size` is refused before anything is written: frontends would
/// refuse to serve it. When `snapshots` holds the snapshot of the version
/// served, the marks of what it gave each user are written ahead
/// ([`feed_redis::carry`]); otherwise the frontends make them at each
/// user's first request, and `note` says so.
///
/// # Errors
/// One line naming what failed: the snapshot (starting `--snapshot`) or
/// the cluster.
pub fn load(
    path: &Path,
    cluster: &ClusterSettings,
    max_size: usize,
    snapshots: &Path,
    note: &mut dyn FnMut(&str),
) -> Result<LoadSummary, String> {
    let started = Instant::now();
    let snapshot = Snapshot::open(path).map_err(|e| format!("--snapshot: {e}"))?;
    if let Some(reason) = short_fallback(snapshot.fallback().len(), max_size) {
        return Err(format!("--snapshot {}: {reason}", path.display()));
    }
    let meta = *snapshot.meta();
    let data = DataSet {
        users: meta.users,
        items: meta.items,
        clock: feed_memory::now_unix_ms,
        snapshot: meta.id,
    };
    let (_, new, _) = snapshot.into_parts();
    let served = served_feeds(cluster, snapshots);
    let summary = match served {
        Ok(Some((from, old))) => {
            let mut marks = |user: u64, given: u64| {
                let user = UserId::new(user);
                let now = new.feed(user)?;
                let before = old.feed(user).unwrap_or_default();
                let given =
                    &before[..usize::try_from(given).map_or(before.len(), |g| g.min(before.len()))];
                Some(carry::marks(given, now))
            };
            let carry = Carry {
                from,
                marks: &mut marks,
            };
            publish::load(cluster, started, data, Some(carry))
        }
        Ok(None) => publish::load(cluster, started, data, None),
        Err(reason) => {
            note(&reason);
            publish::load(cluster, started, data, None)
        }
    }
    .map_err(command_error)?;
    if let Some(left) = &summary.left_behind {
        note(&format!("warning: {left}"));
    }
    Ok(summary)
}

/// The version served in the cluster and its feeds, from its snapshot in
/// `snapshots` (`None` before the first version); or why they cannot be
/// had.
fn served_feeds(
    cluster: &ClusterSettings,
    snapshots: &Path,
) -> Result<Option<(u64, FeedTable)>, String> {
    let served = match ProgressScan::connect(cluster).and_then(|mut scan| scan.current()) {
        Ok(served) => served,
        Err(ScanError::NoVersion) => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the version served to carry from it: {e}"
            ));
        }
    };
    let snapshot = Snapshot::find(snapshots, served.snapshot, |_| false).map_err(|e| {
        format!(
            "the marks of what version {} gave are not written ahead (the frontends make them at \
             each user's first request): {e}",
            served.version
        )
    })?;
    let (_, table, _) = snapshot.into_parts();
    Ok(Some((served.version, table)))
}

/// `feed-server redis-rollback`: serves the previous version again
/// ([`feed_redis::publish::rollback`]).
///
/// # Errors
/// One line: no previous version, or the cluster's error.
pub fn rollback(cluster: &ClusterSettings) -> Result<String, String> {
    publish::rollback(cluster)
        .map(|rolled| rolled.to_string())
        .map_err(command_error)
}

/// A command's error line: a cluster no seed node of which answers is the
/// node list's fault.
fn command_error(error: PublishError) -> String {
    match error {
        PublishError::Connect(e) => format!("--nodes: {e}"),
        e => e.to_string(),
    }
}
