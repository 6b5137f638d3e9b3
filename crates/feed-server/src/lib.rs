//! The `feed-server` binary's wiring, kept in a library so tests can reach it.
//!
//! It reads the configuration ([`settings`]: the root and the binary's own
//! sections; each other section is defined and checked in the crate that
//! owns it), builds the logger
//! ([`logging`]), opens the listeners and starts actix-web at once, and
//! wires one storage kind to the delivery layer: for the memory mode a
//! [`Loader`] on a background thread (the API answers 503 and `/readyz`
//! says "loading" meanwhile) and `feed_memory`'s `DataManager` ([`run`]);
//! for the Redis mode `feed_redis`'s `Watcher` ([`run_redis`]). Each
//! publishes through a `feed_http::Serving`. On SIGTERM or SIGINT it drains
//! and stops. It is the only crate that knows every other one, and the home
//! of the outbound adapter that logs feed errors ([`recorder`]). It holds
//! no rule about data, progress or versions: those live in the storage
//! crates (docs/ARCHITECTURE.md).

pub mod export;
pub mod import;
pub mod logging;
pub mod recorder;
pub mod redis;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use feed_domain::{BlockedItems, BlocklistControl, DataControl, SizeLimits};
use feed_http::{
    Counters, FeedErrorKind, FeedSlot, Lifecycle, LoadFailure, Mode, Refusal, RequestGate,
    ServerConfig, Serving, serve,
};
pub use feed_http::{Listeners, Stopped, Stops, bind};
use feed_memory::{Blocked, DataManager, OffsetMap, lifecycle};
use slog::{Logger, error, info, o, warn};
use tokio::sync::oneshot;

use crate::recorder::LoggingRecorder;

/// The feed service of the memory mode as this binary runs it: every port
/// resolved at compile time.
pub type MemoryFeedService = feed_memory::MemoryFeedService<Arc<LoggingRecorder>>;

/// A loaded version of the memory mode's data.
pub type Loaded = feed_memory::Loaded<Arc<LoggingRecorder>>;
use crate::settings::{ServiceSpec, Settings};

/// Why the data could not be loaded. The server logs it and exits non-zero:
/// a process that can never serve must not look alive.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Loading failed.
    #[error("{0}")]
    Failed(String),
    /// The loader panicked.
    #[error("the loader panicked: {0}")]
    Panicked(String),
}

/// Loads the data on the loading thread: given the error recorder and a
/// logger, the data to serve.
pub type Loader =
    Box<dyn FnOnce(Arc<LoggingRecorder>, &Logger) -> Result<Loaded, LoadError> + Send>;

/// The loader of the synthetic data set of `spec`, with its progress in
/// `offsets`.
pub fn synthetic_loader(spec: ServiceSpec, offsets: OffsetMap) -> Loader {
    first_loader(
        lifecycle::First::Synthetic {
            spec: spec.data,
            offsets,
        },
        spec.limits,
    )
}

/// The loader of `first`, opened before the servers start, for answers of
/// up to `limits`.
pub fn first_loader(first: lifecycle::First, limits: SizeLimits) -> Loader {
    Box::new(move |recorder, logger| Ok(first.load(limits, recorder, logger)))
}

