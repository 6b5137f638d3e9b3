//! Storage in a Redis Cluster (`storage.kind = "redis"`): the frontend's
//! version watcher, and the `redis-load` / `redis-rollback` commands.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use feed_domain::StorageHealth;
use feed_domain::{FeedService, SizeLimits};
use feed_http::{Counters, DataInfo, FeedSlot, Lifecycle, SnapshotInfo};
use feed_memory::{CatalogRandomFeed, FallbackList, Snapshot};
use feed_redis::{
    Breaker, BreakerSettings, Cluster, ClusterSettings, DataSet, LoadSummary, PublishError,
    RedisFeedStorage, VersionInfo, breaker::GROUPS, publish,
};
use slog::{Logger, error, info, warn};

use crate::recorder::LoggingRecorder;

/// The feed service of a frontend over the cluster.
pub type RedisFeedService = FeedService<RedisFeedStorage, CatalogRandomFeed, Arc<LoggingRecorder>>;

/// How long a version that could not be switched to waits for a retry.
const RETRY_SWITCH: Duration = Duration::from_secs(5);

/// Watches the version pointer and serves the version it names, unless its
/// fallback list is shorter than the largest answer (`api.max_size`): that
/// version is refused, and the one served stays.
#[derive(Debug)]
pub struct Watcher {
    /// How to reach the cluster.
    pub cluster: ClusterSettings,
    /// The circuit breaker's settings.
    pub breaker: BreakerSettings,
    /// How often to read the pointer.
    pub poll: Duration,
    /// Request size limits.
    pub limits: SizeLimits,
    /// Where the service is put.
    pub slot: web::Data<FeedSlot<RedisFeedService>>,
    /// Marked loaded once a version is served.
    pub lifecycle: web::Data<Lifecycle>,
    /// Told about the data and the breaker.
    pub counters: Arc<Counters>,
    /// The services' error recorder.
    pub recorder: Arc<LoggingRecorder>,
    /// Its log.
    pub logger: Logger,
}

