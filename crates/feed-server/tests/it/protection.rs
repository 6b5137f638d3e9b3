//! Overload and hostile clients against the real binary: slow headers, the
//! rate limit, the size limits. (Load shedding is tested deterministically
//! through the app in `feed-http`, where requests can be held in flight.)

use std::io::{Read, Write};
use std::time::Duration;

use super::server::{Connection, Server, get};

/// Hundreds of connections that trickle their headers (slowloris) do not
/// stop a normal client from being served, and are cut off with 408 once
/// the request timeout passes. The proof is an order of events, not a
/// stopwatch: every normal request is answered while the slow connections
/// are all still open, so none of them waited for the slow ones to go.
#[test]
fn slow_clients_are_cut_off_and_do_not_block_others() {
    let (server, _) = Server::start_ready(&[
        ("FEED__SERVER__WORKERS", "2"),
        // Long enough that opening 300 connections and serving 20 requests
        // ends well before it, even on a loaded machine.
        ("FEED__LIMITS__CLIENT_REQUEST_TIMEOUT_MS", "8000"),
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

    for i in 0..20 {
        assert_eq!(get(&server.addr, &format!("/feed/{i}")).status, 200);
    }
    // Keep trickling a header line; the deadline still holds.
    for conn in &mut slow {
        let _ = conn.stream().write_all(b"X-Slow: 1\r\n");
    }
    let still_open = slow
        .iter_mut()
        .filter_map(|conn| {
            let stream = conn.stream();
            stream.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            let open = matches!(stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            stream.set_nonblocking(false).unwrap();
            open.then_some(())
        })
        .count();
    assert_eq!(
        still_open,
        slow.len(),
        "slow connections were cut before the normal requests were served"
    );

    let mut timed_out = 0;
    for conn in &mut slow {
        conn.stream()
            .set_read_timeout(Some(Duration::from_secs(30)))
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

/// The documented size limits, through the real HTTP parser: the gate's
/// 414 and 431 at the configured byte counts, and actix-http's own 431 for
/// heads of 128 KiB or more than 96 headers (no JSON body there: the parser
/// answers before any of our code runs), the server unharmed.
#[test]
fn size_limits_hold_at_the_documented_numbers() {
    let (server, _) = Server::start_ready(&[]);
    let send = |head: &str| -> u16 {
        let mut conn = Connection::open(&server.addr).unwrap();
        conn.stream().write_all(head.as_bytes()).unwrap();
        conn.read_answer().unwrap().status
    };
    // max_url_bytes = 4096: path and query.
    let url = |len: usize| format!("/feed/1?p={}", "x".repeat(len - "/feed/1?p=".len()));
    assert_eq!(
        send(&format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", url(4096))),
        200
    );
    assert_eq!(
        send(&format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", url(4097))),
        414
    );
    // max_header_bytes = 16384: names and values ("host" + "t" = 5 bytes).
    let header = |len: usize| format!("x-pad: {}\r\n", "y".repeat(len - 5 - "x-pad".len()));
    assert_eq!(
        send(&format!(
            "GET /feed/1 HTTP/1.1\r\nHost: t\r\n{}\r\n",
            header(16384)
        )),
        200
    );
    assert_eq!(
        send(&format!(
            "GET /feed/1 HTTP/1.1\r\nHost: t\r\n{}\r\n",
            header(16385)
        )),
        431
    );
    // The parser's own limits.
    let huge = format!(
        "GET /feed/1 HTTP/1.1\r\nHost: t\r\nx-pad: {}\r\n\r\n",
        "y".repeat(131_072)
    );
    assert_eq!(send(&huge), 431);
    let many: String = (0..97).map(|i| format!("x-h{i}: 1\r\n")).collect();
    assert_eq!(
        send(&format!("GET /feed/1 HTTP/1.1\r\nHost: t\r\n{many}\r\n")),
        431
    );
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
    // The burst is spent; unless a request took a whole second (then one
    // token came back), the next one is refused. Not a race: keep asking.
    let refused = refused_within_50(|_| conn.get("/feed/1").unwrap(), "never refused");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.json()["error"].is_string());
    assert_eq!(conn.get("/livez").unwrap().status, 200);
}

/// The first answer of `ask(0)`, `ask(1)`, ... that is not a 200, which
/// must be a 429 within 50 asks (`never` says what it means if not).
fn refused_within_50(
    ask: impl FnMut(usize) -> super::server::Answer,
    never: &str,
) -> super::server::Answer {
    let refused = (0..50)
        .map(ask)
        .find(|answer| answer.status != 200)
        .unwrap_or_else(|| panic!("{never}"));
    assert_eq!(refused.status, 429);
    refused
}

/// `GET /feed/1` from this (loopback) peer, forwarded for `client`.
fn forwarded(conn: &mut Connection, client: &str) -> super::server::Answer {
    write!(
        conn.stream(),
        "GET /feed/1 HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {client}\r\n\r\n"
    )
    .unwrap();
    conn.read_answer().unwrap()
}

/// Behind a trusted proxy (here: this test, on 127.0.0.1) the rate limit
/// keys on the forwarded client, and the logs name it: two clients through
/// the one peer have a bucket each.
#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let (mut server, _) = Server::start_ready(&[
        ("FEED__LIMITS__RATE_LIMIT_PER_S", "1"),
        ("FEED__LIMITS__RATE_LIMIT_BURST", "2"),
        ("FEED__LIMITS__TRUSTED_PROXIES", "127.0.0.1/32, ::1"),
    ]);
    let mut conn = Connection::open(&server.addr).unwrap();
    // The client's own claim (left) is not believed; the proxy's entry is.
    refused_within_50(
        |_| forwarded(&mut conn, "6.6.6.6, 198.51.100.1"),
        "client 1 was never refused",
    );
    // Another client through the same peer: a fresh bucket.
    assert_eq!(forwarded(&mut conn, "198.51.100.2").status, 200);
    let line = server.wait_for_log_where("error response", |r| r["status"] == 429);
    assert_eq!(line["client"], "198.51.100.1", "{line}");
}

/// A peer outside the trusted ranges is keyed on itself: a fresh
/// `X-Forwarded-For` on every request does not buy a fresh bucket.
#[test]
fn an_untrusted_peer_cannot_spoof_its_client_address() {
    let (mut server, _) = Server::start_ready(&[
        ("FEED__LIMITS__RATE_LIMIT_PER_S", "1"),
        ("FEED__LIMITS__RATE_LIMIT_BURST", "2"),
        ("FEED__LIMITS__TRUSTED_PROXIES", "10.0.0.0/8"),
    ]);
    let mut conn = Connection::open(&server.addr).unwrap();
    refused_within_50(
        |i| forwarded(&mut conn, &format!("198.51.100.{i}")),
        "never refused: the header was believed",
    );
    let line = server.wait_for_log_where("error response", |r| r["status"] == 429);
    assert_eq!(line["client"], "127.0.0.1", "{line}");
}

/// `GET /feed/1` on `conn`, after `prefix` (a PROXY header, for the first
/// request of a connection) in the same write.
fn after(conn: &mut Connection, prefix: &[u8]) -> std::io::Result<super::server::Answer> {
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(b"GET /feed/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.stream().write_all(&bytes)?;
    conn.read_answer()
}

/// A v2 PROXY header (`PROXY`, TCP over IPv4) naming `client`.
fn v2_header(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&client);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&8080u16.to_be_bytes());
    header
}

/// Behind a balancer in TCP mode (`limits.proxy_protocol`), each
/// connection's PROXY header names its client: v1 and v2 both, the
/// request sent in the same write as the header, each client with its own
/// rate-limit bucket and named in the log. A header that names no client,
/// or a connection that opens with plain HTTP (a readiness probe), is
/// served as the balancer, whatever `X-Forwarded-For` says.
#[test]
fn behind_a_tcp_balancer_the_proxy_header_names_the_client() {
    let (mut server, _) = Server::start_ready(&[
        ("FEED__LIMITS__RATE_LIMIT_PER_S", "1"),
        ("FEED__LIMITS__RATE_LIMIT_BURST", "2"),
        ("FEED__LIMITS__TRUSTED_PROXIES", "127.0.0.1"),
        ("FEED__LIMITS__PROXY_PROTOCOL", "true"),
    ]);
    let mut first = Connection::open(&server.addr).unwrap();
    let v1 = b"PROXY TCP4 198.51.100.1 127.0.0.1 50000 8080\r\n";
    assert_eq!(after(&mut first, v1).unwrap().status, 200);
    refused_within_50(
        |_| after(&mut first, b"").unwrap(),
        "client 1 was never refused",
    );
    let line = server.wait_for_log_where("error response", |r| r["status"] == 429);
    assert_eq!(line["client"], "198.51.100.1", "{line}");

    // Another client through the same balancer: a bucket of its own.
    let mut second = Connection::open(&server.addr).unwrap();
    let answer = after(&mut second, &v2_header([198, 51, 100, 2], 50001)).unwrap();
    assert_eq!(answer.status, 200);
    refused_within_50(
        |_| after(&mut second, b"").unwrap(),
        "client 2 was never refused",
    );
    let line = server.wait_for_log_where("error response", |r| {
        r["status"] == 429 && r["client"] != "198.51.100.1"
    });
    assert_eq!(line["client"], "198.51.100.2", "{line}");

    // A header that names no client (a balancer's health check): the
    // balancer is the client, and an X-Forwarded-For the client could
    // have written through a TCP balancer is not believed.
    let mut unknown = Connection::open(&server.addr).unwrap();
    refused_within_50(
        |i| {
            let head = if i == 0 {
                &b"PROXY UNKNOWN\r\n"[..]
            } else {
                b""
            };
            let mut bytes = head.to_vec();
            bytes.extend_from_slice(
                format!(
                    "GET /feed/1 HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.{i}\r\n\r\n"
                )
                .as_bytes(),
            );
            unknown.stream().write_all(&bytes).unwrap();
            unknown.read_answer().unwrap()
        },
        "X-Forwarded-For bought a fresh bucket for every request",
    );
    let line = server.wait_for_log_where("error response", |r| {
        r["status"] == 429 && r["client"] == "127.0.0.1"
    });
    assert_eq!(line["client"], "127.0.0.1", "{line}");

    // Plain HTTP from the balancer's address (a readiness probe): served,
    // as that peer, whose bucket the requests above have spent (one token
    // a second comes back, so a few may pass first on a slow machine).
    let mut plain = Connection::open(&server.addr).unwrap();
    assert_eq!(plain.get("/readyz").unwrap().status, 200);
    refused_within_50(
        |_| after(&mut plain, b"").unwrap(),
        "the plain peer was never refused",
    );
}

/// With `limits.proxy_protocol`, only a trusted peer may name a client: a
/// header from anyone else is not taken off, so it is not HTTP either,
/// and is answered 400 without a feed; a malformed header from a trusted
/// peer closes its connection, and the log says why.
#[test]
fn an_untrusted_peer_cannot_send_a_proxy_header() {
    let (server, _) = Server::start_ready(&[
        ("FEED__LIMITS__TRUSTED_PROXIES", "10.0.0.0/8"),
        ("FEED__LIMITS__PROXY_PROTOCOL", "true"),
    ]);
    let mut conn = Connection::open(&server.addr).unwrap();
    let v1 = b"PROXY TCP4 198.51.100.1 127.0.0.1 50000 8080\r\n";
    assert_eq!(after(&mut conn, v1).unwrap().status, 400);
    drop(server);

    let (server, _) = Server::start_ready(&[
        ("FEED__LIMITS__TRUSTED_PROXIES", "127.0.0.1"),
        ("FEED__LIMITS__PROXY_PROTOCOL", "true"),
    ]);
    let mut conn = Connection::open(&server.addr).unwrap();
    assert!(
        after(&mut conn, b"PROXY TCP4 nowhere\r\n").is_err(),
        "a malformed header was answered"
    );
    let mut server = server;
    let line = server.wait_for_log("connection refused");
    assert!(
        line["cause"]
            .as_str()
            .unwrap()
            .contains("malformed PROXY header"),
        "{line}"
    );
}