/// Serves until a stop request, then drains and returns.
///
/// Both listeners serve at once; `loader` runs on a background thread and
/// its service is put in place when done. On the first stop request (see
/// [`Stops`]) the server stops advertising readiness, keeps serving for
/// `server.shutdown_delay_ms` (answering with `Connection: close`), then
/// stops accepting and waits up to `server.shutdown_timeout_ms` for in-flight
/// requests. A second request, in any phase, stops it at once.
///
/// # Errors
/// An I/O error when a server cannot start; [`LoadError`] (as an I/O error
/// of kind `Other`) when the loader fails or panics: the servers are then
/// stopped at once.
pub fn run(
    settings: &Settings,
    limits: SizeLimits,
    listeners: Listeners,
    logger: &Logger,
    loader: Loader,
    stops: Stops,
) -> std::io::Result<Stopped> {
    let addr: SocketAddr = listeners.public.local_addr()?;
    let admin_addr: SocketAddr = listeners.admin.local_addr()?;
    let workers = settings.workers();
    let parts = Parts::new(settings, logger)?;
    // Before the loader starts: "ready" must never come before "listening".
    parts.listening(logger, addr, admin_addr, workers);
    let slot = web::Data::new(FeedSlot::<MemoryFeedService>::empty());
    let manager = Arc::new(DataManager::new(
        Arc::new(Serving::new(
            slot.clone(),
            parts.gate.lifecycle().clone(),
            Arc::clone(&parts.counters),
        )),
        Arc::clone(&parts.recorder),
        limits,
        settings.data.snapshot_place(),
        settings.progress.place(),
        logger.new(o!("component" => "data")),
    ));
    // The blocklist is in force before the first answer.
    let blocked = manager
        .open_blocklist()
        .map_err(|e| std::io::Error::other(format!("progress.path: {e}")))?;
    if blocked > 0 {
        info!(logger, "blocklist restored"; "blocked" => blocked);
    }

    let (load_failed, load_failure) = oneshot::channel::<LoadFailure>();
    // Started once the servers run, so that "feed-server ready" always
    // means the listener is being served.
    let start_loader = {
        let (logger, manager) = (logger.clone(), Arc::clone(&manager));
        move || {
            std::thread::Builder::new()
                .name("load".into())
                .spawn(move || {
                    let recorder = Arc::clone(manager.recorder());
                    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        loader(recorder, &logger)
                    }))
                    .unwrap_or_else(|panic| Err(LoadError::Panicked(panic_message(&*panic))));
                    let loaded = match loaded {
                        Ok(loaded) => loaded,
                        Err(e) => {
                            error!(logger, "loading the feeds failed"; "error" => %e);
                            let _ = load_failed.send(e.into());
                            return;
                        }
                    };
                    let info = loaded.info.clone();
                    // The data is in place before the server says "ready".
                    manager.install_first(loaded);
                    info!(logger, "feed-server ready";
                    "users" => info.users, "items" => info.items, "feed_bytes" => info.bytes,
                    "load_ms" => (info.load_seconds * 1e3) as u64,
                    "snapshot_id" => info.version.as_ref().map_or("", |v| v.id.as_str()),
                    "listen" => %addr, "admin" => %admin_addr, "workers" => workers);
                })
        }
    };

    // Progress to disk every `progress.sync_ms`, and the snapshot file
    // watched, until the servers have stopped.
    let background = manager.start_background(
        settings
            .progress
            .dir()
            .map(|_| Duration::from_millis(settings.progress.sync_ms)),
        settings
            .data
            .watch
            .then(|| Duration::from_millis(settings.data.watch_interval_ms)),
    )?;
    let control = Arc::clone(&manager) as Arc<dyn DataControl>;
    let hangup = Arc::clone(&control);
    let mut loader = None;
    let stopped = serve(
        &parts.server,
        listeners,
        logger,
        stops,
        &parts.gate,
        Mode {
            slot,
            data_control: Some(control),
            blocklist: Some(Arc::clone(&manager) as Arc<dyn BlocklistControl>),
            load_failure,
            tasks: || {
                loader = Some(start_loader()?);
                reload_on_hangup(hangup);
                Ok(())
            },
        },
    );
    // The servers have stopped (or could not run): the background threads
    // stop either way.
    let syncing = background.stop();
    let stopped = stopped?;
    if !loader.is_some_and(|loader| loader.is_finished()) {
        warn!(logger, "stopped before the feeds finished loading");
    }
    // No request moves progress any more. One last sync, so that a restart
    // loses nothing.
    if syncing {
        let started = Instant::now();
        manager.sync(true);
        info!(logger, "progress synced at shutdown"; "ms" => started.elapsed().as_millis());
    }
    parts.summary(logger, stopped);
    Ok(stopped)
}

/// Serves feeds from the Redis Cluster of `[redis]` until a stop request,
/// then drains and returns, like [`run`]. The frontend keeps no progress:
/// it reads the version pointer every `redis.poll_ms`, serves the version
/// it names from that version's snapshot in `redis.snapshots` (ready once
/// it has one), and answers from the fallback list while the cluster, or
/// the node of a user's slots, is down.
///
/// # Errors
/// As [`run`]; a cluster that cannot be reached is not an error (the
/// frontend keeps trying, and says "loading" until it has data).
pub fn run_redis(
    settings: &Settings,
    limits: SizeLimits,
    listeners: Listeners,
    logger: &Logger,
    stops: Stops,
) -> std::io::Result<Stopped> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let cluster = settings
        .redis
        .cluster()
        .map_err(|e| invalid(e.to_string()))?;
    let snapshots = settings
        .redis
        .snapshot_folder()
        .map_err(|e| invalid(e.to_string()))?;
    let parts = Parts::new(settings, logger)?;
    parts.listening(
        logger,
        listeners.public.local_addr()?,
        listeners.admin.local_addr()?,
        settings.workers(),
    );
    let slot = web::Data::new(FeedSlot::<redis::RedisFeedService>::empty());
    // The items taken down: every frontend follows the cluster's blocklist
    // into its own copy, which its requests check.
    let blocked = Arc::new(Blocked::default());
    let left_slot = slot.clone();
    let blocklist = feed_redis::RedisBlocklist::new(
        cluster.clone(),
        Arc::clone(&blocked) as Arc<dyn BlockedItems>,
        Arc::new(move |after: &dyn Fn(u32) -> bool| {
            left_slot
                .current()
                .map(|service| service.random().unblocked(after))
        }),
        limits.max_size().get(),
        logger.new(o!("component" => "blocklist")),
    );
    // Never sent: nothing is loaded here that could fail for good.
    let (_never, load_failure) = oneshot::channel::<LoadFailure>();
    let watcher = feed_redis::Watcher {
        cluster,
        breaker: settings.redis.breaker(),
        poll: Duration::from_millis(settings.redis.poll_ms),
        publish: Arc::new(Serving::new(
            slot.clone(),
            parts.gate.lifecycle().clone(),
            Arc::clone(&parts.counters),
        )),
        service: Arc::new(redis::version_service(
            &parts.recorder,
            limits,
            snapshots,
            Arc::clone(&blocked),
        )),
        blocked: Some(Arc::clone(&blocked) as Arc<dyn BlockedItems>),
        logger: logger.new(o!("component" => "redis")),
    };
    let stopped = serve(
        &parts.server,
        listeners,
        logger,
        stops,
        &parts.gate,
        Mode {
            slot,
            data_control: None,
            blocklist: Some(Arc::new(blocklist) as Arc<dyn BlocklistControl>),
            load_failure,
            tasks: move || {
                actix_web::rt::spawn(watcher.run());
                Ok(())
            },
        },
    )?;
    parts.summary(logger, stopped);
    Ok(stopped)
}

