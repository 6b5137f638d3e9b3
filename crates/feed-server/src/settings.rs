//! [`Settings`]: the whole configuration, read from a TOML file and then
//! from `FEED__SECTION__KEY` environment variables, which win.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use feed_domain::SizeLimits;
use feed_http::{AdminAccess, AdminToken, TrustedProxies};
use feed_memory::{DataSpec, DataSpecError};
use serde::Deserialize;

/// The prefix of environment overrides, and the separator between prefix,
/// section and key: `FEED__SERVER__PORT`.
pub const ENV_PREFIX: &str = "FEED";
const ENV_SEPARATOR: &str = "__";

/// The configuration, every key present (the file holds them all).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[server]`
    pub server: ServerSettings,
    /// `[api]`
    pub api: ApiSettings,
    /// `[data]`
    pub data: DataSettings,
    /// `[limits]`
    pub limits: LimitSettings,
    /// `[admin]`
    pub admin: AdminSettings,
    /// `[log]`
    pub log: LogSettings,
    /// `[progress]`
    pub progress: ProgressSettings,
    /// `[storage]`
    pub storage: StorageSettings,
    /// `[redis]`
    pub redis: RedisSettings,
}

/// `[storage]`: where feeds and progress live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `memory` or `redis`.
    pub kind: StorageKind,
}

/// `storage.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// In this process: `[data]` and `[progress]`.
    Memory,
    /// In a Redis Cluster: `[redis]`, loaded by `feed-server redis-load`.
    Redis,
}

/// `[redis]`: the Redis Cluster, for `storage.kind = "redis"` and
/// `feed-server redis-load`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Seed nodes, `redis://HOST:PORT`, separated by commas.
    pub nodes: String,
    /// The longest a call to the cluster may take.
    pub timeout_ms: u64,
    /// Multiplexed cluster connections calls are spread over.
    pub pool_size: usize,
    /// How often the version pointer is read.
    pub poll_ms: u64,
    /// Failed calls in a row that open a slot group's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before a probe.
    pub breaker_open_ms: u64,
}

impl RedisSettings {
    /// The seed nodes, checked: each `redis://HOST:PORT`.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming `redis.nodes`.
    pub fn node_list(&self) -> Result<Vec<String>, SettingsError> {
        parse_nodes(&self.nodes).map_err(|reason| SettingsError::Invalid {
            key: "redis.nodes",
            reason,
        })
    }

    /// The cluster connection settings.
    ///
    /// # Errors
    /// As [`Self::node_list`].
    pub fn cluster(&self) -> Result<feed_redis::ClusterSettings, SettingsError> {
        Ok(feed_redis::ClusterSettings {
            nodes: self.node_list()?,
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            pool_size: self.pool_size,
        })
    }

    /// The circuit breaker's settings.
    pub const fn breaker(&self) -> feed_redis::BreakerSettings {
        feed_redis::BreakerSettings {
            failures: self.breaker_failures,
            open_for: std::time::Duration::from_millis(self.breaker_open_ms),
        }
    }
}

