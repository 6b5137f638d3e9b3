//! [`DirtyLog`]: which users' offsets moved since the last sync, so that a
//! sync reads only those.
//!
//! Architecture Invariant: a sync's work grows with the users who advanced
//! since the last one, never with the users who exist. Each worker thread
//! appends the position it advanced to a log of its own (one of
//! [`SHARDS`], picked once per thread), so a request adds one uncontended
//! lock of a cache line its own thread owns and a push into memory reserved
//! in advance: no shared atomic write, no allocation. The syncer drains the
//! logs; a log that fills up between two syncs stops recording and says
//! so, and the next sync then folds the whole array instead (correct, and
//! rare: a log holds [`SHARD_CAPACITY`] positions).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Logs per file: more than any server runs worker threads, so each worker
/// has its own.
const SHARDS: usize = 32;

/// Positions one log holds between two syncs (256 KiB, reserved at once:
/// untouched pages cost no memory).
pub(crate) const SHARD_CAPACITY: usize = 1 << 16;

/// The log a thread writes to, the same for every [`DirtyLog`].
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// One thread's log, alone on its cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<Positions>);

#[derive(Debug)]
struct Positions {
    moved: Vec<u32>,
    /// A position was not recorded because the log was full.
    overflowed: bool,
}

/// The positions whose offsets moved since the last [`DirtyLog::drain`].
#[derive(Debug)]
pub(crate) struct DirtyLog {
    shards: Box<[Shard]>,
}

impl DirtyLog {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Shard(Mutex::new(Positions {
                        moved: Vec::with_capacity(SHARD_CAPACITY),
                        overflowed: false,
                    }))
                })
                .collect(),
        }
    }

    /// Records that the offset at `position` moved.
    #[inline]
    pub(crate) fn record(&self, position: u32) {
        let shard = SHARD.with(|shard| *shard);
        let mut positions = self.shards[shard]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if positions.moved.len() < SHARD_CAPACITY {
            positions.moved.push(position);
        } else {
            positions.overflowed = true;
        }
    }

    /// Moves every recorded position into `into` (unsorted, possibly
    /// repeated) and empties the logs; `false` when a log overflowed, so
    /// that some moves were not recorded.
    pub(crate) fn drain(&self, into: &mut Vec<u32>) -> bool {
        let mut complete = true;
        for shard in &self.shards {
            let mut positions = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            into.extend_from_slice(&positions.moved);
            positions.moved.clear();
            complete &= !std::mem::take(&mut positions.overflowed);
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_every_thread_and_reports_overflow() {
        let log = std::sync::Arc::new(DirtyLog::new());
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let log = &log;
                scope.spawn(move || {
                    for i in 0..100 {
                        log.record(t * 1000 + i);
                    }
                });
            }
        });
        let mut moved = Vec::new();
        assert!(log.drain(&mut moved));
        moved.sort_unstable();
        let expected: Vec<u32> = (0..4)
            .flat_map(|t| (0..100).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(moved, expected);
        // Drained: empty now.
        moved.clear();
        assert!(log.drain(&mut moved));
        assert!(moved.is_empty());
        // One thread past its log's capacity.
        for i in 0..=SHARD_CAPACITY as u32 {
            log.record(i);
        }
        assert!(!log.drain(&mut moved));
        assert_eq!(moved.len(), SHARD_CAPACITY);
        moved.clear();
        assert!(log.drain(&mut moved), "the overflow is reported once");
    }
}
