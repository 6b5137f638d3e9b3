//! `storage.kind = "redis"`: the real binary against a Redis Cluster the
//! test starts, two frontends behind HAProxy. Skipped with a message when
//! `redis-server` (or `haproxy`) is not installed, except in CI
//! (`FEED_REQUIRE_REDIS=1`), where they must run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{PASSWORD, TestCluster, installed};
use super::server::{
    Clients, Connection, Server, command, get, refused_start, request, scratch_dir, wait_until,
};
use super::snapshot::{line, snapshot_of, two_rankings};

/// The frontends' snapshot folder of one test (they share a host here),
/// where [`load`] writes each snapshot before publishing it: the
/// distribution step of docs/SCALING.md.
pub(super) fn snapshots() -> PathBuf {
    scratch_dir("redis-snapshots")
}

/// Writes a synthetic snapshot of `users` x 200 (seeded) into `folder` and
/// publishes it in the cluster at `nodes`; returns the command's summary
/// line.
pub(super) fn load(nodes: &str, users: &str, seed: &str, folder: &Path) -> String {
    load_with(nodes, users, seed, folder, &[])
}

/// [`load`], with `extra` in redis-load's environment.
fn load_with(
    nodes: &str,
    users: &str,
    seed: &str,
    folder: &Path,
    extra: &[(&str, &str)],
) -> String {
    let snapshot = synthetic(users, seed, folder);
    let mut env = vec![("FEED__REDIS__PASSWORD", PASSWORD)];
    env.extend_from_slice(extra);
    let loaded = command(&env)
        .args(["redis-load", "--snapshot", snapshot.to_str().unwrap()])
        .args(["--nodes", nodes])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&loaded.stdout).into_owned();
    assert!(loaded.status.success(), "{loaded:?}");
    stdout
}

/// Writes a synthetic snapshot of `users` x 200 (seeded) into `folder`.
fn synthetic(users: &str, seed: &str, folder: &Path) -> PathBuf {
    let snapshot = folder.join(format!("feeds-{users}-{seed}.ffs"));
    let env = [
        ("FEED__DATA__USERS", users),
        ("FEED__DATA__FEED_LEN", "200"),
        ("FEED__DATA__CATALOG_SIZE", "100000"),
        ("FEED__DATA__SEED", seed),
    ];
    let written = command(&env)
        .args(["import", "--synthetic", "--output"])
        .arg(&snapshot)
        .output()
        .unwrap();
    assert!(written.status.success(), "{written:?}");
    snapshot
}

/// The id in the header of the snapshot at `path`.
fn snapshot_id(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    u64::from_le_bytes(bytes[16..24].try_into().unwrap())
}

/// The frontends' time limit on a call to the cluster, where the limit is
/// under test.
const TIMEOUT_MS: u64 = 200;
/// What an answer bounded by [`TIMEOUT_MS`] may take beyond it on a shared,
/// busy machine (HTTP round trip and late scheduling included).
const SLACK: Duration = Duration::from_millis(500);
/// The limit where it is not under test: never reached by a cluster that
/// is up, however busy the machine, so no answer falls back by accident.
pub(super) const GENEROUS_MS: u64 = 10_000;
/// How often the frontends read the version pointer.
const POLL_MS: u64 = 250;

pub(super) fn nodes(cluster: &TestCluster) -> String {
    cluster.urls().join(",")
}

/// A frontend over the cluster at `nodes` whose calls have `timeout_ms`,
/// mapping the snapshots of `folder`.
pub(super) fn frontend(nodes: &str, timeout_ms: u64, folder: &Path) -> (Server, String) {
    frontend_with(nodes, timeout_ms, folder, &[])
}

