//! Takedowns through the real binary in memory mode: a blocked item is
//! never served again, from a personal feed (progress moves past it) or
//! from the fallback list, at once after the POST; the list survives a
//! restart; a change that would leave too few fallback items is a 422; and
//! every change is in the audit log.

use std::collections::HashSet;
use std::time::Duration;

use super::server::{Server, admin_addr, get, post, scratch_dir};
use super::snapshot::{line, snapshot_of};

fn items(body: &str) -> Vec<u32> {
    serde_json::from_str(body).unwrap()
}

/// A server on `snapshot` with its progress (and blocklist) in `progress`.
fn start(snapshot: &std::path::Path, progress: &std::path::Path) -> (Server, String) {
    let (snapshot, progress) = (
        snapshot.display().to_string(),
        progress.display().to_string(),
    );
    let (server, ready) = Server::start_ready(&[
        ("FEED__DATA__SOURCE", "snapshot"),
        ("FEED__DATA__SNAPSHOT", snapshot.as_str()),
        ("FEED__PROGRESS__PATH", progress.as_str()),
        ("FEED__API__MAX_SIZE", "5"),
        ("FEED__API__DEFAULT_SIZE", "5"),
        ("FEED__SERVER__WORKERS", "1"),
    ]);
    let admin = admin_addr(&ready);
    (server, admin)
}

#[test]
fn a_blocked_item_is_never_served_and_the_list_is_kept() {
    let dir = scratch_dir("blocklist");
    let feeds: Vec<String> = (0..4)
        .map(|u| line(u, &(1..=30).collect::<Vec<_>>()))
        .collect();
    // Fallback list: 101..=108, eight items for answers of up to five.
    let fallback: String = (101..=108).map(|i| format!("{i}\n")).collect();
    let snapshot = snapshot_of(&dir, "s", &feeds, Some(&fallback));
    let progress = dir.join("progress");
    let (mut server, admin) = start(&snapshot, &progress);

    assert_eq!(
        items(&get(&server.addr, "/feed/1?size=5").body),
        [1, 2, 3, 4, 5]
    );
    let answer = post(
        &admin,
        "/admin/blocklist",
        r#"{"add": [6, 7, 9, 101, 102]}"#,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["blocked"], 5);
    // Personal items skip them, and progress moves past them.
    assert_eq!(
        items(&get(&server.addr, "/feed/1?size=5").body),
        [8, 10, 11, 12, 13]
    );
    assert_eq!(
        items(&get(&server.addr, "/feed/2?size=5").body),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        items(&get(&server.addr, "/feed/2?size=5").body),
        [8, 10, 11, 12, 13]
    );
    // The fill never draws them: an unknown user gets the six others.
    for _ in 0..20 {
        let got = items(&get(&server.addr, "/feed/999?size=5").body);
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|i| (103..=108).contains(i)), "{got:?}");
    }
    let listed = get(&admin, "/admin/blocklist").json();
    assert_eq!(listed["items"], serde_json::json!([6, 7, 9, 101, 102]));

    // Two more fallback items would leave four: fewer than max_size (5).
    let refused = post(&admin, "/admin/blocklist", r#"{"add": [103, 104]}"#);
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("max_size")
    );
    for (body, status) in [
        (r#"{"add": [0]}"#, 422),
        (r#"{"add": [-1]}"#, 400),
        (r#"{"add": "x"}"#, 400),
        (r#"{"block": [1]}"#, 400),
        ("nope", 400),
    ] {
        let answer = post(&admin, "/admin/blocklist", body);
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(answer.json()["error"].is_string());
    }
    // Unblocked: served again where the feed has it next.
    let answer = post(&admin, "/admin/blocklist", r#"{"remove": [9, 101]}"#);
    assert_eq!(answer.json()["blocked"], 3);
    assert_eq!(
        items(&get(&server.addr, "/feed/3?size=5").body),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        items(&get(&server.addr, "/feed/3?size=5").body),
        [8, 9, 10, 11, 12]
    );

    let logged = server.wait_for_log("blocklist changed");
    assert_eq!(logged["client"], "127.0.0.1");
    assert_eq!(logged["items_added"], "6,7,9,101,102");
    let metrics = get(&admin, "/metrics").body;
    assert!(metrics.contains("feed_blocklist_items 3"), "{metrics}");
    let skipped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("feed_blocklist_skipped_items_total "))
        .unwrap()
        .parse()
        .unwrap();
    // 6, 7 and 9 passed over for users 1 and 2, then 6 and 7 for user 3.
    assert_eq!(skipped, 8);

    // Kept across a kill -9.
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10));
    let (server, admin) = start(&snapshot, &progress);
    let listed: HashSet<u64> = get(&admin, "/admin/blocklist").json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(listed, HashSet::from([6, 7, 102]));
    let got = items(&get(&server.addr, "/feed/0?size=5").body);
    assert_eq!(got, [1, 2, 3, 4, 5]);
    assert_eq!(
        items(&get(&server.addr, "/feed/0?size=5").body),
        [8, 9, 10, 11, 12]
    );
}
