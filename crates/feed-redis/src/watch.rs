//! A frontend's data lifecycle ([`Watcher`]): connect to the cluster, read
//! the version pointer every `redis.poll_ms`, and serve each new version
//! (its storage and its fallback list) through the domain's [`Publish`]
//! port, reporting the circuit breaker's health as it goes. A version whose
//! fallback list cannot fill the largest answer is refused, and the one
//! served stays; a version that cannot be read is tried again later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use feed_domain::{DataInfo, DataVersion, Publish, StorageHealth, short_fallback};
use slog::{Logger, error, info, warn};

use crate::breaker::GROUPS;
use crate::{
    Breaker, BreakerSettings, Cluster, ClusterSettings, RedisFeedStorage, RedisStoreError,
    VersionInfo,
};

/// How long a version that could not be switched to waits for a retry.
const RETRY_SWITCH: Duration = Duration::from_secs(5);

/// Watches the version pointer and serves the version it names, unless its
/// fallback list is shorter than the largest answer (`api.max_size`): that
/// version is refused, and the one served stays.
pub struct Watcher<T, F> {
    /// How to reach the cluster.
    pub cluster: ClusterSettings,
    /// The circuit breaker's settings.
    pub breaker: BreakerSettings,
    /// How often to read the pointer.
    pub poll: Duration,
    /// The largest answer (`api.max_size`): a version whose fallback list
    /// is shorter is refused.
    pub max_size: usize,
    /// Where each version's service is served, ready once there is one,
    /// and where the data and the breaker's health are told.
    pub publish: Arc<dyn Publish<T>>,
    /// Makes a version's service from its storage and its fallback list
    /// (the items a user gets when their feed cannot be read).
    pub service: F,
    /// Its log.
    pub logger: Logger,
}

impl<T, F> Watcher<T, F>
where
    T: Send + Sync + 'static,
    F: Fn(RedisFeedStorage, Vec<u32>) -> T,
{
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
            match self
                .install(&cluster, &breaker, wanted, serving.is_none())
                .await
            {
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
        first: bool,
    ) -> Result<(), SwitchError> {
        let started = Instant::now();
        let info = cluster
            .version_info(version)
            .await
            .map_err(SwitchError::Cluster)?;
        if let Some(reason) = short_fallback(info.fallback.len(), self.max_size) {
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
        let service = (self.service)(storage, info.fallback);
        self.publish.serve(Arc::new(service), data);
        self.report(breaker, Some(version));
        self.publish.ready();
        let what = if first {
            "feed-server ready"
        } else {
            "switched to a new data version"
        };
        info!(self.logger, "{}", what;
            "version" => version, "users" => info.users, "items" => info.items,
            "fallback_items" => fallback_items, "source" => &info.source,
            "load_ms" => started.elapsed().as_millis());
        Ok(())
    }

    fn report(&self, breaker: &Breaker, version: Option<u64>) {
        let state = breaker.state();
        self.publish.health(StorageHealth {
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
    Cluster(RedisStoreError),
    /// The version cannot be served with these settings, ever.
    Unservable(String),
}

fn data_info(info: &VersionInfo, took: Duration) -> DataInfo {
    DataInfo {
        users: info.users,
        items: info.items,
        bytes: info.items * 4,
        load_seconds: took.as_secs_f64(),
        version: Some(DataVersion {
            id: info.source.clone(),
            created_unix_ms: info.created_unix_ms,
            source: format!("redis version {}", info.version),
        }),
    }
}

impl<T, F> std::fmt::Debug for Watcher<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("cluster", &self.cluster)
            .field("poll", &self.poll)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}