/// [`frontend`], with `extra` in its environment.
fn frontend_with(
    nodes: &str,
    timeout_ms: u64,
    folder: &Path,
    extra: &[(&str, &str)],
) -> (Server, String) {
    let poll = POLL_MS.to_string();
    let timeout = timeout_ms.to_string();
    // The frontends read the password from a file (redis-load takes it
    // from the environment): both ways are used.
    let secret = scratch_dir("redis-password").join("password");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let mut env = vec![
        ("FEED__STORAGE__KIND", "redis"),
        ("FEED__REDIS__NODES", nodes),
        ("FEED__REDIS__PASSWORD_FILE", secret.to_str().unwrap()),
        ("FEED__REDIS__POLL_MS", &poll),
        ("FEED__REDIS__TIMEOUT_MS", &timeout),
        ("FEED__REDIS__SNAPSHOTS", folder.to_str().unwrap()),
        // HAProxy, on loopback, forwards the client's address.
        ("FEED__LIMITS__TRUSTED_PROXIES", "127.0.0.1/32"),
    ];
    env.extend_from_slice(extra);
    let mut server = Server::start(&env);
    let admin = server
        .logged("listening, loading feeds")
        .and_then(|l| l["admin"].as_str())
        .unwrap()
        .to_owned();
    server.wait_for_log("feed-server ready");
    (server, admin)
}

fn items(answer: &super::server::Answer) -> Vec<u64> {
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// HAProxy on a free port, round-robin over `backends`, checking
/// `/readyz`; killed when dropped.
struct Proxy {
    child: Child,
    addr: String,
}

impl Proxy {
    /// In HTTP mode, writing `X-Forwarded-For`.
    fn start(backends: &[&str]) -> Option<Self> {
        Self::start_in(backends, Mode::Http)
    }

    fn start_in(backends: &[&str], mode: Mode) -> Option<Self> {
        if !installed(&["haproxy"], "haproxy") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                format!(
                    "    server f{i} {b}{} check inter 500ms fall 2 rise 1\n",
                    mode.server_option()
                )
            })
            .collect();
        let defaults = match mode {
            Mode::Http => "mode http\n    timeout server 5s\n    option forwardfor",
            Mode::Tcp => "mode tcp\n    timeout server 10s",
        };
        let config = format!(
            "global\n    maxconn 1000\ndefaults\n    {defaults}\n    timeout connect 1s\n    \
             timeout client 10s\nfrontend feeds\n    bind 127.0.0.1:{port}\n    \
             default_backend frontends\nbackend frontends\n    balance roundrobin\n    \
             option httpchk GET /readyz\n    http-check expect status 200\n{servers}"
        );
        let path = scratch_dir("haproxy").join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Owned before the wait, so that HAProxy is stopped if it never
        // serves.
        let proxy = Self {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        wait_until("HAProxy serves", || {
            Connection::open(&proxy.addr)
                .and_then(|mut c| c.get("/livez"))
                .is_ok_and(|a| a.status == 200)
        });
        Some(proxy)
    }
}

/// How HAProxy passes requests on.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Reading HTTP, appending the client to `X-Forwarded-For`.
    Http,
    /// Passing bytes through, after a PROXY protocol v2 header.
    Tcp,
}

