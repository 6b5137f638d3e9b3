//! The `[redis]` section of the configuration ([`RedisSettings`]): the
//! cluster's seed nodes, credentials, time limits, snapshot folder and circuit
//! breaker, with the checks of their keys and the [`ClusterSettings`] and
//! [`BreakerSettings`] they build.
//!
//! A plain serde type: `feed-server` reads the file and the environment
//! into it; this crate knows nothing of how it was read.

use std::time::Duration;

use feed_domain::InvalidSetting;
use serde::Deserialize;

use crate::{BreakerSettings, ClusterSettings, Credentials};

/// `[redis]`: the Redis Cluster, for `storage.kind = "redis"` and
/// `feed-server redis-load`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Seed nodes, `redis://HOST:PORT`, separated by commas.
    pub nodes: String,
    /// The ACL user to authenticate as; empty: the default user.
    #[serde(default)]
    pub username: String,
    /// The password every node asks for (`AUTH`); empty: none, or the one
    /// in `password_file`.
    #[serde(default)]
    pub password: String,
    /// A file holding the password (surrounding whitespace left out), so
    /// that it appears neither in the configuration nor in the environment;
    /// empty: none.
    #[serde(default)]
    pub password_file: String,
    /// With `rediss://` nodes: a PEM file of the authority that signed the
    /// nodes' certificates; empty: the system's trusted roots.
    #[serde(default)]
    pub tls_ca_file: String,
    /// The longest a call to the cluster may take.
    pub timeout_ms: u64,
    /// The folder of the snapshots this frontend maps: each version names
    /// the snapshot holding its feeds, found here by the id in its header
    /// (any file name). `feed-server redis-load` does not read it.
    pub snapshots: String,
    /// How often the version pointer is read.
    pub poll_ms: u64,
    /// Failed calls in a row that open a slot group's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before a probe.
    pub breaker_open_ms: u64,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field(
                "password",
                &(!self.password.is_empty()).then_some("<hidden>"),
            )
            .field("password_file", &self.password_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("snapshots", &self.snapshots)
            .field("poll_ms", &self.poll_ms)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open_ms", &self.breaker_open_ms)
            .finish()
    }
}

impl RedisSettings {
    /// Who the clients are to the cluster: `redis.username` and the password
    /// of `redis.password` or, read now, `redis.password_file`.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `redis.password_file` when both are set or
    /// the file cannot be read, `redis.username` when it has no password.
    pub fn credentials(&self) -> Result<Credentials, InvalidSetting> {
        let file = self.password_file.trim();
        let password = match (self.password.as_str(), file) {
            ("", "") => None,
            (password, "") => Some(password.to_owned()),
            ("", path) => {
                let content = std::fs::read_to_string(path).map_err(|e| {
                    InvalidSetting::new("redis.password_file", format!("cannot read {path}: {e}"))
                })?;
                Some(content.trim().to_owned())
            }
            (_, _) => {
                return Err(InvalidSetting::new(
                    "redis.password_file",
                    "is set and so is redis.password: set one of them",
                ));
            }
        };
        let username = self.username.trim();
        if !username.is_empty() && password.is_none() {
            return Err(InvalidSetting::new(
                "redis.username",
                "an ACL user needs its password: set redis.password or redis.password_file",
            ));
        }
        Ok(Credentials {
            username: (!username.is_empty()).then(|| username.to_owned()),
            password,
        })
    }

