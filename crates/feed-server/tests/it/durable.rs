//! Durable progress through the real binary: a `kill -9` under load or a
//! SIGTERM, then a restart on the same data, repeats no item a 200 answer
//! delivered and continues where each user was; bad progress files and an
//! unusable folder are refused or kept aside as configured.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::server::{
    Connection, Server, admin_addr, get, refused_start, request, scratch_dir, wait_until,
};

const USERS: u64 = 40;

/// What one client was handed: each 200 answer's user and items.
type Deliveries = Vec<(u64, Vec<u32>)>;

fn items(body: &str) -> Vec<u32> {
    serde_json::from_str(body).unwrap()
}

/// A server on the synthetic set (40 users, feeds of 200) with its
/// progress in `dir`.
fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
    let dir = dir.display().to_string();
    let mut all = vec![
        ("FEED__PROGRESS__PATH", dir.as_str()),
        ("FEED__DATA__USERS", "40"),
        ("FEED__SERVER__WORKERS", "2"),
    ];
    all.extend_from_slice(env);
    Server::start_ready(&all).0
}

/// Clients ask every user's feed over keep-alive connections until told to
/// stop or the server goes away; each returns every personal item it was
/// delivered in a 200 answer, by user. (Feeds are 200 long and answers 5
/// items, so no user runs out in these tests: every item is personal.)
fn hammer(
    addr: &str,
    stop: &Arc<AtomicBool>,
    answered: &Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<Deliveries>> {
    (0..3)
        .map(|c| {
            let (addr, stop, answered) = (addr.to_owned(), Arc::clone(stop), Arc::clone(answered));
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let Ok(mut conn) = Connection::open(&addr) else {
                    return got;
                };
                let mut n = c;
                while !stop.load(Ordering::Relaxed) {
                    let user = n % USERS;
                    n += 3;
                    match conn.get(&format!("/feed/{user}?size=5")) {
                        Ok(answer) if answer.status == 200 => {
                            got.push((user, items(&answer.body)));
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(answer) => panic!("status {}", answer.status),
                        // The server went away: what was answered counts.
                        Err(_) => return got,
                    }
                }
                got
            })
        })
        .collect()
}

/// Runs load until at least `answers` answers came back, `end`s the server
/// while the clients keep asking, and returns what each user was delivered.
fn load_then(
    server: &mut Server,
    answers: usize,
    end: impl FnOnce(&mut Server),
) -> HashMap<u64, Vec<u32>> {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients = hammer(&server.addr, &stop, &answered);
    wait_until("answers before the end", || {
        answered.load(Ordering::Relaxed) >= answers
    });
    end(server);
    // The clients run into the end: each stops when the server has gone
    // away (a refused or closed connection).
    server.wait_exit(Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    let mut delivered: HashMap<u64, Vec<u32>> = HashMap::new();
    for client in clients {
        for (user, got) in client.join().unwrap() {
            delivered.entry(user).or_default().extend(got);
        }
    }
    delivered
}

/// The progress file a server started on `dir` and stopped leaves there.
fn progress_file_of_a_run(dir: &Path) -> std::path::PathBuf {
    drop(start(dir, &[]));
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "bin"))
        .unwrap()
}

/// After a restart, every user's next answer continues the feed: none of
/// its items was delivered before.
fn check_continues(server: &Server, before: &HashMap<u64, Vec<u32>>) {
    let mut total = 0;
    for user in 0..USERS {
        let next = items(&get(&server.addr, &format!("/feed/{user}?size=5")).body);
        let earlier: HashSet<u32> = before.get(&user).into_iter().flatten().copied().collect();
        total += earlier.len();
        assert!(
            next.iter().all(|i| !earlier.contains(i)),
            "user {user} was handed again {next:?} of {earlier:?}"
        );
    }
    assert!(total > 0, "nothing was delivered before the restart");
}

#[test]
fn kill_9_under_load_then_restart_repeats_nothing() {
    let dir = scratch_dir("durable-kill");
    let mut server = start(&dir, &[]);
    let before = load_then(&mut server, 300, |server| server.signal("KILL"));
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), None, "not killed by the signal");
    let restarted = start(&dir, &[]);
    check_continues(&restarted, &before);
}