impl Mode {
    const fn server_option(self) -> &'static str {
        match self {
            Self::Http => "",
            Self::Tcp => " send-proxy-v2",
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests the frontend at `admin` answered on `/feed`, from its metrics.
fn feed_requests(admin: &str) -> u64 {
    let metrics = get(admin, "/metrics").body;
    metrics
        .lines()
        .filter(|l| l.starts_with("feed_http_requests_total{") && l.contains("route=\"feed\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn two_frontends_behind_haproxy_keep_the_contract_and_follow_versions() {
    let Some(cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let nodes = nodes(&cluster);
    let folder = snapshots();
    let summary = load(&nodes, "500", "1", &folder);
    assert!(
        summary.starts_with("published version 1: snapshot "),
        "{summary}"
    );
    assert!(summary.contains(", 500 users"), "{summary}");
    let (mut one, admin_one) = frontend(&nodes, GENEROUS_MS, &folder);
    let (mut two, admin_two) = frontend(&nodes, GENEROUS_MS, &folder);
    let Some(proxy) = Proxy::start(&[&one.addr, &two.addr]) else {
        return;
    };

    // Exact N distinct items, validation as on one instance.
    let mut conn = Connection::open(&proxy.addr).unwrap();
    for size in [1, 7, 200] {
        let got = items(&conn.get(&format!("/feed/11?size={size}")).unwrap());
        assert_eq!(got.len(), size);
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), size);
    }
    for (path, status) in [
        ("/feed/abc", 400),
        ("/feed/1?size=-1", 400),
        ("/feed/1?size=201", 400),
        ("/feed/1/2", 404),
    ] {
        let answer = conn.get(path).unwrap();
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(
            answer.json()["error"].is_string(),
            "{path}: {}",
            answer.body
        );
    }
    // An unknown user still gets a full feed.
    assert_eq!(items(&conn.get("/feed/999999?size=9").unwrap()).len(), 9);

    // A retry through the other frontend gets the same answer, byte for
    // byte, and moves nothing; the same key with another size is a 422.
    let keyed = |addr: &str, size: u32, key: &str| {
        request(
            addr,
            "GET",
            &format!("/feed/12?size={size}"),
            &[("Idempotency-Key", key)],
        )
    };
    let first = keyed(&one.addr, 6, "retry-1");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let retry = keyed(&two.addr, 6, "retry-1");
    assert_eq!(retry.body, first.body, "a retry through the other frontend");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let through_proxy = keyed(&proxy.addr, 6, "retry-1");
    assert_eq!(through_proxy.body, first.body);
    assert_eq!(keyed(&two.addr, 7, "retry-1").status, 422);
    assert_eq!(keyed(&one.addr, 6, "bad key").status, 400);
    let page = items(&first);
    let next = items(&conn.get("/feed/12?size=6").unwrap());
    assert!(
        next.iter().all(|item| !page.contains(item)),
        "{page:?} {next:?}"
    );

    // A takedown through one frontend reaches the other: it passes over the
    // blocked items of a user's feed there, and progress moves past them.
    let (_, table, _) = feed_memory::Snapshot::open(&folder.join("feeds-500-1.ffs"))
        .unwrap()
        .into_parts();
    let feed = table.feed(feed_domain::UserId::new(40)).unwrap().to_vec();
    let body = format!(r#"{{"add": [{}, {}]}}"#, feed[2], feed[3]);
    let blocked = super::server::post(&admin_one, "/admin/blocklist", &body);
    assert_eq!(blocked.status, 200, "{}", blocked.body);
    assert_eq!(blocked.json()["blocked"], 2);
    wait_until("the other frontend follows the blocklist", || {
        get(&admin_two, "/stats").json()["blocklist"]["items"] == 2
    });
    let listed = get(&admin_two, "/admin/blocklist").json();
    let mut expected = vec![feed[2], feed[3]];
    expected.sort_unstable();
    assert_eq!(listed["items"], serde_json::json!(expected));
    let got = items(
        &Connection::open(&two.addr)
            .unwrap()
            .get("/feed/40?size=5")
            .unwrap(),
    );
    assert_eq!(
        got[..3],
        [feed[0], feed[1], feed[4]].map(u64::from),
        "{got:?}"
    );
    assert!(!got.contains(&u64::from(feed[2])) && !got.contains(&u64::from(feed[3])));
    let got = items(
        &Connection::open(&one.addr)
            .unwrap()
            .get("/feed/40?size=3")
            .unwrap(),
    );
    assert_eq!(got, [feed[5], feed[6], feed[7]].map(u64::from));
    // Too few fallback items would be left: refused, nothing changes.
    let fallback: Vec<String> = (1..=100_000).map(|i: u32| i.to_string()).collect();
    let refused = super::server::post(
        &admin_two,
        "/admin/blocklist",
        &format!(r#"{{"add": [{}]}}"#, fallback.join(",")),
    );
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(get(&admin_one, "/stats").json()["blocklist"]["items"], 2);

    // 8 clients, 20 requests each, one user, through both frontends: no
    // item twice (160 items of a 200-item feed: all personal).
    let handed: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let mut conn = Connection::open(&proxy.addr).unwrap();
                    (0..20)
                        .flat_map(|_| items(&conn.get("/feed/3?size=1").unwrap()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let all: Vec<u64> = handed.into_iter().flatten().collect();
    assert_eq!(all.len(), 160);
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        160,
        "an item was handed out twice"
    );
    assert!(feed_requests(&admin_one) >= 40 && feed_requests(&admin_two) >= 40);

    // A new version reaches both frontends at their next poll (with
    // slack for a busy machine); a rollback brings the old one back with
    // user 3's progress.
    let published = Instant::now();
    let summary = load(&nodes, "500", "2", &folder);
    assert!(summary.contains("version 1 kept for rollback"), "{summary}");
    let loaded = published.elapsed();
    for frontend in [&mut one, &mut two] {
        frontend.wait_for_log_where("switched to a new data version", |l| l["version"] == 2);
    }
    let switched = published.elapsed().saturating_sub(loaded);
    assert!(
        switched < Duration::from_millis(POLL_MS) + Duration::from_secs(1),
        "switched {switched:?} after the load"
    );
    let rolled = command(&[("FEED__REDIS__PASSWORD", PASSWORD)])
        .args(["redis-rollback", "--nodes", &nodes])
        .output()
        .unwrap();
    assert!(rolled.status.success(), "{rolled:?}");
    // Version 1 was kept mapped: the rollback is a swap, with no new
    // verification of its snapshot.
    for frontend in [&mut one, &mut two] {
        frontend.wait_for_log_where("switched back to the data version kept mapped", |l| {
            l["version"] == 1
        });
    }
    let next = items(&conn.get("/feed/3?size=10").unwrap());
    assert!(
        next.iter().all(|i| !all.contains(i)),
        "progress was lost in the rollback"
    );

    // A version whose snapshot the frontends do not have: both refuse it
    // and keep serving version 1, until it is copied into their folder.
    let elsewhere = synthetic("300", "3", &scratch_dir("redis-elsewhere"));
    let summary = load_raw(&nodes, &elsewhere);
    assert!(summary.starts_with("published version 3"), "{summary}");
    for frontend in [&mut one, &mut two] {
        let refused = frontend.wait_for_log_where(
            "cannot serve the new version here; serving the current one and retrying every 2 s",
            |l| l["version"] == 3,
        );
        assert_eq!(refused["serving"], 1, "{refused}");
        let id = format!(
            "no snapshot {:016x} in this folder",
            snapshot_id(&elsewhere)
        );
        assert!(
            refused["reason"].as_str().is_some_and(|r| r.contains(&id)),
            "{refused}"
        );
    }
    assert_eq!(served_versions(&[&admin_one, &admin_two]), [1.0, 1.0]);
    // The version they are told to serve shows, for an alarm.
    for admin in [&admin_one, &admin_two] {
        wait_until("the published version in the metrics", || {
            get(admin, "/metrics")
                .body
                .lines()
                .find_map(|l| l.strip_prefix("feed_storage_published_version "))
                .and_then(|v| v.parse::<f64>().ok())
                == Some(3.0)
        });
        wait_until("the published version in the stats", || {
            let stats = get(admin, "/stats").json();
            stats["storage"]["published"] == 3 && stats["storage"]["version"] == 1
        });
    }
    assert_eq!(items(&conn.get("/feed/3?size=10").unwrap()).len(), 10);

    // One more such version drops version 1 from the cluster (its
    // progress goes): the frontends still on it stop moving it, log it, and
    // answer from the fallback list (a storage error each) until they can
    // switch.
    let later = synthetic("400", "4", &scratch_dir("redis-elsewhere"));
    let summary = load_raw(&nodes, &later);
    assert!(summary.contains("version 1 deleted"), "{summary}");
    for frontend in [&mut one, &mut two] {
        let retired = frontend.wait_for_log_where(
            "the cluster no longer keeps the version served here: answering from the fallback list until this frontend can switch",
            |l| l["version"] == 1,
        );
        assert_eq!(retired["current"], 4, "{retired}");
    }
    let errors = |admin: &str| {
        get(admin, "/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix("feed_feed_errors_total{kind=\"storage\"} "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = errors(&admin_one) + errors(&admin_two);
    for _ in 0..4 {
        assert_eq!(items(&conn.get("/feed/3?size=10").unwrap()).len(), 10);
    }
    assert_eq!(errors(&admin_one) + errors(&admin_two), before + 4);
    std::fs::copy(&elsewhere, folder.join("copied-later")).unwrap();
    std::fs::copy(&later, folder.join("copied-last")).unwrap();
    for frontend in [&mut one, &mut two] {
        frontend.wait_for_log_where("switched to a new data version", |l| l["version"] == 4);
    }
    assert_eq!(served_versions(&[&admin_one, &admin_two]), [4.0, 4.0]);

    // A version whose fallback list is shorter than api.max_size (200),
    // published behind redis-load's back: both frontends refuse it for good
    // and keep serving version 4.
    let short = snapshot_of(
        &folder,
        "short",
        &[line(1, &[5, 6])],
        Some("900\n901\n902\n"),
    );
    publish_raw(&cluster, 7, snapshot_id(&short));
    for frontend in [&mut one, &mut two] {
        let refused = frontend.wait_for_log_where(
            "refusing to switch to the new version; serving the current one",
            |l| l["version"] == 7,
        );
        assert_eq!(refused["serving"], 4, "{refused}");
        assert!(
            refused["reason"]
                .as_str()
                .is_some_and(|r| r.contains("the fallback list has 3 items, api.max_size is 200")),
            "{refused}"
        );
    }
    assert_eq!(served_versions(&[&admin_one, &admin_two]), [4.0, 4.0]);
    assert_eq!(items(&conn.get("/feed/3?size=200").unwrap()).len(), 200);
}

/// The data version each admin listener's metrics say is served.
fn served_versions(admins: &[&String]) -> Vec<f64> {
    admins
        .iter()
        .map(|admin| {
            let metrics = get(admin, "/metrics").body;
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("feed_storage_data_version "))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no data version in {metrics}"))
        })
        .collect()
}

/// `redis-load` of the snapshot at `path`, wherever it is.
fn load_raw(nodes: &str, path: &Path) -> String {
    let loaded = command(&[("FEED__REDIS__PASSWORD", PASSWORD)])
        .args(["redis-load", "--snapshot", path.to_str().unwrap()])
        .args(["--nodes", nodes])
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{loaded:?}");
    String::from_utf8_lossy(&loaded.stdout).into_owned()
}

/// Writes a description of `version` naming `snapshot` straight into the
/// cluster and points `{ff}:current` at it, as a loader that checked
/// nothing would.
fn publish_raw(cluster: &TestCluster, version: u64, snapshot: u64) {
    let any = cluster.nodes[0].port;
    let slot: u16 = cluster
        .cli(any, &["CLUSTER", "KEYSLOT", "{ff}:current"])
        .and_then(|s| s.trim().parse().ok())
        .expect("CLUSTER KEYSLOT");
    let master = cluster.master_of(slot);
    let meta = format!("{{ff}}:meta:{version}");
    let snapshot = format!("{snapshot:016x}");
    let version = version.to_string();
    for command in [
        &[
            "HSET",
            &meta,
            "users",
            "1",
            "items",
            "2",
            "created_unix_ms",
            "1",
            "snapshot",
            &snapshot,
        ][..],
        &["SET", "{ff}:current", &version][..],
    ] {
        cluster
            .cli(master, command)
            .unwrap_or_else(|| panic!("redis-cli {command:?}"));
    }
}

#[test]
fn with_the_cluster_down_answers_come_from_the_fallback_list_at_once() {
    let Some(mut cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let nodes = nodes(&cluster);
    let folder = snapshots();
    load(&nodes, "100", "1", &folder);
    let (server, admin) = frontend(&nodes, TIMEOUT_MS, &folder);
    let mut conn = Connection::open(&server.addr).unwrap();
    assert_eq!(items(&conn.get("/feed/5?size=10").unwrap()).len(), 10);

    cluster.kill_all();
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let got = items(&conn.get("/feed/5?size=10").unwrap());
        slowest = slowest.max(started.elapsed());
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 10);
    }
    // Within the limit; the open breaker answers at once.
    assert!(
        slowest < Duration::from_millis(TIMEOUT_MS) + SLACK,
        "slowest answer {slowest:?}"
    );
    assert_eq!(conn.get("/readyz").unwrap().status, 200);
    wait_until("the breaker shows in the metrics", || {
        let metrics = get(&admin, "/metrics").body;
        metrics.contains("feed_storage_breaker_info{kind=\"redis\",state=\"open\"} 1")
            || metrics.contains("feed_storage_breaker_info{kind=\"redis\",state=\"partial\"} 1")
    });
    let stats = get(&admin, "/stats").json();
    assert_ne!(stats["storage"]["breaker"], "closed", "{stats}");
}

#[test]
fn redis_load_refuses_a_fallback_list_shorter_than_max_size() {
    let dir = scratch_dir("short-fallback");
    let snapshot = snapshot_of(&dir, "short", &[line(1, &[5, 6])], Some("900\n901\n902\n"));
    let snapshot = snapshot.to_str().unwrap();
    // No cluster listens there: a refused snapshot never gets that far.
    let redis_load = |env: &[(&str, &str)]| {
        command(env)
            .args(["redis-load", "--snapshot", snapshot])
            .args(["--nodes", "redis://127.0.0.1:1"])
            .output()
            .unwrap()
    };
    let refused = redis_load(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--snapshot {snapshot}: the fallback list has 3 items, api.max_size is 200"
        )),
        "{stderr}"
    );

    // As long as the largest answer, it is loaded: here the cluster is what fails.
    let loaded = redis_load(&[
        ("FEED__API__MAX_SIZE", "3"),
        ("FEED__API__DEFAULT_SIZE", "3"),
    ]);
    let stderr = String::from_utf8_lossy(&loaded.stderr);
    assert_eq!(loaded.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--nodes"), "{stderr}");
}

#[test]
fn bad_redis_settings_are_refused_naming_the_key() {
    let line = refused_start(&[
        ("FEED__STORAGE__KIND", "redis"),
        ("FEED__REDIS__NODES", "127.0.0.1:7000"),
    ]);
    assert!(line.contains("redis.nodes"), "{line}");
    let line = refused_start(&[
        ("FEED__STORAGE__KIND", "redis"),
        ("FEED__REDIS__SNAPSHOTS", " "),
    ]);
    assert!(
        line.contains("redis.snapshots: must name the folder of the snapshots"),
        "{line}"
    );
    let line = refused_start(&[("FEED__REDIS__TIMEOUT_MS", "0")]);
    assert!(line.contains("redis.timeout_ms"), "{line}");
    let line = refused_start(&[("FEED__REDIS__POLL_MS", "5000")]);
    assert!(line.contains("redis.poll_ms"), "{line}");
    // A password, from the configuration or a file, never both; a file
    // that cannot be read stops the start.
    let redis = [
        ("FEED__STORAGE__KIND", "redis"),
        ("FEED__REDIS__PASSWORD", "secret"),
        ("FEED__REDIS__PASSWORD_FILE", "/nonexistent/redis-password"),
    ];
    let line = refused_start(&redis);
    assert!(
        line.contains("redis.password_file: is set and so is redis.password"),
        "{line}"
    );
    let line = refused_start(&[redis[0], redis[2]]);
    assert!(
        line.contains("redis.password_file: cannot read /nonexistent/redis-password"),
        "{line}"
    );
    let line = refused_start(&[redis[0], ("FEED__REDIS__USERNAME", "feeds")]);
    assert!(
        line.contains("redis.username: an ACL user needs its password"),
        "{line}"
    );
    let line = refused_start(&[("FEED__STORAGE__KIND", "disk")]);
    assert!(
        line.contains("storage.kind") || line.contains("disk"),
        "{line}"
    );
    let output = command(&[])
        .args([
            "redis-load",
            "--snapshot",
            "nowhere.ffs",
            "--nodes",
            "redis://h",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--nodes"));
}

/// Over TLS only, with a password: redis-load writes a version through
/// `rediss://` nodes and a frontend serves it, both trusting the test's
/// authority from `redis.tls_ca_file`.
#[test]
fn redis_load_and_a_frontend_reach_a_tls_cluster() {
    let Some(cluster) = TestCluster::start_tls(3, 0) else {
        return;
    };
    let nodes = nodes(&cluster);
    assert!(nodes.starts_with("rediss://"), "{nodes}");
    let ca = cluster.ca_file().unwrap();
    let ca = ca.to_str().unwrap();
    let tls = [("FEED__REDIS__TLS_CA_FILE", ca)];
    let folder = snapshots();
    let summary = load_with(&nodes, "1000", "7", &folder, &tls);
    assert!(summary.contains("published version 1"), "{summary}");
    let (server, _) = frontend_with(&nodes, GENEROUS_MS, &folder, &tls);
    let answer = get(&server.addr, "/feed/3?size=10");
    assert_eq!(items(&answer).len(), 10);
}

/// Eight clients keep asking through HAProxy and two frontends while
/// `redis-load` publishes a version whose feeds hold the same items in
/// another order, and `redis-rollback` brings the first back: no user is
/// given a personal item twice, under any version, through any frontend.
/// (The fallback list is disjoint from the feeds, so personal items are
/// told from random ones.)
#[test]
fn a_load_and_a_rollback_under_load_repeat_no_item_across_frontends() {
    const USERS: u64 = 40;
    let Some(cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let nodes = nodes(&cluster);
    let folder = scratch_dir("redis-carry");
    let (a, b) = two_rankings(&folder, USERS);
    let sizes = [
        ("FEED__API__MAX_SIZE", "8"),
        ("FEED__API__DEFAULT_SIZE", "3"),
    ];
    // redis-load maps the snapshots too: it writes the marks ahead.
    let publish = |path: &Path| {
        let mut env = vec![
            ("FEED__REDIS__PASSWORD", PASSWORD),
            ("FEED__REDIS__SNAPSHOTS", folder.to_str().unwrap()),
        ];
        env.extend_from_slice(&sizes);
        let loaded = command(&env)
            .args(["redis-load", "--snapshot", path.to_str().unwrap()])
            .args(["--nodes", &nodes])
            .output()
            .unwrap();
        assert!(loaded.status.success(), "{loaded:?}");
        String::from_utf8_lossy(&loaded.stdout).into_owned()
    };
    publish(&a);
    let (mut one, _) = frontend_with(&nodes, GENEROUS_MS, &folder, &sizes);
    let (mut two, _) = frontend_with(&nodes, GENEROUS_MS, &folder, &sizes);
    let Some(proxy) = Proxy::start(&[&one.addr, &two.addr]) else {
        return;
    };
    let clients = Clients::start(&proxy.addr, USERS);
    clients.wait_more(300);
    let summary = publish(&b);
    assert!(
        summary.contains(&format!("what version 1 gave carried for {USERS} users")),
        "{summary}"
    );
    for frontend in [&mut one, &mut two] {
        frontend.wait_for_log_where("switched to a new data version", |l| l["version"] == 2);
    }
    clients.wait_more(300);
    let rolled = command(&[("FEED__REDIS__PASSWORD", PASSWORD)])
        .args(["redis-rollback", "--nodes", &nodes])
        .output()
        .unwrap();
    assert!(rolled.status.success(), "{rolled:?}");
    for frontend in [&mut one, &mut two] {
        frontend.wait_for_log_where("switched back to the data version kept mapped", |l| {
            l["version"] == 1
        });
    }
    clients.wait_more(300);
    clients.stop_repeating_nothing(2_000);
}

/// HAProxy in TCP mode (`send-proxy-v2`) in front of a server with
/// `limits.proxy_protocol`: each client connection reaches the server with
/// its own address (clients on two loopback addresses), so each has its
/// own rate-limit bucket and is named in the log, while HAProxy's own
/// health checks (through the same header, naming no client) keep the
/// server in the pool.
#[test]
fn haproxy_in_tcp_mode_names_each_client_through_the_proxy_protocol() {
    let (mut server, _) = Server::start_ready(&[
        ("FEED__LIMITS__RATE_LIMIT_PER_S", "1"),
        ("FEED__LIMITS__RATE_LIMIT_BURST", "2"),
        ("FEED__LIMITS__TRUSTED_PROXIES", "127.0.0.1"),
        ("FEED__LIMITS__PROXY_PROTOCOL", "true"),
    ]);
    let Some(proxy) = Proxy::start_in(&[&server.addr], Mode::Tcp) else {
        return;
    };
    let first = "127.0.0.5".parse().unwrap();
    let mut conn = Connection::open_from(&proxy.addr, first).unwrap();
    let refused = (0..50)
        .map(|_| conn.get("/feed/1").unwrap())
        .find(|answer| answer.status != 200)
        .expect("the first client was never refused");
    assert_eq!(refused.status, 429);
    let line = server.wait_for_log_where("error response", |r| r["status"] == 429);
    assert_eq!(line["client"], "127.0.0.5", "{line}");

    let second = "127.0.0.6".parse().unwrap();
    let mut other = Connection::open_from(&proxy.addr, second).unwrap();
    assert_eq!(other.get("/feed/1").unwrap().status, 200);
}