    /// Checks that every number of `[redis]` is in its range. The node
    /// list is checked by [`Self::node_list`], only where the cluster is
    /// used.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first key out of range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        for (key, value, low, high) in [
            ("redis.timeout_ms", self.timeout_ms, 1, 60_000),
            ("redis.poll_ms", self.poll_ms, 10, 1_000),
            (
                "redis.breaker_failures",
                u64::from(self.breaker_failures),
                1,
                1_000_000,
            ),
            ("redis.breaker_open_ms", self.breaker_open_ms, 1, 3_600_000),
        ] {
            if !(low..=high).contains(&value) {
                return Err(InvalidSetting {
                    key,
                    reason: format!("{value} is not between {low} and {high}"),
                });
            }
        }
        Ok(())
    }

    /// The seed nodes, checked: each `redis://HOST:PORT`.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `redis.nodes`.
    pub fn node_list(&self) -> Result<Vec<String>, InvalidSetting> {
        parse_nodes(&self.nodes).map_err(|reason| InvalidSetting {
            key: "redis.nodes",
            reason,
        })
    }

    /// The cluster connection settings.
    ///
    /// # Errors
    /// As [`Self::node_list`], [`Self::credentials`] and [`Self::ca`].
    pub fn cluster(&self) -> Result<ClusterSettings, InvalidSetting> {
        let nodes = self.node_list()?;
        Ok(ClusterSettings {
            ca_pem: self.ca(&nodes)?,
            nodes,
            timeout: Duration::from_millis(self.timeout_ms),
            credentials: self.credentials()?,
        })
    }

    /// The authority of `redis.tls_ca_file`, read now, for `nodes`.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `redis.tls_ca_file` when it cannot be
    /// read, or is set for `redis://` nodes (no TLS to use it for).
    pub fn ca(&self, nodes: &[String]) -> Result<Option<Vec<u8>>, InvalidSetting> {
        let path = self.tls_ca_file.trim();
        if path.is_empty() {
            return Ok(None);
        }
        if !nodes.iter().all(|node| node.starts_with("rediss://")) {
            return Err(InvalidSetting::new(
                "redis.tls_ca_file",
                "is set, but the nodes are not rediss:// (TLS)",
            ));
        }
        std::fs::read(path).map(Some).map_err(|e| {
            InvalidSetting::new("redis.tls_ca_file", format!("cannot read {path}: {e}"))
        })
    }

    /// The folder of `redis.snapshots`, which a frontend needs.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `redis.snapshots` when it is empty.
    pub fn snapshot_folder(&self) -> Result<std::path::PathBuf, InvalidSetting> {
        let folder = self.snapshots.trim();
        if folder.is_empty() {
            return Err(InvalidSetting::new(
                "redis.snapshots",
                "must name the folder of the snapshots this frontend serves",
            ));
        }
        Ok(folder.into())
    }

    /// The circuit breaker's settings.
    pub const fn breaker(&self) -> BreakerSettings {
        BreakerSettings {
            failures: self.breaker_failures,
            open_for: Duration::from_millis(self.breaker_open_ms),
        }
    }
}

