//! Overload and hostile clients against the real binary: slow headers, the
//! rate limit, load shedding.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::server::{Connection, Server, get};

/// Hundreds of connections that trickle their headers (slowloris) do not
/// stop a normal client from being served, and are cut off with 408 once
/// the request timeout passes.
#[test]
fn slow_clients_are_cut_off_and_do_not_block_others() {
    let (server, _) = Server::start_ready(&[
        ("FEED__SERVER__WORKERS", "2"),
        ("FEED__LIMITS__CLIENT_REQUEST_TIMEOUT_MS", "1000"),
    ]);
    let mut slow: Vec<Connection> = (0..300)
        .map(|_| {
            let mut conn = Connection::open(&server.addr).unwrap();
            conn.stream()
                .write_all(b"GET /feed/1 HTTP/1.1\r\nHost: slow\r\n")
                .unwrap();
            conn
        })
        .collect();

    let started = Instant::now();
    for i in 0..20 {
        let at = Instant::now();
        let answer = get(&server.addr, &format!("/feed/{i}"));
        assert_eq!(answer.status, 200);
        assert!(
            at.elapsed() < Duration::from_millis(500),
            "a normal request took {:?}",
            at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Keep trickling a header line now and then; the deadline still holds.
    for conn in &mut slow {
        let _ = conn.stream().write_all(b"X-Slow: 1\r\n");
    }
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed()));

    let mut timed_out = 0;
    for conn in &mut slow {
        conn.stream()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = Vec::new();
        // The server answers 408 and closes; reading to the end must finish.
        let _ = conn.stream().read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        if text.is_empty() || text.starts_with("HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, slow.len());
    assert_eq!(get(&server.addr, "/feed/1").status, 200);
}

#[test]
fn over_the_rate_limit_is_429() {
    let (server, _) = Server::start_ready(&[
        ("FEED__LIMITS__RATE_LIMIT_PER_S", "1"),
        ("FEED__LIMITS__RATE_LIMIT_BURST", "3"),
    ]);
    let mut conn = Connection::open(&server.addr).unwrap();
    for _ in 0..3 {
        assert_eq!(conn.get("/feed/1").unwrap().status, 200);
    }
    let refused = conn.get("/feed/1").unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.json()["error"].is_string());
    assert_eq!(conn.get("/livez").unwrap().status, 200);
}

/// With room for one request in flight and two workers busy, some requests
/// are shed: each answered at once with 503 and Retry-After, every other one
/// served in full.
#[test]
fn requests_beyond_the_in_flight_limit_are_shed_fast() {
    let (server, _) = Server::start_ready(&[
        ("FEED__SERVER__WORKERS", "2"),
        ("FEED__LIMITS__MAX_IN_FLIGHT", "1"),
    ]);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let mut conn = Connection::open(&addr).unwrap();
                let (mut ok, mut shed) = (0, 0);
                for _ in 0..400 {
                    let at = Instant::now();
                    let answer = conn.get(&format!("/feed/{c}?size=200")).unwrap();
                    match answer.status {
                        200 => ok += 1,
                        503 => {
                            assert_eq!(answer.header("retry-after"), Some("1"));
                            assert!(at.elapsed() < Duration::from_millis(500));
                            shed += 1;
                        }
                        other => panic!("status {other}"),
                    }
                }
                (ok, shed)
            })
        })
        .collect();
    let (ok, shed) = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert!(ok > 0, "nothing was served");
    assert!(shed > 0, "nothing was shed ({ok} served)");
}