#[test]
fn sigterm_syncs_and_a_restart_repeats_nothing() {
    let dir = scratch_dir("durable-term");
    let mut server = start(
        &dir,
        &[
            ("FEED__SERVER__SHUTDOWN_DELAY_MS", "0"),
            ("FEED__PROGRESS__SYNC_MS", "20"),
        ],
    );
    // The sync thread's work shows in the metrics.
    let admin = admin_addr(server.logged("feed-server ready").unwrap());
    wait_until("a progress sync in /metrics", || {
        let metrics = get(&admin, "/metrics").body;
        metrics.contains("feed_progress_sync_duration_seconds_count")
            && metrics.contains("feed_progress_last_sync_timestamp_seconds")
    });
    let before = load_then(&mut server, 200, |server| server.signal("TERM"));
    let synced = server.wait_for_log("progress synced at shutdown");
    assert!(synced["ms"].is_u64());
    assert_eq!(server.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let restarted = start(&dir, &[]);
    check_continues(&restarted, &before);
}

#[test]
fn other_data_starts_fresh_and_says_so() {
    let dir = scratch_dir("durable-other");
    let server = start(&dir, &[]);
    let first = items(&get(&server.addr, "/feed/1?size=5").body);
    drop(server);
    // Another seed is other data: fresh progress, logged.
    let mut other = Server::start(&[
        ("FEED__PROGRESS__PATH", dir.to_str().unwrap()),
        ("FEED__DATA__USERS", "40"),
        ("FEED__DATA__SEED", "7"),
    ]);
    other.wait_for_log("feed-server ready");
    let fresh = other.logged("progress: fresh for this data").unwrap();
    assert!(fresh["file"].as_str().unwrap().contains("progress-"));
    drop(other);
    // Back on the first data: its progress was kept (the previous file).
    let again = start(&dir, &[]);
    let next = items(&get(&again.addr, "/feed/1?size=5").body);
    assert!(next.iter().all(|i| !first.contains(i)));
}

#[test]
fn a_bad_progress_file_fails_or_is_kept_aside() {
    let dir = scratch_dir("durable-corrupt");
    let file = progress_file_of_a_run(&dir);
    let dir_text = dir.display().to_string();
    for (bytes, reason) in [
        (b"torn".to_vec(), "not a progress file"),
        (std::fs::read(&file).unwrap()[..4200].to_vec(), "expected"),
    ] {
        std::fs::write(&file, &bytes).unwrap();
        let stderr = refused_start(&[
            ("FEED__PROGRESS__PATH", dir_text.as_str()),
            ("FEED__DATA__USERS", "40"),
        ]);
        assert!(
            stderr.contains("progress.path") && stderr.contains(reason),
            "{stderr}"
        );
        let mut reset = Server::start(&[
            ("FEED__PROGRESS__PATH", dir_text.as_str()),
            ("FEED__DATA__USERS", "40"),
            ("FEED__PROGRESS__ON_CORRUPT", "reset"),
        ]);
        reset.wait_for_log("feed-server ready");
        let warning = reset
            .logged("progress: the file was bad, kept aside, starting fresh")
            .unwrap();
        let aside = warning["aside"].as_str().unwrap().to_owned();
        assert_eq!(std::fs::read(&aside).unwrap(), bytes);
        assert_eq!(get(&reset.addr, "/feed/1").status, 200);
        drop(reset);
        std::fs::remove_file(aside).unwrap();
    }
}

#[test]
fn an_unusable_progress_folder_exits_2_naming_it() {
    let dir = scratch_dir("durable-folder");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let path = blocker.join("progress").display().to_string();
    let stderr = refused_start(&[("FEED__PROGRESS__PATH", path.as_str())]);
    assert!(stderr.contains("a-file"), "{stderr}");
}

/// The value of the unlabelled counter `name` in a `/metrics` text (0 when
/// it is not there yet).
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A tmpfs of `size` on a fresh folder, unmounted when dropped: a real
/// small filesystem to fill. `None` where this machine cannot mount (not
/// root): a loud skip, and a failure in CI.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Option<Self> {
        let dir = scratch_dir(name);
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .is_ok_and(|status| status.success());
        if mounted {
            return Some(Self(dir));
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (it runs as root)"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?): {name}");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// No room for the progress file: the start exits 2 with one line naming
/// the file and the bytes it needs, instead of a SIGBUS once requests touch
/// pages the disk cannot hold.
#[test]
fn no_room_for_the_progress_file_exits_2_naming_it_and_the_bytes() {
    let Some(disk) = Tmpfs::mount("durable-no-room", "256k") else {
        return;
    };
    let dir = disk.0.display().to_string();
    let stderr = refused_start(&[
        ("FEED__PROGRESS__PATH", dir.as_str()),
        ("FEED__DATA__USERS", "200000"),
        ("FEED__DATA__FEED_LEN", "10"),
    ]);
    let needed = (4096 + 200_000 * 4).to_string();
    assert!(
        stderr.contains("no room") && stderr.contains(&needed) && stderr.contains("progress-"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// A disk that fills up while the server runs: syncs fail, loudly (an
/// error log, a counter, the age of the last good sync), the server stays
/// ready and answers every request, and nothing is lost: once there is
/// room again the syncs succeed, and a kill -9 and a restart repeat no
/// item.
#[test]
fn a_full_disk_fails_syncs_loudly_stays_ready_and_loses_nothing() {
    let Some(disk) = Tmpfs::mount("durable-full", "1m") else {
        return;
    };
    let mut server = start(&disk.0, &[("FEED__PROGRESS__SYNC_MS", "20")]);
    let admin = admin_addr(server.logged("feed-server ready").unwrap());
    // Fill the disk to the last byte.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![1u8; 4096];
        while file.write_all(&chunk).is_ok() {}
    }
    let mut delivered: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut user = 0;
    wait_until("a failed sync in /metrics", || {
        // Moves that the next sync must write to the (full) journal.
        for _ in 0..5 {
            let answer = get(&server.addr, &format!("/feed/{user}?size=5"));
            assert_eq!(answer.status, 200, "{}", answer.body);
            delivered
                .entry(user)
                .or_default()
                .extend(items(&answer.body));
            user = (user + 1) % USERS;
        }
        counter(
            &get(&admin, "/metrics").body,
            "feed_progress_sync_errors_total",
        ) > 0
    });
    server.wait_for_log("progress: sync failed, the next one rewrites it all");
    assert_eq!(request(&server.addr, "GET", "/readyz", &[]).status, 200);
    let metrics = get(&admin, "/metrics").body;
    assert!(
        metrics.contains("feed_progress_last_sync_age_seconds"),
        "{metrics}"
    );
    // Room again: syncs succeed once more.
    std::fs::remove_file(&filler).unwrap();
    let synced_bytes = || {
        counter(
            &get(&admin, "/metrics").body,
            "feed_progress_synced_bytes_total",
        )
    };
    let written = synced_bytes();
    for user in 0..USERS {
        let answer = get(&server.addr, &format!("/feed/{user}?size=5"));
        delivered
            .entry(user)
            .or_default()
            .extend(items(&answer.body));
    }
    wait_until("a journal batch written after the disk had room", || {
        synced_bytes() > written
    });
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10));
    let restarted = start(&disk.0, &[]);
    check_continues(&restarted, &delivered);
}

/// Offsets no feed can have (0xFFFFFFF0; 201 for a feed of 200) written
/// into a stopped server's progress file are clamped at the restart,
/// counted and logged: every answer for those users is still exactly N
/// distinct items, from the fallback.
#[test]
fn damaged_offsets_are_clamped_counted_and_logged() {
    use std::os::unix::fs::FileExt;
    let dir = scratch_dir("durable-clamp");
    let file = progress_file_of_a_run(&dir);
    let progress = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    progress
        .write_all_at(&0xFFFF_FFF0u32.to_le_bytes(), 4096 + 3 * 4)
        .unwrap();
    progress
        .write_all_at(&201u32.to_le_bytes(), 4096 + 4 * 4)
        .unwrap();
    drop(progress);
    let server = start(&dir, &[]);
    let admin = admin_addr(server.logged("feed-server ready").unwrap());
    let logged = server
        .logged("progress: offsets beyond their feed's end, clamped (a damaged progress file?)")
        .unwrap()
        .clone();
    assert_eq!(logged["clamped"], 2);
    for user in [3, 4] {
        for _ in 0..3 {
            let answer = get(&server.addr, &format!("/feed/{user}?size=50"));
            assert_eq!(answer.status, 200, "{}", answer.body);
            let got = items(&answer.body);
            assert_eq!(got.len(), 50);
            assert_eq!(got.iter().collect::<HashSet<_>>().len(), 50);
        }
    }
    let metrics = get(&admin, "/metrics").body;
    assert!(
        metrics.contains("feed_progress_offsets_clamped_total 2"),
        "{metrics}"
    );
}
