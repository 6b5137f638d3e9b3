//! [`RateLimiter`]: a token bucket per client address.
//!
//! Implemented as GCRA (the generic cell rate algorithm, the same bucket the
//! `governor` crate uses): each client is one `AtomicU64` holding its
//! "theoretical arrival time", updated by one compare-and-swap, kept in the
//! lock-free `papaya` map the service already uses for offsets. That is the
//! whole state; `governor`'s keyed limiter would bring a second concurrent map
//! and a clock crate for the same arithmetic.
//!
//! Clients are keyed by IPv4 address, and by IPv6 /64 prefix: one IPv6
//! host usually holds a whole /64, so keying by full address would let it
//! take a fresh bucket per request. The map holds at most `max_clients`
//! keys; beyond that, new clients share one overflow bucket until
//! [`RateLimiter::sweep`] forgets idle ones. An address-spraying client thus
//! cannot grow the limiter's memory, and all it gains is one shared bucket.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Requests per second and burst for each client address.
#[derive(Debug)]
pub struct RateLimiter {
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// How far ahead of now a client's arrival time may run: `(burst - 1)`
    /// intervals, so a fresh client may send `burst` requests at once.
    tolerance: u64,
    epoch: Instant,
    max_clients: usize,
    clients: papaya::HashMap<IpAddr, AtomicU64, foldhash::fast::RandomState>,
    /// The bucket of every client that arrives while the map is full.
    overflow: AtomicU64,
}

/// The key of a client address: IPv4 as is, IPv6 by its /64 prefix
/// (IPv4-mapped IPv6 addresses as the IPv4 address they carry).
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

impl RateLimiter {
    /// Clients tracked one by one unless [`Self::with_max_clients`] says otherwise.
    const DEFAULT_MAX_CLIENTS: usize = 100_000;

    /// `per_second` requests a second with bursts of up to `burst`; `None`
    /// when `per_second` is 0 (rate limiting off).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        if per_second == 0 {
            return None;
        }
        let interval = 1_000_000_000 / u64::from(per_second);
        Some(Self {
            interval: interval.max(1),
            tolerance: interval * u64::from(burst.max(1) - 1),
            epoch: Instant::now(),
            max_clients: Self::DEFAULT_MAX_CLIENTS,
            clients: papaya::HashMap::default(),
            overflow: AtomicU64::new(0),
        })
    }

    /// Tracks at most `max_clients` clients one by one (at least 1).
    #[must_use]
    pub fn with_max_clients(mut self, max_clients: usize) -> Self {
        self.max_clients = max_clients.max(1);
        self
    }

    /// Takes one token for `client`. `Err(wait)` when it has none: the time
    /// until the next one.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.check_at(client, self.now())
    }

    fn now(&self) -> u64 {
        // Offset by the tolerance so that arithmetic never goes below zero.
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) + self.tolerance
    }

    fn check_at(&self, client: IpAddr, now: u64) -> Result<(), Duration> {
        let key = client_key(client);
        let clients = self.clients.pin();
        let arrival = match clients.get(&key) {
            Some(arrival) => arrival,
            None if clients.len() >= self.max_clients => &self.overflow,
            None => clients.get_or_insert_with(key, || AtomicU64::new(0)),
        };
        let next = |tat: u64| (tat <= now + self.tolerance).then(|| tat.max(now) + self.interval);
        match arrival.fetch_update(Ordering::Relaxed, Ordering::Relaxed, next) {
            Ok(_) => Ok(()),
            Err(tat) => Err(Duration::from_nanos(tat - self.tolerance - now)),
        }
    }

    /// Forgets clients whose bucket is full again, so that the map holds only
    /// recently active addresses. Call it now and then.
    pub fn sweep(&self) {
        let now = self.now();
        self.clients
            .pin()
            .retain(|_, tat| tat.load(Ordering::Relaxed) > now);
    }

    /// Clients currently tracked one by one.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn zero_rate_is_off() {
        assert!(RateLimiter::new(0, 10).is_none());
    }

    #[test]
    fn allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10, 5).unwrap();
        let t0 = limiter.tolerance + 5 * SECOND;
        for _ in 0..5 {
            assert!(limiter.check_at(A, t0).is_ok());
        }
        let wait = limiter.check_at(A, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another client has its own bucket.
        assert!(limiter.check_at(B, t0).is_ok());
        // A tenth of a second later, one more token.
        assert!(limiter.check_at(A, t0 + SECOND / 10).is_ok());
        assert!(limiter.check_at(A, t0 + SECOND / 10).is_err());
        // After a full second the bucket is full again.
        let t1 = t0 + 2 * SECOND;
        for _ in 0..5 {
            assert!(limiter.check_at(A, t1).is_ok());
        }
        assert!(limiter.check_at(A, t1).is_err());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_prefix() {
        let limiter = RateLimiter::new(1, 1).unwrap();
        let t0 = limiter.tolerance + SECOND;
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert!(limiter.check_at(v6("2001:db8:1:2::1"), t0).is_ok());
        // Same /64, other host bits: the same bucket.
        assert!(limiter.check_at(v6("2001:db8:1:2:ffff::9"), t0).is_err());
        // Another /64: its own bucket.
        assert!(limiter.check_at(v6("2001:db8:1:3::1"), t0).is_ok());
        // An IPv4-mapped address is the IPv4 client.
        assert!(limiter.check_at(A, t0).is_ok());
        assert!(limiter.check_at(v6("::ffff:10.0.0.1"), t0).is_err());
        assert_eq!(limiter.tracked(), 3);
    }

    #[test]
    fn spraying_addresses_cannot_grow_the_map_past_its_bound() {
        let limiter = RateLimiter::new(1, 2).unwrap().with_max_clients(100);
        let t0 = limiter.tolerance + SECOND;
        let mut allowed = 0;
        for n in 0..10_000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + n));
            allowed += usize::from(limiter.check_at(addr, t0).is_ok());
        }
        assert_eq!(limiter.tracked(), 100);
        // One request from each of 100 tracked clients, plus the overflow
        // bucket's burst of 2 shared by the other 9,900.
        assert_eq!(allowed, 100 + 2);
    }

    #[test]
    fn sweep_forgets_idle_clients() {
        let limiter = RateLimiter::new(1_000_000, 1).unwrap();
        limiter.check(A).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        limiter.sweep();
        assert_eq!(limiter.tracked(), 0);
    }
}
