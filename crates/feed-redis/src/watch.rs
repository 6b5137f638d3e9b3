//! A frontend's data lifecycle ([`Watcher`]): connect to the cluster, read
//! the version pointer every `redis.poll_ms`, and serve each new version
//! through the domain's [`Publish`] port, reporting the circuit breaker's
//! health as it goes. The caller opens the snapshot a version names (off
//! the runtime: verifying it takes a while) and makes its service. A
//! version whose snapshot this frontend does not have, or cannot read, is
//! refused and tried again later; one that can never be served here (its
//! fallback list cannot fill the largest answer) is refused for good. In
//! both cases the version served stays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use feed_domain::{BlockedItems, DataInfo, DataVersion, Publish, RankedFeeds, StorageHealth};
use slog::{Logger, error, info, warn};

use crate::blocklist::Follower;
use crate::breaker::GROUPS;
use crate::carry::Before;
use crate::{
    Breaker, BreakerSettings, Cluster, ClusterSettings, Pointers, RedisFeedStorage,
    RedisStoreError, VersionInfo,
};

/// How long a version that could not be switched to waits for a retry.
const RETRY_SWITCH: Duration = Duration::from_secs(2);
/// "Not again": a failure this far ahead is never retried.
const NEVER: Duration = Duration::from_secs(365 * 86_400);
/// How often a lasting problem (no version yet, no pointer) is logged.
const COMPLAIN_EVERY: Duration = Duration::from_secs(10);

/// A version to serve, handed to the caller's service maker: its
/// description, and the storage over the feeds the caller opens.
pub struct NewVersion {
    /// What the loader said of it: counts, creation time and snapshot id.
    pub info: VersionInfo,
    cluster: Arc<Cluster>,
    breaker: Arc<Breaker>,
    /// Set when the cluster drops the version (its storages stop).
    retired: Arc<AtomicBool>,
    /// The items taken down, where the frontend follows a blocklist.
    blocked: Option<Arc<dyn BlockedItems>>,
    /// The version kept as previous while this one serves (set at each
    /// switch to it), whose gifts its storage carries.
    before: Arc<ArcSwapOption<Before>>,
    /// The feeds its storage serves, for the version after it to carry.
    feeds: OnceLock<Arc<dyn RankedFeeds>>,
}

impl std::fmt::Debug for NewVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewVersion")
            .field("info", &self.info)
            .field("before", &self.before.load())
            .finish_non_exhaustive()
    }
}

impl NewVersion {
    /// The version's storage over `feeds` (the snapshot it names): the
    /// progress is moved in the cluster, and what the previous version
    /// gave is passed over ([`crate::carry`]).
    pub fn storage<F: RankedFeeds>(&self, feeds: F) -> RedisFeedStorage<F> {
        let feeds = Arc::new(feeds);
        let shared: Arc<dyn RankedFeeds> = Arc::clone(&feeds) as Arc<dyn RankedFeeds>;
        // One storage a version: a second call keeps the first feeds.
        let _ = self.feeds.set(shared);
        let storage = RedisFeedStorage::retired_by(
            feeds,
            Arc::clone(&self.cluster),
            Arc::clone(&self.breaker),
            self.info.version,
            Arc::clone(&self.retired),
        )
        .carry_from(Arc::clone(&self.before));
        match &self.blocked {
            Some(blocked) => storage.block_with(Arc::clone(blocked)),
            None => storage,
        }
    }
}

/// Why a version's service could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unservable {
    /// Its snapshot is missing or cannot be read here: tried again later
    /// (a snapshot may be copied in after the pointer moved).
    Missing(String),
    /// It can never be served with these settings (a fallback list shorter
    /// than the largest answer): not tried again.
    Refused(String),
}

/// Watches the version pointer and serves the version it names, once
/// `service` has made its service (see the module doc for a refusal).
pub struct Watcher<T, F> {
    /// How to reach the cluster.
    pub cluster: ClusterSettings,
    /// The circuit breaker's settings.
    pub breaker: BreakerSettings,
    /// How often to read the pointer.
    pub poll: Duration,
    /// Where each version's service is served, ready once there is one,
    /// and where the data and the breaker's health are told.
    pub publish: Arc<dyn Publish<T>>,
    /// Makes a version's service: opens the snapshot it names, checks it,
    /// and returns the service over [`NewVersion::storage`] and the
    /// snapshot's fallback list. Runs on a blocking thread.
    pub service: Arc<F>,
    /// The items taken down, kept up to date from the cluster's blocklist
    /// every `poll` (`crate::blocklist`); `None` follows none.
    pub blocked: Option<Arc<dyn BlockedItems>>,
    /// Its log.
    pub logger: Logger,
}

