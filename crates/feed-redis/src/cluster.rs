//! The frontends' side of the cluster: a small pool of multiplexed cluster
//! connections, and the version pointer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, ConnectionInfo, IntoConnectionInfo, TlsCertificates, TlsMode};

use crate::error::{RedisStoreError, within};
use crate::keys;

/// The time limit for reading a version's description.
pub const DESCRIPTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Seed nodes, as `redis://HOST:PORT`; the rest are discovered.
    pub nodes: Vec<String>,
    /// The longest any one call may take, connecting included.
    pub timeout: Duration,
    /// Multiplexed connections (each with one socket per node) that calls
    /// are spread over.
    pub pool_size: usize,
    /// Who the client is to every node (`AUTH`).
    pub credentials: Credentials,
    /// With `rediss://` nodes: the certificate (PEM) of the authority that
    /// signed the nodes' certificates; `None` trusts the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl ClusterSettings {
    /// Whether the nodes are reached over TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.nodes
            .first()
            .is_some_and(|node| node.starts_with("rediss://"))
    }

    /// `builder` with these settings' credentials and, over TLS, their
    /// authority.
    pub(crate) fn apply(&self, builder: ClusterClientBuilder) -> ClusterClientBuilder {
        let builder = self.credentials.apply(builder);
        match self.transport() {
            Transport::Plain => builder,
            Transport::SystemRoots => builder.tls(TlsMode::Secure),
            Transport::Authority(certificates) => builder.certs(certificates),
        }
    }

    /// A client of the single node at `address` (`HOST:PORT`), as these
    /// settings reach the cluster.
    pub(crate) fn node(&self, address: &str) -> redis::RedisResult<redis::Client> {
        let scheme = if self.tls() { "rediss" } else { "redis" };
        let info = self
            .credentials
            .connection_info(&format!("{scheme}://{address}"))?;
        match self.transport() {
            Transport::Authority(certificates) => redis::Client::build_with_tls(info, certificates),
            Transport::Plain | Transport::SystemRoots => redis::Client::open(info),
        }
    }

    /// How connections are made: in the clear, or over TLS trusting the
    /// system's roots or `ca_pem` (the TLS provider installed first).
    fn transport(&self) -> Transport {
        if !self.tls() {
            return Transport::Plain;
        }
        tls_provider();
        match &self.ca_pem {
            None => Transport::SystemRoots,
            Some(ca) => Transport::Authority(TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            }),
        }
    }
}

/// See [`ClusterSettings::transport`].
enum Transport {
    Plain,
    SystemRoots,
    Authority(TlsCertificates),
}

/// Makes rustls' ring provider the process's default, once (a no-op if one
/// is already installed).
fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Who a client is to the cluster's nodes: the password of the default
/// user, or an ACL user and its password; none for a cluster that asks for
/// none. Its `Debug` leaves the password out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user; `None` for the default user.
    pub username: Option<String>,
    /// The password; `None` when the cluster asks for none.
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Credentials {
    /// `builder` authenticating with these credentials.
    pub(crate) fn apply(&self, builder: ClusterClientBuilder) -> ClusterClientBuilder {
        let builder = match &self.username {
            Some(username) => builder.username(username),
            None => builder,
        };
        match &self.password {
            Some(password) => builder.password(password),
            None => builder,
        }
    }

    /// How to reach the node at `url` with these credentials.
    fn connection_info(&self, url: &str) -> redis::RedisResult<ConnectionInfo> {
        let info = url.into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        Ok(info.set_redis_settings(redis))
    }
}

/// What one data version holds, as its loader described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version number.
    pub version: u64,
    /// Users with a feed.
    pub users: u64,
    /// Items in all feeds.
    pub items: u64,
    /// The fallback list random fills draw from.
    pub fallback: Vec<u32>,
    /// When it was published, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Where it was loaded from (the snapshot's id).
    pub source: String,
}

