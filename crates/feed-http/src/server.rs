//! Running the two HTTP servers ([`serve`]): the public API and the admin
//! listener on their sockets ([`bind`], [`Listeners`]), the once-a-second
//! stats sampler and the rate limiter's sweep beside them, and the shutdown
//! from stop requests ([`Stops`]): stop advertising readiness, drain, stop
//! accepting, and stop at once on a second request in any phase.

use std::net::{TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_http::error::DispatchError;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{HttpServer, web};
use feed_domain::{
    BlocklistControl, DataControl, ErrorRecorder, FeedService, FeedStorage, RandomFeed,
};
use slog::{Logger, info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::access::AdminAccess;
use crate::admin::Admin;
use crate::client::TrustedProxies;
use crate::exposition::Exposition;
use crate::gate::RequestGate;
use crate::routes::FeedSlot;
use crate::state::Lifecycle;
use crate::stats::{Sampler, Snapshot};

/// Why the data can never be served: the server stops at once with it.
pub type LoadFailure = Box<dyn std::error::Error + Send + Sync>;

/// How the servers run, from the configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Worker threads of the public server.
    pub workers: usize,
    /// Connections held at once, across all workers.
    pub max_connections: usize,
    /// How long a client may take to send a request's head.
    pub client_request_timeout: Duration,
    /// How long an idle keep-alive connection is held.
    pub keep_alive: Duration,
    /// How long serving goes on after a stop request, answering with
    /// `Connection: close` while readiness says "draining".
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take once accepting has stopped.
    pub shutdown_timeout: Duration,
    /// Who may use the admin endpoints.
    pub admin_access: AdminAccess,
    /// The proxies whose public connections may open with a PROXY protocol
    /// header (see [`crate::proxy`]); `None`: plain HTTP only.
    pub proxy_protocol: Option<TrustedProxies>,
}

/// Where stop requests come from.
#[derive(Debug)]
pub enum Stops {
    /// SIGTERM and SIGINT.
    Signals,
    /// Names sent on a channel (for tests that run the server in-process).
    Channel(mpsc::UnboundedReceiver<&'static str>),
}

/// How [`serve`] ended.
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

/// How long a closing client has to take the last bytes (actix-web's
/// `HttpServer` default, kept for the PROXY protocol listener).
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

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

/// What a storage mode hands [`serve`]: where its service is put, what
/// the admin endpoints may do with its data, how a failed load is told, and
/// what to start once the servers run.
#[derive(Debug)]
pub struct Mode<T, F> {
    /// The service served, once there is one.
    pub slot: web::Data<FeedSlot<T>>,
    /// Reload and rollback, where the mode has them.
    pub data_control: Option<Arc<dyn DataControl>>,
    /// The blocklist, where the mode has one.
    pub blocklist: Option<Arc<dyn BlocklistControl>>,
    /// Resolves when the data can never be loaded.
    pub load_failure: oneshot::Receiver<LoadFailure>,
    /// Runs once inside the runtime, after both servers have started, to
    /// start what the mode needs (its loading among them).
    pub tasks: F,
}

/// Runs both servers over `mode`'s slot until a stop request (or a failed
/// load), then drains and returns.
///
/// Both listeners serve at once; `mode.tasks` runs once both servers have
/// started. On the first stop request (see [`Stops`]) the server stops
/// advertising readiness, keeps serving for `config.shutdown_delay`
/// (answering with `Connection: close`), then stops accepting and waits up
/// to `config.shutdown_timeout` for in-flight requests. A second request, in
/// any phase, stops it at once.
///
/// # Errors
/// An I/O error when a server cannot start; the failure of a load (as an
/// I/O error of kind `Other`): the servers are then stopped at once.
pub fn serve<S, R, E>(
    config: &ServerConfig,
    listeners: Listeners,
    logger: &Logger,
    stops: Stops,
    gate: &RequestGate,
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
        blocklist,
        load_failure,
        tasks,
    } = mode;
    let lifecycle = gate.lifecycle();
    let (snapshots, snapshot) = watch::channel(Snapshot::default());
    let mut admin = Admin::new(
        Exposition::registry(gate.clone()),
        snapshot,
        lifecycle.clone(),
    )
    .with_access(config.admin_access.clone());
    if let Some(control) = data_control {
        admin = admin.with_data_control(control);
    }
    if let Some(blocklist) = blocklist {
        gate.counters().set_blocklist(Arc::clone(&blocklist));
        admin = admin.with_blocklist(blocklist);
    }
    let admin = web::Data::new(admin);

    let admin_server = HttpServer::new(move || crate::admin_app(admin.clone()))
        .workers(1)
        .shutdown_timeout(1)
        .disable_signals();

    let delay = config.shutdown_delay;
    let ending = actix_web::rt::System::new().block_on(async {
        let public = public(config, listeners.public, &slot, gate)?;
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

/// The public server on `listener`: plain HTTP, or HTTP after a PROXY
/// protocol header when `config.proxy_protocol` is set. Both serve the same
/// [`crate::app`] with the same limits; the second is put together from
/// actix-web's own parts ([`HttpService`] behind a step that reads the
/// header), the way [`HttpServer::listen`] puts the first together.
fn public<S, R, E>(
    config: &ServerConfig,
    listener: TcpListener,
    slot: &web::Data<FeedSlot<FeedService<S, R, E>>>,
    gate: &RequestGate,
) -> std::io::Result<actix_web::dev::Server>
where
    S: FeedStorage,
    R: RandomFeed,
    E: ErrorRecorder,
{
    let workers = config.workers;
    let max_connections = config.max_connections.div_ceil(workers).max(1);
    let shutdown_secs =
        config.shutdown_timeout.as_secs() + u64::from(config.shutdown_timeout.subsec_nanos() > 0);
    let (slot, gate) = (slot.clone(), gate.clone());
    let Some(trusted) = config.proxy_protocol.clone() else {
        return Ok(
            HttpServer::new(move || crate::app(slot.clone(), gate.clone()))
                .workers(workers)
                .max_connections(max_connections)
                .client_request_timeout(config.client_request_timeout)
                .keep_alive(config.keep_alive)
                .shutdown_timeout(shutdown_secs)
                .disable_signals()
                .listen(listener)?
                .run(),
        );
    };
    let addr = listener.local_addr()?;
    let (request_timeout, keep_alive) = (config.client_request_timeout, config.keep_alive);
    let builder = actix_server::Server::build();
    // On a graceful stop, idle keep-alive connections close at once, as
    // `HttpServer` arranges.
    let stopping = builder.graceful_shutdown_signal();
    Ok(builder
        .workers(workers)
        .max_concurrent_connections(max_connections)
        .shutdown_timeout(shutdown_secs)
        .disable_signals()
        .listen("feed-public-proxied", listener, move || {
            let (trusted, stopping) = (trusted.clone(), stopping.clone());
            let refusals = gate.clone();
            let app = crate::app(slot.clone(), gate.clone())
                .into_factory()
                .map_err(|err| err.error_response());
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .keep_alive(keep_alive)
                .client_request_timeout(request_timeout)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .local_addr(addr)
                .finish(map_config(app, |()| AppConfig::default()));
            fn_service(move |io: TcpStream| {
                let (trusted, refusals) = (trusted.clone(), refusals.clone());
                async move {
                    match crate::proxy::accept(io, &trusted, request_timeout).await {
                        Ok(Some((io, client))) => {
                            Ok((io, actix_http::Protocol::Http1, Some(client)))
                        }
                        // Gone, or silent: closed without a word, as the
                        // plain listener closes such connections.
                        Ok(None) => Err(DispatchError::Io(std::io::ErrorKind::NotConnected.into())),
                        Err(error) => {
                            refusals.connection_refused(&error);
                            Err(DispatchError::Io(error))
                        }
                    }
                }
            })
            .and_then(http)
        })?
        .run())
}

/// Drives the shutdown: waits for the first stop request (or a failed
/// load), drains, stops accepting, and answers a second stop request in any
/// of those phases by stopping at once. Resolves only when the servers must
/// stop at once; a graceful stop ends when the servers do.
async fn control(
    mut stops: mpsc::UnboundedReceiver<&'static str>,
    load_failure: oneshot::Receiver<LoadFailure>,
    (public, admin): (actix_web::dev::ServerHandle, actix_web::dev::ServerHandle),
    lifecycle: &Lifecycle,
    delay: Duration,
    logger: &Logger,
) -> Result<Stopped, LoadFailure> {
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
