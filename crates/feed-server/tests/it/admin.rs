//! The admin listener of the real binary: metrics, stats, events, the
//! profiler; the admin token; and what the public port does not expose.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::server::{Connection, Server, admin_addr, get, refused_start, request, scratch_dir};

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

/// What a request with the token gets from the profiler: 400 for
/// `seconds=0` when it is built in, else 404.
const PROFILER_SECONDS_0: u16 = if cfg!(feature = "profiler") { 400 } else { 404 };

/// With an admin token (here from a file, trimmed) every admin endpoint but
/// `/metrics` and the static dashboard page answers 401 without the token
/// or with another one, and serves requests that carry it.
#[test]
fn an_admin_token_guards_every_admin_endpoint_but_metrics() {
    let token = "s3cret-token-0123456789";
    let file = scratch_dir("admin-token").join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let (server, ready) =
        Server::start_ready(&[("FEED__ADMIN__TOKEN_FILE", file.to_str().unwrap())]);
    assert_eq!(
        server.logged("listening, loading feeds").unwrap()["admin_token"],
        true
    );
    let admin = admin_addr(&ready);
    let right = format!("Bearer {token}");
    let wrong = "Bearer s3cret-token-0123456788";
    for (method, path, with_token) in [
        ("GET", "/stats", 200),
        ("GET", "/openapi.json", 200),
        // No snapshot path to reload from, nothing to roll back to.
        ("POST", "/admin/reload", 422),
        ("POST", "/admin/rollback", 409),
        ("GET", "/debug/pprof/profile?seconds=0", PROFILER_SECONDS_0),
        ("GET", "/no-such-path", 404),
    ] {
        for authorization in [None, Some(wrong), Some(token)] {
            let headers: Vec<_> = authorization
                .map(|a| ("Authorization", a))
                .into_iter()
                .collect();
            let refused = request(&admin, method, path, &headers);
            assert_eq!(
                refused.status, 401,
                "{method} {path} with {authorization:?}"
            );
            assert_eq!(
                refused.header("www-authenticate"),
                Some(r#"Bearer realm="feed-server admin""#)
            );
            assert!(refused.json()["error"].is_string(), "{}", refused.body);
        }
        let served = request(&admin, method, path, &[("Authorization", &right)]);
        assert_eq!(
            served.status, with_token,
            "{method} {path}: {}",
            served.body
        );
    }
    let metrics = get(&admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("feed_build_info"), "{}", metrics.body);
    assert_eq!(get(&admin, "/dashboard").status, 200);
}

#[test]
fn metrics_can_require_the_token_too() {
    let token = "0000111122223333";
    let (_server, ready) = Server::start_ready(&[
        ("FEED__ADMIN__TOKEN", token),
        ("FEED__ADMIN__METRICS_TOKEN_REQUIRED", "true"),
    ]);
    let admin = admin_addr(&ready);
    assert_eq!(get(&admin, "/metrics").status, 401);
    // A token of digits is taken as written, not as the number 111122223333.
    let bearer = format!("Bearer {token}");
    let metrics = request(&admin, "GET", "/metrics", &[("Authorization", &bearer)]);
    assert_eq!(metrics.status, 200);
}

/// An admin listener that more than this machine can reach starts only
/// with a token, or when told to be open.
#[test]
fn an_admin_listener_beyond_loopback_needs_a_token_or_allow_open() {
    let line = refused_start(&[("FEED__ADMIN__HOST", "0.0.0.0")]);
    assert!(
        line.contains("admin.token") && line.contains("allow_open"),
        "{line}"
    );

    let (server, ready) = Server::start_ready(&[
        ("FEED__ADMIN__HOST", "0.0.0.0"),
        ("FEED__ADMIN__ALLOW_OPEN", "true"),
    ]);
    assert!(
        server
            .logged("the admin listener is open to anyone who reaches it (admin.allow_open)")
            .is_some()
    );
    let port = admin_addr(&ready).rsplit(':').next().unwrap().to_owned();
    assert_eq!(get(&format!("127.0.0.1:{port}"), "/stats").status, 200);
    drop(server);

    let token = "a-token-for-0.0.0.0-listeners";
    let (_server, ready) = Server::start_ready(&[
        ("FEED__ADMIN__HOST", "0.0.0.0"),
        ("FEED__ADMIN__TOKEN", token),
    ]);
    let admin = format!(
        "127.0.0.1:{}",
        admin_addr(&ready).rsplit(':').next().unwrap()
    );
    assert_eq!(get(&admin, "/stats").status, 401);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        request(&admin, "GET", "/stats", &[("Authorization", &bearer)]).status,
        200
    );
}

/// Bad admin credentials and proxy ranges stop the start: exit 2, one line
/// naming the key.
#[test]
fn bad_credentials_and_proxy_ranges_refuse_to_start() {
    let missing = scratch_dir("admin-token").join("absent");
    for (env, key) in [
        (
            vec![("FEED__LIMITS__TRUSTED_PROXIES", "10.0.0.0/33")],
            "limits.trusted_proxies",
        ),
        (
            vec![("FEED__LIMITS__TRUSTED_PROXIES", "127.0.0.1/32, proxy.local")],
            "limits.trusted_proxies",
        ),
        (vec![("FEED__ADMIN__TOKEN", "short")], "admin.token"),
        (
            vec![
                ("FEED__ADMIN__TOKEN", "0123456789abcdef"),
                ("FEED__ADMIN__TOKEN_FILE", "/etc/hostname"),
            ],
            "admin.token_file",
        ),
        (
            vec![("FEED__ADMIN__TOKEN_FILE", missing.to_str().unwrap())],
            "admin.token_file",
        ),
    ] {
        let line = refused_start(&env);
        assert!(line.contains(key), "{env:?}: {line}");
        assert!(
            !line.contains("0123456789abcdef"),
            "the token leaked: {line}"
        );
    }
}
