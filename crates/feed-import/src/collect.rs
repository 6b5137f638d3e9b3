//! The feeds as they are read: [`Collector`] validates nothing itself (the
//! readers convert each value and say what is wrong with it) but drops
//! repeated items, counts rows, and hands each feed, with the place it was
//! read at ([`Place`]), to a [`Target`]: the sink directly when the input
//! is in user order, or the sorter ([`crate::sort`]) otherwise.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Problem;

/// Feeds at most this long are checked for repeats by a scan of the items
/// kept so far; longer ones through [`Seen`].
const SHORT_FEED: usize = 16;

/// Rows between two looks at the interruption flag.
const LOOK_EVERY: u64 = 1024;

/// Bits of a [`Place`] that hold the row or line.
const POSITION_BITS: u32 = 40;

/// Where a feed was read: the input's index and the row (Parquet) or line
/// (JSON Lines), 1-based, in one `u64` that orders places as the input
/// reads: by file, then by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Place(pub(crate) u64);

impl Place {
    /// The most inputs one import reads.
    pub(crate) const MAX_FILES: usize = 1 << (64 - POSITION_BITS);

    pub(crate) fn new(file: usize, position: u64) -> Self {
        debug_assert!(file < Self::MAX_FILES && position < 1 << POSITION_BITS);
        Self(((file as u64) << POSITION_BITS) | position)
    }

    pub(crate) fn file(self) -> usize {
        (self.0 >> POSITION_BITS) as usize
    }

    pub(crate) fn position(self) -> u64 {
        self.0 & ((1 << POSITION_BITS) - 1)
    }
}

/// Where the collector sends each checked feed.
pub(crate) trait Target {
    /// Takes `user`'s feed, read at `place`. `Err(())` stops the reading;
    /// the target keeps the reason.
    fn accept(&mut self, user: u64, place: Place, feed: &[u32]) -> Result<(), ()>;
}

/// Why a feed was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A value of the row is bad.
    Value(Problem),
    /// The target (or an interruption) stopped the import; the reason is
    /// kept by whoever stopped it.
    Halt,
}

impl From<Problem> for Refused {
    fn from(problem: Problem) -> Self {
        Self::Value(problem)
    }
}

/// Facts about the feeds read, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stats {
    pub(crate) rows: u64,
    pub(crate) duplicates_dropped: u64,
}

/// The feeds as they are read (see the module doc).
pub(crate) struct Collector<'a> {
    target: &'a mut dyn Target,
    interrupt: Option<&'a AtomicBool>,
    /// Set when the reading stopped for `interrupt`.
    pub(crate) interrupted: bool,
    file: usize,
    stats: Stats,
    feed: Vec<u32>,
    seen: Seen,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(target: &'a mut dyn Target, interrupt: Option<&'a AtomicBool>) -> Self {
        Self {
            target,
            interrupt,
            interrupted: false,
            file: 0,
            stats: Stats::default(),
            feed: Vec::new(),
            seen: Seen::default(),
        }
    }

    /// Starts the input file of index `file`.
    pub(crate) fn begin_source(&mut self, file: usize) {
        self.file = file;
    }

    /// The users (rows) read so far, across all files.
    pub(crate) const fn rows(&self) -> u64 {
        self.stats.rows
    }

    pub(crate) const fn stats(&self) -> Stats {
        self.stats
    }

    /// Hands on `user`'s feed of `len` items, the `k`-th given by
    /// `item(k)`, keeping the first place of an item that repeats;
    /// `position` is the user's row or line. On a bad value nothing is
    /// handed on.
    pub(crate) fn push_feed(
        &mut self,
        user: u64,
        position: u64,
        len: usize,
        mut item: impl FnMut(usize) -> Result<u32, Problem>,
    ) -> Result<(), Refused> {
        let feed = &mut self.feed;
        feed.clear();
        feed.reserve(len);
        let mut dropped = 0;
        if len <= SHORT_FEED {
            for k in 0..len {
                let id = item(k)?;
                if feed.contains(&id) {
                    dropped += 1;
                } else {
                    feed.push(id);
                }
            }
        } else {
            self.seen.reset(len);
            for k in 0..len {
                let id = item(k)?;
                if self.seen.insert(id) {
                    feed.push(id);
                } else {
                    dropped += 1;
                }
            }
        }
        self.stats.duplicates_dropped += dropped;
        self.stats.rows += 1;
        if self.stats.rows.is_multiple_of(LOOK_EVERY)
            && self
                .interrupt
                .is_some_and(|flag| flag.load(Ordering::Relaxed))
        {
            self.interrupted = true;
            return Err(Refused::Halt);
        }
        self.target
            .accept(user, Place::new(self.file, position), &self.feed)
            .map_err(|()| Refused::Halt)
    }
}

