//! The admin listener of the real binary: metrics, stats, events, the
//! profiler; and what the public port does not expose.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::server::{Connection, Server, admin_addr, get};

#[test]
fn metrics_count_what_was_served() {
    let (server, ready) = Server::start_ready(&[]);
    let admin = admin_addr(&ready);
    let mut conn = Connection::open(&server.addr).unwrap();
    for _ in 0..5 {
        assert_eq!(conn.get("/feed/3?size=50").unwrap().status, 200);
    }
    assert_eq!(conn.get("/feed/99999?size=4").unwrap().status, 200); // unknown user: random
    assert_eq!(conn.get("/feed/x").unwrap().status, 400);

    // The public port has no admin endpoints.
    for path in ["/metrics", "/stats", "/dashboard", "/debug/pprof/profile"] {
        assert_eq!(get(&server.addr, path).status, 404, "{path}");
    }

    let metrics = get(&admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.body;
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(r#"feed_http_requests_total{route="feed",status="200"}"#),
        6.0
    );
    assert_eq!(
        value(r#"feed_http_requests_total{route="feed",status="400"}"#),
        1.0
    );
    assert_eq!(
        value(r#"feed_items_served_total{source="personal"}"#),
        200.0
    );
    assert_eq!(value(r#"feed_items_served_total{source="random"}"#), 54.0);
    assert_eq!(value("feed_random_fills_total"), 2.0);
    assert_eq!(value("feed_exhausted_users_total"), 1.0);
    assert_eq!(value(r#"feed_feed_errors_total{kind="unknown_user"}"#), 1.0);
    assert_eq!(value("feed_data_users"), 1000.0);
    assert_eq!(value("feed_data_bytes"), 800_000.0);
    assert!(value("feed_http_request_duration_seconds_count") >= 7.0);
    assert!(text.contains(r#"feed_http_request_duration_seconds_bucket{le="0.000001"}"#));
    assert!(text.contains("feed_shed_requests_total 0"));
    assert!(text.contains("feed_build_info{version="));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn stats_and_events_show_the_last_second() {
    let (server, ready) = Server::start_ready(&[]);
    let admin = admin_addr(&ready);
    let until = Instant::now() + Duration::from_millis(2500);
    let mut conn = Connection::open(&server.addr).unwrap();
    while Instant::now() < until {
        assert_eq!(conn.get("/feed/1").unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = get(&admin, "/stats").json();
    assert!(stats["rps"].as_f64().unwrap() > 0.0, "{stats}");
    assert_eq!(stats["ready"], true);
    assert!(stats["memory_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(stats["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    // Two events arrive within three seconds.
    let mut stream = TcpStream::connect(&admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    write!(stream, "GET /events HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut events = Vec::new();
    let mut line = String::new();
    let started = Instant::now();
    while events.len() < 2 && started.elapsed() < Duration::from_secs(3) {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(json) = line.trim_end().strip_prefix("data: ") {
            events.push(serde_json::from_str::<serde_json::Value>(json).unwrap());
        }
    }
    assert_eq!(events.len(), 2, "events within 3 s");
    assert!(events[1]["ts_ms"].as_u64() > events[0]["ts_ms"].as_u64());
}

#[test]
fn responses_carry_a_request_id() {
    let (server, ready) = Server::start_ready(&[]);
    let generated = get(&server.addr, "/feed/1");
    assert_eq!(generated.header("x-request-id").map(str::len), Some(16));
    let mut conn = Connection::open(&server.addr).unwrap();
    write!(
        conn.stream(),
        "GET /feed/1 HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123\r\n\r\n"
    )
    .unwrap();
    assert_eq!(
        conn.read_answer().unwrap().header("x-request-id"),
        Some("abc-123")
    );
    let openapi = get(&admin_addr(&ready), "/openapi.json");
    assert_eq!(openapi.json()["openapi"], "3.0.3");
}

/// Without the `profiler` feature the endpoint says so, as JSON.
#[cfg(not(feature = "profiler"))]
#[test]
fn the_profiler_is_not_built_in_by_default() {
    let (_server, ready) = Server::start_ready(&[]);
    let profile = get(&admin_addr(&ready), "/debug/pprof/profile?seconds=1");
    assert_eq!(profile.status, 404);
    assert!(
        profile.json()["error"]
            .as_str()
            .unwrap()
            .contains("--features profiler")
    );
}

/// With the `profiler` feature (`cargo test -p feed-server --features
/// profiler`): a profile of a busy server, and `/metrics` answering while a
/// profile is being taken.
#[cfg(feature = "profiler")]
#[test]
fn the_profiler_answers_without_stalling_metrics() {
    let (server, ready) = Server::start_ready(&[]);
    let admin = admin_addr(&ready);
    let public = server.addr.clone();
    let load = std::thread::spawn(move || {
        let mut conn = Connection::open(&public).unwrap();
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            conn.get("/feed/7?size=200").unwrap();
        }
    });
    let profile = {
        let admin = admin.clone();
        std::thread::spawn(move || get(&admin, "/debug/pprof/profile?seconds=2"))
    };
    // Scrapes go on while the profile is taken and drawn.
    let mut answered_meanwhile = 0;
    while !profile.is_finished() {
        assert_eq!(get(&admin, "/metrics").status, 200);
        if !profile.is_finished() {
            answered_meanwhile += 1;
        }
    }
    assert!(
        answered_meanwhile > 0,
        "no scrape answered during the profile"
    );
    let profile = profile.join().unwrap();
    load.join().unwrap();
    assert_eq!(profile.status, 200);
    assert_eq!(profile.header("content-type"), Some("image/svg+xml"));
    assert!(
        profile.body.contains("<svg"),
        "{}",
        &profile.body[..profile.body.len().min(300)]
    );
    // How many samples land in two seconds depends on the machine's timer;
    // either a flamegraph or the idle notice is an SVG.
    assert!(
        profile.body.contains("<title>all (") || profile.body.contains("no CPU samples"),
        "neither a flamegraph nor the idle notice"
    );
    assert_eq!(get(&admin, "/debug/pprof/profile?seconds=0").status, 400);
    assert_eq!(get(&admin, "/debug/pprof/profile?seconds=61").status, 400);
}
