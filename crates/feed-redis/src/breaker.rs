//! A circuit breaker per group of hash slots.
//!
//! The cluster fails by node: when one master is down, only its slots are.
//! So the breaker keeps one state per group of [`SLOTS_PER_GROUP`] slots
//! (64 groups): the groups of a dead master open after `failures` failed
//! calls in a row and answer at once with an error (the service then serves
//! fallback items), while the others stay closed. An open group lets one
//! probe through after `open_for` (and opens for another `open_for` as it
//! does, so a probe that never returns cannot hold the group open); the
//! probe's success closes the group, its failure keeps it open. A group straddling two masters is
//! shared by their users: it opens when either fails.
//!
//! Closed, the check is one atomic load; nothing here locks. (A general
//! breaker crate would keep one state for the whole cluster, or a lock per
//! call; a few atomics per slot group is all this needs.)

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::keys::SLOTS;

/// Groups of slots with a state of their own.
pub const GROUPS: usize = 64;
/// Slots in a group.
pub const SLOTS_PER_GROUP: u16 = SLOTS / GROUPS as u16;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failed calls in a row, in one group, that open it.
    pub failures: u32,
    /// How long an open group refuses calls before it lets a probe through.
    pub open_for: Duration,
}

/// What a call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The group is closed: call.
    Call,
    /// The group was open and this call is its probe.
    Probe,
    /// The group is open: do not call.
    Refuse,
}

/// How many groups are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerState {
    /// Groups calling through.
    pub closed: usize,
    /// Groups refusing calls (but for a probe now and then).
    pub open: usize,
}

impl BreakerState {
    /// `"closed"` when every group is, `"open"` when every group is open,
    /// `"partial"` otherwise.
    pub const fn name(&self) -> &'static str {
        match (self.open, self.closed) {
            (0, _) => "closed",
            (_, 0) => "open",
            _ => "partial",
        }
    }
}

#[derive(Debug, Default)]
struct Group {
    /// Failures in a row while closed.
    failures: AtomicU32,
    /// 0 while closed; otherwise the breaker's clock (ms) from which a probe
    /// may go.
    open_until: AtomicU64,
}

/// The breaker: see the module documentation.
#[derive(Debug)]
pub struct Breaker {
    groups: Box<[Group]>,
    settings: BreakerSettings,
    epoch: Instant,
    opened: AtomicU64,
}

impl Breaker {
    /// A breaker with every group closed.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            groups: (0..GROUPS).map(|_| Group::default()).collect(),
            settings: BreakerSettings {
                failures: settings.failures.max(1),
                ..settings
            },
            epoch: Instant::now(),
            opened: AtomicU64::new(0),
        }
    }

    /// The group of hash slot `slot`.
    pub const fn group_of(slot: u16) -> usize {
        (slot / SLOTS_PER_GROUP) as usize % GROUPS
    }

    /// Whether a call for `group` may go.
    pub fn admit(&self, group: usize) -> Admit {
        let state = &self.groups[group];
        let until = state.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Call;
        }
        let now = self.now_ms();
        if now < until {
            return Admit::Refuse;
        }
        // The one caller that moves the window on is the probe.
        let next = now + self.open_for_ms();
        match state
            .open_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Refuse,
        }
    }

    /// A call for `group` succeeded: the group is (again) closed.
    pub fn succeeded(&self, group: usize) {
        let state = &self.groups[group];
        if state.failures.load(Ordering::Relaxed) != 0 {
            state.failures.store(0, Ordering::Relaxed);
        }
        if state.open_until.load(Ordering::Acquire) != 0 {
            state.open_until.store(0, Ordering::Release);
        }
    }

    /// A call for `group` failed (`probe`: it was the group's probe).
    pub fn failed(&self, group: usize, probe: bool) {
        let state = &self.groups[group];
        if probe {
            self.open(state);
            return;
        }
        let failures = state.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.settings.failures && state.open_until.load(Ordering::Acquire) == 0 {
            self.open(state);
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn open(&self, state: &Group) {
        let until = self.now_ms() + self.open_for_ms();
        state.open_until.store(until, Ordering::Release);
        state.failures.store(0, Ordering::Relaxed);
    }

    /// How many groups are in each state.
    pub fn state(&self) -> BreakerState {
        let open = self
            .groups
            .iter()
            .filter(|g| g.open_until.load(Ordering::Acquire) != 0)
            .count();
        BreakerState {
            closed: GROUPS - open,
            open,
        }
    }

    fn open_for_ms(&self) -> u64 {
        u64::try_from(self.settings.open_for.as_millis()).unwrap_or(u64::MAX / 2)
    }

    /// How many times a closed group has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        // Starts at 1, so that 0 can mean "closed".
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_ms: u64) -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            open_for: Duration::from_millis(open_ms),
        })
    }

    #[test]
    fn opens_after_failures_in_a_row_and_only_that_group() {
        let breaker = breaker(60_000);
        breaker.failed(5, false);
        breaker.failed(5, false);
        breaker.succeeded(5);
        breaker.failed(5, false);
        breaker.failed(5, false);
        assert_eq!(breaker.admit(5), Admit::Call, "a success resets the count");
        breaker.failed(5, false);
        assert_eq!(breaker.admit(5), Admit::Refuse);
        assert_eq!(breaker.admit(6), Admit::Call);
        assert_eq!(
            breaker.state(),
            BreakerState {
                closed: GROUPS - 1,
                open: 1,
            }
        );
        assert_eq!(breaker.state().name(), "partial");
        assert_eq!(breaker.times_opened(), 1);
    }

    #[test]
    fn half_opens_with_one_probe_that_closes_or_reopens() {
        let breaker = breaker(20);
        for _ in 0..3 {
            breaker.failed(0, false);
        }
        assert_eq!(breaker.admit(0), Admit::Refuse);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(breaker.admit(0), Admit::Probe);
        assert_eq!(breaker.admit(0), Admit::Refuse, "one probe at a time");
        breaker.failed(0, true);
        assert_eq!(breaker.admit(0), Admit::Refuse, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(breaker.admit(0), Admit::Probe);
        // This probe never reports back (its request was dropped): another
        // goes after the next window.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(breaker.admit(0), Admit::Probe);
        breaker.succeeded(0);
        assert_eq!(breaker.admit(0), Admit::Call);
        assert_eq!(breaker.state().name(), "closed");
    }

    #[test]
    fn every_slot_has_a_group() {
        assert_eq!(Breaker::group_of(0), 0);
        assert_eq!(Breaker::group_of(SLOTS - 1), GROUPS - 1);
        assert_eq!(Breaker::group_of(SLOTS_PER_GROUP), 1);
    }
}
