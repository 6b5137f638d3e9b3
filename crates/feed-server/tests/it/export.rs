//! `feed-server export-delivered` through the real binary: while a server
//! serves (after a reload to data other than the configured one), with no
//! server running, over a damaged progress file, and in the Redis mode; the
//! file read back with pyarrow, as the offline job reads it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cluster::{PASSWORD, TestCluster};
use super::scaleout::{GENEROUS_MS, frontend, load, nodes, snapshots};
use super::server::{Server, admin_addr, command, get, post, scratch_dir, wait_until};
use super::snapshot::{line, snapshot_of};

/// Runs `export-delivered --output output` with `env`; (exit code, stdout,
/// stderr).
fn export(env: &[(&str, &str)], output: &Path, extra: &[&str]) -> (i32, String, String) {
    let run = command(env)
        .args(["export-delivered", "--output"])
        .arg(output)
        .args(extra)
        .output()
        .unwrap();
    (
        run.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

/// What pyarrow reads: the types of `user_id` and `items`, and the rows.
struct Read {
    user_id: String,
    items: String,
    rows: Vec<(u64, Vec<u32>)>,
}

/// The file as pyarrow reads it: the schema's two types and the rows.
/// `None` (said loudly) when pyarrow is not installed, except in CI
/// (`CI` set), where the test fails instead.
fn read_with_pyarrow(path: &Path) -> Option<Read> {
    const SCRIPT: &str = r#"
import json, sys
import pyarrow.parquet as pq
table = pq.read_table(sys.argv[1])
print(json.dumps({
    "user_id": str(table.schema.field("user_id").type),
    "items": str(table.schema.field("items").type),
    "rows": [[r["user_id"], r["items"]] for r in table.to_pylist()],
}))
"#;
    let available = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|status| status.success());
    if !available {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 with pyarrow is not installed"
        );
        eprintln!("SKIPPED: python3 with pyarrow is not installed");
        return None;
    }
    let run = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let items = row[1].as_array().unwrap();
            let items = items.iter().map(|i| i.as_u64().unwrap() as u32).collect();
            (row[0].as_u64().unwrap(), items)
        })
        .collect();
    Some(Read {
        user_id: json["user_id"].as_str().unwrap().to_owned(),
        items: json["items"].as_str().unwrap().to_owned(),
        rows,
    })
}

fn items(body: &str) -> Vec<u32> {
    serde_json::from_str(body).unwrap()
}

/// Feeds of 10 items for `users`, starting at `first` (distinct per user).
fn feeds(users: &[u64], first: u32) -> Vec<String> {
    users
        .iter()
        .enumerate()
        .map(|(at, &user)| {
            let start = first + at as u32 * 10;
            line(user, &(start..start + 10).collect::<Vec<_>>())
        })
        .collect()
}

const BIG: u64 = 1 << 40;

/// A memory-mode server on snapshot `a` that reloads `b`; the export run
/// beside it, still configured with `a`, gives what `b`'s users were
/// delivered. Then with no server: the configured `a`'s. Then a damaged
/// progress file: an error naming it.
#[test]
fn a_memory_export_gives_what_the_served_version_delivered() {
    let dir = scratch_dir("export");
    let fallback: String = (5_000..5_050).map(|i| format!("{i}\n")).collect();
    let a = snapshot_of(&dir, "a", &feeds(&[3, 7, 99, BIG], 1), Some(&fallback));
    let b = snapshot_of(
        &dir,
        "b",
        &feeds(&[3, 7, 99, 500, BIG], 101),
        Some(&fallback),
    );
    let progress = dir.join("progress");
    let progress = progress.to_str().unwrap();
    let a_path = a.to_str().unwrap();
    let env = [
        ("FEED__DATA__SOURCE", "snapshot"),
        ("FEED__DATA__SNAPSHOT", a_path),
        ("FEED__API__MAX_SIZE", "20"),
        ("FEED__PROGRESS__PATH", progress),
    ];
    let (server, ready) = Server::start_ready(&env);
    let admin = admin_addr(&ready);
    let port = admin.rsplit(':').next().unwrap().to_owned();
    let take = |user: u64, size: usize| {
        let answer = get(&server.addr, &format!("/feed/{user}?size={size}"));
        assert_eq!(answer.status, 200, "{}", answer.body);
        items(&answer.body)
    };
    let on_a = take(3, 4);
    let reload = post(
        &admin,
        "/admin/reload",
        &format!(r#"{{"path": "{}"}}"#, b.display()),
    );
    assert_eq!(reload.status, 200, "{}", reload.body);
    // `/stats`, which the export asks, is sampled once a second.
    wait_until("/stats names b", || {
        get(&admin, "/stats").json()["data"]["snapshot"]["path"]
            .as_str()
            .is_some_and(|path| path.ends_with("b.snap"))
    });
    let mut three = take(3, 4);
    three.extend(take(3, 3));
    let ninety_nine = take(99, 1);
    let big = take(BIG, 10);
    // Past the end: fallback items only, nothing more delivered of the feed.
    assert!(take(BIG, 5).iter().all(|item| *item >= 5_000));
    take(12_345, 3); // unknown: nothing to export

    let mut with_admin: Vec<(&str, &str)> = env.to_vec();
    with_admin.push(("FEED__ADMIN__PORT", &port));
    let output = dir.join("out").join("delivered.parquet");
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    let (code, stdout, stderr) = export(&with_admin, &output, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("3 users with progress, 18 items delivered (user_id int64"),
        "{stdout}"
    );
    assert!(stdout.contains("b.snap"), "{stdout}");
    if let Some(read) = read_with_pyarrow(&output) {
        assert_eq!(read.user_id, "int64");
        assert_eq!(read.items, "list<item: int64 not null>");
        assert_eq!(read.rows, [(3, three), (99, ninety_nine), (BIG, big)]);
    }
    // The server kept serving, and still moves on from where it was.
    assert_eq!(take(99, 1), [121 + 1]);
    drop(server);

    // No server: the configured data, `a`, whose user 3 had 4 items.
    let (code, stdout, stderr) = export(&with_admin, &output, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("a.snap"), "{stdout}");
    if let Some(read) = read_with_pyarrow(&output) {
        assert_eq!(read.rows, [(3, on_a)]);
    }

    // A damaged progress file: one line naming it, the output untouched.
    let before = std::fs::read(&output).unwrap();
    let file = std::fs::read_dir(progress)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "bin") && is_progress_of(p, &a))
        .unwrap();
    std::fs::write(&file, b"not progress").unwrap();
    let (code, _, stderr) = export(&with_admin, &output, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not the progress of this data") && stderr.contains("progress-"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&output).unwrap(), before);
    let left: Vec<PathBuf> = std::fs::read_dir(output.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&output),
        "no temporary file left"
    );
}

