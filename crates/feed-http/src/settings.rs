//! The `[admin]` and `[limits]` sections of the configuration: the admin
//! listener ([`AdminSettings`]) and the request gate's protections
//! ([`LimitSettings`]), with the checks of their keys.
//!
//! They are plain serde types: `feed-server` reads the file and the
//! environment into them and calls [`AdminSettings::validate`] and
//! [`LimitSettings::validate`]; this crate turns them into what it serves
//! with ([`AdminAccess`], [`RequestLimits`], [`RateLimiter`],
//! [`TrustedProxies`]) and knows nothing of how they were read.

use std::net::IpAddr;

use feed_domain::InvalidSetting;
use serde::Deserialize;

use crate::{
    AdminAccess, AdminToken, BadProxyRange, PARSER_HEAD_LIMIT, RateLimiter, RequestLimits,
    TrustedProxies,
};

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
    /// The content of `token_file`, trimmed, as
    /// [`AdminSettings::read_token_file`] read it.
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
    /// Reads `token_file`, if set, once: the loader calls it after the file
    /// and the environment are read, before [`Self::validate`].
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `admin.token_file` when `token` is set
    /// too, or the file cannot be read.
    pub fn read_token_file(&mut self) -> Result<(), InvalidSetting> {
        let path = self.token_file.trim();
        if path.is_empty() {
            return Ok(());
        }
        let invalid = |reason| InvalidSetting::new("admin.token_file", reason);
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
    /// [`InvalidSetting`] naming the key of a bad token, of a token file
    /// that [`Self::read_token_file`] has not read, or both set.
    pub fn access(&self) -> Result<AdminAccess, InvalidSetting> {
        let (key, token) = match (self.token.as_str(), self.token_file.trim()) {
            ("", "") => return Ok(AdminAccess::open()),
            (token, "") => ("admin.token", token),
            ("", path) => match &self.file_token {
                Some(token) => ("admin.token_file", token.as_str()),
                None => {
                    return Err(InvalidSetting::new(
                        "admin.token_file",
                        format!("{path} was not read (Settings::load reads it)"),
                    ));
                }
            },
            _ => {
                return Err(InvalidSetting::new(
                    "admin.token_file",
                    "is set and so is admin.token: set one of them",
                ));
            }
        };
        let token = AdminToken::new(token)
            .map_err(|e| InvalidSetting::new(key, format!("the token {e}")))?;
        Ok(AdminAccess::token(token, self.metrics_token_required))
    }

    /// The bearer token admin requests carry (`token`, or the content of
    /// `token_file` once read); `None` without one.
    pub fn bearer(&self) -> Option<&str> {
        match (self.token.as_str(), self.file_token.as_deref()) {
            ("", None) => None,
            ("", Some(token)) => Some(token),
            (token, _) => Some(token),
        }
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

    /// Checks the keys of `[admin]`: a host, a usable token, and no
    /// listener beyond loopback without one unless `allow_open` says so.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first bad key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.host.trim().is_empty() {
            return Err(InvalidSetting::new("admin.host", "must not be empty"));
        }
        if self.access()?.is_open() && !self.is_loopback() && !self.allow_open {
            return Err(InvalidSetting::new(
                "admin.token",
                format!(
                    "is empty, and admin.host {} is reachable beyond this machine: set admin.token or admin.token_file, or admin.allow_open = true to let anyone who reaches it reload data and read stats",
                    self.host.trim()
                ),
            ));
        }
        Ok(())
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
    /// A connection from one of `trusted_proxies` may open with a PROXY
    /// protocol header (v1 or v2) naming the client, for a balancer in TCP
    /// mode; `X-Forwarded-For` is then never read. Off when absent, so a
    /// configuration file written before the key existed still loads.
    #[serde(default)]
    pub proxy_protocol: bool,
}

