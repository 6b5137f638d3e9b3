//! The `feed-server` binary's wiring, kept in a library so tests can reach it.
//!
//! It reads the configuration ([`settings`]: the root and the binary's own
//! sections; each other section is defined and checked in the crate that
//! owns it), builds the logger ([`logging`]), opens the listener and starts actix-web at once, loads the
//! data on a background thread with a [`Loader`] (the API answers 503 and
//! `/readyz` says "loading" meanwhile), puts the in-memory adapters behind
//! [`FeedService`] and, on SIGTERM or SIGINT, drains and stops ([`run`]). It
//! is the only crate that knows every other one, and the home of the
//! outbound adapter that logs feed errors ([`recorder`]).
//!
//! Two data lifecycles still live here rather than in the adapter crates
//! that own them (docs/ARCHITECTURE.md, "Where the lifecycles live"): the
//! memory mode's versions, reloads and progress ownership ([`data`]) and
//! the Redis frontend's version watcher ([`redis`]).

pub mod data;
pub mod import;
pub mod logging;
pub mod recorder;
pub mod redis;
pub mod settings;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpServer, web};
use feed_domain::{ErrorRecorder, FeedService, FeedStorage, RandomFeed, SizeLimits};
use feed_http::{
    Admin, AdminAccess, Counters, DataControl, Exposition, FeedErrorKind, FeedSlot, Lifecycle,
    Refusal, RequestGate, Sampler,
};
use feed_memory::{OffsetMap, Snapshot};
use slog::{Logger, error, info, o, warn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, oneshot, watch};

pub use crate::data::{DataManager, Loaded, MemoryFeedService, ProgressPlace};
use crate::recorder::LoggingRecorder;
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
    Box::new(move |recorder, logger| {
        Ok(data::synthetic(
            &spec.data,
            spec.limits,
            recorder,
            offsets,
            logger,
        ))
    })
}

/// The loader of an opened (so wholly verified) `snapshot`, opened in
/// `took`, with its progress in `offsets`.
pub fn snapshot_loader(
    snapshot: Snapshot,
    took: Duration,
    limits: SizeLimits,
    offsets: OffsetMap,
) -> Loader {
    Box::new(move |recorder, _| {
        Ok(data::from_snapshot(
            snapshot, took, limits, recorder, offsets,
        ))
    })
}

/// Where stop requests come from.
#[derive(Debug)]
pub enum Stops {
    /// SIGTERM and SIGINT.
    Signals,
    /// Names sent on a channel (for tests that run the server in-process).
    Channel(mpsc::UnboundedReceiver<&'static str>),
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Drained and stopped after a stop request.
    Drained,
    /// A second stop request stopped it at once, without waiting for
    /// requests in flight.
    Forced,
}

/// Connections the kernel may queue before the server accepts them.
const BACKLOG: i32 = 2048;

/// How often the dashboard snapshot is taken.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How often the rate limiter forgets idle clients.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Opens the listening socket for `host:port`, with a backlog of 2048.
///
/// # Errors
/// The operating system's error when the address is unusable or taken.
pub fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let addr = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "host resolves to no address")
    })?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// The two listening sockets.
