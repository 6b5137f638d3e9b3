//! What a storage adapter reports about itself, for the delivery layer to
//! show without knowing which storage it is: the health of a remote store
//! ([`StorageHealth`]) and the state of its circuit breaker
//! ([`CircuitState`]).

/// The state of a circuit breaker that guards several groups of a remote
/// store (a Redis Cluster's slot groups) one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Every group calls through.
    Closed,
    /// Some groups refuse calls, others call through.
    Partial,
    /// Every group refuses calls (but for a probe now and then).
    Open,
}

impl CircuitState {
    /// The state of `groups` groups of which `open` are open.
    pub const fn of(open: usize, groups: usize) -> Self {
        match open {
            0 => Self::Closed,
            open if open >= groups => Self::Open,
            _ => Self::Partial,
        }
    }

    /// `"closed"`, `"partial"` or `"open"`: the value shown in metrics and
    /// stats.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Partial => "partial",
            Self::Open => "open",
        }
    }
}

/// The health of a remote feed storage (none for an in-process one): its
/// circuit breaker, which fails calls at once for the groups of a node that
/// is down, and the data version it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageHealth {
    /// What the storage is, e.g. `"redis"`.
    pub kind: &'static str,
    /// Its circuit breaker over all groups.
    pub breaker: CircuitState,
    /// Groups whose breaker is open.
    pub open_groups: u64,
    /// Groups in all.
    pub groups: u64,
    /// Times a group's breaker has opened, since start.
    pub opened_total: u64,
    /// The data version being served.
    pub version: u64,
    /// The data version the storage says to serve (0: none yet). It
    /// differs from `version` while this instance cannot switch to it (a
    /// snapshot it lacks, a version it refuses): an operator's alarm.
    pub published: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circuit_is_closed_partial_or_open_by_its_open_groups() {
        for (open, groups, state, label) in [
            (0, 4, CircuitState::Closed, "closed"),
            (1, 4, CircuitState::Partial, "partial"),
            (3, 4, CircuitState::Partial, "partial"),
            (4, 4, CircuitState::Open, "open"),
        ] {
            assert_eq!(CircuitState::of(open, groups), state);
            assert_eq!(state.label(), label);
        }
    }
}