/// `redis://HOST:PORT[,...]` as a list, or why not.
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
    for node in &list {
        let address = node
            .strip_prefix("redis://")
            .ok_or_else(|| format!("`{node}` does not start with redis://"))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("`{node}` has no :PORT"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{node}` is not redis://HOST:PORT"));
        }
    }
    Ok(list)
}

/// `[progress]`: where users' progress is kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressSettings {
    /// The folder of the progress files (created if missing); empty: keep
    /// progress in memory only.
    pub path: String,
    /// How often progress is written to disk: what a machine crash or
    /// power loss can cost.
    pub sync_ms: u64,
    /// What to do with a torn, truncated or foreign progress file.
    pub on_corrupt: OnCorruptSetting,
}

/// `progress.on_corrupt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCorruptSetting {
    /// Refuse to start, with one line naming the file.
    Fail,
    /// Keep the bad file aside, start fresh, log a warning.
    Reset,
}

/// `[admin]`: the admin listener. Its `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address of the admin listener.
    pub host: String,
    /// Port of the admin listener (0: any free port).
    pub port: u16,
    /// Record request metrics.
    pub metrics: bool,
    /// The bearer token admin requests must carry (empty: none).
    pub token: String,
    /// A file whose content, trimmed, is the token (empty: none).
    pub token_file: String,
    /// `/metrics` needs the token too.
    pub metrics_token_required: bool,
    /// Serve an admin listener beyond loopback without a token.
    pub allow_open: bool,
    /// The content of `token_file`, trimmed, as [`Settings::load`] read it.
    #[serde(skip)]
    file_token: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &str| if secret.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AdminSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("metrics", &self.metrics)
            .field("token", &redacted(&self.token))
            .field("token_file", &self.token_file)
            .field("metrics_token_required", &self.metrics_token_required)
            .field("allow_open", &self.allow_open)
            .finish_non_exhaustive()
    }
}

impl AdminSettings {
    /// Reads `token_file`, if set, once.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming `admin.token_file` when `token`
    /// is set too, or the file cannot be read.
    fn read_token_file(&mut self) -> Result<(), SettingsError> {
        let path = self.token_file.trim();
        if path.is_empty() {
            return Ok(());
        }
        let invalid = |reason| SettingsError::Invalid {
            key: "admin.token_file",
            reason,
        };
        if !self.token.is_empty() {
            return Err(invalid(
                "is set and so is admin.token: set one of them".into(),
            ));
        }
        let content = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {path}: {e}")))?;
        self.file_token = Some(content.trim().to_owned());
        Ok(())
    }

    /// Who may use the admin endpoints: with `token` or `token_file`, only
    /// requests that carry it.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming the key of a bad token, of a
    /// token file that was not read by [`Settings::load`], or both set.
    pub fn access(&self) -> Result<AdminAccess, SettingsError> {
        let (key, token) = match (self.token.as_str(), self.token_file.trim()) {
            ("", "") => return Ok(AdminAccess::open()),
            (token, "") => ("admin.token", token),
            ("", path) => match &self.file_token {
                Some(token) => ("admin.token_file", token.as_str()),
                None => {
                    return Err(SettingsError::Invalid {
                        key: "admin.token_file",
                        reason: format!("{path} was not read (Settings::load reads it)"),
                    });
                }
            },
            _ => {
                return Err(SettingsError::Invalid {
                    key: "admin.token_file",
                    reason: "is set and so is admin.token: set one of them".into(),
                });
            }
        };
        let token = AdminToken::new(token).map_err(|e| SettingsError::Invalid {
            key,
            reason: format!("the token {e}"),
        })?;
        Ok(AdminAccess::token(token, self.metrics_token_required))
    }

    /// `host` is a loopback address (127.0.0.0/8, ::1) or `localhost`: only
    /// this machine can reach the listener.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        bare.eq_ignore_ascii_case("localhost")
            || bare
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback())
    }
}

/// `[limits]`: protection against overload and hostile clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Open connections across all workers.
    pub max_connections: usize,
    /// Time a client has to send its request head.
    pub client_request_timeout_ms: u64,
    /// Idle keep-alive connections are closed after this.
    pub keep_alive_ms: u64,
    /// Bytes of path and query beyond which a request gets 414.
    pub max_url_bytes: usize,
    /// Bytes of headers beyond which a request gets 431.
    pub max_header_bytes: usize,
    /// Requests in flight beyond which new ones are shed (0: no limit).
    pub max_in_flight: usize,
    /// Sustained requests per second per client IP (0: off).
    pub rate_limit_per_s: u32,
    /// Burst per client IP (0: one second's worth).
    pub rate_limit_burst: u32,
    /// Clients (IPv4 addresses, IPv6 /64s) the rate limit tracks one by one;
    /// beyond it new clients share one bucket.
    pub rate_limit_clients: usize,
    /// CIDR ranges of our own proxies, separated by commas: a request from
    /// one of them is the client's that `X-Forwarded-For` names (empty: none).
    pub trusted_proxies: String,
}

