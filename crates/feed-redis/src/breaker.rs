//! A circuit breaker per group of hash slots.
//!
//! The cluster fails by node: when one master is down, only its slots are.
//! So the breaker keeps one state per group of [`SLOTS_PER_GROUP`] slots
//! (64 groups): the groups of a dead master open after `failures` failed
//! calls in a row and answer at once with an error (the service then serves
//! fallback items), while the others stay closed. A group straddling two
//! masters is shared by their users: it opens when either fails.
//!
//! An open group lets one probe through after `open_for`, and opens for
//! another `open_for` as it does, so that a probe that never returns cannot
//! hold the group open.
//!
//! Architecture Invariant: only the probe closes an open group, and an
//! opening is counted once. Every call reports back with the [`Admit`] it
//! was given, so the breaker knows which call it hears from:
//!
//! - a call admitted while the group was closed ([`Admit::Call`]) never
//!   closes it: its success may be late news from before the group opened,
//!   and says nothing of the node now;
//! - a probe ([`Admit::Probe`]) closes the group only while it is still the
//!   group's probe: once a later probe has gone, an earlier one's answer is
//!   stale and changes nothing;
//! - a failed probe keeps the group open (for `open_for` from its failure):
//!   that is no new opening, so [`Breaker::times_opened`] counts each
//!   closed-to-open transition exactly once, however many calls fail at
//!   once and however many probes fail after.
//!
//! Each group is one atomic state word: the end of its open window in the
//! breaker's milliseconds, with [`CLOSED`] set while it is closed (the last
//! window is kept beside the flag). Every window a group opens is later
//! than all its earlier ones, so a probe is named by the window it opened,
//! and a compare-and-swap against it tells whether it is still the probe.
//! Closed, the check is one atomic load; nothing here locks, and the clock
//! is read only while a group is open or opening. (A general breaker crate
//! would keep one state for the whole cluster, or a lock per call; an atomic
//! state and a failure count per slot group is all this needs.)

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use feed_domain::CircuitState;

use crate::keys::SLOTS;

/// Groups of slots with a state of their own.
pub const GROUPS: usize = 64;
/// Slots in a group.
pub const SLOTS_PER_GROUP: u16 = SLOTS / GROUPS as u16;

/// The flag of a closed group's state word; without it, the word is the
/// end of the group's open window (see the module documentation).
const CLOSED: u64 = 1 << 63;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failed calls in a row, in one group, that open it.
    pub failures: u32,
    /// How long an open group refuses calls before it lets a probe through.
    pub open_for: Duration,
}

/// What a call may do. The caller hands it back with the call's outcome
/// ([`Breaker::succeeded`], [`Breaker::failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The group is closed: call.
    Call,
    /// The group is open and this call is its probe.
    Probe(ProbeId),
    /// The group is open: do not call.
    Refuse,
}

/// Which probe a call is: the end of the window it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeId(u64);

/// How many groups are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerState {
    /// Groups calling through.
    pub closed: usize,
    /// Groups refusing calls (but for a probe now and then).
    pub open: usize,
}

impl BreakerState {
    /// Closed when every group is, open when every group is open, partial
    /// otherwise.
    pub const fn circuit(&self) -> CircuitState {
        CircuitState::of(self.open, self.open + self.closed)
    }
}

/// Where the breaker reads the time: milliseconds on a scale that never
/// goes back. Tests drive a manual one; frontends use [`MonotonicClock`].
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since some fixed start.
    fn now_ms(&self) -> u64;
}

/// Milliseconds since it was made, from [`Instant`].
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug)]
struct Group {
    /// Failures in a row while closed.
    failures: AtomicU32,
    /// [`CLOSED`] and the last window, or the end of the open window.
    state: AtomicU64,
}

impl Default for Group {
    fn default() -> Self {
        Self {
            failures: AtomicU32::new(0),
            state: AtomicU64::new(CLOSED),
        }
    }
}

/// The breaker: see the module documentation.
#[derive(Debug)]
pub struct Breaker<C = MonotonicClock> {
    groups: Box<[Group]>,
    failures: u32,
    open_for_ms: u64,
    clock: C,
    opened: AtomicU64,
}

impl Breaker {
    /// A breaker with every group closed, on the real clock.
    pub fn new(settings: BreakerSettings) -> Self {
        Self::with_clock(settings, MonotonicClock::default())
    }

    /// The group of hash slot `slot`.
    pub const fn group_of(slot: u16) -> usize {
        (slot / SLOTS_PER_GROUP) as usize % GROUPS
    }
}

impl<C: Clock> Breaker<C> {
    /// A breaker with every group closed, reading the time from `clock`.
    pub fn with_clock(settings: BreakerSettings, clock: C) -> Self {
        Self {
            groups: (0..GROUPS).map(|_| Group::default()).collect(),
            failures: settings.failures.max(1),
            // At least 1 ms, so that every window ends after the last one;
            // and far from the flag bit.
            open_for_ms: u64::try_from(settings.open_for.as_millis())
                .unwrap_or(u64::MAX)
                .clamp(1, 1 << 48),
            clock,
            opened: AtomicU64::new(0),
        }
    }

