//! [`LogBudget`]: at most N log lines a second for one kind of event, with
//! the number left out carried into the next line written.
//!
//! Unknown users, random fills and error answers are normal traffic for a
//! feed service; they are all counted in the metrics, and the log only has
//! to show what they look like. A flood of them costs at most N lines a
//! second, never the log's bandwidth or the requests' time.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// A per-second budget of log lines. Lock-free: a call that may log costs a
/// few atomic operations on shared lines (at most `per_second` such calls a
/// second); one that may not costs two loads of shared lines and one
/// increment on the calling thread's own line, so a flood of events does
/// not make the workers contend.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    epoch: Instant,
    /// The second (since `epoch`) that `used` counts.
    window: AtomicU64,
    used: AtomicU32,
    /// Lines left out, per thread shard, summed (and reset) when one is
    /// written.
    suppressed: Box<[Padded]>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl LogBudget {
    /// At most `per_second` lines a second (0: none at all).
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: (0..*crate::counters::SHARDS.get_or_init(crate::counters::shard_count))
                .map(|_| Padded::default())
                .collect(),
        }
    }

    /// `Some(n)` when a line may be written now, with `n` the lines left
    /// out since the last one written (to say so in it); `None` when this
    /// second's budget is spent (and the line is counted as left out).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(self.epoch.elapsed().as_secs())
    }

    fn admit_at(&self, second: u64) -> Option<u64> {
        let window = self.window.load(Ordering::Relaxed);
        if second > window
            && self
                .window
                .compare_exchange(window, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.load(Ordering::Relaxed) < self.per_second
            && self.used.fetch_add(1, Ordering::Relaxed) < self.per_second
        {
            Some(
                self.suppressed
                    .iter()
                    .map(|shard| shard.0.swap(0, Ordering::Relaxed))
                    .sum(),
            )
        } else {
            let shard = crate::counters::shard_index() % self.suppressed.len();
            self.suppressed[shard].0.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_costs_at_most_the_budget_and_is_summed_up() {
        let budget = LogBudget::new(3);
        let first_second: Vec<_> = (0..1000).map(|_| budget.admit_at(0)).collect();
        assert_eq!(first_second.iter().flatten().count(), 3);
        assert_eq!(&first_second[..3], &[Some(0), Some(0), Some(0)]);
        // The next second: the first line says what was left out.
        assert_eq!(budget.admit_at(1), Some(997));
        assert_eq!(budget.admit_at(1), Some(0));
        assert_eq!(budget.admit_at(1), Some(0));
        assert_eq!(budget.admit_at(1), None);
        assert_eq!(budget.admit_at(5), Some(1));
    }

    #[test]
    fn threads_share_one_budget() {
        let budget = LogBudget::new(50);
        // The window turns over once, before the threads race for it (the
        // turn-over itself may let a line or two more through).
        assert_eq!(budget.admit_at(7), Some(0));
        let written: usize = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..1000).filter(|_| budget.admit_at(7).is_some()).count()))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(written, 49);
    }
}
