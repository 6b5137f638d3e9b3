//! The frontends' side of the cluster: a multiplexed cluster connection
//! per worker thread, and the version pointer.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, ConnectionInfo, IntoConnectionInfo, TlsCertificates, TlsMode};

use crate::error::{RedisStoreError, within};
use crate::keys;

/// How to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Seed nodes, as `redis://HOST:PORT`; the rest are discovered.
    pub nodes: Vec<String>,
    /// The longest any one call may take, connecting included.
    pub timeout: Duration,
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
    /// When it was published, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The id of the snapshot that holds its feeds and fallback list:
    /// every frontend maps that snapshot, and the cluster keeps only the
    /// users' progress.
    pub snapshot: u64,
}

/// The cluster as a frontend reaches it: one multiplexed cluster connection
/// per thread that calls it, made on that thread's runtime, so a worker's
/// calls are written, read and answered on the worker itself (no hand-over
/// to another thread, no shared counter), and one more for the rare reads
/// of the version pointer and descriptions.
pub struct Cluster {
    /// Tells this cluster's connections from another's in a thread's list.
    id: u64,
    client: ClusterClient,
    /// For the version pointer and descriptions, on the watcher's runtime.
    meta: ClusterConnection,
    timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Numbers [`Cluster`]s.
static CLUSTERS: AtomicU64 = AtomicU64::new(0);

/// A thread's cell for its connection to one cluster: connected once, by
/// the first call that needs it (the calls that come meanwhile wait for
/// the same connection).
type Local = Arc<tokio::sync::OnceCell<ClusterConnection>>;

thread_local! {
    /// This thread's connections, by cluster id (a frontend has one
    /// cluster; tests make several). An entry lives as long as its thread:
    /// a frontend's threads are its workers, whose runtimes live as long
    /// as the process, so a connection never outlives the runtime that
    /// drives it. A thread that outlives its runtime and calls again with
    /// the same cluster gets calls that fail (and open the breaker): do
    /// not share a `Cluster` with such threads.
    static LOCAL: RefCell<Vec<(u64, Local)>> = const { RefCell::new(Vec::new()) };
}

impl Cluster {
    /// Connects the connection for the version pointer (on the calling
    /// tokio runtime, which must keep running while the cluster is used);
    /// the request paths' connections are made by their threads.
    ///
    /// # Errors
    /// The client's error, or [`RedisStoreError::Timeout`].
    pub async fn connect(settings: &ClusterSettings) -> Result<Self, RedisStoreError> {
        let client = cluster_client(settings)?;
        let meta = within(settings.timeout * 4, client.get_async_connection()).await?;
        Ok(Self {
            id: CLUSTERS.fetch_add(1, Ordering::Relaxed),
            client,
            meta,
            timeout: settings.timeout,
        })
    }

    /// The calling thread's connection (a cheap handle), connected on the
    /// thread's tokio runtime by its first call. Its driver runs on that
    /// runtime, so call it from a thread whose runtime keeps running (a
    /// server's worker).
    ///
    /// Callers bound it by their own time limit: a call that waits for
    /// another's connecting gives up at its own deadline.
    ///
    /// # Errors
    /// The client's error, or [`RedisStoreError::Timeout`] when connecting
    /// takes longer than the call limit.
    pub async fn connection(&self) -> Result<ClusterConnection, RedisStoreError> {
        let local = LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            if let Some((_, cell)) = local.iter().find(|(id, _)| *id == self.id) {
                if let Some(connection) = cell.get() {
                    return Err(connection.clone());
                }
                return Ok(Arc::clone(cell));
            }
            let cell = Local::default();
            local.push((self.id, Arc::clone(&cell)));
            Ok(cell)
        });
        let cell = match local {
            Err(ready) => return Ok(ready),
            Ok(cell) => cell,
        };
        cell.get_or_try_init(|| within(self.timeout, self.client.get_async_connection()))
            .await
            .cloned()
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
        let mut connection = self.meta.clone();
        within(self.timeout, connection.get(keys::CURRENT)).await
    }

    /// The version being served and the one kept for rollback, read
    /// together (both pointers share a slot).
    ///
    /// # Errors
    /// As [`Self::current_version`].
    pub async fn versions(&self) -> Result<(Option<u64>, Option<u64>), RedisStoreError> {
        self.pointers()
            .await
            .map(|pointers| (pointers.current, pointers.previous))
    }

    /// [`Self::versions`], with how many times they moved: one read.
    ///
    /// # Errors
    /// As [`Self::current_version`].
    pub async fn pointers(&self) -> Result<Pointers, RedisStoreError> {
        let mut connection = self.meta.clone();
        let (current, previous, epoch): (Option<u64>, Option<u64>, Option<u64>) = within(
            self.timeout,
            connection.mget(&[keys::CURRENT, keys::PREVIOUS, keys::EPOCH]),
        )
        .await?;
        Ok(Pointers {
            current,
            previous,
            epoch: epoch.unwrap_or(0),
        })
    }

    /// The description of `version`.
    ///
    /// # Errors
    /// As [`Self::current_version`]; [`RedisStoreError::Corrupt`] when the
    /// version has no description.
    pub async fn version_info(&self, version: u64) -> Result<VersionInfo, RedisStoreError> {
        let mut connection = self.meta.clone();
        let fields: std::collections::HashMap<String, Vec<u8>> =
            within(self.timeout, connection.hgetall(keys::meta(version))).await?;
        VersionInfo::from_fields(version, &fields)
    }
}

/// The version pointers, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointers {
    /// The version served.
    pub current: Option<u64>,
    /// The version kept for rollback.
    pub previous: Option<u64>,
    /// How many times they moved ([`keys::EPOCH`]).
    pub epoch: u64,
}

/// A client of the seed nodes whose answers may take up to the call limit.
fn cluster_client(settings: &ClusterSettings) -> Result<ClusterClient, RedisStoreError> {
    let builder = ClusterClient::builder(settings.nodes.iter().map(String::as_str))
        .connection_timeout(settings.timeout)
        .response_timeout(settings.timeout)
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
            ("snapshot", format!("{:016x}", self.snapshot).into_bytes()),
        ]
    }

    pub(crate) fn from_fields(
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
        // A description without a snapshot was written by a loader that
        // put the feeds themselves into the cluster: load it again.
        let snapshot = fields
            .get("snapshot")
            .and_then(|raw| std::str::from_utf8(raw).ok())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or_else(|| corrupt("no snapshot id (written by an older redis-load)"))?;
        Ok(Self {
            version,
            users: number("users")?,
            items: number("items")?,
            created_unix_ms: number("created_unix_ms")?,
            snapshot,
        })
    }
}