    /// Whether a call for `group` may go.
    pub fn admit(&self, group: usize) -> Admit {
        let state = &self.groups[group].state;
        let until = state.load(Ordering::Acquire);
        if until & CLOSED != 0 {
            return Admit::Call;
        }
        let now = self.clock.now_ms();
        if now < until {
            return Admit::Refuse;
        }
        // The one caller that moves the window on is the probe.
        let next = self.window(now, until);
        match state.compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Admit::Probe(ProbeId(next)),
            Err(_) => Admit::Refuse,
        }
    }

    /// The call for `group` that was `admitted` succeeded. A probe that is
    /// still the group's probe closes it; any other call only ends a run of
    /// failures.
    pub fn succeeded(&self, group: usize, admitted: Admit) {
        let group = &self.groups[group];
        match admitted {
            Admit::Call => {
                if group.failures.load(Ordering::Relaxed) != 0 {
                    group.failures.store(0, Ordering::Relaxed);
                }
            }
            Admit::Probe(ProbeId(window)) => {
                let closed = group.state.compare_exchange(
                    window,
                    window | CLOSED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if closed.is_ok() {
                    group.failures.store(0, Ordering::Relaxed);
                }
            }
            Admit::Refuse => {}
        }
    }

    /// The call for `group` that was `admitted` failed. The failure that
    /// makes `failures` in a row of a closed group opens it (and is the one
    /// that counts the opening); failures of calls admitted before it
    /// opened count for nothing. A failed probe that is still the group's
    /// probe keeps it open for another `open_for` from now: the same
    /// opening, not a new one.
    pub fn failed(&self, group: usize, admitted: Admit) {
        let group = &self.groups[group];
        match admitted {
            Admit::Call => {
                let closed = group.state.load(Ordering::Acquire);
                if closed & CLOSED == 0 {
                    return;
                }
                let failures = group.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failures < self.failures {
                    return;
                }
                let until = self.window(self.clock.now_ms(), closed & !CLOSED);
                let opened = group.state.compare_exchange(
                    closed,
                    until,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if opened.is_ok() {
                    group.failures.store(0, Ordering::Relaxed);
                    self.opened.fetch_add(1, Ordering::Relaxed);
                }
            }
            Admit::Probe(ProbeId(window)) => {
                let until = self.window(self.clock.now_ms(), window);
                // Not the probe any more: a later one owns the window.
                let _ = group.state.compare_exchange(
                    window,
                    until,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            Admit::Refuse => {}
        }
    }

    /// The end of a window opened at `now`: `open_for` later, and after
    /// `last`, the end of the group's previous window.
    fn window(&self, now: u64, last: u64) -> u64 {
        now.saturating_add(self.open_for_ms)
            .max(last + 1)
            .min(CLOSED - 1)
    }

    /// How many groups are in each state.
    pub fn state(&self) -> BreakerState {
        let open = self
            .groups
            .iter()
            .filter(|g| g.state.load(Ordering::Acquire) & CLOSED == 0)
            .count();
        BreakerState {
            closed: GROUPS - open,
            open,
        }
    }

    /// How many times a closed group has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves only when told to.
    #[derive(Debug, Default)]
    struct Manual(AtomicU64);

    impl Manual {
        fn advance(&self, ms: u64) {
            self.0.fetch_add(ms, Ordering::Relaxed);
        }
    }

    impl Clock for Manual {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    /// A breaker that opens after 3 failures, for `open_ms`, on a manual clock.
    fn breaker(open_ms: u64) -> Breaker<Manual> {
        Breaker::with_clock(
            BreakerSettings {
                failures: 3,
                open_for: Duration::from_millis(open_ms),
            },
            Manual::default(),
        )
    }

    /// Opens `group` with three failed calls.
    fn open(breaker: &Breaker<Manual>, group: usize) {
        for _ in 0..3 {
            breaker.failed(group, Admit::Call);
        }
        assert_eq!(breaker.admit(group), Admit::Refuse);
    }

    /// The probe `breaker` lets through for `group` now.
    fn probe(breaker: &Breaker<Manual>, group: usize) -> Admit {
        let admitted = breaker.admit(group);
        assert!(matches!(admitted, Admit::Probe(_)), "{admitted:?}");
        admitted
    }

    #[test]
    fn opens_after_failures_in_a_row_and_only_that_group() {
        let breaker = breaker(60_000);
        breaker.failed(5, Admit::Call);
        breaker.failed(5, Admit::Call);
        breaker.succeeded(5, Admit::Call);
        breaker.failed(5, Admit::Call);
        breaker.failed(5, Admit::Call);
        assert_eq!(breaker.admit(5), Admit::Call, "a success resets the count");
        breaker.failed(5, Admit::Call);
        assert_eq!(breaker.admit(5), Admit::Refuse);
        assert_eq!(breaker.admit(6), Admit::Call);
        assert_eq!(
            breaker.state(),
            BreakerState {
                closed: GROUPS - 1,
                open: 1,
            }
        );
        assert_eq!(breaker.state().circuit(), CircuitState::Partial);
        assert_eq!(breaker.times_opened(), 1);
    }

    #[test]
    fn half_opens_with_one_probe_that_closes_or_keeps_it_open() {
        let breaker = breaker(20);
        open(&breaker, 0);
        breaker.clock.advance(19);
        assert_eq!(breaker.admit(0), Admit::Refuse, "not before open_for");
        breaker.clock.advance(1);
        let first = probe(&breaker, 0);
        assert_eq!(breaker.admit(0), Admit::Refuse, "one probe at a time");
        breaker.clock.advance(5);
        breaker.failed(0, first);
        assert_eq!(
            breaker.admit(0),
            Admit::Refuse,
            "a failed probe keeps it open"
        );
        breaker.clock.advance(19);
        assert_eq!(
            breaker.admit(0),
            Admit::Refuse,
            "for open_for from the failure"
        );
        breaker.clock.advance(1);
        let _lost = probe(&breaker, 0);
        // This probe never reports back (its request was dropped): another
        // goes after the next window.
        breaker.clock.advance(20);
        let last = probe(&breaker, 0);
        breaker.succeeded(0, last);
        assert_eq!(breaker.admit(0), Admit::Call);
        assert_eq!(breaker.state().circuit(), CircuitState::Closed);
        assert_eq!(
            breaker.times_opened(),
            1,
            "one opening, however many probes"
        );
    }

    #[test]
    fn a_late_success_of_a_call_admitted_before_the_opening_does_not_close_it() {
        let breaker = breaker(20);
        let early = breaker.admit(3);
        assert_eq!(early, Admit::Call);
        open(&breaker, 3);
        breaker.succeeded(3, early);
        assert_eq!(breaker.admit(3), Admit::Refuse, "still open");
        // Nor once its probe is out.
        breaker.clock.advance(20);
        let probe = probe(&breaker, 3);
        breaker.succeeded(3, Admit::Call);
        assert_eq!(breaker.admit(3), Admit::Refuse);
        breaker.succeeded(3, probe);
        assert_eq!(breaker.admit(3), Admit::Call, "the probe closes it");
    }

    #[test]
    fn a_superseded_probe_neither_closes_nor_reopens_the_group() {
        let breaker = breaker(20);
        open(&breaker, 7);
        breaker.clock.advance(20);
        let stale = probe(&breaker, 7);
        breaker.clock.advance(20);
        let current = probe(&breaker, 7);
        breaker.succeeded(7, stale);
        assert_eq!(
            breaker.admit(7),
            Admit::Refuse,
            "only the current probe closes it"
        );
        breaker.succeeded(7, current);
        assert_eq!(breaker.admit(7), Admit::Call);
        breaker.failed(7, stale);
        breaker.failed(7, current);
        assert_eq!(
            breaker.admit(7),
            Admit::Call,
            "a probe's late failure reopens nothing"
        );
        assert_eq!(breaker.state().circuit(), CircuitState::Closed);
        assert_eq!(breaker.times_opened(), 1);
    }

    #[test]
    fn an_opening_is_counted_once_however_many_calls_fail() {
        let crowd = breaker(20);
        let breaker = breaker(20);
        // Calls admitted before the opening fail after it: no new opening.
        let late: Vec<Admit> = (0..5).map(|_| breaker.admit(1)).collect();
        open(&breaker, 1);
        for admitted in late {
            breaker.failed(1, admitted);
        }
        assert_eq!(breaker.times_opened(), 1);
        // Closed again, the next run of failures is the next opening.
        breaker.clock.advance(20);
        let probe = probe(&breaker, 1);
        breaker.succeeded(1, probe);
        breaker.failed(1, Admit::Call);
        breaker.failed(1, Admit::Call);
        assert_eq!(breaker.admit(1), Admit::Call, "a fresh count after closing");
        breaker.failed(1, Admit::Call);
        assert_eq!(breaker.admit(1), Admit::Refuse);
        assert_eq!(breaker.times_opened(), 2);

        // Many threads failing at once, in every group: one opening each,
        // whatever the interleaving.
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        for group in 0..GROUPS {
                            crowd.failed(group, Admit::Call);
                        }
                    }
                });
            }
        });
        assert_eq!(crowd.state().circuit(), CircuitState::Open);
        assert_eq!(crowd.times_opened(), GROUPS as u64);
    }

    #[test]
    fn every_slot_has_a_group() {
        assert_eq!(Breaker::group_of(0), 0);
        assert_eq!(Breaker::group_of(SLOTS - 1), GROUPS - 1);
        assert_eq!(Breaker::group_of(SLOTS_PER_GROUP), 1);
    }
}