/// `value`, the `index`-th of a feed, as an item id.
pub(crate) fn item_id(value: i128, index: usize) -> Result<u32, Problem> {
    match u32::try_from(value) {
        Ok(id) if id != 0 => Ok(id),
        _ => Err(Problem::ElementOutOfRange { index, value }),
    }
}

/// A set of the items of one feed: open addressing over `(generation, item)`
/// slots, so starting the next feed is one increment, not a clear.
#[derive(Default)]
struct Seen {
    slots: Vec<u64>,
    generation: u32,
    /// `64 - log2(table size in use)`.
    shift: u32,
}

impl Seen {
    /// Empties the set and sizes it for `len` items (at most half full).
    fn reset(&mut self, len: usize) {
        let size = (2 * len).next_power_of_two().max(32);
        if self.slots.len() < size {
            self.slots.resize(size, 0);
        }
        self.shift = 64 - size.trailing_zeros();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.slots.fill(0);
            self.generation = 1;
        }
    }

    /// Adds `item`; false if it was already there.
    fn insert(&mut self, item: u32) -> bool {
        let tag = u64::from(self.generation) << 32;
        let mask = (1usize << (64 - self.shift)) - 1;
        let mut slot = (u64::from(item).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
        loop {
            let held = self.slots[slot];
            if held & !0xFFFF_FFFF != tag {
                self.slots[slot] = tag | u64::from(item);
                return true;
            }
            if held as u32 == item {
                return false;
            }
            slot = (slot + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what it is given.
    #[derive(Default)]
    struct Keep(Vec<(u64, Place, Vec<u32>)>);

    impl Target for Keep {
        fn accept(&mut self, user: u64, place: Place, feed: &[u32]) -> Result<(), ()> {
            self.0.push((user, place, feed.to_vec()));
            Ok(())
        }
    }

    fn push(
        collector: &mut Collector<'_>,
        user: u64,
        row: u64,
        feed: &[u32],
    ) -> Result<(), Refused> {
        collector.push_feed(user, row, feed.len(), |k| Ok(feed[k]))
    }

    #[test]
    fn repeated_items_keep_their_first_place_short_and_long() {
        let mut keep = Keep::default();
        let mut collector = Collector::new(&mut keep, None);
        collector.begin_source(2);
        push(&mut collector, 9, 1, &[3, 1, 3, 2, 1]).unwrap();
        let long: Vec<u32> = (0..100).map(|k| k % 40 + 1).collect();
        push(&mut collector, 4, 2, &long).unwrap();
        let stats = collector.stats();
        assert_eq!(
            stats,
            Stats {
                rows: 2,
                duplicates_dropped: 2 + 60
            }
        );
        assert_eq!(keep.0[0], (9, Place::new(2, 1), vec![3, 1, 2]));
        assert_eq!(keep.0[1].2, (1..=40).collect::<Vec<_>>());
        assert_eq!((keep.0[1].1.file(), keep.0[1].1.position()), (2, 2));
    }

    #[test]
    fn a_bad_value_hands_nothing_on() {
        let mut keep = Keep::default();
        let mut collector = Collector::new(&mut keep, None);
        let refused = collector.push_feed(2, 1, 3, |k| {
            if k < 2 {
                Ok(9)
            } else {
                Err(Problem::NullElement { index: k })
            }
        });
        assert_eq!(
            refused,
            Err(Refused::Value(Problem::NullElement { index: 2 }))
        );
        assert_eq!(collector.rows(), 0);
        assert!(keep.0.is_empty());
    }

    #[test]
    fn an_interruption_stops_the_reading() {
        let flag = AtomicBool::new(true);
        let mut keep = Keep::default();
        let mut collector = Collector::new(&mut keep, Some(&flag));
        let mut stopped = None;
        for row in 1..=2 * LOOK_EVERY {
            if push(&mut collector, row, row, &[1]).is_err() {
                stopped = Some(row);
                break;
            }
        }
        assert_eq!(stopped, Some(LOOK_EVERY));
        assert!(collector.interrupted);
    }

    #[test]
    fn seen_starts_each_feed_empty() {
        let mut seen = Seen::default();
        seen.reset(100);
        assert!(seen.insert(7));
        assert!(!seen.insert(7));
        assert!(seen.insert(u32::MAX));
        seen.reset(3);
        assert!(seen.insert(7));
        assert!(seen.insert(u32::MAX));
        assert!(!seen.insert(u32::MAX));
    }

    #[test]
    fn places_order_as_the_input_reads() {
        assert!(Place::new(0, 99) < Place::new(1, 1));
        assert!(Place::new(1, 1) < Place::new(1, 2));
        let place = Place::new(Place::MAX_FILES - 1, (1 << POSITION_BITS) - 1);
        assert_eq!(
            (place.file(), place.position()),
            (Place::MAX_FILES - 1, (1 << POSITION_BITS) - 1)
        );
    }
}