#[derive(Debug)]
pub struct Listeners {
    /// The public API: feed and health.
    pub public: TcpListener,
    /// Metrics, stats, dashboard, profiler.
    pub admin: TcpListener,
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
        slot.clone(),
        Arc::clone(&parts.counters),
        Arc::clone(&parts.recorder),
        limits,
        settings.snapshot_place(),
        settings.progress_place(),
        logger.new(o!("component" => "data")),
    ));

    let (load_failed, load_failure) = oneshot::channel::<LoadError>();
    // Started once the servers run, so that "feed-server ready" always
    // means the listener is being served.
    let start_loader = {
        let (logger, lifecycle, manager) = (
            logger.clone(),
            parts.lifecycle.clone(),
            Arc::clone(&manager),
        );
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
                            let _ = load_failed.send(e);
                            return;
                        }
                    };
                    let info = loaded.info.clone();
                    // The data is in place before the server says "ready".
                    manager.install_first(loaded);
                    lifecycle.mark_loaded();
                    info!(logger, "feed-server ready";
                    "users" => info.users, "items" => info.items, "feed_bytes" => info.bytes,
                    "load_ms" => (info.load_seconds * 1e3) as u64,
                    "snapshot_id" => info.snapshot.as_ref().map_or("", |s| s.id.as_str()),
                    "listen" => %addr, "admin" => %admin_addr, "workers" => workers);
                })
        }
    };

    // Progress to disk every `progress.sync_ms`, on its own thread (an
    // msync can block), until the servers have stopped.
    let syncing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let syncer = settings.progress_dir().map(|_| {
        let (manager, syncing) = (Arc::clone(&manager), Arc::clone(&syncing));
        let every = Duration::from_millis(settings.progress.sync_ms);
        std::thread::Builder::new()
            .name("progress-sync".into())
            .spawn(move || {
                while syncing.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(every);
                    manager.sync(false);
                }
            })
    });
    let syncer = syncer.transpose()?;

    let control = Arc::clone(&manager) as Arc<dyn DataControl>;
    let watch = settings
        .data
        .watch
        .then(|| Duration::from_millis(settings.data.watch_interval_ms));
    let tasks_manager = Arc::clone(&manager);
    let mut loader = None;
    let stopped = serve(
        settings,
        listeners,
        logger,
        stops,
        &parts,
        Mode {
            slot,
            data_control: Some(control),
            load_failure,
            tasks: || {
                loader = Some(start_loader()?);
                reload_on_hangup(Arc::clone(&tasks_manager));
                if let Some(every) = watch {
                    watch_file(every, tasks_manager);
                }
                Ok(())
            },
        },
    )?;
    if !loader.is_some_and(|loader| loader.is_finished()) {
        warn!(logger, "stopped before the feeds finished loading");
    }
    // The servers have stopped: no request moves progress any more. One
    // last sync, so that a restart loses nothing.
    syncing.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Some(syncer) = syncer {
        let _ = syncer.join();
        let started = Instant::now();
        manager.sync(true);
        info!(logger, "progress synced at shutdown"; "ms" => started.elapsed().as_millis());
    }
    parts.summary(logger, stopped);
    Ok(stopped)
}

