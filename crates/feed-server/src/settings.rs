//! [`Settings`]: the whole configuration, read from a TOML file and then
//! from `FEED__SECTION__KEY` environment variables, which win.
//!
//! This module owns the root, the layering of file and environment
//! ([`Settings::load`]) and the sections that are the binary's own
//! (`[server]`, `[api]`, `[data]`, `[log]`, `[storage]`). Each section that
//! belongs to one crate is defined and checked there, and re-exported
//! here: `[admin]` and `[limits]` in `feed-http`, `[redis]` in
//! `feed-redis`, `[progress]` in `feed-memory`. Their errors become
//! [`SettingsError::Invalid`], with the same message.

use std::collections::HashMap;
use std::path::Path;

use feed_domain::SizeLimits;
use feed_memory::DataSpec;
pub use feed_memory::{DataSettings, DataSource};
use serde::Deserialize;

pub use feed_http::{AdminSettings, LimitSettings};
/// `progress.on_corrupt`: `feed_memory`'s own [`feed_memory::OnCorrupt`].
pub use feed_memory::OnCorrupt as OnCorruptSetting;
pub use feed_memory::ProgressSettings;
pub use feed_redis::{RedisSettings, parse_nodes};

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

/// The sections defined in the crates that own them name their key in the
/// same words ([`feed_domain::InvalidSetting`]): each becomes
/// [`SettingsError::Invalid`], so the message the binary prints is the same
/// wherever the key is checked.
impl From<feed_domain::InvalidSetting> for SettingsError {
    fn from(e: feed_domain::InvalidSetting) -> Self {
        Self::Invalid {
            key: e.key,
            reason: e.reason,
        }
    }
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
        let spec = self.data.validate(api.max_size)?;
        if self.server.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty".into()));
        }
        if !(0.0..=1.0).contains(&self.log.access_sample) {
            return Err(invalid(
                "log.access_sample",
                format!("{} is not between 0 and 1", self.log.access_sample),
            ));
        }
        self.admin.validate()?;
        self.limits.validate()?;
        self.progress.validate()?;
        self.validate_redis()?;
        Ok(ServiceSpec { limits, data: spec })
    }

    fn validate_redis(&self) -> Result<(), SettingsError> {
        if self.storage.kind == StorageKind::Redis {
            let nodes = self.redis.node_list()?;
            self.redis.credentials()?;
            self.redis.ca(&nodes)?;
            self.redis.snapshot_folder()?;
            if self.data.watch {
                return Err(SettingsError::Invalid {
                    key: "data.watch",
                    reason: "watches a snapshot file: with storage.kind = \"redis\" new data comes from `feed-server redis-load`".into(),
                });
            }
        }
        Ok(self.redis.validate()?)
    }

    /// Worker threads to run: the configured number, or one per core.
    pub fn workers(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}