/// `[server]`: where and how to listen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// How long to keep serving after a stop signal, while not ready.
    pub shutdown_delay_ms: u64,
    /// How long in-flight requests have to finish once accepting stops.
    pub shutdown_timeout_ms: u64,
}

/// `[api]`: what requests may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Items served when a request names no size.
    pub default_size: u32,
    /// The largest size a request may name.
    pub max_size: u32,
}

/// `[data]`: where the feeds come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    /// `synthetic` (generated from the keys below) or `snapshot` (the file
    /// at `snapshot`).
    pub source: DataSource,
    /// The snapshot file, for `source = "snapshot"` and reloads.
    pub snapshot: String,
    /// The folder a reload that names a path may read from; empty: the
    /// folder of `snapshot`.
    pub snapshot_dir: String,
    /// Reload when the file at `snapshot` is replaced.
    pub watch: bool,
    /// How often to look at the file, with `watch`.
    pub watch_interval_ms: u64,
    /// Users `0..users`.
    pub users: u32,
    /// Items per feed.
    pub feed_len: u32,
    /// Catalog items `1..=catalog_size`.
    pub catalog_size: u32,
    /// Seed of the generator.
    pub seed: u64,
}

/// Where the feeds come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    /// Generated at start-up from `data.users`, `feed_len`, `catalog_size`
    /// and `seed`.
    Synthetic,
    /// The snapshot file at `data.snapshot`.
    Snapshot,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// The least severe level written.
    pub level: LogLevel,
    /// Line format.
    pub format: LogFormat,
    /// Share of successful requests written to the access log (0 to 1).
    pub access_sample: f64,
}

/// Log levels, most severe first. Read case-insensitively; `warn` and
/// `warning` are the same level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[allow(missing_docs)]
pub enum LogLevel {
    Critical,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "critical" => Self::Critical,
            "error" => Self::Error,
            "warn" | "warning" => Self::Warning,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => {
                return Err(format!(
                    "unknown log level `{name}`, expected critical, error, warn, info, debug or trace"
                ));
            }
        })
    }
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// A configuration that cannot be used. Its message names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or an environment variable could not be read or parsed.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("configuration: {key}: {reason}")]
    Invalid {
        /// The offending key, `section.key`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The domain values the validated settings turn into: what the feed
/// service is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Request size limits.
    pub limits: SizeLimits,
    /// The data set to generate.
    pub data: DataSpec,
}

