//! Retry-safe requests through the real binary in memory mode: the same
//! `Idempotency-Key` gets the same answer, byte for byte, and moves
//! nothing, also after a `kill -9` between the request and its retry; a
//! bad key is a 400 and the same key with another size a 422, and neither
//! loses anything. (The Redis mode's cross-frontend retry is in
//! `scaleout.rs`.)

use std::collections::HashSet;
use std::time::Duration;

use super::server::{Answer, Server, admin_addr, request, scratch_dir};

/// `GET /feed/{user}?size={size}` with `Idempotency-Key: key` (none when
/// `key` is `None`).
fn feed(server: &Server, user: u64, size: u32, key: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    request(
        &server.addr,
        "GET",
        &format!("/feed/{user}?size={size}"),
        &headers,
    )
}

fn items(answer: &Answer) -> Vec<u64> {
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

/// A server on the synthetic set with its progress in `dir`, and its admin
/// address.
fn start(dir: &std::path::Path) -> (Server, String) {
    let dir = dir.display().to_string();
    let (server, ready) = Server::start_ready(&[
        ("FEED__PROGRESS__PATH", dir.as_str()),
        ("FEED__DATA__USERS", "40"),
        ("FEED__SERVER__WORKERS", "2"),
    ]);
    (server, admin_addr(&ready))
}

#[test]
fn a_retry_gets_the_same_answer_even_after_kill_9() {
    let dir = scratch_dir("replay");
    let (mut server, _) = start(&dir);

    let first = feed(&server, 3, 5, Some("a1b2-c3"));
    let page = items(&first);
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let retry = feed(&server, 3, 5, Some("a1b2-c3"));
    assert_eq!(retry.body, first.body, "byte for byte");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.header("cache-control"), Some("no-store"));

    // Another size with the same key: 422, and nothing moves.
    let other = feed(&server, 3, 6, Some("a1b2-c3"));
    assert_eq!(other.status, 422, "{}", other.body);
    assert!(other.json()["error"].as_str().unwrap().contains("size 5"));

    // Bad keys: 400 with a JSON error, nothing moves.
    let long = "k".repeat(256);
    for bad in ["", "two words", long.as_str(), "caf\u{e9}"] {
        let answer = feed(&server, 3, 5, Some(bad));
        assert_eq!(answer.status, 400, "{bad:?}: {}", answer.body);
        assert!(
            answer.json()["error"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key")
        );
    }
    let twice = request(
        &server.addr,
        "GET",
        "/feed/3?size=5",
        &[("Idempotency-Key", "x"), ("Idempotency-Key", "y")],
    );
    assert_eq!(twice.status, 400, "{}", twice.body);

    // Without a key the feed goes on after the page, none of it again.
    let next = items(&feed(&server, 3, 5, None));
    assert!(
        next.iter().all(|item| !page.contains(item)),
        "{page:?} {next:?}"
    );

    // A key 255 characters long is a key; a user the data does not know
    // gets the same random answer on a retry.
    let longest = "~".repeat(255);
    let keyed = items(&feed(&server, 3, 5, Some(&longest)));
    assert!(
        keyed
            .iter()
            .all(|item| !page.contains(item) && !next.contains(item))
    );
    let stranger = feed(&server, 4_000_000, 7, Some("s-1"));
    assert_eq!(feed(&server, 4_000_000, 7, Some("s-1")).body, stranger.body);

    // The key is the user's latest: kill -9 before the retry, then retry.
    let before_kill = feed(&server, 8, 9, Some("before-kill"));
    server.signal("KILL");
    assert_eq!(server.wait_exit(Duration::from_secs(10)).code(), None);
    let (server, admin) = start(&dir);
    let retry = feed(&server, 8, 9, Some("before-kill"));
    assert_eq!(retry.body, before_kill.body, "the retry after a kill -9");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    // And the page after it is new.
    let after = items(&feed(&server, 8, 9, None));
    let given: HashSet<u64> = items(&before_kill).into_iter().collect();
    assert!(after.iter().all(|item| !given.contains(item)));

    // The replays are counted.
    let metrics = request(&admin, "GET", "/metrics", &[]).body;
    assert!(
        metrics
            .lines()
            .any(|l| l == "feed_replayed_answers_total 1"),
        "{metrics}"
    );
}
