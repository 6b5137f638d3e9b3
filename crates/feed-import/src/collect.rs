//! The feeds as they are read, in input order: [`Collector`] validates nothing
//! itself (the readers convert each value and say what is wrong with it) but
//! drops repeated items, remembers where each user came from, and at the end
//! lays the feeds out sorted by user ([`Collector::finish`]).
//!
//! Memory: the items are held once. Feeds already sorted by user (across the
//! inputs, in the order given) are returned as read. Otherwise the layout
//! moves them through [`BUCKETS`] buckets of about equal size (see
//! [`Collector::finish`]), so the peak is the items plus one bucket, not
//! twice the items, and the per-user bookkeeping is a few dozen bytes.

use std::path::{Path, PathBuf};

use crate::ImportedFeeds;
use crate::error::{ImportError, Position, Problem};

/// How many buckets an unsorted input's items pass through on the way to
/// their sorted place: the layout's memory peak is the items plus about one
/// bucket, `1 / BUCKETS` of them.
const BUCKETS: usize = 16;

/// Feeds at most this long are checked for repeats by a scan of the items
/// kept so far; longer ones through [`Seen`].
const SHORT_FEED: usize = 16;

/// Every `SHRINK_STEP` items moved out of the input during the bucket pass,
/// the input gives its tail back to the allocator.
const SHRINK_STEP: usize = 1 << 24;

/// One input file, for naming the place of a user in an error.
struct Source {
    path: PathBuf,
    /// The index of the file's first user among all users read.
    first_user: usize,
    /// The line of each user, for text inputs; Parquet users sit at row
    /// `index - first_user + 1`.
    lines: Option<Vec<u64>>,
}

/// Facts about the finished feeds, for the summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub(crate) rows: u64,
    pub(crate) duplicates_dropped: u64,
}

/// The feeds read so far, in input order (see the module doc).
pub(crate) struct Collector {
    user_ids: Vec<u64>,
    /// `user_ids.len() + 1` entries, starting at 0.
    offsets: Vec<u64>,
    items: Vec<u32>,
    /// Whether `user_ids` is strictly increasing so far.
    sorted: bool,
    duplicates_dropped: u64,
    seen: Seen,
    sources: Vec<Source>,
}

impl Collector {
    pub(crate) fn new() -> Self {
        Self {
            user_ids: Vec::new(),
            offsets: vec![0],
            items: Vec::new(),
            sorted: true,
            duplicates_dropped: 0,
            seen: Seen::default(),
            sources: Vec::new(),
        }
    }

    /// Starts the next input file; `lines` says whether its users are
    /// placed by line (text) rather than by row (Parquet).
    pub(crate) fn begin_source(&mut self, path: &Path, lines: bool) {
        self.sources.push(Source {
            path: path.to_owned(),
            first_user: self.user_ids.len(),
            lines: lines.then(Vec::new),
        });
    }

    /// The users (rows) read so far, across all files.
    pub(crate) fn rows(&self) -> u64 {
        self.user_ids.len() as u64
    }

    /// Appends `user`'s feed of `len` items, the `k`-th given by `item(k)`,
    /// keeping the first place of an item that repeats. `line` is the user's
    /// line, for a text source. On error nothing is appended.
    pub(crate) fn push_feed(
        &mut self,
        user: u64,
        line: Option<u64>,
        len: usize,
        mut item: impl FnMut(usize) -> Result<u32, Problem>,
    ) -> Result<(), Problem> {
        let start = self.items.len();
        self.items.reserve(len);
        let mut dropped = 0;
        let mut append = |items: &mut Vec<u32>, seen: &mut Seen| -> Result<(), Problem> {
            if len <= SHORT_FEED {
                for k in 0..len {
                    let id = item(k)?;
                    if items[start..].contains(&id) {
                        dropped += 1;
                    } else {
                        items.push(id);
                    }
                }
            } else {
                seen.reset(len);
                for k in 0..len {
                    let id = item(k)?;
                    if seen.insert(id) {
                        items.push(id);
                    } else {
                        dropped += 1;
                    }
                }
            }
            Ok(())
        };
        if let Err(problem) = append(&mut self.items, &mut self.seen) {
            self.items.truncate(start);
            return Err(problem);
        }
        self.duplicates_dropped += dropped;
        self.sorted &= self.user_ids.last().is_none_or(|&last| last < user);
        self.user_ids.push(user);
        self.offsets.push(self.items.len() as u64);
        if let (Some(line), Some(source)) = (line, self.sources.last_mut())
            && let Some(lines) = &mut source.lines
        {
            lines.push(line);
        }
        Ok(())
    }

    /// The file and position of the `index`-th user read.
    fn locate(&self, index: usize) -> (PathBuf, Position) {
        let at = self.sources.partition_point(|s| s.first_user <= index) - 1;
        let source = &self.sources[at];
        let nth = index - source.first_user;
        let position = match &source.lines {
            Some(lines) => Position::Line(lines[nth]),
            None => Position::Row(nth as u64 + 1),
        };
        (source.path.clone(), position)
    }

