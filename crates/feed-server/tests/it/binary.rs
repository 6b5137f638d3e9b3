//! The real `feed-server` binary, started on a free port with a small data
//! set: the README's `curl` promise, and its exit codes.

use super::server::{Server, get, refused_start};

fn items(body: &str) -> Vec<u32> {
    serde_json::from_str(body).unwrap()
}

#[test]
fn serves_a_users_feed_ten_at_a_time() {
    let (server, ready) = Server::start_ready(&[]);
    assert_eq!(ready["users"], 1000);
    assert_eq!(ready["items"], 200_000);
    assert_eq!(ready["feed_bytes"], 800_000);
    assert!(ready["load_ms"].is_u64());
    assert_eq!(ready["listen"], server.addr.as_str());

    let first = get(&server.addr, "/feed/1");
    let second = get(&server.addr, "/feed/1");
    assert_eq!(
        (first.status, first.header("content-type")),
        (200, Some("application/json"))
    );
    let (first, second) = (items(&first.body), items(&second.body));
    assert_eq!((first.len(), second.len()), (10, 10));
    assert!(first.iter().all(|i| !second.contains(i)));

    // The same seed makes the same data: a second server hands user 1 the same first page.
    let (again, _) = Server::start_ready(&[]);
    assert_eq!(items(&get(&again.addr, "/feed/1").body), first);

    let bad = get(&server.addr, "/feed/1?size=-1");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("size"));
}

#[test]
fn a_bad_configuration_exits_2_with_one_line_naming_the_key() {
    for (key, value, named) in [
        ("FEED__API__MAX_SIZE", "0", "api.max_size"),
        ("FEED__SERVER__PORT", "abc", "server.port"),
        ("FEED__LIMITS__KEEP_ALIVE_MS", "0", "limits.keep_alive_ms"),
        ("FEED__LOG__LEVEL", "loud", "log.level"),
    ] {
        let stderr = refused_start(&[(key, value)]);
        assert!(stderr.contains(named), "{stderr}");
    }
}
