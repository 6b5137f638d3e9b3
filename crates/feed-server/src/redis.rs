//! Storage in a Redis Cluster (`storage.kind = "redis"`): the service a
//! frontend's [`feed_redis::Watcher`] serves for each version, and the
//! `redis-load` / `redis-rollback` commands over [`feed_redis::publish`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use feed_domain::{FeedService, SizeLimits, short_fallback};
use feed_memory::{CatalogRandomFeed, FallbackList, Snapshot};
use feed_redis::{ClusterSettings, DataSet, LoadSummary, PublishError, RedisFeedStorage, publish};

use crate::recorder::LoggingRecorder;

/// The feed service of a frontend over the cluster.
pub type RedisFeedService = FeedService<RedisFeedStorage, CatalogRandomFeed, Arc<LoggingRecorder>>;

/// The service of one version: its storage, random fills from its fallback
/// list, errors to `recorder`.
pub fn version_service(
    recorder: &Arc<LoggingRecorder>,
    limits: SizeLimits,
) -> impl Fn(RedisFeedStorage, Vec<u32>) -> RedisFeedService + use<> {
    let recorder = Arc::clone(recorder);
    move |storage, fallback| {
        FeedService::new(
            storage,
            CatalogRandomFeed::from_list(FallbackList::from_vec(fallback)),
            Arc::clone(&recorder),
            limits,
        )
    }
}

/// `feed-server redis-load`: writes the snapshot at `path` into the cluster
/// as a new version ([`feed_redis::publish::load`]), reporting progress on
/// stderr once a second and at the end. A snapshot whose fallback list is
/// shorter than `max_size` is refused before anything is written:
/// frontends would refuse to serve it.
///
/// # Errors
/// One line naming what failed: the snapshot (starting `--snapshot`) or
/// the cluster.
pub fn load(
    path: &Path,
    cluster: &ClusterSettings,
    max_size: usize,
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
        fallback: snapshot.fallback().to_vec(),
        clock: feed_memory::now_unix_ms,
        source: format!("{:016x}", meta.id),
    };
    let (_, table, _) = snapshot.into_parts();
    let mut next_report = Instant::now();
    let summary = publish::load(cluster, started, data, table.entries(), |progress| {
        if Instant::now() >= next_report || progress.is_complete() {
            next_report = Instant::now() + Duration::from_secs(1);
            eprintln!("redis-load: {progress}");
        }
    })
    .map_err(command_error)?;
    if let Some(left) = &summary.left_behind {
        eprintln!("redis-load: warning: {left}");
    }
    Ok(summary)
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