    /// The feeds sorted by user id, or the first user (in input order) that
    /// appears twice.
    pub(crate) fn finish(mut self) -> Result<(ImportedFeeds, Stats), ImportError> {
        let stats = Stats {
            rows: self.rows(),
            duplicates_dropped: self.duplicates_dropped,
        };
        if self.sorted {
            // Growth by doubling may have reserved up to twice the items;
            // give back what the caller would otherwise hold for nothing.
            self.items.shrink_to_fit();
            self.user_ids.shrink_to_fit();
            self.offsets.shrink_to_fit();
            let feeds = ImportedFeeds {
                user_ids: self.user_ids,
                offsets: self.offsets,
                items: self.items,
                fallback: None,
            };
            return Ok((feeds, stats));
        }
        // Every user with its place in the input, sorted by id and then by
        // place, so a repeated id's first appearance comes first.
        let mut order: Vec<(u64, usize)> = self
            .user_ids
            .iter()
            .enumerate()
            .map(|(index, &user)| (user, index))
            .collect();
        order.sort_unstable();
        if let Some((first, again)) = first_repeat(&order) {
            let (first_path, first_position) = self.locate(first);
            let (path, position) = self.locate(again);
            return Err(ImportError::DuplicateUser {
                user: self.user_ids[again],
                path,
                position,
                first_path,
                first_position,
            });
        }
        let Collector { offsets, items, .. } = self;
        let (offsets, items) = lay_out(&order, &offsets, items);
        let feeds = ImportedFeeds {
            user_ids: order.iter().map(|&(user, _)| user).collect(),
            offsets,
            items,
            fallback: None,
        };
        Ok((feeds, stats))
    }
}

/// `value`, the `index`-th of a feed, as an item id.
pub(crate) fn item_id(value: i128, index: usize) -> Result<u32, Problem> {
    match u32::try_from(value) {
        Ok(id) if id != 0 => Ok(id),
        _ => Err(Problem::ElementOutOfRange { index, value }),
    }
}

/// Among the ids that appear more than once in `order` (sorted by id, then
/// by place), the one whose second appearance comes first in the input: the
/// places of its first and second appearance.
fn first_repeat(order: &[(u64, usize)]) -> Option<(usize, usize)> {
    order
        .windows(2)
        .enumerate()
        // The second of a run of equal ids: the pair before it starts the run.
        .filter(|&(k, pair)| pair[0].0 == pair[1].0 && (k == 0 || order[k - 1].0 != pair[0].0))
        .map(|(_, pair)| (pair[0].1, pair[1].1))
        .min_by_key(|&(_, again)| again)
}