impl<T, F> Watcher<T, F>
where
    T: Send + Sync + 'static,
    F: Fn(&NewVersion) -> Result<T, Unservable> + Send + Sync + 'static,
{
    /// Connects (retrying every second), then reads the pointer every
    /// `poll` for ever, swapping in each new version's service.
    pub async fn run(self) {
        let cluster = self.connect().await;
        let breaker = Arc::new(Breaker::new(self.breaker));
        // The version served, and the one served before it, kept mapped so
        // that a rollback to it is a swap, not a new verification.
        let mut serving: Option<Served<T>> = None;
        let mut kept: Option<Served<T>> = None;
        // The version the pointer named at its last reading.
        let mut published: Option<u64> = None;
        let mut complained: Option<Instant> = None;
        // A version that could not be switched to, and when to try it again.
        let mut failed: Option<(u64, Instant)> = None;
        // The last version whose missing snapshot was logged: its retries
        // stay quiet.
        let mut announced: Option<u64> = None;
        // A version this frontend cannot serve (its description never
        // changes): not read again.
        let mut refused: Option<u64> = None;
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut follower = Follower::default();
        // The previous version whose snapshot could not be mapped, and when.
        let mut unmapped: Option<(u64, Instant)> = None;
        let mut blocklist_complained: Option<Instant> = None;
        loop {
            ticks.tick().await;
            if let Some(blocked) = &self.blocked
                && let Err(e) = follower.catch_up(&cluster, &**blocked).await
                && blocklist_complained.is_none_or(|at| at.elapsed() >= COMPLAIN_EVERY)
            {
                blocklist_complained = Some(Instant::now());
                warn!(self.logger, "cannot read the blocklist's changes"; "error" => %e);
            }
            let served = serving.as_ref().map(|s| s.version);
            self.report(&breaker, served, published);
            let Pointers {
                current,
                previous,
                epoch,
            } = match cluster.pointers().await {
                Ok(pointers) => pointers,
                Err(e) => {
                    if complained.is_none_or(|at| at.elapsed() >= COMPLAIN_EVERY) {
                        complained = Some(Instant::now());
                        warn!(self.logger, "cannot read the version pointer"; "error" => %e);
                    }
                    continue;
                }
            };
            published = current;
            // A rollback to the version served here, or a publish it never
            // switched to and back: it carries from the new previous, whose
            // snapshot it maps if it can (next).
            if let Some(now) = &serving
                && current == Some(now.version)
                && now.before.load().as_ref().map(|b| (b.version, b.epoch))
                    != previous.map(|version| (version, epoch))
            {
                now.before
                    .store(before_of(previous, epoch, serving.iter().chain(&kept)));
            }
            self.map_previous(
                &cluster,
                &breaker,
                (previous, epoch),
                &serving,
                &mut kept,
                &mut unmapped,
            )
            .await;
            // A frontend left behind (the version it carried from is no
            // longer kept): no key of a deleted version to read or write,
            // but the marks already in its own keys are still walked; the
            // versions after it refuse what it may not move.
            if let Some(now) = &serving {
                let before = now.before.load();
                if let Some(gone) = before.as_ref().filter(|b| {
                    !b.gone && Some(b.version) != current && Some(b.version) != previous
                }) {
                    let gone = Arc::new(gone.gone());
                    drop(before);
                    now.before.store(Some(gone));
                }
            }
            if let Some(old) = &serving
                && current != Some(old.version)
                && previous != Some(old.version)
                && !old.retired.swap(true, Ordering::Relaxed)
            {
                error!(self.logger, "the cluster no longer keeps the version served here: answering from the fallback list until this frontend can switch";
                    "version" => old.version, "current" => current, "previous" => previous);
            }
            if let Some(old) = &kept
                && current != Some(old.version)
                && previous != Some(old.version)
            {
                old.retired.store(true, Ordering::Relaxed);
                kept = None;
            }
            let Some(wanted) = current.filter(|&version| Some(version) != served) else {
                if current.is_none() && complained.is_none_or(|at| at.elapsed() >= COMPLAIN_EVERY) {
                    complained = Some(Instant::now());
                    warn!(
                        self.logger,
                        "no data version is published yet: run feed-server redis-load"
                    );
                }
                continue;
            };
            if refused == Some(wanted)
                || failed.is_some_and(|(version, at)| version == wanted && Instant::now() < at)
            {
                continue;
            }
            let before = before_of(previous, epoch, serving.iter().chain(&kept));
            if let Some(back) = kept.take_if(|old| old.version == wanted) {
                back.before.store(before);
                self.serve(
                    &back,
                    &breaker,
                    "switched back to the data version kept mapped",
                );
                kept = serving.replace(back);
                failed = None;
                continue;
            }
            match self
                .install(&cluster, &breaker, wanted, served.is_none(), before)
                .await
            {
                Ok(new) => {
                    kept = serving.replace(new);
                    failed = None;
                    self.map_previous(
                        &cluster,
                        &breaker,
                        (previous, epoch),
                        &serving,
                        &mut kept,
                        &mut unmapped,
                    )
                    .await;
                }
                Err(SwitchError::Cluster(e)) => {
                    failed = Some((wanted, Instant::now() + RETRY_SWITCH));
                    warn!(self.logger, "cannot switch to the new version; retrying in 2 s";
                        "version" => wanted, "error" => %e);
                }
                Err(SwitchError::Unservable(Unservable::Missing(reason))) => {
                    failed = Some((wanted, Instant::now() + RETRY_SWITCH));
                    // Said once a version: the retries stay quiet.
                    if announced != Some(wanted) {
                        announced = Some(wanted);
                        error!(self.logger, "cannot serve the new version here; serving the current one and retrying every 2 s";
                            "version" => wanted, "serving" => served, "reason" => reason);
                    }
                }
                Err(SwitchError::Unservable(Unservable::Refused(reason))) => {
                    refused = Some(wanted);
                    error!(self.logger, "refusing to switch to the new version; serving the current one";
                        "version" => wanted, "serving" => served, "reason" => reason);
                }
            }
        }
    }

    async fn connect(&self) -> Arc<Cluster> {
        loop {
            match Cluster::connect(&self.cluster).await {
                Ok(cluster) => {
                    info!(self.logger, "connected to the cluster";
                        "nodes" => self.cluster.nodes.join(","));
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

    /// Maps the snapshot of `previous` (the cluster's previous version)
    /// as the version `kept`, when the version `serving` carries from it
    /// without its feeds: this frontend never served it (it started, or
    /// fell behind, after the switch). A rollback to it is then a swap too.
    /// Without it, the users whose marks are missing get the fallback list
    /// here. A failure is tried again every 2 s (`unmapped`), but for a
    /// snapshot refused for good, and said once a version.
    async fn map_previous(
        &self,
        cluster: &Arc<Cluster>,
        breaker: &Arc<Breaker>,
        (previous, epoch): (Option<u64>, u64),
        serving: &Option<Served<T>>,
        kept: &mut Option<Served<T>>,
        unmapped: &mut Option<(u64, Instant)>,
    ) {
        let Some(previous) = previous else {
            return;
        };
        let Some(serving) = serving else {
            return;
        };
        let needs = serving
            .before
            .load()
            .as_ref()
            .is_some_and(|b| b.version == previous && b.feeds.is_none());
        if !needs
            || unmapped
                .is_some_and(|(version, at)| version == previous && at.elapsed() < RETRY_SWITCH)
        {
            return;
        }
        match self.open(cluster, breaker, previous).await {
            Ok(old) => {
                serving
                    .before
                    .store(before_of(Some(previous), epoch, [&old]));
                info!(self.logger, "mapped the previous data version, to carry what it gave";
                    "version" => previous);
                if let Some(replaced) = kept.replace(old) {
                    replaced.retired.store(true, Ordering::Relaxed);
                }
                *unmapped = None;
            }
            Err(e) => {
                if unmapped.is_none_or(|(version, _)| version != previous) {
                    warn!(self.logger, "cannot map the previous data version: users whose marks of what it gave are missing get the fallback list here";
                        "version" => previous, "error" => ?e);
                }
                // A snapshot refused for good is not opened again.
                let failed = match e {
                    SwitchError::Unservable(Unservable::Refused(_)) => Instant::now() + NEVER,
                    _ => Instant::now(),
                };
                *unmapped = Some((previous, failed));
            }
        }
    }

    async fn install(
        &self,
        cluster: &Arc<Cluster>,
        breaker: &Arc<Breaker>,
        version: u64,
        first: bool,
        before: Option<Arc<Before>>,
    ) -> Result<Served<T>, SwitchError> {
        let new = self.open(cluster, breaker, version).await?;
        new.before.store(before);
        let what = if first {
            "feed-server ready"
        } else {
            "switched to a new data version"
        };
        self.serve(&new, breaker, what);
        Ok(new)
    }

    /// Opens `version`: its description, and its service from the maker.
    async fn open(
        &self,
        cluster: &Arc<Cluster>,
        breaker: &Arc<Breaker>,
        version: u64,
    ) -> Result<Served<T>, SwitchError> {
        let started = Instant::now();
        let info = cluster.version_info(version).await.map_err(|e| match e {
            // A description is written once: a malformed one stays so.
            RedisStoreError::Corrupt(reason) => {
                SwitchError::Unservable(Unservable::Refused(reason))
            }
            e => SwitchError::Cluster(e),
        })?;
        let retired = Arc::new(AtomicBool::new(false));
        let version = NewVersion {
            info,
            blocked: self.blocked.clone(),
            cluster: Arc::clone(cluster),
            breaker: Arc::clone(breaker),
            retired: Arc::clone(&retired),
            before: Arc::default(),
            feeds: OnceLock::new(),
        };
        let make = Arc::clone(&self.service);
        let (service, version) =
            tokio::task::spawn_blocking(move || make(&version).map(|service| (service, version)))
                .await
                .map_err(|e| {
                    SwitchError::Unservable(Unservable::Missing(format!("opening it failed: {e}")))
                })?
                .map_err(SwitchError::Unservable)?;
        let NewVersion {
            info,
            before,
            feeds,
            ..
        } = version;
        let data = DataInfo {
            users: info.users,
            items: info.items,
            bytes: info.items.saturating_mul(4),
            load_seconds: started.elapsed().as_secs_f64(),
            version: Some(DataVersion {
                id: format!("{:016x}", info.snapshot),
                created_unix_ms: info.created_unix_ms,
                source: format!("redis version {}", info.version),
            }),
        };
        Ok(Served {
            version: info.version,
            service: Arc::new(service),
            retired,
            data,
            before,
            feeds: feeds.into_inner(),
        })
    }

    /// Serves `version` from now on, and says so as `what`.
    fn serve(&self, version: &Served<T>, breaker: &Breaker, what: &str) {
        self.publish
            .serve(Arc::clone(&version.service), version.data.clone());
        self.report(breaker, Some(version.version), Some(version.version));
        self.publish.ready();
        let data = &version.data;
        info!(self.logger, "{}", what;
            "version" => version.version, "users" => data.users, "items" => data.items,
            "snapshot" => data.version.as_ref().map(|v| v.id.clone()),
            "load_ms" => (data.load_seconds * 1000.0) as u64);
    }

    fn report(&self, breaker: &Breaker, version: Option<u64>, published: Option<u64>) {
        let state = breaker.state();
        self.publish.health(StorageHealth {
            kind: "redis",
            breaker: state.circuit(),
            open_groups: state.open as u64,
            groups: GROUPS as u64,
            opened_total: breaker.times_opened(),
            version: version.unwrap_or(0),
            published: published.unwrap_or(0),
        });
    }
}

/// A version's service, as the watcher serves it or keeps it.
struct Served<T> {
    version: u64,
    service: Arc<T>,
    /// Stops its storage when the cluster drops the version.
    retired: Arc<AtomicBool>,
    /// What it holds, as first published.
    data: DataInfo,
    /// The version its storage carries from.
    before: Arc<ArcSwapOption<Before>>,
    /// Its feeds, for the version after it to carry from.
    feeds: Option<Arc<dyn RankedFeeds>>,
}

/// What a version carries from when the cluster keeps `previous`: its
/// number, and its feeds if one of `mapped` serves them.
fn before_of<'a, T: 'a>(
    previous: Option<u64>,
    epoch: u64,
    mapped: impl IntoIterator<Item = &'a Served<T>>,
) -> Option<Arc<Before>> {
    let version = previous?;
    let feeds = mapped
        .into_iter()
        .find(|served| served.version == version)
        .and_then(|served| served.feeds.clone());
    Some(Arc::new(Before::new(version, epoch, feeds)))
}

/// Why a frontend did not switch to a version.
#[derive(Debug)]
enum SwitchError {
    /// The cluster failed: the switch is tried again later.
    Cluster(RedisStoreError),
    /// The caller could not make its service.
    Unservable(Unservable),
}

impl<T, F> std::fmt::Debug for Watcher<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("cluster", &self.cluster)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}
