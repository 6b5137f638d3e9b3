//! `feed-server import` of input that is not in user order, through the
//! real binary: sorted through runs on disk (a tiny `--sort-memory`), the
//! same snapshot as the in-memory import, a user read twice named at both
//! places, the free space checked before anything is written (a test hook,
//! and a real small tmpfs when run as root), an interruption, and never a
//! temporary file or folder left behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use feed_memory::{Snapshot, snapshot};

use super::server::command;

/// A fresh directory for one test's files.
fn scratch() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "feed-import-it-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A pyarrow-written fixture of feed-import (or the one CI wrote afresh,
/// when `FEED_IMPORT_FIXTURES` names a folder).
fn fixture(name: &str) -> PathBuf {
    match std::env::var_os("FEED_IMPORT_FIXTURES") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => super::workspace()
            .join("crates/feed-import/fixtures")
            .join(name),
    }
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

/// The names in `dir`, hidden ones included, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The last line of stderr (progress lines may come first).
fn last_line(stderr: &str) -> &str {
    stderr.trim().lines().last().unwrap_or_default()
}

fn line(user: u64, items: &[u32]) -> String {
    format!(r#"{{"user_id": {user}, "items": {items:?}}}"#)
}

#[test]
fn an_unsorted_pyarrow_file_is_sorted_on_disk_into_the_same_snapshot() {
    let input = fixture("unsorted_row_groups.parquet");
    let dir = scratch();
    let output = dir.join("feeds.snap");
    let (code, stdout, stderr) = import(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--sort-memory",
        "4KiB",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("input not in user order: sorted through"),
        "{stdout}"
    );
    assert!(
        last_line(&stderr).starts_with("merged 4001 users from"),
        "{stderr}"
    );
    assert_eq!(
        names(&dir),
        ["feeds.snap"],
        "a temporary file was left behind"
    );

    // The reference: the same file imported in memory, written whole.
    let (feeds, imported) = feed_import::import_to_memory(&[input], None, &mut |_| {}).unwrap();
    assert_eq!(imported.summary.users, 4001);
    assert!(imported.summary.duplicates_dropped > 0);
    let fallback: Vec<u32> = imported.fallback.iter().collect();
    let reference = dir.join("reference.snap");
    let expected = snapshot::write_csr(
        &reference,
        &feeds.user_ids,
        &feeds.offsets,
        &feeds.items,
        &fallback,
        1,
    )
    .unwrap();
    let got = Snapshot::open(&output).unwrap();
    assert_eq!(got.meta().id, expected.id, "the same content, the same id");
    let want = Snapshot::open(&reference).unwrap();
    assert_eq!(got.table(), want.table());
    assert_eq!(got.fallback(), want.fallback());
    let first = stdout.lines().find(|l| l.starts_with("wrote")).unwrap();
    assert!(first.contains(&format!("{:016x}", expected.id)), "{first}");
}

#[test]
fn a_user_read_twice_in_different_runs_is_named_at_both_places() {
    let dir = scratch();
    let input = dir.join("feeds.jsonl");
    // User 77 on line 3 and line 502, runs apart; users out of order.
    let mut lines: Vec<String> = (0..600u64).map(|k| line(1000 - k, &[1, 2])).collect();
    lines[2] = line(77, &[5]);
    lines[501] = line(77, &[6]);
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = dir.join("feeds.snap");
    let (code, _, stderr) = import(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--sort-memory",
        "1KiB",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        last_line(&stderr),
        format!(
            "feed-server import: {0}: line 502, column `user_id`: user 77 appears again (first at {0}: line 3)",
            input.display()
        )
    );
    assert_eq!(
        names(&dir),
        ["feeds.jsonl"],
        "a temporary file was left behind"
    );
}

#[test]
fn too_little_free_space_fails_before_anything_is_written() {
    let dir = scratch();
    let input = dir.join("feeds.jsonl");
    let lines: Vec<String> = (0..300u64).map(|k| line(1000 - k, &[1, 2, 3])).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = dir.join("feeds.snap");
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--sort-memory",
        "1KiB",
        "--assume-free-bytes",
        "22000",
    ];
    let (code, _, stderr) = import(&args);
    assert_eq!(code, 2, "{stderr}");
    // The snapshot fits (the first, streaming attempt), the snapshot and
    // the sorted runs do not: refused when the input turns out unsorted.
    let needed = snapshot::file_bytes(300, 1200, 0) + 300 * 20 + 4 * 1200;
    assert_eq!(
        last_line(&stderr),
        format!(
            "feed-server import: {}: not enough free space: the import needs {needed} bytes here (snapshot {}, sorting {}), 22000 are free",
            dir.display(),
            snapshot::file_bytes(300, 1200, 0),
            300 * 20 + 4 * 1200,
        ),
    );
    assert_eq!(names(&dir), ["feeds.jsonl"]);
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_filesystem_is_refused_with_its_folder_and_sizes() {
    let dir = scratch();
    let small = dir.join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&small)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        assert!(
            std::env::var_os("FEED_REQUIRE_MOUNT").is_none(),
            "FEED_REQUIRE_MOUNT is set but a tmpfs cannot be mounted (not root?)"
        );
        eprintln!(
            "SKIPPED a_full_filesystem_is_refused_with_its_folder_and_sizes: cannot mount a tmpfs (run as root, as CI does)"
        );
        return;
    }
    let _mount = Mount(small.clone());
    let input = dir.join("feeds.jsonl");
    let items: Vec<u32> = (1..=200).collect();
    let lines: Vec<String> = (0..1000u64).map(|k| line(k, &items)).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = small.join("feeds.snap");
    let (code, _, stderr) = import(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    let prefix = format!(
        "feed-server import: {}: not enough free space: the import needs ",
        small.display()
    );
    let last = last_line(&stderr);
    assert!(last.starts_with(&prefix), "{stderr}");
    assert!(
        last.ends_with(&format!("), {} are free", 256 << 10)),
        "{stderr}"
    );
    assert!(names(&small).is_empty(), "{:?}", names(&small));
}
