//! The `feed-server` binary's wiring, kept in a library so tests can reach it.
//!
//! It reads the configuration ([`settings`]), builds the logger
//! ([`logging`]), generates the data set, puts the in-memory adapters behind
//! [`FeedService`] and hands it to actix-web ([`serve`]). It is the only
//! crate that knows every other one; it holds no business rule.

pub mod logging;
pub mod settings;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, web};
use feed_domain::{FeedService, SizeLimits};
use feed_http::LogRecorder;
use feed_memory::{CatalogRandomFeed, DataSpec, FeedTable, MemoryFeedStorage};
use slog::{Logger, info};
use socket2::{Domain, Protocol, Socket, Type};

/// The service as this binary runs it: every port resolved at compile time.
pub type Feeds = FeedService<MemoryFeedStorage, CatalogRandomFeed, Arc<LogRecorder>>;

/// How often data generation reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Connections the kernel may queue before the server accepts them.
const BACKLOG: i32 = 2048;

/// Generates the data set on every core, logging progress each second, and
/// returns the service over it with the time generation took.
pub fn build_feeds(spec: &DataSpec, limits: SizeLimits, logger: &Logger) -> (Feeds, Duration) {
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
        Arc::new(LogRecorder::new(
            logger.new(slog::o!("component" => "feed")),
        )),
        limits,
    );
    (feeds, elapsed)
}

/// Opens the listening socket for `host:port`.
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

/// Serves the public API on `listener` with `workers` threads until the
/// process is told to stop (SIGINT or SIGTERM: actix-web then stops accepting
/// and lets in-flight requests finish).
///
/// # Errors
/// An I/O error when the server cannot start.
pub async fn serve(listener: TcpListener, workers: usize, feeds: Feeds) -> std::io::Result<()> {
    let feeds = web::Data::new(feeds);
    HttpServer::new(move || {
        let feeds = feeds.clone();
        App::new().configure(move |cfg| feed_http::configure(cfg, feeds))
    })
    .workers(workers)
    .listen(listener)?
    .run()
    .await
}

/// The address a listener ended up on (useful with port 0).
///
/// # Errors
/// The operating system's error when the socket has no address.
pub fn local_addr(listener: &TcpListener) -> std::io::Result<SocketAddr> {
    listener.local_addr()
}
