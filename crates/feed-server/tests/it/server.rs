//! Starting the real binary and talking HTTP/1.1 to it over plain sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use super::workspace;

/// A running `feed-server`, killed when dropped.
pub(crate) struct Server {
    child: Child,
    /// The address it listens on.
    pub(crate) addr: String,
    log: Receiver<serde_json::Value>,
    /// Every log record read so far.
    history: Vec<serde_json::Value>,
}

/// The command that runs the binary from the workspace root with the
/// default configuration and `env` on top.
pub(crate) fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feed-server"));
    cmd.current_dir(workspace())
        .args(["--config", "config/default.toml"])
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

impl Server {
    /// Starts the server on a free loopback port with JSON logs, one worker,
    /// its progress in a folder of its own, and `env` on top, and returns
    /// once it listens (not yet ready).
    pub(crate) fn start(env: &[(&str, &str)]) -> Self {
        let progress = scratch_dir("progress").display().to_string();
        let mut all = vec![
            ("FEED__PROGRESS__PATH", progress.as_str()),
            ("FEED__SERVER__HOST", "127.0.0.1"),
            ("FEED__SERVER__PORT", "0"),
            ("FEED__ADMIN__PORT", "0"),
            ("FEED__SERVER__WORKERS", "1"),
            ("FEED__LOG__FORMAT", "json"),
            ("FEED__DATA__USERS", "1000"),
        ];
        all.extend_from_slice(env);
        let mut child = command(&all).stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, log) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let record = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("log line {line:?}: {e}"));
                if sender.send(record).is_err() {
                    return;
                }
            }
        });
        let mut server = Self {
            child,
            addr: String::new(),
            log,
            history: Vec::new(),
        };
        let listening = server.wait_for_log("listening, loading feeds");
        server.addr = listening["listen"].as_str().unwrap().to_owned();
        server
    }

    /// Starts the server and waits until its feeds are loaded.
    pub(crate) fn start_ready(env: &[(&str, &str)]) -> (Self, serde_json::Value) {
        let mut server = Self::start(env);
        let ready = server.wait_for_log("feed-server ready");
        (server, ready)
    }

    /// Waits (at most 60 s) for the log line with message `msg`.
    pub(crate) fn wait_for_log(&mut self, msg: &str) -> serde_json::Value {
        self.wait_for_log_where(msg, |_| true)
    }

    /// Waits (at most 60 s) for a log line with message `msg` for which
    /// `matches` holds.
    pub(crate) fn wait_for_log_where(
        &mut self,
        msg: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(record) => {
                    self.history.push(record.clone());
                    if record["msg"] == msg && matches(&record) {
                        return record;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let seen: Vec<_> = self.history.iter().map(|r| r["msg"].clone()).collect();
                    panic!("no log line {msg:?} within 60 s; logged: {seen:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the server exited before logging {msg:?}")
                }
            }
        }
    }

    /// A record with message `msg` among those read so far (by an earlier
    /// wait), if any.
    pub(crate) fn logged(&self, msg: &str) -> Option<&serde_json::Value> {
        self.history.iter().find(|record| record["msg"] == msg)
    }

    /// Sends a signal to the server.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most `limit`) for the server to exit.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{:?}: {e}", self.body))
    }
}

/// A keep-alive HTTP/1.1 connection.
pub(crate) struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub(crate) fn open(addr: &str) -> std::io::Result<Self> {
        Self::over(TcpStream::connect(addr)?)
    }

    /// A connection to `addr` from the local address `source` (another
    /// loopback address, say, to tell clients apart on one machine).
    pub(crate) fn open_from(addr: &str, source: std::net::IpAddr) -> std::io::Result<Self> {
        use socket2::{Domain, Socket, Type};
        let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.bind(&std::net::SocketAddr::new(source, 0).into())?;
        socket.connect(&addr.into())?;
        Self::over(socket.into())
    }

    fn over(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `GET path` and reads the whole answer.
    pub(crate) fn get(&mut self, path: &str) -> std::io::Result<Answer> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"
        )?;
        self.read_answer()
    }

    pub(crate) fn read_answer(&mut self) -> std::io::Result<Answer> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// The raw stream, for writing partial requests.
    pub(crate) fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }
}

/// The admin listener's address, from the `feed-server ready` log line.
pub(crate) fn admin_addr(ready: &serde_json::Value) -> String {
    ready["admin"].as_str().unwrap().to_owned()
}

/// Waits (at most 60 s) until `condition` holds, checking every 5 ms;
/// `what` names the wait if it runs out.
pub(crate) fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the binary with `env`, which must refuse to start: exit code 2
/// and one line on stderr, which is returned.
pub(crate) fn refused_start(env: &[(&str, &str)]) -> String {
    let output = command(env).output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

/// A fresh, empty folder for one test's files.
pub(crate) fn scratch_dir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "feed-server-it-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `POST path` with a JSON `body` on a fresh connection.
pub(crate) fn post(addr: &str, path: &str, body: &str) -> Answer {
    let mut conn = Connection::open(addr).unwrap();
    write!(
        conn.stream(),
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    conn.read_answer().unwrap()
}

/// `GET path` on a fresh connection.
pub(crate) fn get(addr: &str, path: &str) -> Answer {
    Connection::open(addr).unwrap().get(path).unwrap()
}

/// `method path` with `headers` and an empty body on a fresh connection.
pub(crate) fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut conn = Connection::open(addr).unwrap();
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        conn.stream(),
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n{headers}\r\n"
    )
    .unwrap();
    conn.read_answer().unwrap()
}

/// Eight clients asking `addr` for users `0..users`, three items a
/// request, until stopped: every answer a 200 with three items; the
/// personal items (ids below 10,000: the tests' fallback lists hold
/// higher ones) kept with their user.
pub(crate) struct Clients {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<(u64, u64)>>>,
}

impl Clients {
    pub(crate) fn start(addr: &str, users: u64) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads = (0..8)
            .map(|c| {
                let (addr, stop, served) = (addr.to_owned(), stop.clone(), served.clone());
                std::thread::spawn(move || {
                    let mut conn = Connection::open(&addr).unwrap();
                    let mut given = Vec::new();
                    let mut n = c;
                    while !stop.load(Ordering::Relaxed) {
                        let user = n % users;
                        n += 8;
                        let answer = conn.get(&format!("/feed/{user}?size=3")).unwrap();
                        assert_eq!(answer.status, 200, "{}", answer.body);
                        let got: Vec<u64> = serde_json::from_str(&answer.body).unwrap();
                        assert_eq!(got.len(), 3);
                        given.extend(got.into_iter().filter(|&i| i < 10_000).map(|i| (user, i)));
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    given
                })
            })
            .collect();
        Self {
            stop,
            served,
            threads,
        }
    }

    /// Waits until they were answered `more` times more.
    pub(crate) fn wait_more(&self, more: u64) {
        use std::sync::atomic::Ordering;
        let now = self.served.load(Ordering::Relaxed);
        wait_until("clients served", || {
            self.served.load(Ordering::Relaxed) >= now + more
        });
    }

    /// Stops them, and checks that no user was given a personal item twice
    /// and that they were given more than `least`.
    pub(crate) fn stop_repeating_nothing(self, least: usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for client in self.threads {
            all.extend(client.join().unwrap());
        }
        let distinct: std::collections::HashSet<_> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "a personal item was given twice");
        assert!(all.len() > least, "{} personal items", all.len());
    }
}
