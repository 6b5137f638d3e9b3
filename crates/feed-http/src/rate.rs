//! [`RateLimiter`]: a token bucket per client address.
//!
//! Implemented as GCRA (the generic cell rate algorithm, the same bucket the
//! `governor` crate uses): each client is one `AtomicU64` holding its
//! "theoretical arrival time", updated by one compare-and-swap, kept in the
//! lock-free `papaya` map the service already uses for offsets. That is the
//! whole state; `governor`'s keyed limiter would bring a second concurrent map
//! and a clock crate for the same arithmetic.

use std::net::IpAddr;
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
    clients: papaya::HashMap<IpAddr, AtomicU64, foldhash::fast::RandomState>,
}

impl RateLimiter {
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
            clients: papaya::HashMap::default(),
        })
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
        let clients = self.clients.pin();
        let arrival = match clients.get(&client) {
            Some(arrival) => arrival,
            None => clients.get_or_insert_with(client, || AtomicU64::new(0)),
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

    /// Client addresses currently tracked.
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
    fn sweep_forgets_idle_clients() {
        let limiter = RateLimiter::new(1_000_000, 1).unwrap();
        limiter.check(A).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        limiter.sweep();
        assert_eq!(limiter.tracked(), 0);
    }
}