/// What both storage modes share: the counters, the error recorder, the
/// request gate (which holds the lifecycle) and how the servers run.
struct Parts {
    counters: Arc<Counters>,
    recorder: Arc<LoggingRecorder>,
    gate: RequestGate,
    server: ServerConfig,
}

impl Parts {
    /// # Errors
    /// Settings that [`Settings::load`] would have refused, as an I/O
    /// error of kind `InvalidInput`.
    fn new(settings: &Settings, logger: &Logger) -> std::io::Result<Self> {
        let invalid = |e: feed_domain::InvalidSetting| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
        };
        let access = settings.admin.access().map_err(invalid)?;
        let proxies = settings.limits.forwarded_for().map_err(invalid)?;
        if access.is_open() && !settings.admin.is_loopback() {
            warn!(logger, "the admin listener is open to anyone who reaches it (admin.allow_open)";
                "admin_host" => &settings.admin.host);
        }
        let lifecycle = web::Data::new(Lifecycle::loading());
        let counters = Arc::new(Counters::new(settings.admin.metrics));
        let recorder = Arc::new(LoggingRecorder::new(
            logger.new(o!("component" => "feed")),
            Arc::clone(&counters),
        ));
        let gate = RequestGate::builder(settings.limits.request_limits(), lifecycle.clone())
            .rate_limiter(settings.limits.rate_limiter())
            .trusted_proxies(proxies)
            .counters(Arc::clone(&counters))
            .logger(
                logger.new(o!("component" => "http")),
                settings.log.access_sample,
            )
            .build();
        let limits = &settings.limits;
        let server = ServerConfig {
            workers: settings.workers(),
            max_connections: limits.max_connections,
            client_request_timeout: Duration::from_millis(limits.client_request_timeout_ms),
            keep_alive: Duration::from_millis(limits.keep_alive_ms),
            shutdown_delay: Duration::from_millis(settings.server.shutdown_delay_ms),
            shutdown_timeout: Duration::from_millis(settings.server.shutdown_timeout_ms),
            admin_access: access,
            proxy_protocol: limits.proxy_protocol().map_err(invalid)?,
        };
        Ok(Self {
            counters,
            recorder,
            gate,
            server,
        })
    }

    /// The first log line: both listeners are open (they serve as soon as
    /// the servers start, the feed route with 503 until the data is in).
    fn listening(&self, logger: &Logger, addr: SocketAddr, admin: SocketAddr, workers: usize) {
        info!(logger, "listening, loading feeds"; "listen" => %addr, "admin" => %admin,
            "admin_token" => !self.server.admin_access.is_open(), "workers" => workers);
    }

    /// The last log line.
    fn summary(&self, logger: &Logger, stopped: Stopped) {
        let totals = self.counters.totals();
        info!(logger, "feed-server stopped";
            "requests" => totals.all_requests, "shed" => totals.refused(Refusal::Shed),
            "rate_limited" => totals.refused(Refusal::RateLimited),
            "too_large" => totals.refused(Refusal::Oversized),
            "unknown_users" => totals.feed_errors_of(FeedErrorKind::UnknownUser),
            "storage_errors" => totals.feed_errors_of(FeedErrorKind::Storage),
            "forced" => stopped == Stopped::Forced);
    }
}

/// Reloads the default snapshot on every SIGHUP.
fn reload_on_hangup(control: Arc<dyn DataControl>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    actix_web::rt::spawn(async move {
        while hangups.recv().await.is_some() {
            let control = Arc::clone(&control);
            // The outcome is logged and counted by the lifecycle.
            let _ = tokio::task::spawn_blocking(move || control.reload(None)).await;
        }
    });
}

/// The message of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
