//! [`TrustedProxies`]: who the client of a request is when it came through
//! a load balancer or reverse proxy.
//!
//! Behind a proxy every request's peer is the proxy. A proxy that the
//! operator trusts (`limits.trusted_proxies`) appends the address it got
//! the request from to `X-Forwarded-For`, so the client is found by walking
//! that list from the right: each trusted address is one more proxy of ours
//! and is skipped; the first address that is not trusted is the client, the
//! one no proxy of ours vouches for beyond. Addresses further left were
//! written by the client itself and are never believed. A request whose peer
//! is not trusted is its own client: its `X-Forwarded-For` is ignored, so a
//! client cannot choose its own rate-limit bucket by sending the header.
//!
//! Several `X-Forwarded-For` headers are one list, in order. Empty list
//! elements are skipped (HTTP list syntax allows them). An entry is an
//! IPv4 or IPv6 address, optionally with a port (`192.0.2.1:5000`,
//! `[2001:db8::1]:443`) or in brackets (`[2001:db8::1]`); an IPv4-mapped
//! IPv6 address is read as its IPv4 address.
//!
//! A malformed entry (`unknown`, a host name, garbage) ends the walk, and
//! the client is the last address walked over: the nearest of our proxies'
//! own sources, which is exactly what that proxy saw (or the peer, when the
//! malformed entry is the rightmost). Reading on past it would believe
//! addresses that a broken or hostile hop wrote; falling back to the peer
//! would put every such request in the bucket of our first proxy. When
//! every address in the list is trusted, the client is the leftmost: the
//! request came from inside the trusted ranges.
//!
//! The work is one pass over the header bytes, bounded by the request's
//! header size limit, and none at all when the list of trusted ranges is
//! empty (the default): then the gate uses the peer after one branch.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use actix_web::http::header::{HeaderMap, X_FORWARDED_FOR};
use ipnet::IpNet;

/// The address ranges whose requests are taken to come from our own
/// proxies. Parsed once at start, from a comma-separated list of CIDR
/// ranges (`10.0.0.0/8, 2001:db8::/32`); a bare address is a range of one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Box<[IpNet]>,
}

/// A `limits.trusted_proxies` entry that is not a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadProxyRange {
    /// Not an address, nor an address with a prefix length in range.
    #[error("`{0}` is not a CIDR range such as 10.0.0.0/8 or fd00::/8, nor an address")]
    Syntax(String),
    /// Bits set below the prefix: likely a typo that trusts more than meant.
    #[error("`{given}` has bits set past its prefix length: write {network} for the range")]
    HostBits {
        /// As written.
        given: String,
        /// The range it names, written properly.
        network: IpNet,
    },
}

impl FromStr for TrustedProxies {
    type Err = BadProxyRange;

    /// Empty elements (and an empty list) are allowed; every other element
    /// must be a range (`192.0.2.0/24`, `2001:db8::/32`) or an address.
    fn from_str(list: &str) -> Result<Self, BadProxyRange> {
        let nets = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let net = match entry.parse::<IpNet>() {
                    Ok(net) => net,
                    Err(_) => entry
                        .parse::<IpAddr>()
                        .map(IpNet::from)
                        .map_err(|_| BadProxyRange::Syntax(entry.to_owned()))?,
                };
                if net.trunc() != net {
                    return Err(BadProxyRange::HostBits {
                        given: entry.to_owned(),
                        network: net.trunc(),
                    });
                }
                Ok(net)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }
}

impl TrustedProxies {
    /// No trusted proxy: every request's client is its peer.
    pub fn none() -> Self {
        Self::default()
    }

    /// No range is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The ranges, as parsed.
    pub fn ranges(&self) -> &[IpNet] {
        &self.nets
    }

