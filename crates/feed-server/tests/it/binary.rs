//! The real `feed-server` binary, started on a free port with a small data
//! set: the README's `curl` promise, and its exit codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::workspace;

/// A running server, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feed-server"));
    cmd.current_dir(workspace())
        .args(["--config", "config/default.toml"])
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Starts the server and waits for its ready line.
fn start(users: &str) -> Server {
    let mut child = command(&[
        ("FEED__SERVER__HOST", "127.0.0.1"),
        ("FEED__SERVER__PORT", "0"),
        ("FEED__SERVER__WORKERS", "1"),
        ("FEED__DATA__USERS", users),
        ("FEED__LOG__FORMAT", "json"),
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = loop {
        let line = lines
            .next()
            .expect("the server exited before it was ready")
            .unwrap();
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        if record["msg"] == "feed-server ready" {
            break record;
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    assert_eq!(ready["users"], users.parse::<u64>().unwrap());
    assert_eq!(ready["items"], users.parse::<u64>().unwrap() * 200);
    assert_eq!(ready["feed_bytes"], users.parse::<u64>().unwrap() * 800);
    assert!(ready["generation_ms"].is_u64());
    Server {
        child,
        addr: ready["listen"].as_str().unwrap().to_owned(),
    }
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn items(body: &str) -> Vec<u32> {
    serde_json::from_str(body).unwrap()
}

#[test]
fn serves_a_users_feed_ten_at_a_time() {
    let server = start("1000");
    let (status, first) = get(&server.addr, "/feed/1");
    let (_, second) = get(&server.addr, "/feed/1");
    assert_eq!(status, 200);
    let (first, second) = (items(&first), items(&second));
    assert_eq!((first.len(), second.len()), (10, 10));
    assert!(first.iter().all(|i| !second.contains(i)));

    // The same seed makes the same data: a second server hands user 1 the same first page.
    let again = start("1000");
    assert_eq!(items(&get(&again.addr, "/feed/1").1), first);

    let (status, body) = get(&server.addr, "/feed/1?size=-1");
    assert_eq!(status, 400);
    assert!(body.contains("size"));
}

#[test]
fn a_bad_configuration_exits_2_with_one_line_naming_the_key() {
    let output = command(&[("FEED__API__MAX_SIZE", "0")]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("api.max_size"), "{stderr}");
}
