//! The `feed-server` binary's wiring, kept in a library so tests can reach it.
//!
//! It reads the configuration ([`settings`]), builds the logger
//! ([`logging`]), opens the listener and starts actix-web at once, generates
//! the data set in the background (the API answers 503 and `/readyz` says
//! "loading" meanwhile), puts the in-memory adapters behind [`FeedService`]
//! and, on SIGTERM or SIGINT, drains and stops ([`run`]). It is the only crate
//! that knows every other one; it holds no business rule.

pub mod logging;
pub mod settings;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::{HttpServer, web};
use feed_domain::{FeedService, SizeLimits};
use feed_http::{
    Admin, DataInfo, Exposition, FeedSlot, Guard, Lifecycle, LogRecorder, Metrics, Sampler,
    Snapshot,
};
use feed_memory::{CatalogRandomFeed, DataSpec, FeedTable, MemoryFeedStorage};
use slog::{Logger, info, o, warn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::settings::{Settings, Validated};

/// The service as this binary runs it: every port resolved at compile time.
pub type Feeds = FeedService<MemoryFeedStorage, CatalogRandomFeed, Arc<LogRecorder>>;

/// How often data generation reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Connections the kernel may queue before the server accepts them.
const BACKLOG: i32 = 2048;

/// How often the dashboard snapshot is taken.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How often the rate limiter forgets idle clients.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Generates the data set on every core, logging progress each second, and
/// returns the service over it (reporting errors to `recorder`) with the
/// time generation took.
pub fn build_feeds(
    spec: &DataSpec,
    limits: SizeLimits,
    recorder: Arc<LogRecorder>,
    logger: &Logger,
) -> (Feeds, Duration) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    let progress = AtomicU64::new(0);
    let table = std::thread::scope(|scope| {
        let generator = scope.spawn(|| FeedTable::generate(spec, threads, &progress));
        let mut next_report = started + PROGRESS_EVERY;
        while !generator.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            if Instant::now() >= next_report {
                next_report += PROGRESS_EVERY;
                let done = progress.load(Ordering::Relaxed);
                info!(logger, "generating feeds";
                    "users_done" => done, "users" => spec.users(),
                    "percent" => done * 100 / u64::from(spec.users()).max(1));
            }
        }
        generator.join()
    });
    let table = match table {
        Ok(table) => table,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let elapsed = started.elapsed();
    let feeds = FeedService::new(
        MemoryFeedStorage::new(table),
        CatalogRandomFeed::new(spec.catalog_size()),
        recorder,
        limits,
    );
    (feeds, elapsed)
}

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