/// `redis://HOST:PORT[,...]` as a list, or why not.
///
/// # Errors
/// Why the list is empty, or which node is not `redis://HOST:PORT`.
pub fn parse_nodes(nodes: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = nodes
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err("must name at least one node, as redis://HOST:PORT".into());
    }
    let tls = list[0].starts_with("rediss://");
    let scheme = if tls { "rediss://" } else { "redis://" };
    for node in &list {
        let address = node.strip_prefix(scheme).ok_or_else(|| {
            if node.starts_with("redis://") || node.starts_with("rediss://") {
                format!("`{node}` mixes redis:// and rediss:// (TLS) with the other nodes")
            } else {
                format!("`{node}` does not start with redis://")
            }
        })?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("`{node}` has no :PORT"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{node}` is not redis://HOST:PORT"));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis() -> RedisSettings {
        RedisSettings {
            nodes: "redis://127.0.0.1:7000, redis://127.0.0.1:7001".into(),
            username: String::new(),
            password: String::new(),
            password_file: String::new(),
            tls_ca_file: String::new(),
            timeout_ms: 200,
            snapshots: "data/snapshots".into(),
            poll_ms: 100,
            breaker_failures: 5,
            breaker_open_ms: 1_000,
        }
    }

    /// `outcome` is the error whose whole message is `expected`.
    fn check<T: std::fmt::Debug>(outcome: Result<T, InvalidSetting>, expected: &str) {
        assert_eq!(outcome.unwrap_err().to_string(), expected);
    }

    #[test]
    fn numbers_out_of_range_name_their_key() {
        assert!(redis().validate().is_ok());
        let mut slow = redis();
        slow.poll_ms = 5;
        check(
            slow.validate(),
            "configuration: redis.poll_ms: 5 is not between 10 and 1000",
        );
        let mut timeout = redis();
        timeout.timeout_ms = 0;
        check(
            timeout.validate(),
            "configuration: redis.timeout_ms: 0 is not between 1 and 60000",
        );
    }

    #[test]
    fn nodes_are_redis_urls_with_a_port() {
        assert_eq!(redis().cluster().unwrap().nodes.len(), 2);
        for (nodes, expected) in [
            (" , ", "must name at least one node, as redis://HOST:PORT"),
            (
                "127.0.0.1:7000",
                "`127.0.0.1:7000` does not start with redis://",
            ),
            ("redis://host", "`redis://host` has no :PORT"),
            (
                "redis://host:0",
                "`redis://host:0` is not redis://HOST:PORT",
            ),
            ("redis://:7000", "`redis://:7000` is not redis://HOST:PORT"),
        ] {
            let settings = RedisSettings {
                nodes: nodes.into(),
                ..redis()
            };
            check(
                settings.node_list(),
                &format!("configuration: redis.nodes: {expected}"),
            );
        }
    }

    /// The password comes from the configuration or a file, never both; an
    /// ACL user needs one; neither shows in `Debug`.
    #[test]
    fn credentials_come_from_one_place_and_stay_hidden() {
        let mut settings = redis();
        assert_eq!(settings.credentials().unwrap(), Credentials::default());
        settings.password = "s3cret".into();
        settings.username = " feeds ".into();
        let credentials = settings.credentials().unwrap();
        assert_eq!(credentials.password.as_deref(), Some("s3cret"));
        assert_eq!(credentials.username.as_deref(), Some("feeds"));
        for shown in [format!("{settings:?}"), format!("{credentials:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let dir = std::env::temp_dir().join(format!("feed-redis-password-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        settings.password_file = file.to_string_lossy().into_owned();
        check(
            settings.credentials(),
            "configuration: redis.password_file: is set and so is redis.password: set one of them",
        );
        settings.password.clear();
        assert_eq!(
            settings.credentials().unwrap().password.as_deref(),
            Some("from-a-file")
        );
        assert_eq!(
            settings.cluster().unwrap().credentials.password.as_deref(),
            Some("from-a-file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        settings.password_file.clear();
        check(
            settings.credentials(),
            "configuration: redis.username: an ACL user needs its password: set redis.password or redis.password_file",
        );
    }

    /// TLS is all the nodes or none, and an authority file is for TLS.
    #[test]
    fn tls_nodes_and_their_authority_are_checked() {
        let tls = vec!["rediss://127.0.0.1:7000".to_owned()];
        assert_eq!(parse_nodes("rediss://127.0.0.1:7000").unwrap(), tls);
        assert_eq!(
            parse_nodes("rediss://127.0.0.1:7000,redis://127.0.0.1:7001").unwrap_err(),
            "`redis://127.0.0.1:7001` mixes redis:// and rediss:// (TLS) with the other nodes"
        );
        let mut settings = redis();
        assert_eq!(settings.ca(&tls).unwrap(), None);
        settings.tls_ca_file = "/nonexistent/ca.pem".into();
        check(
            settings.ca(&settings.node_list().unwrap()),
            "configuration: redis.tls_ca_file: is set, but the nodes are not rediss:// (TLS)",
        );
        let error = settings.ca(&tls).unwrap_err().to_string();
        assert!(
            error.starts_with("configuration: redis.tls_ca_file: cannot read /nonexistent/ca.pem"),
            "{error}"
        );
    }
}
