//! Asking a running server, over its admin listener, which data it serves
//! (`GET /stats`, its `data` field), for a command that must act on the
//! same version (`feed-server export-delivered`). A plain HTTP/1.1 request
//! on a socket, bounded by a time limit: the command runs beside the
//! server and needs no HTTP client of its own.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::settings::AdminSettings;

/// What the server at the admin address said it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Nothing listens there: no server runs with this configuration.
    NoServer,
    /// A server answers but has no data in place yet (loading).
    Loading,
    /// The data without an identity beyond the process (the synthetic set).
    Unversioned,
    /// A version: its id (16 hex digits, as `/stats` shows it) and where
    /// the server read it.
    Version {
        /// The id.
        id: u64,
        /// The path (or the storage's name for it), as the server gave it.
        source: String,
    },
}

/// Why the server's answer could not be had or read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The listener could not be reached, or did not answer in time.
    #[error("admin listener {addr}: {cause}")]
    Io {
        /// Where it was asked.
        addr: String,
        /// What the system said.
        cause: std::io::Error,
    },
    /// It answered, but not with the stats (a refused token: 401).
    #[error("admin listener {addr}: GET /stats answered {status}{hint}")]
    Status {
        /// Where it was asked.
        addr: String,
        /// The status.
        status: u16,
        /// What to do about it.
        hint: &'static str,
    },
    /// The answer is not the stats this build serves.
    #[error("admin listener {addr}: GET /stats: {reason}")]
    Malformed {
        /// Where it was asked.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl AdminSettings {
    /// The address a command on this machine asks the admin listener at:
    /// `admin.host` (a wildcard address is asked on loopback) and
    /// `admin.port`; `None` when the port is 0 (any free port: unknown).
    pub fn local_address(&self) -> Option<String> {
        if self.port == 0 {
            return None;
        }
        let host = match self.host.trim() {
            "0.0.0.0" | "" => "127.0.0.1",
            "::" | "[::]" => "[::1]",
            host if host.contains(':') && !host.starts_with('[') => {
                return Some(format!("[{host}]:{}", self.port));
            }
            host => host,
        };
        Some(format!("{host}:{}", self.port))
    }
}

/// Asks the server at `addr` which data it serves, with the bearer
/// `token` if any, each step bounded by `timeout`.
///
/// # Errors
/// [`ProbeError`]: a listener that answers wrongly or late. A refused
/// connection is not an error: [`Served::NoServer`].
pub fn served(addr: &str, token: Option<&str>, timeout: Duration) -> Result<Served, ProbeError> {
    let io = |cause| ProbeError::Io {
        addr: addr.to_owned(),
        cause,
    };
    let malformed = |reason: String| ProbeError::Malformed {
        addr: addr.to_owned(),
        reason,
    };
    let target = addr
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))?;
    let mut stream = match TcpStream::connect_timeout(&target, timeout) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Ok(Served::NoServer);
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{authorization}\r\n"
    )
    .map_err(io)?;
    // The stats are a few kilobytes; more is not the stats.
    let mut answer = Vec::new();
    stream.take(1 << 20).read_to_end(&mut answer).map_err(io)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| malformed("no HTTP answer".into()))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("no HTTP status".into()))?;
    if status != 200 {
        let hint = if status == 401 {
            ": set admin.token or admin.token_file as the server has it"
        } else {
            ""
        };
        return Err(ProbeError::Status {
            addr: addr.to_owned(),
            status,
            hint,
        });
    }
    parse_stats(body).map_err(malformed)
}

/// What the `data` field of a `/stats` body says is served.
fn parse_stats(body: &str) -> Result<Served, String> {
    let stats: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(data) = stats.get("data") else {
        return Err("no `data` field".into());
    };
    if data.is_null() {
        return Ok(Served::Loading);
    }
    let version = &data["snapshot"];
    if version.is_null() {
        return Ok(Served::Unversioned);
    }
    let id = version["id"]
        .as_str()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("data.snapshot.id is not 16 hex digits: {}", version["id"]))?;
    let source = version["path"].as_str().unwrap_or_default().to_owned();
    Ok(Served::Version { id, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_say_what_is_served() {
        for (body, expected) in [
            (r#"{"data": null}"#, Ok(Served::Loading)),
            (
                r#"{"data": {"users": 3, "snapshot": null}}"#,
                Ok(Served::Unversioned),
            ),
            (
                r#"{"data": {"snapshot": {"id": "00000000000000ff", "path": "a.snap"}}}"#,
                Ok(Served::Version {
                    id: 255,
                    source: "a.snap".into(),
                }),
            ),
        ] {
            assert_eq!(parse_stats(body), expected);
        }
        for bad in ["[", "{}", r#"{"data": {"snapshot": {"id": "xyz"}}}"#] {
            assert!(parse_stats(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nothing_listening_is_no_server() {
        // A port just freed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        assert_eq!(
            served(&addr, None, Duration::from_secs(5)).unwrap(),
            Served::NoServer
        );
    }
}