/// Serves feeds from the Redis Cluster of `[redis]` until a stop request,
/// then drains and returns, like [`run`]. The frontend holds no feed: it
/// reads the version pointer every `redis.poll_ms`, serves the version it
/// names (ready once it has one), and answers from that version's fallback
/// list while the cluster, or the node of a user's slots, is down.
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
    let cluster = settings
        .redis
        .cluster()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let parts = Parts::new(settings, logger)?;
    parts.listening(
        logger,
        listeners.public.local_addr()?,
        listeners.admin.local_addr()?,
        settings.workers(),
    );
    let slot = web::Data::new(FeedSlot::<redis::RedisFeedService>::empty());
    // Never sent: nothing is loaded here that could fail for good.
    let (_never, load_failure) = oneshot::channel::<LoadError>();
    let watcher = redis::Watcher {
        cluster,
        breaker: settings.redis.breaker(),
        poll: Duration::from_millis(settings.redis.poll_ms),
        limits,
        slot: slot.clone(),
        lifecycle: parts.lifecycle.clone(),
        counters: Arc::clone(&parts.counters),
        recorder: Arc::clone(&parts.recorder),
        logger: logger.new(o!("component" => "redis")),
    };
    let stopped = serve(
        settings,
        listeners,
        logger,
        stops,
        &parts,
        Mode {
            slot,
            data_control: None,
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

/// What both storage modes share: the lifecycle, the counters, the error
/// recorder, the request gate and who may use the admin endpoints.
struct Parts {
    lifecycle: web::Data<Lifecycle>,
    counters: Arc<Counters>,
    recorder: Arc<LoggingRecorder>,
    gate: RequestGate,
    access: AdminAccess,
}

impl Parts {
    /// # Errors
    /// Settings that [`Settings::load`] would have refused, as an I/O
    /// error of kind `InvalidInput`.
    fn new(settings: &Settings, logger: &Logger) -> std::io::Result<Self> {
        let invalid = |e: settings::SettingsError| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
        };
        let access = settings.admin.access().map_err(|e| invalid(e.into()))?;
        let proxies = settings.trusted_proxies().map_err(invalid)?;
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
        let gate = RequestGate::builder(settings.request_limits(), lifecycle.clone())
            .rate_limiter(settings.rate_limiter())
            .trusted_proxies(proxies)
            .counters(Arc::clone(&counters))
            .logger(
                logger.new(o!("component" => "http")),
                settings.log.access_sample,
            )
            .build();
        Ok(Self {
            lifecycle,
            counters,
            recorder,
            gate,
            access,
        })
    }

    /// The first log line: both listeners are open (they serve as soon as
    /// the servers start, the feed route with 503 until the data is in).
    fn listening(&self, logger: &Logger, addr: SocketAddr, admin: SocketAddr, workers: usize) {
        info!(logger, "listening, loading feeds"; "listen" => %addr, "admin" => %admin,
            "admin_token" => !self.access.is_open(), "workers" => workers);
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

/// What a storage mode hands [`serve`]: where its service is put, what
/// the admin endpoints may do with its data, how a failed load is told, and
/// what to start once the servers run.
struct Mode<T, F> {
    /// The service served, once there is one.
    slot: web::Data<FeedSlot<T>>,
    /// Reload and rollback, where the mode has them.
    data_control: Option<Arc<dyn DataControl>>,
    /// Resolves when the data can never be loaded.
    load_failure: oneshot::Receiver<LoadError>,
    /// Runs once inside the runtime, after both servers have started, to
    /// start what the mode needs (its loading among them).
    tasks: F,
}

/// Runs both servers over `mode`'s slot until a stop request (or a failed
/// load), draining as [`run`] describes.
fn serve<S, R, E>(
    settings: &Settings,
    listeners: Listeners,
    logger: &Logger,
    stops: Stops,
    parts: &Parts,
    mode: Mode<FeedService<S, R, E>, impl FnOnce() -> std::io::Result<()>>,
) -> std::io::Result<Stopped>
where
    S: FeedStorage,
    R: RandomFeed,
    E: ErrorRecorder,
{
    let Mode {
        slot,
        data_control,
        load_failure,
        tasks,
    } = mode;
    let workers = settings.workers();
    let (lifecycle, gate) = (&parts.lifecycle, &parts.gate);
    let (snapshots, snapshot) = watch::channel(feed_http::Snapshot::default());
    let mut admin = Admin::new(
        Exposition::registry(gate.clone()),
        snapshot,
        lifecycle.clone(),
    )
    .with_access(parts.access.clone());
    if let Some(control) = data_control {
        admin = admin.with_data_control(control);
    }
    let admin = web::Data::new(admin);
    let limits = &settings.limits;

    let app_slot = slot.clone();
    let app_gate = gate.clone();
    let public = HttpServer::new(move || feed_http::app(app_slot.clone(), app_gate.clone()))
        .workers(workers)
        .max_connections(limits.max_connections.div_ceil(workers).max(1))
        .client_request_timeout(Duration::from_millis(limits.client_request_timeout_ms))
        .keep_alive(Duration::from_millis(limits.keep_alive_ms))
        .shutdown_timeout(settings.server.shutdown_timeout_ms.div_ceil(1000))
        .disable_signals();
    let admin_server = HttpServer::new(move || feed_http::admin_app(admin.clone()))
        .workers(1)
        .shutdown_timeout(1)
        .disable_signals();

    let delay = Duration::from_millis(settings.server.shutdown_delay_ms);
    let ending = actix_web::rt::System::new().block_on(async {
        let public = public.listen(listeners.public)?.run();
        let admin_server = admin_server.listen(listeners.admin)?.run();
        let handles = (public.handle(), admin_server.handle());
        let sampler_gate = gate.clone();
        actix_web::rt::spawn(async move {
            let mut sampler = Sampler::new(sampler_gate);
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                every.tick().await;
                snapshots.send_replace(sampler.sample());
            }
        });
        tasks()?;
        if gate.rate_limiter().is_some() {
            let gate = gate.clone();
            actix_web::rt::spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                while let Some(rate) = gate.rate_limiter() {
                    every.tick().await;
                    rate.sweep();
                }
            });
        }
        let control = control(
            stop_requests(stops),
            load_failure,
            handles,
            lifecycle,
            delay,
            logger,
        );
        tokio::select! {
            served = async { tokio::join!(public, admin_server) } => {
                served.0.and(served.1).map(|()| Ok(Stopped::Drained))
            }
            ending = control => Ok(ending),
        }
    })?;
    ending.map_err(std::io::Error::other)
}