/// Serves until a stop signal, then drains and returns.
///
/// Both listeners serve at once; the feeds are generated on a background
/// thread and put in place when done. On the first SIGTERM or SIGINT the
/// server stops advertising readiness, keeps serving for
/// `server.shutdown_delay_ms` (answering with `Connection: close`), then
/// stops accepting and waits up to `server.shutdown_timeout_ms` for in-flight
/// requests. A second signal stops it at once.
///
/// # Errors
/// An I/O error when a server cannot start.
pub fn run(
    settings: &Settings,
    valid: Validated,
    listeners: Listeners,
    logger: &Logger,
) -> std::io::Result<()> {
    let addr: SocketAddr = listeners.public.local_addr()?;
    let admin_addr: SocketAddr = listeners.admin.local_addr()?;
    let workers = settings.workers();
    let lifecycle = web::Data::new(Lifecycle::loading());
    let slot: web::Data<FeedSlot<_, _, _>> = web::Data::new(OnceLock::<Feeds>::new());
    let metrics = Arc::new(Metrics::new(settings.admin.metrics));
    let recorder = Arc::new(LogRecorder::new(logger.new(o!("component" => "feed"))));
    let guard = web::Data::new(
        Guard::new(settings.guard_limits(), lifecycle.clone())
            .with_rate_limiter(settings.rate_limiter())
            .with_metrics(Arc::clone(&metrics))
            .with_logger(
                logger.new(o!("component" => "http")),
                settings.log.access_sample,
            ),
    );
    let (snapshots, snapshot) = watch::channel(Snapshot::default());
    let admin = web::Data::new(Admin::new(
        Exposition::registry(Arc::clone(&metrics), guard.clone(), Arc::clone(&recorder)),
        snapshot,
        lifecycle.clone(),
    ));
    let limits = &settings.limits;
    info!(logger, "listening, loading feeds"; "listen" => %addr, "admin" => %admin_addr, "workers" => workers);

    let app_slot = slot.clone();
    let app_guard = guard.clone();
    let public = HttpServer::new(move || feed_http::app(app_slot.clone(), app_guard.clone()))
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

    let loader = {
        let (logger, lifecycle, slot, metrics) = (
            logger.clone(),
            lifecycle.clone(),
            slot.clone(),
            Arc::clone(&metrics),
        );
        std::thread::Builder::new()
            .name("load".into())
            .spawn(move || {
                let (feeds, generation) = build_feeds(&valid.data, valid.limits, recorder, &logger);
                let table = feeds.storage().table();
                let (users, items, bytes) = (table.users(), table.total_items(), table.bytes());
                metrics.set_data(DataInfo {
                    users: u64::from(users),
                    items: items as u64,
                    bytes: bytes as u64,
                    generation_seconds: generation.as_secs_f64(),
                });
                // The slot is set once, here; set it before saying "ready".
                if slot.set(feeds).is_ok() {
                    lifecycle.mark_loaded();
                }
                info!(logger, "feed-server ready";
                    "users" => users, "items" => items, "feed_bytes" => bytes,
                    "generation_ms" => generation.as_millis(), "listen" => %addr,
                    "admin" => %admin_addr, "workers" => workers);
            })?
    };

    let delay = Duration::from_millis(settings.server.shutdown_delay_ms);
    actix_web::rt::System::new().block_on(async {
        let public = public.listen(listeners.public)?.run();
        let admin_server = admin_server.listen(listeners.admin)?.run();
        let (handle, admin_handle) = (public.handle(), admin_server.handle());
        let drain_logger = logger.clone();
        let drain_lifecycle = lifecycle.clone();
        actix_web::rt::spawn(async move {
            let signal = stop_signal().await;
            drain_lifecycle.begin_drain();
            info!(drain_logger, "stop signal: draining"; "signal" => signal, "delay_ms" => delay.as_millis());
            tokio::select! {
                () = tokio::time::sleep(delay) => {
                    info!(drain_logger, "no longer accepting; finishing in-flight requests");
                    handle.stop(true).await;
                }
                signal = stop_signal() => {
                    warn!(drain_logger, "second stop signal: stopping now"; "signal" => signal);
                    handle.stop(false).await;
                }
            }
            admin_handle.stop(true).await;
        });
        let sampler_guard = guard.clone();
        actix_web::rt::spawn(async move {
            let mut sampler = Sampler::new(metrics, sampler_guard);
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                every.tick().await;
                snapshots.send_replace(sampler.sample());
            }
        });
        if guard.rate_limiter().is_some() {
            let guard = guard.clone();
            actix_web::rt::spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                while let Some(rate) = guard.rate_limiter() {
                    every.tick().await;
                    rate.sweep();
                }
            });
        }
        let (public, admin) = tokio::join!(public, admin_server);
        public.and(admin)
    })?;
    if !loader.is_finished() {
        warn!(logger, "stopped before the feeds finished loading");
    }

    let counts = guard.counts();
    let errors = slot.get().map(|feeds| feeds.errors().counts());
    info!(logger, "feed-server stopped";
        "requests" => counts.requests(), "shed" => counts.shed(),
        "rate_limited" => counts.rate_limited(), "too_large" => counts.too_large(),
        "unknown_users" => errors.map_or(0, |e| e.unknown_user()),
        "storage_errors" => errors.map_or(0, |e| e.storage()));
    Ok(())
}

/// Waits for SIGTERM or SIGINT and names the one that came.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can still be killed; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
