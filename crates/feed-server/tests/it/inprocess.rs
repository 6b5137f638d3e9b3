//! The server run in this process through `feed_server::run`, with a loader
//! and stop requests the test controls: phases that the real binary passes
//! through too quickly to catch are held open here, by events, not by timing.

use std::net::TcpListener;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use feed_server::settings::{ServiceSpec, Settings};
use feed_server::{Listeners, Loader, Stopped, Stops};
use slog::Drain;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::workspace;

/// A server running on a thread of this process.
pub(crate) struct InProcess {
    /// The public address.
    pub(crate) addr: String,
    /// The admin address.
    pub(crate) admin: String,
    stops: UnboundedSender<&'static str>,
    logs: Receiver<String>,
    thread: Option<JoinHandle<std::io::Result<Stopped>>>,
}

/// A drain that sends each record's message to the test.
struct Messages(Mutex<Sender<String>>);

impl Drain for Messages {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        if let Ok(sender) = self.0.lock() {
            let _ = sender.send(record.msg().to_string());
        }
        Ok(())
    }
}

impl InProcess {
    /// Starts the server with the default configuration, `env` on top, on
    /// free loopback ports, with the loader `loader` makes.
    pub(crate) fn start(env: &[(&str, &str)], loader: impl FnOnce(ServiceSpec) -> Loader) -> Self {
        let mut all = vec![
            ("FEED__SERVER__WORKERS", "1"),
            ("FEED__DATA__USERS", "1000"),
            ("FEED__PROGRESS__PATH", ""),
        ];
        all.extend_from_slice(env);
        let env = all.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let (settings, spec) =
            Settings::load(&workspace().join("config/default.toml"), env).unwrap();
        let listeners = Listeners {
            public: TcpListener::bind("127.0.0.1:0").unwrap(),
            admin: TcpListener::bind("127.0.0.1:0").unwrap(),
        };
        let addr = listeners.public.local_addr().unwrap().to_string();
        let admin = listeners.admin.local_addr().unwrap().to_string();
        let (log_sender, logs) = channel();
        let logger = slog::Logger::root(Messages(Mutex::new(log_sender)).fuse(), slog::o!());
        let (stops, stop_requests) = unbounded_channel();
        let limits = spec.limits;
        let loader = loader(spec);
        let thread = std::thread::spawn(move || {
            feed_server::run(
                &settings,
                limits,
                listeners,
                &logger,
                loader,
                Stops::Channel(stop_requests),
            )
        });
        Self {
            addr,
            admin,
            stops,
            logs,
            thread: Some(thread),
        }
    }

    /// Asks the server to stop, as a signal would.
    pub(crate) fn stop(&self) {
        self.stops.send("TEST").unwrap();
    }

    /// Waits (at most 60 s) for the log line `msg`.
    pub(crate) fn wait_for_log(&self, msg: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line == msg => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no log line {msg:?} within 60 s"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the server ended before logging {msg:?}")
                }
            }
        }
    }

    /// Waits (at most `limit`) for `run` to return, and returns its result.
    pub(crate) fn join(mut self, limit: Duration) -> std::io::Result<Stopped> {
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + limit;
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the server did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // A test that failed half-way: stop the server at once.
        if self.thread.is_some() {
            let _ = self.stops.send("TEST");
            let _ = self.stops.send("TEST");
        }
    }
}

/// Progress in memory for the synthetic data of `spec`.
pub(crate) fn memory_offsets(spec: &ServiceSpec) -> feed_memory::OffsetMap {
    feed_memory::OffsetMap::in_memory(spec.data.users())
}

/// A loader that waits for the test's word before loading the synthetic
/// data of `spec`, and the sender of that word.
pub(crate) fn gated(spec: ServiceSpec, release: Receiver<()>) -> Loader {
    let load = feed_server::synthetic_loader(spec, memory_offsets(&spec));
    Box::new(move |recorder, logger| {
        let _ = release.recv();
        load(recorder, logger)
    })
}