/// Whether `progress` is the progress file of the snapshot at `snapshot`.
fn is_progress_of(progress: &Path, snapshot: &Path) -> bool {
    let bytes = std::fs::read(snapshot).unwrap();
    let id = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    progress
        .file_name()
        .is_some_and(|name| name.to_string_lossy() == format!("progress-{id:016x}.bin"))
}

/// Progress kept in memory only: nothing to export, said in one line.
#[test]
fn without_a_progress_folder_there_is_nothing_to_export() {
    let dir = scratch_dir("export-memory-only");
    let (code, _, stderr) = export(
        &[("FEED__PROGRESS__PATH", ""), ("FEED__ADMIN__PORT", "0")],
        &dir.join("x.parquet"),
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("progress.path is empty"), "{stderr}");
}

/// `redis-cli` on the master that holds `key`.
fn on_master_of(cluster: &TestCluster, key: &str, args: &[&str]) -> String {
    let any: u16 = cluster.urls()[0]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let slot = cluster.cli(any, &["CLUSTER", "KEYSLOT", key]).unwrap();
    let master = cluster.master_of(slot.trim().parse().unwrap());
    cluster.cli(master, args).unwrap()
}

/// The Redis mode: a frontend serves a version; the export, run beside it,
/// reads every master's offsets, counters and hashes both, clamps one
/// beyond its feed, and gives each user's items of the version's snapshot.
#[test]
fn a_redis_export_gives_what_the_current_version_delivered() {
    let Some(cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let nodes = nodes(&cluster);
    let folder = snapshots();
    load(&nodes, "300", "5", &folder);
    let (server, _) = frontend(&nodes, GENEROUS_MS, &folder);
    let take = |user: u64, size: usize| {
        let answer = get(&server.addr, &format!("/feed/{user}?size={size}"));
        assert_eq!(answer.status, 200, "{}", answer.body);
        items(&answer.body)
    };
    let mut expected: Vec<(u64, Vec<u32>)> = Vec::new();
    for user in (0..300).step_by(7) {
        let mut given = take(user, 1 + user as usize % 5);
        given.extend(take(user, 2));
        expected.push((user, given));
    }
    let current = on_master_of(&cluster, "{ff}:current", &["GET", "{ff}:current"]);
    let version = current.trim();
    // User 1's offset as a hash (the layout that keeps more per user under
    // one key), user 2's beyond the feed's end.
    let hashed = format!("o:{{1}}:{version}");
    expected.push((1, take(1, 4)));
    on_master_of(&cluster, &hashed, &["DEL", &hashed]);
    on_master_of(&cluster, &hashed, &["HSET", &hashed, "n", "4"]);
    let beyond = format!("o:{{2}}:{version}");
    expected.push((2, take(2, 200)));
    on_master_of(&cluster, &beyond, &["SET", &beyond, "5000"]);
    expected.sort();

    let output = scratch_dir("redis-export").join("delivered.parquet");
    let env = [
        ("FEED__STORAGE__KIND", "redis"),
        ("FEED__REDIS__NODES", nodes.as_str()),
        ("FEED__REDIS__PASSWORD", PASSWORD),
        ("FEED__REDIS__SNAPSHOTS", folder.to_str().unwrap()),
    ];
    let (code, stdout, stderr) = export(&env, &output, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("{} users with progress", expected.len())),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 offsets beyond their feed's end"),
        "{stdout}"
    );
    if let Some(mut read) = read_with_pyarrow(&output) {
        assert_eq!(read.user_id, "int64");
        // Rows come in the cluster's order.
        read.rows.sort();
        assert_eq!(read.rows, expected);
    }
    // The frontend kept serving.
    assert_eq!(get(&server.addr, "/feed/3?size=1").status, 200);
}
