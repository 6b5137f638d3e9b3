//! Start-up and shutdown: the readiness cycle, a failed load, SIGTERM under
//! load, and a second stop request in every phase of the drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use feed_server::{LoadError, Stopped};

use super::inprocess::{InProcess, gated, memory_offsets};
use super::server::{Connection, Server, get, wait_until};

#[test]
fn the_listener_answers_while_feeds_load_then_turns_ready() {
    let (release, held) = std::sync::mpsc::channel();
    let server = InProcess::start(&[("FEED__SERVER__SHUTDOWN_DELAY_MS", "0")], |spec| {
        gated(spec, held)
    });
    server.wait_for_log("listening, loading feeds");
    // The loader is held: the server is loading for as long as the test wants.
    assert_eq!(get(&server.addr, "/livez").status, 200);
    let ready = get(&server.addr, "/readyz");
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (503, Some("loading"))
    );
    let feed = get(&server.addr, "/feed/1");
    assert_eq!(feed.status, 503);
    assert_eq!(feed.header("retry-after"), Some("1"));
    assert!(feed.json()["error"].as_str().unwrap().contains("loading"));

    release.send(()).unwrap();
    server.wait_for_log("feed-server ready");
    assert_eq!(get(&server.addr, "/readyz").status, 200);
    assert_eq!(get(&server.addr, "/feed/1").status, 200);
    server.stop();
    let stopped = server.join(Duration::from_secs(30)).unwrap();
    assert_eq!(stopped, Stopped::Drained);
}

/// A loader that panics must not leave a live process that never serves:
/// `run` logs the cause, stops the servers and returns the error (the
/// binary then exits 1).
#[test]
fn a_panic_while_loading_stops_the_server_with_the_cause() {
    let server = InProcess::start(&[], |_| Box::new(|_, _| panic!("the disk caught fire")));
    server.wait_for_log("loading the feeds failed");
    let addr = server.addr.clone();
    let error = server.join(Duration::from_secs(30)).unwrap_err();
    assert!(
        error.to_string().contains("the disk caught fire"),
        "{error}"
    );
    assert!(Connection::open(&addr).is_err(), "still listening");
}

#[test]
fn a_failed_load_stops_the_server_with_the_cause() {
    let server = InProcess::start(&[], |_| {
        Box::new(|_, _| Err(LoadError::Failed("no such snapshot".into())))
    });
    let error = server.join(Duration::from_secs(30)).unwrap_err();
    assert!(error.to_string().contains("no such snapshot"), "{error}");
}

/// A second stop request stops the server at once whatever phase the first
/// one left it in: loading, the delay before it stops accepting, and the
/// wait for connections to finish. Each phase is held for a minute unless
/// the second request ends it.
#[test]
fn a_second_stop_request_stops_at_once_in_every_phase() {
    let at_once = Duration::from_secs(15);
    let minute = [
        ("FEED__SERVER__SHUTDOWN_DELAY_MS", "60000"),
        ("FEED__SERVER__SHUTDOWN_TIMEOUT_MS", "60000"),
        ("FEED__LIMITS__CLIENT_REQUEST_TIMEOUT_MS", "60000"),
    ];

    // Loading (the loader is never released).
    let (_release, held) = std::sync::mpsc::channel();
    let loading = InProcess::start(&minute, |spec| gated(spec, held));
    loading.wait_for_log("listening, loading feeds");
    loading.stop();
    loading.wait_for_log("stop signal: draining");
    loading.stop();
    assert_eq!(loading.join(at_once).unwrap(), Stopped::Forced);

    // The delay, still serving.
    let delaying = InProcess::start(&minute, |spec| {
        feed_server::synthetic_loader(spec, memory_offsets(&spec))
    });
    delaying.wait_for_log("feed-server ready");
    delaying.stop();
    delaying.wait_for_log("stop signal: draining");
    assert_eq!(get(&delaying.addr, "/feed/1").status, 200);
    delaying.stop();
    assert_eq!(delaying.join(at_once).unwrap(), Stopped::Forced);

    // Waiting for a request in flight: a reload whose body is half-sent.
    // `Expect: 100-continue` makes the server say when it has the head and
    // the handler is waiting for the body, so the stop comes after that
    // (a half-sent head would not be a request yet: a draining server
    // closes such a connection at once).
    let no_delay = [
        ("FEED__SERVER__SHUTDOWN_DELAY_MS", "0"),
        ("FEED__SERVER__SHUTDOWN_TIMEOUT_MS", "60000"),
        ("FEED__LIMITS__CLIENT_REQUEST_TIMEOUT_MS", "60000"),
    ];
    let finishing = InProcess::start(&no_delay, |spec| {
        feed_server::synthetic_loader(spec, memory_offsets(&spec))
    });
    finishing.wait_for_log("feed-server ready");
    let mut slow = std::net::TcpStream::connect(&finishing.admin).unwrap();
    std::io::Write::write_all(
        &mut slow,
        b"POST /admin/reload HTTP/1.1\r\nHost: slow\r\nContent-Length: 20\r\n\
          Expect: 100-continue\r\n\r\n{",
    )
    .unwrap();
    let mut continued = [0u8; 25];
    std::io::Read::read_exact(&mut slow, &mut continued).unwrap();
    assert!(
        continued.starts_with(b"HTTP/1.1 100 Continue"),
        "{continued:?}"
    );
    finishing.stop();
    finishing.wait_for_log("no longer accepting; finishing in-flight requests");
    finishing.stop();
    assert_eq!(finishing.join(at_once).unwrap(), Stopped::Forced);
}

/// The real binary: a second SIGTERM during the delay exits at once with
/// code 130.
#[test]
fn a_second_sigterm_exits_the_binary_at_once() {
    let (mut server, _) = Server::start_ready(&[("FEED__SERVER__SHUTDOWN_DELAY_MS", "60000")]);
    server.signal("TERM");
    server.wait_for_log("stop signal: draining");
    server.signal("TERM");
    server.wait_for_log("second stop signal: stopping now");
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(130));
}

/// Clients hammer the server over keep-alive connections and, as a load
/// balancer would, stop sending once an answer says `Connection: close`.
/// SIGTERM: readiness turns 503 at once, requests keep being served through
/// the delay, not one accepted request fails, and the process exits 0 with
/// a summary line.
#[test]
fn sigterm_under_load_drains_without_failing_a_request() {
    let (mut server, _) = Server::start_ready(&[
        ("FEED__SERVER__WORKERS", "2"),
        ("FEED__SERVER__SHUTDOWN_DELAY_MS", "3000"),
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

    wait_until("requests served before the signal", || {
        served.load(Ordering::Relaxed) >= 100
    });
    let before = served.load(Ordering::Relaxed);
    let signalled = Instant::now();
    server.signal("TERM");
    server.wait_for_log("stop signal: draining");
    let ready = get(&server.addr, "/readyz");
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (503, Some("draining"))
    );
    // Still serving during the delay, asking clients to close.
    let during = get(&server.addr, "/feed/9");
    assert_eq!(during.status, 200);
    assert_eq!(during.header("connection"), Some("close"));
    wait_until("requests served after the signal", || {
        served.load(Ordering::Relaxed) > before
    });

    server.wait_for_log("no longer accepting; finishing in-flight requests");
    // A lower bound: the server cannot stop accepting before the delay.
    assert!(signalled.elapsed() >= Duration::from_millis(2900));
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
