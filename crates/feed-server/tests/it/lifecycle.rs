//! Start-up and shutdown of the real binary: the readiness cycle and a
//! SIGTERM under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::server::{Connection, Server, get};

#[test]
fn the_listener_answers_while_feeds_load_then_turns_ready() {
    // Enough users that generation takes a noticeable moment.
    let mut server = Server::start(&[("FEED__DATA__USERS", "300000")]);
    let live = get(&server.addr, "/livez");
    assert_eq!(live.status, 200);
    let ready = get(&server.addr, "/readyz");
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (503, Some("loading"))
    );
    let feed = get(&server.addr, "/feed/1");
    assert_eq!(feed.status, 503);
    assert_eq!(feed.header("retry-after"), Some("1"));
    assert!(feed.json()["error"].as_str().unwrap().contains("loading"));

    server.wait_for_log("feed-server ready");
    assert_eq!(get(&server.addr, "/readyz").status, 200);
    assert_eq!(get(&server.addr, "/feed/1").status, 200);
}

/// Clients hammer the server over keep-alive connections and, as a load
/// balancer would, stop sending once an answer says `Connection: close`. SIGTERM: readiness turns 503 at once, requests keep being served
/// through the delay, not one accepted request fails, and the process exits
/// 0 with a summary line.
#[test]
fn sigterm_under_load_drains_without_failing_a_request() {
    let (mut server, _) = Server::start_ready(&[
        ("FEED__SERVER__WORKERS", "2"),
        ("FEED__SERVER__SHUTDOWN_DELAY_MS", "1500"),
        ("FEED__SERVER__SHUTDOWN_TIMEOUT_MS", "5000"),
    ]);
    let addr = server.addr.clone();
    let stop_clients = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (addr, stop, served) =
                (addr.clone(), Arc::clone(&stop_clients), Arc::clone(&served));
            std::thread::spawn(move || -> Result<(), String> {
                let mut conn = Connection::open(&addr).map_err(|e| e.to_string())?;
                while !stop.load(Ordering::Relaxed) {
                    let answer = conn
                        .get(&format!("/feed/{c}"))
                        .map_err(|e| format!("request failed: {e}"))?;
                    if answer.status != 200 {
                        return Err(format!("status {}", answer.status));
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                    if answer.header("connection") == Some("close") {
                        // Draining: like a load balancer, stop sending here.
                        return Ok(());
                    }
                }
                Err("the server never asked the client to close".into())
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(300));
    let before = served.load(Ordering::Relaxed);
    assert!(before > 0, "no request served before the signal");
    let signalled = Instant::now();
    server.signal("TERM");
    server.wait_for_log("stop signal: draining");
    let ready = get(&server.addr, "/readyz");
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (503, Some("draining"))
    );
    // Still serving during the delay.
    std::thread::sleep(Duration::from_millis(500));
    let during = get(&server.addr, "/feed/9");
    assert_eq!(during.status, 200);
    assert_eq!(during.header("connection"), Some("close"));
    assert!(served.load(Ordering::Relaxed) > before);

    server.wait_for_log("no longer accepting; finishing in-flight requests");
    assert!(signalled.elapsed() >= Duration::from_millis(1400));
    stop_clients.store(true, Ordering::Relaxed);
    for client in clients {
        client
            .join()
            .unwrap()
            .expect("a client saw a failed request");
    }
    let summary = server.wait_for_log("feed-server stopped");
    assert!(summary["requests"].as_u64().unwrap() >= served.load(Ordering::Relaxed));
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}