impl LimitSettings {
    /// Checks the keys of `[limits]`: proxy ranges that parse, no zero
    /// where zero would stop the server, and head limits the HTTP parser
    /// can enforce.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first bad key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.proxy_protocol()?;
        for (key, value) in [
            ("limits.max_connections", self.max_connections as u64),
            (
                "limits.client_request_timeout_ms",
                self.client_request_timeout_ms,
            ),
            ("limits.keep_alive_ms", self.keep_alive_ms),
        ] {
            if value == 0 {
                return Err(InvalidSetting::new(key, "must be at least 1"));
            }
        }
        for (key, value) in [
            ("limits.max_url_bytes", self.max_url_bytes),
            ("limits.max_header_bytes", self.max_header_bytes),
        ] {
            if value >= PARSER_HEAD_LIMIT {
                return Err(InvalidSetting::new(
                    key,
                    format!(
                        "{value} is not below {PARSER_HEAD_LIMIT}: the HTTP parser refuses request heads that large by itself"
                    ),
                ));
            }
        }
        if self.rate_limit_clients == 0 {
            return Err(InvalidSetting::new(
                "limits.rate_limit_clients",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The request gate's limits.
    pub const fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_in_flight: self.max_in_flight,
            max_url_bytes: self.max_url_bytes,
            max_header_bytes: self.max_header_bytes,
        }
    }

    /// The per-client rate limiter, `None` when rate limiting is off.
    pub fn rate_limiter(&self) -> Option<RateLimiter> {
        let per_s = self.rate_limit_per_s;
        let burst = match self.rate_limit_burst {
            0 => per_s,
            burst => burst,
        };
        RateLimiter::new(per_s, burst).map(|rate| rate.with_max_clients(self.rate_limit_clients))
    }

    /// The proxies every public connection's PROXY header must come from,
    /// `None` when the listener speaks plain HTTP.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `limits.trusted_proxies` when a range does
    /// not parse, or `limits.proxy_protocol` when no proxy is trusted (no
    /// connection could be served).
    pub fn proxy_protocol(&self) -> Result<Option<TrustedProxies>, InvalidSetting> {
        let trusted = self.trusted_proxies()?;
        if !self.proxy_protocol {
            return Ok(None);
        }
        if trusted.is_empty() {
            return Err(InvalidSetting::new(
                "limits.proxy_protocol",
                "needs limits.trusted_proxies: only a trusted proxy may name the client",
            ));
        }
        Ok(Some(trusted))
    }

    /// The proxies whose `X-Forwarded-For` the request gate believes:
    /// `trusted_proxies`, or none with `proxy_protocol`. A balancer in TCP
    /// mode passes the client's own bytes through, so behind it that
    /// header is whatever the client wrote, and a connection whose PROXY
    /// header names no client (or a trusted client) would otherwise let it
    /// choose its address.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `limits.trusted_proxies`.
    pub fn forwarded_for(&self) -> Result<TrustedProxies, InvalidSetting> {
        let trusted = self.trusted_proxies()?;
        Ok(if self.proxy_protocol {
            TrustedProxies::none()
        } else {
            trusted
        })
    }

    /// The proxies whose `X-Forwarded-For` names the client.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `limits.trusted_proxies`.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, InvalidSetting> {
        self.trusted_proxies.parse().map_err(|e: BadProxyRange| {
            InvalidSetting::new("limits.trusted_proxies", e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(host: &str, token: &str) -> AdminSettings {
        AdminSettings {
            host: host.into(),
            port: 0,
            metrics: true,
            token: token.into(),
            token_file: String::new(),
            metrics_token_required: false,
            allow_open: false,
            file_token: None,
        }
    }

    fn limits() -> LimitSettings {
        LimitSettings {
            max_connections: 25_000,
            client_request_timeout_ms: 5_000,
            keep_alive_ms: 5_000,
            max_url_bytes: 2_048,
            max_header_bytes: 16_384,
            max_in_flight: 0,
            rate_limit_per_s: 0,
            rate_limit_burst: 0,
            rate_limit_clients: 100_000,
            trusted_proxies: String::new(),
            proxy_protocol: false,
        }
    }

    /// `outcome` is the error whose whole message is `expected`.
    fn check(outcome: Result<(), InvalidSetting>, expected: &str) {
        assert_eq!(outcome.unwrap_err().to_string(), expected);
    }

    #[test]
    fn admin_keys_are_checked_by_name() {
        assert!(admin("127.0.0.1", "").validate().is_ok());
        assert!(admin("0.0.0.0", "0123456789abcdef").validate().is_ok());
        check(
            admin(" ", "").validate(),
            "configuration: admin.host: must not be empty",
        );
        check(
            admin("10.1.2.3", "").validate(),
            "configuration: admin.token: is empty, and admin.host 10.1.2.3 is reachable beyond this machine: set admin.token or admin.token_file, or admin.allow_open = true to let anyone who reaches it reload data and read stats",
        );
        let mut both = admin("127.0.0.1", "0123456789abcdef");
        both.token_file = "token".into();
        check(
            both.read_token_file(),
            "configuration: admin.token_file: is set and so is admin.token: set one of them",
        );
        let mut unread = admin("127.0.0.1", "");
        unread.token_file = "token".into();
        check(
            unread.validate(),
            "configuration: admin.token_file: token was not read (Settings::load reads it)",
        );
    }

    #[test]
    fn the_token_is_not_in_debug() {
        let shown = format!("{:?}", admin("::1", "0123456789abcdef"));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn only_loopback_hosts_are_loopback() {
        for host in ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "LocalHost"] {
            assert!(admin(host, "").is_loopback(), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.1.2.3", "admin.internal"] {
            assert!(!admin(host, "").is_loopback(), "{host}");
        }
    }

    #[test]
    fn limit_keys_are_checked_by_name() {
        assert!(limits().validate().is_ok());
        let with = |change: fn(&mut LimitSettings)| {
            let mut limits = limits();
            change(&mut limits);
            limits.validate()
        };
        check(
            with(|l| l.keep_alive_ms = 0),
            "configuration: limits.keep_alive_ms: must be at least 1",
        );
        check(
            with(|l| l.max_url_bytes = PARSER_HEAD_LIMIT),
            "configuration: limits.max_url_bytes: 131072 is not below 131072: the HTTP parser refuses request heads that large by itself",
        );
        check(
            with(|l| l.rate_limit_clients = 0),
            "configuration: limits.rate_limit_clients: must be at least 1",
        );
        check(
            with(|l| l.proxy_protocol = true),
            "configuration: limits.proxy_protocol: needs limits.trusted_proxies: only a trusted proxy may name the client",
        );
        assert_eq!(
            limits().proxy_protocol().unwrap(),
            None,
            "plain HTTP by default"
        );
        let behind = LimitSettings {
            proxy_protocol: true,
            trusted_proxies: "10.0.0.0/8".into(),
            ..limits()
        };
        assert_eq!(
            behind.proxy_protocol().unwrap(),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert!(
            behind.forwarded_for().unwrap().is_empty(),
            "X-Forwarded-For is believed behind a TCP balancer"
        );
        let forwarding = LimitSettings {
            trusted_proxies: "10.0.0.0/8".into(),
            ..limits()
        };
        assert_eq!(
            forwarding.forwarded_for().unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        let bad = with(|l| l.trusted_proxies = "haproxy".into()).unwrap_err();
        assert_eq!(bad.key, "limits.trusted_proxies");
    }

    #[test]
    fn rate_limiting_is_off_at_zero_per_second() {
        assert!(limits().rate_limiter().is_none());
        let mut on = limits();
        on.rate_limit_per_s = 10;
        assert!(on.rate_limiter().is_some());
    }
}
