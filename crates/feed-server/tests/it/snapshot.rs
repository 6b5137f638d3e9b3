//! Real feeds through the real binary: `feed-server import` of JSON Lines
//! into a snapshot, serving it (sparse 64-bit ids, feeds of any length, the
//! fallback list), refusing bad input and bad snapshots, and swapping
//! snapshots under load (reload, rollback, SIGHUP, file watch).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use feed_memory::Snapshot;

use super::server::{
    Clients, Connection, Server, admin_addr, command, get, post, refused_start, wait_until,
};

/// A fresh directory for one test's files.
fn scratch() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "feed-server-it-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `feed-server import` with `args`; returns (exit code, stdout, stderr).
fn import(args: &[&str]) -> (i32, String, String) {
    let output = command(&[]).arg("import").args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Writes `lines` as a JSON Lines file and imports it (with `fallback`
/// lines, if any) into `name`.snap beside it.
pub(crate) fn snapshot_of(
    dir: &Path,
    name: &str,
    lines: &[String],
    fallback: Option<&str>,
) -> PathBuf {
    let input = dir.join(format!("{name}.jsonl"));
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = dir.join(format!("{name}.snap"));
    let mut args = vec![
        "--input".to_owned(),
        input.display().to_string(),
        "--output".to_owned(),
        output.display().to_string(),
    ];
    if let Some(list) = fallback {
        let path = dir.join(format!("{name}.fallback.txt"));
        std::fs::write(&path, list).unwrap();
        args.extend(["--fallback".to_owned(), path.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = import(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrote"), "{stdout}");
    output
}

/// One JSON Lines record: `user`'s feed.
pub(crate) fn line(user: u64, items: &[u32]) -> String {
    format!(r#"{{"user_id": {user}, "items": {items:?}}}"#)
}

fn items(body: &str) -> Vec<u32> {
    serde_json::from_str(body).unwrap()
}

fn serve(snapshot: &Path, env: &[(&str, &str)]) -> (Server, serde_json::Value) {
    let path = snapshot.display().to_string();
    let mut all = vec![
        ("FEED__DATA__SOURCE", "snapshot"),
        ("FEED__DATA__SNAPSHOT", path.as_str()),
    ];
    all.extend_from_slice(env);
    Server::start_ready(&all)
}

#[test]
fn imported_feeds_are_served_in_order_with_the_fallback_list() {
    let dir = scratch();
    let long: Vec<u32> = (1..=250).collect();
    let big_id = u64::MAX - 7;
    let snapshot = snapshot_of(
        &dir,
        "feeds",
        &[
            line(big_id, &[30, 10, 20]),
            line(5, &[7, 7, 8]), // a repeat inside a feed keeps its first place
            line(1 << 40, &[]),
            line(6, &long),
        ],
        Some(&(900..1200).map(|i| format!("{i}\n")).collect::<String>()),
    );
    let (server, ready) = serve(&snapshot, &[]);
    assert_eq!(ready["users"], 4);
    assert_eq!(ready["snapshot_id"].as_str().map(str::len), Some(16));

    let fallback: Vec<u32> = (900..1200).collect();
    let check = |path: &str, personal: &[u32], size: usize| {
        let got = items(&get(&server.addr, path).body);
        assert_eq!(got.len(), size, "{path}");
        assert_eq!(&got[..personal.len()], personal, "{path}");
        assert!(
            got[personal.len()..].iter().all(|i| fallback.contains(i)),
            "{path}: {got:?}"
        );
    };
    check(&format!("/feed/{big_id}?size=2"), &[30, 10], 2);
    check(&format!("/feed/{big_id}?size=3"), &[20], 3);
    check("/feed/5?size=4", &[7, 8], 4);
    check(&format!("/feed/{}?size=5", 1u64 << 40), &[], 5);
    check("/feed/12345?size=6", &[], 6); // unknown user
    check("/feed/6?size=200", &long[..200], 200);
    check("/feed/6?size=60", &long[200..], 60);
    // The feed exhausted: all from the fallback list, no item twice.
    let all = items(&get(&server.addr, "/feed/6?size=200").body);
    assert_eq!(all.len(), 200);
    assert_eq!(
        all.iter().collect::<std::collections::HashSet<_>>().len(),
        200
    );
    assert!(all.iter().all(|i| fallback.contains(i)));

    // The stats are sampled once a second: wait for one taken with the data.
    let mut stats = serde_json::Value::Null;
    wait_until("stats with the data", || {
        stats = get(&admin_addr(&ready), "/stats").json();
        !stats["data"].is_null()
    });
    assert_eq!(stats["data"]["users"], 4);
    assert_eq!(stats["data"]["snapshot"]["id"], ready["snapshot_id"]);
}

#[test]
fn bad_input_exits_2_naming_the_file_and_leaves_nothing() {
    for (bad, column) in [
        (r#"{"user_id": 2, "items": [0]}"#, "items"),
        // Floats, even whole ones, are not ids: pandas writes an int64
        // column that holds a NaN as floats.
        (r#"{"user_id": 1.0, "items": [1]}"#, "user_id"),
        (
            r#"{"user_id": 9007199254740993.0, "items": [1]}"#,
            "user_id",
        ),
        (r#"{"user_id": 2, "items": [1e3]}"#, "items"),
    ] {
        let dir = scratch();
        let input = dir.join("bad.jsonl");
        std::fs::write(&input, format!("{}\n{bad}\n", line(1, &[1]))).unwrap();
        let output = dir.join("out.snap");
        let (code, _, stderr) = import(&[
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        // Progress lines may come first; the error is the last line.
        let last = stderr.trim().lines().last().unwrap_or_default();
        for part in ["bad.jsonl", "line 2", &format!("column `{column}`")] {
            assert!(last.contains(part), "{part} not in {last:?}");
        }
        assert!(!output.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "a file was left behind"
        );
    }
}

#[test]
fn a_bad_snapshot_stops_the_start_with_exit_2() {
    let dir = scratch();
    let good = snapshot_of(&dir, "good", &[line(1, &[1, 2])], None);
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[0] ^= 0xff;
    let corrupt = dir.join("corrupt.snap");
    std::fs::write(&corrupt, &bytes).unwrap();
    // One bit flipped deep in the file, in a section only the full
    // verification reads: refused before anything is served.
    let mut bytes = std::fs::read(&good).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x04;
    let flipped = dir.join("flipped.snap");
    std::fs::write(&flipped, &bytes).unwrap();
    for (path, reason) in [
        (dir.join("missing.snap"), "No such file"),
        (corrupt, "wrong magic"),
        (flipped, "checksum does not match"),
    ] {
        let path_text = path.display().to_string();
        let stderr = refused_start(&[
            ("FEED__DATA__SOURCE", "snapshot"),
            ("FEED__DATA__SNAPSHOT", path_text.as_str()),
        ]);
        assert!(
            stderr.contains(&path_text) && stderr.contains(reason),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

/// Clients keep asking while snapshots are swapped: not one request fails,
/// a reload serves the new feeds from their start, a failed reload keeps
/// the current ones and answers a JSON error, and a rollback returns to the
/// previous version.
#[test]
fn reload_and_rollback_under_load_fail_no_request() {
    let dir = scratch();
    let users = 50u64;
    // The clients ask users 0, 1_000_003, 2_000_006, ...; the probe user
    // (not a multiple) is asked by the test alone.
    let probe = 999u64;
    let mut first: Vec<String> = (0..users)
        .map(|u| line(u * 1_000_003, &[1, 2, 3, 4]))
        .collect();
    let mut second: Vec<String> = (0..users)
        .map(|u| line(u * 1_000_003, &[91, 92, 93, 94]))
        .collect();
    first.push(line(probe, &[11, 12, 13, 14, 15, 16]));
    second.push(line(probe, &[21, 22, 23, 24]));
    let a = snapshot_of(&dir, "a", &first, None);
    let b = snapshot_of(&dir, "b", &second, None);
    // Every feed's items make the fallback list: 8 in `b`.
    let (mut server, ready) = serve(
        &a,
        &[
            ("FEED__SERVER__WORKERS", "2"),
            ("FEED__API__MAX_SIZE", "8"),
            ("FEED__API__DEFAULT_SIZE", "2"),
        ],
    );
    let admin = admin_addr(&ready);

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (addr, stop, served) =
                (server.addr.clone(), Arc::clone(&stop), Arc::clone(&served));
            std::thread::spawn(move || -> Result<(), String> {
                let mut conn = Connection::open(&addr).map_err(|e| e.to_string())?;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let user = (n * 7 + c) % users * 1_000_003;
                    let answer = conn
                        .get(&format!("/feed/{user}?size=2"))
                        .map_err(|e| e.to_string())?;
                    if answer.status != 200 || items(&answer.body).len() != 2 {
                        return Err(format!("status {} body {}", answer.status, answer.body));
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    let wait_served = |at_least: u64| {
        wait_until("clients served", || {
            served.load(Ordering::Relaxed) >= at_least
        });
    };
    wait_served(200);
    let take = |n: usize| items(&get(&server.addr, &format!("/feed/{probe}?size={n}")).body);
    assert_eq!(take(2), [11, 12]);

    let reload = post(
        &admin,
        "/admin/reload",
        &format!(r#"{{"path": "{}"}}"#, b.display()),
    );
    assert_eq!(reload.status, 200, "{}", reload.body);
    assert_eq!(reload.json()["status"], "reloaded");
    let now = served.load(Ordering::Relaxed);
    wait_served(now + 200);
    // New recommendations, from their start.
    assert_eq!(take(2), [21, 22]);

    // A failed reload: the current data stays, the answer says why.
    let bad = dir.join("not-a-snapshot.snap");
    std::fs::write(&bad, b"garbage").unwrap();
    let failed = post(
        &admin,
        "/admin/reload",
        &format!(r#"{{"path": "{}"}}"#, bad.display()),
    );
    assert_eq!(failed.status, 422);
    assert!(
        failed.json()["error"]
            .as_str()
            .unwrap()
            .contains("truncated")
    );
    assert_eq!(post(&admin, "/admin/reload", "{nope").status, 400);

    // Back to `a`, with the progress it had.
    let rolled = post(&admin, "/admin/rollback", "");
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    assert_eq!(take(2), [13, 14]);
    let now = served.load(Ordering::Relaxed);
    wait_served(now + 200);
    let metrics = get(&admin, "/metrics").body;
    for line in [
        r#"feed_data_changes_total{result="reloaded"} 1"#,
        r#"feed_data_changes_total{result="failed"} 1"#,
        r#"feed_data_changes_total{result="rolled_back"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // SIGHUP reloads the configured file, replaced (by a rename, never in
    // place: `a` is mapped) with `b`'s content.
    let replacement = dir.join("replacement.snap");
    std::fs::copy(&b, &replacement).unwrap();
    std::fs::rename(&replacement, &a).unwrap();
    server.signal("HUP");
    let a_text = a.display().to_string();
    server.wait_for_log_where("reloaded", |r| r["path"] == a_text.as_str());

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client
            .join()
            .unwrap()
            .expect("a request failed during a swap");
    }
}

/// A server on `snapshot` (feeds of 3 items), watching its file every 50 ms.
fn watched(snapshot: &Path) -> Server {
    serve(
        snapshot,
        &[
            ("FEED__API__MAX_SIZE", "3"),
            ("FEED__API__DEFAULT_SIZE", "3"),
            ("FEED__DATA__WATCH", "true"),
            ("FEED__DATA__WATCH_INTERVAL_MS", "50"),
        ],
    )
    .0
}

#[test]
fn a_replaced_snapshot_file_is_reloaded_when_watched() {
    let dir = scratch();
    let a = snapshot_of(&dir, "a", &[line(1, &[1, 2, 3])], None);
    let b = snapshot_of(&dir, "b", &[line(1, &[7, 8, 9])], None);
    let b_id = Snapshot::open(&b).unwrap().meta().id;
    let mut server = watched(&a);
    assert_eq!(items(&get(&server.addr, "/feed/1?size=1").body), [1]);
    // Replace it as an import does: a rename over the watched path.
    std::fs::rename(&b, &a).unwrap();
    let b_id = format!("{b_id:016x}");
    server.wait_for_log_where("reloaded", |r| r["snapshot_id"] == b_id.as_str());
    assert_eq!(items(&get(&server.addr, "/feed/1?size=3").body), [7, 8, 9]);
}

/// A fallback list too short to fill an answer of `api.max_size` distinct
/// items is refused: at start (exit 2) and on reload (422), both naming the
/// two numbers; the data served stays.
#[test]
fn a_fallback_list_shorter_than_max_size_is_refused() {
    let dir = scratch();
    let short = snapshot_of(&dir, "short", &[line(1, &[1, 2])], Some("900\n901\n902\n"));
    let short_text = short.display().to_string();
    let stderr = refused_start(&[
        ("FEED__DATA__SOURCE", "snapshot"),
        ("FEED__DATA__SNAPSHOT", short_text.as_str()),
        ("FEED__API__MAX_SIZE", "4"),
        ("FEED__API__DEFAULT_SIZE", "4"),
    ]);
    assert!(
        stderr.contains(&short_text) && stderr.contains("has 3 items, api.max_size is 4"),
        "{stderr}"
    );
    let good = snapshot_of(
        &dir,
        "good",
        &[line(1, &[1, 2])],
        Some("900\n901\n902\n903\n"),
    );
    let (server, ready) = serve(
        &good,
        &[
            ("FEED__API__MAX_SIZE", "4"),
            ("FEED__API__DEFAULT_SIZE", "4"),
        ],
    );
    let reload = post(
        &admin_addr(&ready),
        "/admin/reload",
        r#"{"path": "short.snap"}"#,
    );
    assert_eq!(reload.status, 422, "{}", reload.body);
    assert!(
        reload.body.contains("has 3 items, api.max_size is 4"),
        "{}",
        reload.body
    );
    assert_eq!(items(&get(&server.addr, "/feed/7").body).len(), 4);
}

/// A reload that names a path reads only regular files inside
/// `data.snapshot_dir` (by default the folder of `data.snapshot`): a path
/// outside it, through `..` or a link, gets 403 at once with one answer
/// whether it exists or not; a FIFO inside it gets 422 at once and holds
/// nothing up.
#[test]
fn a_reload_reads_only_regular_files_inside_the_snapshot_folder() {
    let dir = scratch();
    let served = dir.join("served");
    std::fs::create_dir(&served).unwrap();
    let a = snapshot_of(&served, "a", &[line(1, &[1, 2, 3])], None);
    snapshot_of(&served, "b", &[line(1, &[7, 8, 9])], None);
    let outside = snapshot_of(&dir, "outside", &[line(1, &[4, 5, 6])], None);
    std::os::unix::fs::symlink(&outside, served.join("link.snap")).unwrap();
    // Links to a folder outside, and to nothing outside.
    std::os::unix::fs::symlink(&dir, served.join("up")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone.snap"), served.join("dangling.snap")).unwrap();
    let fifo = served.join("fifo.snap");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (server, ready) = serve(
        &a,
        &[
            ("FEED__API__MAX_SIZE", "3"),
            ("FEED__API__DEFAULT_SIZE", "3"),
        ],
    );
    let admin = admin_addr(&ready);
    let reload = |path: &str| post(&admin, "/admin/reload", &format!(r#"{{"path": "{path}"}}"#));
    let refusals: Vec<String> = [
        outside.display().to_string(),
        dir.join("no-such.snap").display().to_string(),
        "../outside.snap".to_owned(),
        "link.snap".to_owned(),
        "/etc/passwd".to_owned(),
        // Through a link: the same answer whether the file outside exists.
        "up/outside.snap".to_owned(),
        "up/no-such.snap".to_owned(),
        "dangling.snap".to_owned(),
    ]
    .iter()
    .map(|path| {
        let answer = reload(path);
        assert_eq!(answer.status, 403, "{path}: {}", answer.body);
        answer.body
    })
    .collect();
    assert!(
        refusals.iter().all(|body| body == &refusals[0]),
        "{refusals:?}"
    );
    assert!(!refusals[0].contains("passwd") && !refusals[0].contains("outside"));

    let answer = reload("fifo.snap");
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(
        answer.body.contains("not a regular file"),
        "{}",
        answer.body
    );
    // Nothing was left holding the reload lock.
    let answer = reload("b.snap");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(items(&get(&server.addr, "/feed/1").body), [7, 8, 9]);
}

/// A snapshot changed in place (unsupported: it is mapped) is reported by
/// the watch as an error, and not reloaded; a replacement by a rename still
/// is.
#[test]
fn the_watch_reports_a_snapshot_changed_in_place() {
    let dir = scratch();
    let a = snapshot_of(&dir, "a", &[line(1, &[1, 2, 3])], None);
    let mut server = watched(&a);
    // Appending keeps every mapped page valid, and changes length and time.
    let mut file = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
    std::io::Write::write_all(&mut file, b"rsync --inplace").unwrap();
    drop(file);
    let logged = server.wait_for_log_where(
        "the snapshot file was changed in place (truncated or rewritten); this is unsupported: \
         write a new file and rename it over the path",
        |_| true,
    );
    assert_eq!(logged["level"], "ERRO");
    assert_eq!(items(&get(&server.addr, "/feed/1").body), [1, 2, 3]);
}

/// Two snapshots of `users` users, `a.snap` and `b.snap` in `dir`, with
/// the same 300 items a user in two orders (another rotation a user), and
/// a fallback list of 16 items above 10,000, disjoint from the feeds.
pub(crate) fn two_rankings(dir: &Path, users: u64) -> (PathBuf, PathBuf) {
    let feed: Vec<u32> = (1..=300).collect();
    let first: Vec<String> = (0..users).map(|u| line(u, &feed)).collect();
    let second: Vec<String> = (0..users)
        .map(|u| {
            let mut shuffled = feed.clone();
            shuffled.rotate_left((u as usize * 37) % 300);
            shuffled.reverse();
            line(u, &shuffled)
        })
        .collect();
    let fallback: String = (10_001..=10_016).map(|i| format!("{i}\n")).collect();
    (
        snapshot_of(dir, "a", &first, Some(&fallback)),
        snapshot_of(dir, "b", &second, Some(&fallback)),
    )
}

/// Eight clients keep asking while a reload swaps in a snapshot whose
/// feeds hold the same items in another order, and a rollback swaps the
/// first back: no user is given a personal item twice, under any version.
/// (The fallback list is disjoint from the feeds, so personal items are
/// told from random ones.)
#[test]
fn a_reload_and_a_rollback_under_load_repeat_no_item() {
    const USERS: u64 = 40;
    let dir = scratch();
    let (a, b) = two_rankings(&dir, USERS);
    let progress = dir.join("progress").display().to_string();
    let (server, ready) = serve(
        &a,
        &[
            ("FEED__SERVER__WORKERS", "2"),
            ("FEED__API__MAX_SIZE", "8"),
            ("FEED__API__DEFAULT_SIZE", "3"),
            ("FEED__PROGRESS__PATH", progress.as_str()),
        ],
    );
    let admin = admin_addr(&ready);
    let clients = Clients::start(&server.addr, USERS);
    clients.wait_more(300);
    let reload = post(
        &admin,
        "/admin/reload",
        &format!(r#"{{"path": "{}"}}"#, b.display()),
    );
    assert_eq!(reload.status, 200, "{}", reload.body);
    clients.wait_more(300);
    let rolled = post(&admin, "/admin/rollback", "");
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    clients.wait_more(300);
    clients.stop_repeating_nothing(2_000);
}