    /// `addr` (in canonical form) is in a trusted range.
    pub(crate) fn trusts(&self, addr: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(&addr))
    }

    /// The client of a request from `peer` with these `headers`: `peer`
    /// unless it is trusted, else the rightmost untrusted address of
    /// `X-Forwarded-For` (see the module's documentation for malformed
    /// entries). Never panics, whatever the header holds.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all(X_FORWARDED_FOR).rev() {
            for entry in value.as_bytes().rsplit(|&b| b == b',') {
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                let Some(addr) = forwarded_address(entry) else {
                    return client;
                };
                if !self.trusts(addr) {
                    return addr;
                }
                client = addr;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry as an address, in canonical form: `addr`,
/// `addr:port`, `[v6]` or `[v6]:port`; `None` for anything else.
fn forwarded_address(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    let addr = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })?;
    Some(addr.to_canonical())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(X_FORWARDED_FOR, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    /// The client of a request from `peer` with `X-Forwarded-For` headers
    /// `xff`, with `trusted` ranges, is `expected`.
    fn check(trusted: &str, peer: &str, xff: &[&str], expected: &str) {
        let proxies: TrustedProxies = trusted.parse().unwrap();
        let values: Vec<&[u8]> = xff.iter().map(|v| v.as_bytes()).collect();
        assert_eq!(
            proxies.client(ip(peer), &headers(&values)),
            ip(expected),
            "trusted {trusted:?}, peer {peer}, X-Forwarded-For {xff:?}"
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        check("", "203.0.113.9", &["198.51.100.1"], "203.0.113.9");
        check(
            "10.0.0.0/8",
            "203.0.113.9",
            &["198.51.100.1"],
            "203.0.113.9",
        );
        check("10.0.0.0/8", "203.0.113.9", &[], "203.0.113.9");
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        let trusted = "10.0.0.0/8, 127.0.0.1";
        check(trusted, "127.0.0.1", &["198.51.100.1"], "198.51.100.1");
        // The client's own (spoofed) entries, left of what our proxy wrote,
        // are not believed.
        check(
            trusted,
            "127.0.0.1",
            &["1.1.1.1, 2.2.2.2, 198.51.100.1"],
            "198.51.100.1",
        );
        // Two of our proxies in a row.
        check(
            trusted,
            "127.0.0.1",
            &["6.6.6.6, 198.51.100.1, 10.1.2.3"],
            "198.51.100.1",
        );
        // Several headers are one list, in order.
        check(
            trusted,
            "127.0.0.1",
            &["6.6.6.6, 198.51.100.1", "10.1.2.3", " "],
            "198.51.100.1",
        );
        // No header: the peer.
        check(trusted, "127.0.0.1", &[], "127.0.0.1");
        // Every address trusted: the leftmost.
        check(trusted, "127.0.0.1", &["10.9.9.9, 10.1.2.3"], "10.9.9.9");
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_read() {
        let trusted = "127.0.0.0/8, ::1";
        check(trusted, "::1", &["2001:db8::7"], "2001:db8::7");
        check(trusted, "::1", &["[2001:db8::7]:443"], "2001:db8::7");
        check(trusted, "::1", &["[2001:db8::7]"], "2001:db8::7");
        check(trusted, "::1", &["198.51.100.1:5000"], "198.51.100.1");
        check(
            trusted,
            "::ffff:127.0.0.1",
            &["198.51.100.1"],
            "198.51.100.1",
        );
        check(
            trusted,
            "127.0.0.1",
            &["::ffff:198.51.100.1"],
            "198.51.100.1",
        );
        check(
            trusted,
            "127.0.0.1",
            &["::ffff:127.0.0.2, ::1"],
            "127.0.0.2",
        );
    }

    #[test]
    fn a_malformed_entry_ends_the_walk_at_the_last_address_walked() {
        let trusted = "10.0.0.0/8";
        check(trusted, "10.0.0.1", &["unknown"], "10.0.0.1");
        check(
            trusted,
            "10.0.0.1",
            &["1.2.3.4, garbage, 10.2.0.1"],
            "10.2.0.1",
        );
        check(trusted, "10.0.0.1", &["1.2.3.4, 999.1.1.1"], "10.0.0.1");
        check(trusted, "10.0.0.1", &["1.2.3.4 5.6.7.8"], "10.0.0.1");
        // Empty elements are not malformed.
        check(trusted, "10.0.0.1", &[",1.2.3.4,, ,"], "1.2.3.4");
    }

    #[test]
    fn non_utf8_bytes_are_malformed_not_a_panic() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let map = headers(&[b"1.2.3.4, \xff\xfe, 10.0.0.3"]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &map), ip("10.0.0.3"));
    }

    #[test]
    fn the_list_is_parsed_strictly() {
        let parsed: TrustedProxies = " 10.0.0.0/8 ,, fd00::/8, 127.0.0.1 ,".parse().unwrap();
        let ranges: Vec<String> = parsed.ranges().iter().map(ToString::to_string).collect();
        assert_eq!(ranges, ["10.0.0.0/8", "fd00::/8", "127.0.0.1/32"]);
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert!(" , ".parse::<TrustedProxies>().unwrap().is_empty());
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "localhost",
            "10.0.0.0/",
            "*",
        ] {
            let error = bad.parse::<TrustedProxies>().unwrap_err();
            assert!(
                error.to_string().contains(bad),
                "{bad}: {error} does not name it"
            );
        }
        let error = "10.0.0.1/8".parse::<TrustedProxies>().unwrap_err();
        assert!(error.to_string().contains("10.0.0.0/8"), "{error}");
    }

    proptest! {
        /// Whatever the headers hold, the answer is the peer or an address
        /// written in them, and an untrusted peer is always its own client.
        #[test]
        fn never_panics_and_answers_the_peer_or_a_listed_address(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just("10.0.0.1".to_owned()), Just("198.51.100.7".to_owned()),
                    Just("[::1]:80".to_owned()), Just("::ffff:10.1.1.1".to_owned()),
                    Just(",".to_owned()), Just(" ".to_owned()), "[0-9a-f:.\\[\\], ]{0,12}",
                ],
                0..12,
            ),
            peer_trusted in any::<bool>(),
        ) {
            let proxies: TrustedProxies = "10.0.0.0/8, ::1/128".parse().unwrap();
            let peer = if peer_trusted { ip("10.0.0.9") } else { ip("203.0.113.1") };
            let mut map = HeaderMap::new();
            let name = HeaderName::from_static("x-forwarded-for");
            for value in values.iter().filter_map(|v| HeaderValue::from_bytes(v).ok()) {
                map.append(name.clone(), value);
            }
            if let Ok(value) = HeaderValue::from_str(&pieces.concat()) {
                map.append(name, value);
            }
            let client = proxies.client(peer, &map);
            if peer_trusted {
                let listed = map.get_all(X_FORWARDED_FOR).any(|v| {
                    v.as_bytes()
                        .split(|&b| b == b',')
                        .filter_map(|e| forwarded_address(e.trim_ascii()))
                        .any(|a| a == client)
                });
                prop_assert!(client == peer || listed, "{client} is neither the peer nor listed");
            } else {
                prop_assert_eq!(client, peer);
            }
        }
    }
}