impl Settings {
    /// Reads `path`, then the `FEED__*` variables among `env`, and validates.
    ///
    /// # Errors
    /// [`SettingsError`] naming the first key that is missing, unknown, of
    /// the wrong type or out of range.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, ServiceSpec), SettingsError> {
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .collect();
        // As given: the environment source guesses types, and would read a
        // token of digits as a number ("0012..." as 12...).
        let env_token = env
            .get(&format!("{prefix}ADMIN{ENV_SEPARATOR}TOKEN"))
            .cloned();
        let mut settings: Self = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()?
            .try_deserialize()?;
        if let Some(token) = env_token {
            settings.admin.token = token;
        }
        settings.admin.read_token_file()?;
        let validated = settings.validate()?;
        Ok((settings, validated))
    }

    /// Checks the values that types alone cannot.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<ServiceSpec, SettingsError> {
        let invalid = |key, reason: String| SettingsError::Invalid { key, reason };
        let api = &self.api;
        if api.max_size == 0 || api.max_size > SizeLimits::CEILING {
            return Err(invalid(
                "api.max_size",
                format!(
                    "{} is not between 1 and {}",
                    api.max_size,
                    SizeLimits::CEILING
                ),
            ));
        }
        let limits = SizeLimits::new(api.default_size, api.max_size).map_err(|_| {
            invalid(
                "api.default_size",
                format!(
                    "{} is not between 1 and api.max_size ({})",
                    api.default_size, api.max_size
                ),
            )
        })?;
        let data = &self.data;
        if data.feed_len == 0 {
            return Err(invalid("data.feed_len", "must be at least 1".into()));
        }
        if data.catalog_size < data.feed_len {
            return Err(invalid(
                "data.catalog_size",
                format!(
                    "{} is smaller than data.feed_len ({})",
                    data.catalog_size, data.feed_len
                ),
            ));
        }
        if data.source == DataSource::Synthetic && data.catalog_size < api.max_size {
            return Err(invalid(
                "data.catalog_size",
                format!(
                    "{} is smaller than api.max_size ({}): a full answer needs that many distinct items",
                    data.catalog_size, api.max_size
                ),
            ));
        }
        let spec = DataSpec::new(data.users, data.feed_len, data.catalog_size, data.seed).map_err(
            |e| {
                let key = match e {
                    DataSpecError::TooLarge { .. } => "data.users",
                    DataSpecError::Catalog { .. } => "data.catalog_size",
                    _ => "data.feed_len",
                };
                invalid(key, e.to_string())
            },
        )?;
        if data.source == DataSource::Snapshot && data.snapshot.trim().is_empty() {
            return Err(invalid(
                "data.snapshot",
                "must name a file when data.source is \"snapshot\"".into(),
            ));
        }
        if data.watch && data.source != DataSource::Snapshot {
            return Err(invalid(
                "data.watch",
                "watches the snapshot being served: it needs data.source = \"snapshot\"".into(),
            ));
        }
        if data.watch && data.watch_interval_ms == 0 {
            return Err(invalid(
                "data.watch_interval_ms",
                "must be at least 1".into(),
            ));
        }
        if self.server.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty".into()));
        }
        if !(0.0..=1.0).contains(&self.log.access_sample) {
            return Err(invalid(
                "log.access_sample",
                format!("{} is not between 0 and 1", self.log.access_sample),
            ));
        }
        if self.admin.host.trim().is_empty() {
            return Err(invalid("admin.host", "must not be empty".into()));
        }
        if self.admin.access()?.is_open() && !self.admin.is_loopback() && !self.admin.allow_open {
            return Err(invalid(
                "admin.token",
                format!(
                    "is empty, and admin.host {} is reachable beyond this machine: set admin.token or admin.token_file, or admin.allow_open = true to let anyone who reaches it reload data and read stats",
                    self.admin.host.trim()
                ),
            ));
        }
        self.trusted_proxies()?;
        let lim = &self.limits;
        for (key, value) in [
            ("limits.max_connections", lim.max_connections as u64),
            (
                "limits.client_request_timeout_ms",
                lim.client_request_timeout_ms,
            ),
            ("limits.keep_alive_ms", lim.keep_alive_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        for (key, value) in [
            ("limits.max_url_bytes", lim.max_url_bytes),
            ("limits.max_header_bytes", lim.max_header_bytes),
        ] {
            if value >= feed_http::PARSER_HEAD_LIMIT {
                return Err(invalid(
                    key,
                    format!(
                        "{value} is not below {}: the HTTP parser refuses request heads that large by itself",
                        feed_http::PARSER_HEAD_LIMIT
                    ),
                ));
            }
        }
        if self.progress.sync_ms == 0 {
            return Err(invalid("progress.sync_ms", "must be at least 1".into()));
        }
        if lim.rate_limit_clients == 0 {
            return Err(invalid(
                "limits.rate_limit_clients",
                "must be at least 1".into(),
            ));
        }
        self.validate_redis()?;
        Ok(ServiceSpec { limits, data: spec })
    }

    fn validate_redis(&self) -> Result<(), SettingsError> {
        let invalid = |key, reason: String| SettingsError::Invalid { key, reason };
        let redis = &self.redis;
        if self.storage.kind == StorageKind::Redis {
            redis.node_list()?;
            if self.data.watch {
                return Err(invalid(
                    "data.watch",
                    "watches a snapshot file: with storage.kind = \"redis\" new data comes from `feed-server redis-load`".into(),
                ));
            }
        }
        for (key, value, low, high) in [
            ("redis.timeout_ms", redis.timeout_ms, 1, 60_000),
            ("redis.pool_size", redis.pool_size as u64, 1, 64),
            ("redis.poll_ms", redis.poll_ms, 10, 1_000),
            (
                "redis.breaker_failures",
                u64::from(redis.breaker_failures),
                1,
                1_000_000,
            ),
            ("redis.breaker_open_ms", redis.breaker_open_ms, 1, 3_600_000),
        ] {
            if !(low..=high).contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is not between {low} and {high}"),
                ));
            }
        }
        Ok(())
    }

    /// The snapshot file reloads use when they name none (`data.snapshot`,
    /// if set).
    pub fn snapshot_path(&self) -> Option<std::path::PathBuf> {
        let path = self.data.snapshot.trim();
        (!path.is_empty()).then(|| path.into())
    }

    /// Where snapshots are read from: the default file and the folder a
    /// reload that names a path is confined to (`data.snapshot_dir`, or
    /// the folder of `data.snapshot`).
    pub fn snapshot_place(&self) -> feed_memory::SnapshotPlace {
        let default = self.snapshot_path();
        let dir = self.data.snapshot_dir.trim();
        let dir = if dir.is_empty() {
            default
                .as_deref()
                .and_then(std::path::Path::parent)
                .map(|dir| {
                    if dir.as_os_str().is_empty() {
                        std::path::PathBuf::from(".")
                    } else {
                        dir.to_owned()
                    }
                })
        } else {
            Some(dir.into())
        };
        feed_memory::SnapshotPlace { default, dir }
    }

    /// The progress folder, `None` for progress in memory only.
    pub fn progress_dir(&self) -> Option<std::path::PathBuf> {
        let path = self.progress.path.trim();
        (!path.is_empty()).then(|| path.into())
    }

    /// Where progress is kept: `progress.path` and `progress.on_corrupt`.
    pub fn progress_place(&self) -> feed_memory::ProgressPlace {
        feed_memory::ProgressPlace {
            dir: self.progress_dir(),
            on_corrupt: match self.progress.on_corrupt {
                OnCorruptSetting::Fail => feed_memory::OnCorrupt::Fail,
                OnCorruptSetting::Reset => feed_memory::OnCorrupt::Reset,
            },
        }
    }

    /// The request gate's limits.
    pub fn request_limits(&self) -> feed_http::RequestLimits {
        feed_http::RequestLimits {
            max_in_flight: self.limits.max_in_flight,
            max_url_bytes: self.limits.max_url_bytes,
            max_header_bytes: self.limits.max_header_bytes,
        }
    }

    /// The per-client rate limiter, `None` when rate limiting is off.
    pub fn rate_limiter(&self) -> Option<feed_http::RateLimiter> {
        let per_s = self.limits.rate_limit_per_s;
        let burst = match self.limits.rate_limit_burst {
            0 => per_s,
            burst => burst,
        };
        feed_http::RateLimiter::new(per_s, burst)
            .map(|rate| rate.with_max_clients(self.limits.rate_limit_clients))
    }

    /// The proxies whose `X-Forwarded-For` names the client.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming `limits.trusted_proxies`.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, SettingsError> {
        self.limits
            .trusted_proxies
            .parse()
            .map_err(|e: feed_http::BadProxyRange| SettingsError::Invalid {
                key: "limits.trusted_proxies",
                reason: e.to_string(),
            })
    }

    /// Worker threads to run: the configured number, or one per core.
    pub fn workers(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}