impl Watcher {
    /// Connects (retrying every second), then reads the pointer every
    /// `poll` for ever, swapping in each new version's service.
    pub async fn run(self) {
        let cluster = self.connect().await;
        let breaker = Arc::new(Breaker::new(self.breaker));
        let mut serving: Option<u64> = None;
        let mut complained = Instant::now() - Duration::from_secs(60);
        // A version that could not be switched to, and when to try it again.
        let mut failed: Option<(u64, Instant)> = None;
        // A version this frontend cannot serve (its description never
        // changes): not read again.
        let mut refused: Option<u64> = None;
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.report(&breaker, serving);
            let wanted = match cluster.current_version().await {
                Ok(Some(version)) if Some(version) != serving => version,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    if complained.elapsed() >= Duration::from_secs(10) {
                        complained = Instant::now();
                        warn!(
                            self.logger,
                            "no data version is published yet: run feed-server redis-load"
                        );
                    }
                    continue;
                }
                Err(e) => {
                    if complained.elapsed() >= Duration::from_secs(10) {
                        complained = Instant::now();
                        warn!(self.logger, "cannot read the version pointer"; "error" => %e);
                    }
                    continue;
                }
            };
            if refused == Some(wanted)
                || failed.is_some_and(|(version, at)| version == wanted && Instant::now() < at)
            {
                continue;
            }
            match self.install(&cluster, &breaker, wanted).await {
                Ok(()) => {
                    serving = Some(wanted);
                    failed = None;
                }
                Err(SwitchError::Cluster(e)) => {
                    // Its description is large: not again at every poll.
                    failed = Some((wanted, Instant::now() + RETRY_SWITCH));
                    warn!(self.logger, "cannot switch to the new version; retrying in 5 s";
                        "version" => wanted, "error" => %e);
                }
                Err(SwitchError::Unservable(reason)) => {
                    refused = Some(wanted);
                    error!(self.logger, "refusing to switch to the new version; serving the current one";
                        "version" => wanted, "serving" => serving, "reason" => reason);
                }
            }
        }
    }

    async fn connect(&self) -> Arc<Cluster> {
        loop {
            match Cluster::connect(&self.cluster).await {
                Ok(cluster) => {
                    info!(self.logger, "connected to the cluster";
                        "nodes" => self.cluster.nodes.join(","),
                        "pool_size" => self.cluster.pool_size);
                    return Arc::new(cluster);
                }
                Err(e) => {
                    warn!(self.logger, "cannot connect to the cluster; retrying in 1 s";
                        "nodes" => self.cluster.nodes.join(","), "error" => %e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn install(
        &self,
        cluster: &Arc<Cluster>,
        breaker: &Arc<Breaker>,
        version: u64,
    ) -> Result<(), SwitchError> {
        let started = Instant::now();
        let info = cluster
            .version_info(version)
            .await
            .map_err(SwitchError::Cluster)?;
        if let Some(reason) =
            crate::data::short_fallback(info.fallback.len(), self.limits.max_size().get())
        {
            return Err(SwitchError::Unservable(reason));
        }
        let storage = RedisFeedStorage::new(Arc::clone(cluster), Arc::clone(breaker), version);
        // Best effort: a node that is down cannot load the script now, and a
        // call that meets NOSCRIPT loads it itself.
        if let Err(e) = storage.prepare().await {
            warn!(self.logger, "could not load the script on every node"; "error" => %e);
        }
        let data = data_info(&info, started.elapsed());
        let fallback_items = info.fallback.len();
        let service = FeedService::new(
            storage,
            CatalogRandomFeed::from_list(FallbackList::from_vec(info.fallback)),
            Arc::clone(&self.recorder),
            self.limits,
        );
        let replaced = self.slot.replace(Arc::new(service)).is_some();
        self.counters.set_data(data);
        self.report(breaker, Some(version));
        self.lifecycle.mark_loaded();
        let what = if replaced {
            "switched to a new data version"
        } else {
            "feed-server ready"
        };
        info!(self.logger, "{}", what;
            "version" => version, "users" => info.users, "items" => info.items,
            "fallback_items" => fallback_items, "source" => &info.source,
            "load_ms" => started.elapsed().as_millis());
        Ok(())
    }

    fn report(&self, breaker: &Breaker, version: Option<u64>) {
        let state = breaker.state();
        self.counters.set_storage_health(StorageHealth {
            kind: "redis",
            breaker: state.circuit(),
            open_groups: state.open as u64,
            groups: GROUPS as u64,
            opened_total: breaker.times_opened(),
            version: version.unwrap_or(0),
        });
    }
}

/// Why a frontend did not switch to a version.
#[derive(Debug)]
enum SwitchError {
    /// The cluster failed: the switch is tried again later.
    Cluster(feed_redis::RedisStoreError),
    /// The version cannot be served with these settings, ever.
    Unservable(String),
}

fn data_info(info: &VersionInfo, took: Duration) -> DataInfo {
    DataInfo {
        users: info.users,
        items: info.items,
        bytes: info.items * 4,
        load_seconds: took.as_secs_f64(),
        snapshot: Some(SnapshotInfo {
            id: info.source.clone(),
            created_unix_ms: info.created_unix_ms,
            path: format!("redis version {}", info.version),
        }),
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
    nodes: &[String],
    timeout: Duration,
    max_size: usize,
) -> Result<LoadSummary, String> {
    let started = Instant::now();
    let snapshot = Snapshot::open(path).map_err(|e| format!("--snapshot: {e}"))?;
    if let Some(reason) = crate::data::short_fallback(snapshot.fallback().len(), max_size) {
        return Err(format!("--snapshot {}: {reason}", path.display()));
    }
    let meta = *snapshot.meta();
    let data = DataSet {
        users: meta.users,
        items: meta.items,
        fallback: snapshot.fallback().to_vec(),
        created_unix_ms: feed_memory::now_unix_ms(),
        source: format!("{:016x}", meta.id),
    };
    let (_, table, _) = snapshot.into_parts();
    let mut next_report = Instant::now();
    let summary = publish::load(nodes, timeout, started, data, table.entries(), |progress| {
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
pub fn rollback(nodes: &[String], timeout: Duration) -> Result<String, String> {
    publish::rollback(nodes, timeout)
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
