//! A throwaway Redis Cluster on loopback for tests: `masters` masters with
//! `replicas` replicas each, every node a child `redis-server` in a scratch
//! directory, stopped when dropped.
//!
//! Without `redis-server`/`redis-cli` on the PATH, [`TestCluster::start`]
//! returns `None` and says why, unless `FEED_REQUIRE_REDIS=1` (set by CI),
//! where it panics instead: there the tests must run.
//!
//! Every node asks for [`PASSWORD`] (`requirepass`, and `masterauth`
//! between replicas and masters), as a production cluster does: every
//! client under test authenticates.
//!
//! Shared by the feed-redis and feed-server tests (included by path).

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of every test cluster's nodes.
pub const PASSWORD: &str = "feed-test-secret";

/// One node.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

/// The cluster; see the module documentation.
pub struct TestCluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
    /// With TLS: the folder of the authority's and the nodes' certificates.
    tls: Option<PathBuf>,
}

/// Whether every one of `programs` runs (`PROGRAM -v`). When one does not,
/// says the test is skipped and how to install them (`packages`), or,
/// with `FEED_REQUIRE_REDIS=1` (CI), fails: there the tests must run.
pub fn installed(programs: &[&str], packages: &str) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|program| {
            !Command::new(program)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("FEED_REQUIRE_REDIS").as_deref() != Ok("1"),
        "FEED_REQUIRE_REDIS=1 but {missing:?} not installed"
    );
    eprintln!("SKIPPED: {missing:?} not installed (apt-get install {packages})");
    false
}

/// Whether `openssl version` runs (it has no `-v`); as [`installed`] when
/// it does not.
fn openssl_installed() -> bool {
    let runs = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        assert!(
            std::env::var("FEED_REQUIRE_REDIS").as_deref() != Ok("1"),
            "FEED_REQUIRE_REDIS=1 but openssl is not installed"
        );
        eprintln!("SKIPPED: openssl not installed (apt-get install openssl)");
    }
    runs
}

/// A port that is free, with its cluster bus port (+10000) free too.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli` with the password and, with TLS, the authority.
fn redis_cli(tls: Option<&Path>) -> Command {
    let mut cli = Command::new("redis-cli");
    cli.args(["-a", PASSWORD, "--no-auth-warning"]);
    if let Some(certs) = tls {
        cli.arg("--tls").arg("--cacert").arg(certs.join("ca.crt"));
    }
    cli
}

fn cli(port: u16, tls: Option<&Path>, args: &[&str]) -> Option<String> {
    let out = redis_cli(tls)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl TestCluster {
    /// Starts the cluster and waits until every slot is served; `None` when
    /// Redis is not installed (see the module documentation).
    pub fn start(masters: usize, replicas: usize) -> Option<Self> {
        Self::start_with(masters, replicas, false)
    }

    /// As [`Self::start`], every node reached over TLS only (clients, the
    /// cluster bus and replication), with a certificate for 127.0.0.1
    /// signed by an authority made for the test ([`Self::ca_pem`]).
    pub fn start_tls(masters: usize, replicas: usize) -> Option<Self> {
        Self::start_with(masters, replicas, true)
    }

    fn start_with(masters: usize, replicas: usize, tls: bool) -> Option<Self> {
        if !installed(&["redis-server", "redis-cli"], "redis-server redis-tools") {
            return None;
        }
        if tls && !openssl_installed() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "feed-test-cluster-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let tls = tls.then(|| certificates(&dir));
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
            tls,
        };
        for _ in 0..masters * (1 + replicas) {
            let port = free_port();
            let child = cluster.spawn(port);
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &cluster.nodes {
            wait(Duration::from_secs(10), || {
                cluster
                    .cli(node.port, &["PING"])
                    .is_some_and(|o| o.contains("PONG"))
            })
            .expect("a node answers PING");
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = redis_cli(cluster.tls.as_deref())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_ok(Duration::from_secs(20));
        Some(cluster)
    }

    fn spawn(&self, port: u16) -> Child {
        let mut server = Command::new("redis-server");
        match &self.tls {
            None => server.args(["--port", &port.to_string()]),
            Some(certs) => server
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(certs.join("node.crt"))
                .arg("--tls-key-file")
                .arg(certs.join("node.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.join("ca.crt"))
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args(["--tls-auth-clients", "no"]),
        };
        server
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--requirepass", PASSWORD, "--masterauth", PASSWORD])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", "1000"])
            .args(["--save", "", "--appendonly", "no"])
            // Replicas sync at once instead of after the default 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts")
    }

    /// Waits until every live node reports `cluster_state:ok` and every
    /// replica is in sync with its master (a replica that never synced
    /// cannot take over).
    pub fn wait_ok(&self, limit: Duration) {
        wait(limit, || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                self.cli(n.port, &["CLUSTER", "INFO"])
                    .is_some_and(|i| i.contains("cluster_state:ok"))
                    && self.cli(n.port, &["INFO", "replication"]).is_some_and(|i| {
                        i.contains("role:master") || i.contains("master_link_status:up")
                    })
            })
        })
        .expect("the cluster reaches cluster_state:ok with every replica in sync");
    }

    /// `redis://127.0.0.1:PORT` of every node (`rediss://` with TLS).
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://127.0.0.1:{}", n.port))
            .collect()
    }

    /// With TLS, the authority's certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        self.tls
            .as_ref()
            .map(|certs| std::fs::read(certs.join("ca.crt")).expect("the test authority"))
    }

    /// With TLS, the file of the authority's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|certs| certs.join("ca.crt"))
    }

    /// The port of the master serving hash slot `slot`.
    pub fn master_of(&self, slot: u16) -> u16 {
        let live = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        let nodes = self
            .cli(live.port, &["CLUSTER", "NODES"])
            .expect("CLUSTER NODES");
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port: u16 = fields[1]
                .split(['@', ','])
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("a node address");
            for range in &fields[8..] {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(start), Ok(end)) = (start.parse::<u16>(), end.parse::<u16>())
                    && (start..=end).contains(&slot)
                {
                    return port;
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Kills the node on `port` (SIGKILL), as a crash would.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of ours");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        for port in ports {
            self.kill(port);
        }
    }

    /// Stops every node (SIGSTOP) without closing anything: the kernel
    /// still accepts connections, and nothing ever answers, as with a
    /// node that hangs or a network that drops packets. Dropping the
    /// cluster kills them.
    pub fn freeze_all(&self) {
        for child in self.nodes.iter().filter_map(|n| n.child.as_ref()) {
            let stopped = Command::new("kill")
                .args(["-STOP", &child.id().to_string()])
                .status()
                .expect("kill -STOP");
            assert!(stopped.success());
        }
    }

    /// Runs `redis-cli` against the node on `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        cli(port, self.tls.as_deref(), args)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `done` every 50 ms until it holds or `limit` passes.
pub fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> Result<Duration, Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(started.elapsed())
}

/// An authority and a certificate for 127.0.0.1 signed by it, made with
/// `openssl` in `dir/tls`; returns that folder.
fn certificates(dir: &Path) -> PathBuf {
    let certs = dir.join("tls");
    std::fs::create_dir_all(&certs).expect("a folder for certificates");
    std::fs::write(certs.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=feed-test-authority",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "node.key",
            "-out",
            "node.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "node.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    ];
    for args in steps {
        let made = Command::new("openssl")
            .args(args)
            .current_dir(&certs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(made.success(), "openssl {args:?} failed");
    }
    certs
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish()
}