/// Drives the shutdown: waits for the first stop request (or a failed
/// load), drains, stops accepting, and answers a second stop request in any
/// of those phases by stopping at once. Resolves only when the servers must
/// stop at once; a graceful stop ends when the servers do.
async fn control(
    mut stops: mpsc::UnboundedReceiver<&'static str>,
    load_failure: oneshot::Receiver<LoadError>,
    (public, admin): (actix_web::dev::ServerHandle, actix_web::dev::ServerHandle),
    lifecycle: &Lifecycle,
    delay: Duration,
    logger: &Logger,
) -> Result<Stopped, LoadError> {
    let mut next_stop = async move || match stops.recv().await {
        Some(name) => name,
        // Nobody can ask any more: never resolve.
        None => std::future::pending().await,
    };
    let stop_now = |signal| {
        warn!(logger, "second stop signal: stopping now"; "signal" => signal);
        // Sent at once; not awaited, so a server busy draining cannot hold us.
        drop(public.stop(false));
        drop(admin.stop(false));
    };
    tokio::select! {
        signal = next_stop() => {
            lifecycle.begin_drain();
            info!(logger, "stop signal: draining"; "signal" => signal, "delay_ms" => delay.as_millis());
        }
        Ok(failure) = load_failure => {
            drop(public.stop(false));
            drop(admin.stop(false));
            return Err(failure);
        }
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        signal = next_stop() => {
            stop_now(signal);
            return Ok(Stopped::Forced);
        }
    }
    info!(logger, "no longer accepting; finishing in-flight requests");
    drop(public.stop(true));
    drop(admin.stop(true));
    let signal = next_stop().await;
    stop_now(signal);
    Ok(Stopped::Forced)
}

/// The stop requests of `stops`, as one channel.
fn stop_requests(stops: Stops) -> mpsc::UnboundedReceiver<&'static str> {
    match stops {
        Stops::Channel(receiver) => receiver,
        Stops::Signals => {
            use tokio::signal::unix::{SignalKind, signal};
            let (sender, receiver) = mpsc::unbounded_channel();
            // Registered once, before anything is served: a signal that
            // comes while the feeds load is not lost.
            if let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                actix_web::rt::spawn(async move {
                    loop {
                        let name = tokio::select! {
                            _ = term.recv() => "SIGTERM",
                            _ = int.recv() => "SIGINT",
                        };
                        if sender.send(name).is_err() {
                            return;
                        }
                    }
                });
            }
            // Without handlers the process can still be killed.
            receiver
        }
    }
}

/// Reloads the default snapshot on every SIGHUP.
fn reload_on_hangup(manager: Arc<DataManager>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    actix_web::rt::spawn(async move {
        while hangups.recv().await.is_some() {
            let manager = Arc::clone(&manager);
            // The outcome is logged and counted by the manager.
            let _ = tokio::task::spawn_blocking(move || manager.reload(None)).await;
        }
    });
}

/// Reloads the default snapshot whenever its file is replaced, looking
/// every `every`.
fn watch_file(every: Duration, manager: Arc<DataManager>) {
    actix_web::rt::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            let manager = Arc::clone(&manager);
            let _ = tokio::task::spawn_blocking(move || manager.reload_if_replaced()).await;
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