/// Moves the feeds (`offsets` and `items` in input order) into the order of
/// `order` and returns the new offsets and items.
///
/// Pass one walks the input from its end, copying each feed into the bucket
/// of its destination (bucket `b` holds the `b`-th of [`BUCKETS`] equal
/// shares of the sorted items) and giving the input's tail back to the
/// allocator as it goes. Pass two walks the users in sorted order, copies
/// each feed from its bucket to its final place, and frees each bucket once
/// the walk has passed it. Blocks this large are `mmap`ed, so what is freed
/// goes back to the system at once and the peak stays near the items plus
/// one bucket.
fn lay_out(order: &[(u64, usize)], offsets: &[u64], mut items: Vec<u32>) -> (Vec<u64>, Vec<u32>) {
    let total = items.len();
    let len = |index: usize| (offsets[index + 1] - offsets[index]) as usize;

    // The bucket of every feed (by input place), and each bucket's size.
    // Along `order` the bucket never decreases.
    let mut bucket_of = vec![0u8; order.len()];
    let mut sizes = [0usize; BUCKETS];
    let mut before = 0usize;
    for &(_, index) in order {
        let share = before as u128 * BUCKETS as u128 / total.max(1) as u128;
        let bucket = (share as usize).min(BUCKETS - 1);
        bucket_of[index] = bucket as u8;
        sizes[bucket] += len(index);
        before += len(index);
    }

    // Pass one: the input, from its end, into the buckets.
    let mut buckets: Vec<Vec<u32>> = sizes.iter().map(|&size| Vec::with_capacity(size)).collect();
    let mut at_in_bucket = vec![0usize; order.len()];
    let mut shrunk_at = total;
    for index in (0..order.len()).rev() {
        let bucket = &mut buckets[bucket_of[index] as usize];
        at_in_bucket[index] = bucket.len();
        let start = offsets[index] as usize;
        bucket.extend_from_slice(&items[start..start + len(index)]);
        if shrunk_at - start >= SHRINK_STEP {
            items.truncate(start);
            items.shrink_to_fit();
            shrunk_at = start;
        }
    }
    drop(items);

    // Pass two: the feeds in sorted order into their final place, each
    // bucket freed once the walk has passed it.
    let mut sorted = Vec::with_capacity(total);
    let mut sorted_offsets = Vec::with_capacity(order.len() + 1);
    sorted_offsets.push(0);
    let mut done = 0;
    for &(_, index) in order {
        let bucket = bucket_of[index] as usize;
        while done < bucket {
            buckets[done] = Vec::new();
            done += 1;
        }
        let start = at_in_bucket[index];
        sorted.extend_from_slice(&buckets[bucket][start..start + len(index)]);
        sorted_offsets.push(sorted.len() as u64);
    }
    (sorted_offsets, sorted)
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
    use proptest::prelude::*;

    fn collect(feeds: &[(u64, Vec<u32>)]) -> Collector {
        let mut collector = Collector::new();
        collector.begin_source(Path::new("a.parquet"), false);
        for (user, feed) in feeds {
            collector
                .push_feed(*user, None, feed.len(), |k| Ok(feed[k]))
                .unwrap();
        }
        collector
    }

    /// The feeds as `finish` must return them: sorted by user, each item's
    /// first place kept.
    fn expected(feeds: &[(u64, Vec<u32>)]) -> (Vec<u64>, Vec<u64>, Vec<u32>, u64) {
        let mut sorted: Vec<_> = feeds.to_vec();
        sorted.sort_by_key(|(user, _)| *user);
        let (mut offsets, mut items, mut dropped) = (vec![0], vec![], 0);
        for (_, feed) in &sorted {
            let mut kept: Vec<u32> = Vec::new();
            for &item in feed {
                if kept.contains(&item) {
                    dropped += 1;
                } else {
                    kept.push(item);
                }
            }
            items.extend(kept);
            offsets.push(items.len() as u64);
        }
        let users = sorted.iter().map(|(user, _)| *user).collect();
        (users, offsets, items, dropped)
    }

    fn check(feeds: &[(u64, Vec<u32>)]) {
        let (got, stats) = collect(feeds).finish().unwrap();
        let (users, offsets, items, dropped) = expected(feeds);
        assert_eq!(got.user_ids, users);
        assert_eq!(got.offsets, offsets);
        assert_eq!(got.items, items);
        assert_eq!(stats.duplicates_dropped, dropped);
        assert_eq!(stats.rows, feeds.len() as u64);
    }

    /// Distinct users in any order, feeds of any length (short ones and ones
    /// long enough for the hash set), items from a small range so repeats
    /// are common.
    fn feeds() -> impl Strategy<Value = Vec<(u64, Vec<u32>)>> {
        proptest::collection::btree_set(any::<u64>(), 0..60)
            .prop_flat_map(|users| {
                let n = users.len();
                (
                    Just(users.into_iter().collect::<Vec<_>>()).prop_shuffle(),
                    proptest::collection::vec(proptest::collection::vec(1u32..80, 0..70), n),
                )
            })
            .prop_map(|(users, feeds)| users.into_iter().zip(feeds).collect())
    }

    proptest! {
        #[test]
        fn finish_sorts_users_and_drops_repeated_items(feeds in feeds()) {
            check(&feeds);
        }
    }

    #[test]
    fn sorted_empty_and_extreme_inputs() {
        check(&[]);
        check(&[(0, vec![])]);
        check(&[(u64::MAX, vec![u32::MAX, 1, u32::MAX]), (0, vec![])]);
        // Empty feeds on bucket borders, in an unsorted input.
        check(&[
            (5, vec![]),
            (3, vec![1, 2]),
            (4, vec![]),
            (1, vec![]),
            (2, vec![3]),
        ]);
    }

    #[test]
    fn every_bucket_is_used_by_a_large_unsorted_input() {
        let feeds: Vec<(u64, Vec<u32>)> = (0..200u64)
            .map(|k| ((k * 7919) % 200, (1..=(k as u32 % 40)).rev().collect()))
            .collect();
        check(&feeds);
    }

    #[test]
    fn a_repeated_user_is_named_at_its_second_place() {
        let collector = collect(&[(9, vec![1]), (7, vec![]), (9, vec![2]), (7, vec![])]);
        let err = collector.finish().unwrap_err().to_string();
        assert_eq!(
            err,
            "a.parquet: row 3, column `user_id`: user 9 appears again (first at a.parquet: row 1)"
        );
    }

    #[test]
    fn a_failed_feed_leaves_no_trace() {
        let mut collector = collect(&[(1, vec![4, 5])]);
        let err = collector.push_feed(2, None, 3, |k| {
            if k < 2 {
                Ok(9)
            } else {
                Err(Problem::NullElement { index: k })
            }
        });
        assert_eq!(err, Err(Problem::NullElement { index: 2 }));
        let (feeds, stats) = collector.finish().unwrap();
        assert_eq!(feeds.items, vec![4, 5]);
        assert_eq!(feeds.user_ids, vec![1]);
        assert_eq!(stats.duplicates_dropped, 0);
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
}