/// Connections to the cluster, used round-robin.
pub struct Cluster {
    pool: Box<[ClusterConnection]>,
    /// For the rare, possibly large, reads of version descriptions.
    meta: ClusterConnection,
    next: AtomicUsize,
    timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("pool_size", &self.pool.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects `settings.pool_size` multiplexed connections. Their
    /// background tasks run on the calling tokio runtime, which must keep
    /// running while the connections are used (from any thread).
    ///
    /// # Errors
    /// The client's error, or [`RedisStoreError::Timeout`].
    pub async fn connect(settings: &ClusterSettings) -> Result<Self, RedisStoreError> {
        let client = cluster_client(settings, settings.timeout)?;
        let connect = settings.timeout * 4;
        let mut pool = Vec::with_capacity(settings.pool_size.max(1));
        for _ in 0..settings.pool_size.max(1) {
            pool.push(within(connect, client.get_async_connection()).await?);
        }
        let meta = cluster_client(settings, DESCRIPTION_TIMEOUT)?;
        let meta = within(connect, meta.get_async_connection()).await?;
        Ok(Self {
            pool: pool.into(),
            meta,
            next: AtomicUsize::new(0),
            timeout: settings.timeout,
        })
    }

    /// The next connection of the pool (a cheap handle).
    pub fn connection(&self) -> ClusterConnection {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[at].clone()
    }

    /// The time limit of every call.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The version being served, if any has been published.
    ///
    /// # Errors
    /// The cluster's error, [`RedisStoreError::Timeout`], or
    /// [`RedisStoreError::Corrupt`] when the pointer or the description is
    /// malformed.
    pub async fn current_version(&self) -> Result<Option<u64>, RedisStoreError> {
        let mut connection = self.connection();
        within(self.timeout, connection.get(keys::CURRENT)).await
    }

    /// The description of `version`. Its fallback list can be large (4
    /// bytes an item), so it has [`DESCRIPTION_TIMEOUT`] or the call limit,
    /// whichever is longer: a frontend reads it once per version.
    ///
    /// # Errors
    /// As [`Self::current_version`]; [`RedisStoreError::Corrupt`] when the
    /// version has no description.
    pub async fn version_info(&self, version: u64) -> Result<VersionInfo, RedisStoreError> {
        let mut connection = self.meta.clone();
        let limit = self.timeout.max(DESCRIPTION_TIMEOUT);
        let fields: std::collections::HashMap<String, Vec<u8>> =
            within(limit, connection.hgetall(keys::meta(version))).await?;
        VersionInfo::from_fields(version, &fields)
    }
}

/// A client of the seed nodes whose answers may take up to `response`.
fn cluster_client(
    settings: &ClusterSettings,
    response: Duration,
) -> Result<ClusterClient, RedisStoreError> {
    let builder = ClusterClient::builder(settings.nodes.iter().map(String::as_str))
        .connection_timeout(settings.timeout)
        .response_timeout(response)
        .retries(2);
    Ok(settings.apply(builder).build()?)
}

impl VersionInfo {
    /// The fields of its description hash.
    pub fn to_fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("users", self.users.to_string().into_bytes()),
            ("items", self.items.to_string().into_bytes()),
            (
                "created_unix_ms",
                self.created_unix_ms.to_string().into_bytes(),
            ),
            ("source", self.source.clone().into_bytes()),
            ("fallback", crate::encode_items(&self.fallback)),
        ]
    }

    fn from_fields(
        version: u64,
        fields: &std::collections::HashMap<String, Vec<u8>>,
    ) -> Result<Self, RedisStoreError> {
        let corrupt = |what: &str| RedisStoreError::Corrupt(format!("version {version}: {what}"));
        let number = |name: &str| -> Result<u64, RedisStoreError> {
            let raw = fields
                .get(name)
                .ok_or_else(|| corrupt(&format!("no {name}")))?;
            std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(&format!("{name} is not a number")))
        };
        if fields.is_empty() {
            return Err(corrupt("no description"));
        }
        let fallback = fields
            .get("fallback")
            .ok_or_else(|| corrupt("no fallback"))?;
        Ok(Self {
            version,
            users: number("users")?,
            items: number("items")?,
            created_unix_ms: number("created_unix_ms")?,
            source: String::from_utf8_lossy(fields.get("source").map_or(&[][..], Vec::as_slice))
                .into_owned(),
            fallback: crate::decode_items(fallback).ok_or_else(|| corrupt("fallback length"))?,
        })
    }
}
