//! The synthetic data set: every user's feed, generated on all cores.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use feed_domain::SizeLimits;

use crate::seen::SeenSet;
use crate::table::FeedTable;

/// What to generate: users `0..users`, each with `feed_len` distinct items
/// drawn uniformly from `1..=catalog_size`, reproducible from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSpec {
    users: u32,
    feed_len: u32,
    catalog_size: u32,
    seed: u64,
}

/// A [`DataSpec`] that cannot be generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataSpecError {
    /// Feeds must hold at least one item.
    #[error("feed_len must be at least 1")]
    FeedLen,
    /// Feeds may hold at most [`DataSpec::MAX_FEED_LEN`] items.
    #[error("feed_len {feed_len} is above the maximum of {max}")]
    FeedTooLong {
        /// The feed length asked for.
        feed_len: u32,
        /// [`DataSpec::MAX_FEED_LEN`].
        max: u32,
    },
    /// The catalog must hold enough items for one feed's distinct ids.
    #[error("catalog_size {catalog_size} is smaller than feed_len {feed_len}")]
    Catalog {
        /// The catalog size.
        catalog_size: u32,
        /// The feed length.
        feed_len: u32,
    },
    /// The table would not fit in this machine's address space.
    #[error("{users} users x {feed_len} items do not fit in memory")]
    TooLarge {
        /// Users asked for.
        users: u32,
        /// The feed length.
        feed_len: u32,
    },
}

/// Items generated per unit of work handed to a thread (rounded to whole
/// users, at least one): enough blocks to keep every thread busy to the end
/// whatever the feed length, each large enough that taking one is rare.
const BLOCK_ITEMS: usize = 1 << 21;

impl DataSpec {
    /// The longest feed accepted: ten answers of the largest size a request
    /// may ask for ([`SizeLimits::CEILING`]), far beyond any realistic
    /// personal feed. Generation is linear in `feed_len` whatever its value;
    /// the bound keeps what one feed costs small: 4 bytes an item of table,
    /// and per generating thread a scratch of under `DENSE_FACTOR * feed_len`
    /// ids (see [`FeedTable::generate`]).
    pub const MAX_FEED_LEN: u32 = 10 * SizeLimits::CEILING;

    /// A valid spec.
    ///
    /// # Errors
    /// [`DataSpecError`] when `feed_len` is 0 or above
    /// [`Self::MAX_FEED_LEN`], the catalog is smaller than a feed, or the
    /// table would not fit in memory.
    pub fn new(
        users: u32,
        feed_len: u32,
        catalog_size: u32,
        seed: u64,
    ) -> Result<Self, DataSpecError> {
        if feed_len == 0 {
            return Err(DataSpecError::FeedLen);
        }
        if feed_len > Self::MAX_FEED_LEN {
            return Err(DataSpecError::FeedTooLong {
                feed_len,
                max: Self::MAX_FEED_LEN,
            });
        }
        if catalog_size < feed_len {
            return Err(DataSpecError::Catalog {
                catalog_size,
                feed_len,
            });
        }
        (users as usize)
            .checked_mul(feed_len as usize)
            .and_then(|n| n.checked_mul(size_of::<u32>()))
            .filter(|&bytes| bytes <= isize::MAX as usize)
            .ok_or(DataSpecError::TooLarge { users, feed_len })?;
        Ok(Self {
            users,
            feed_len,
            catalog_size,
            seed,
        })
    }

    /// Users to generate.
    pub const fn users(&self) -> u32 {
        self.users
    }

    /// Items per feed.
    pub const fn feed_len(&self) -> u32 {
        self.feed_len
    }

    /// Items in the catalog.
    pub const fn catalog_size(&self) -> u32 {
        self.catalog_size
    }

    /// The seed.
    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// Identifies the data this spec generates (users, feed length,
    /// catalog and seed, hashed): what the synthetic set's progress belongs
    /// to, as a snapshot's progress belongs to its id.
    pub fn fingerprint(&self) -> u64 {
        let mut bytes = Vec::with_capacity(28);
        bytes.extend_from_slice(b"synthetic");
        for value in [self.users, self.feed_len, self.catalog_size] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes.extend_from_slice(&self.seed.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}

impl FeedTable {
    /// Generates the table for `spec` on `threads` threads (at least one).
    /// `progress` counts users done, for a caller that wants to report it.
    ///
    /// The result depends only on `spec`, not on the number of threads: each
    /// user's feed comes from a generator seeded with the seed and the user id.
    ///
    /// Invariant: the work is linear in `users * feed_len`, whatever the
    /// catalog's size (see `fill_feed`), and the scratch memory of a thread
    /// linear in `feed_len`.
    pub fn generate(spec: &DataSpec, threads: usize, progress: &AtomicU64) -> Self {
        Self::generate_in_blocks(spec, threads, progress, BLOCK_ITEMS)
    }

    /// [`Self::generate`], handing out blocks of about `block_items` items.
    fn generate_in_blocks(
        spec: &DataSpec,
        threads: usize,
        progress: &AtomicU64,
        block_items: usize,
    ) -> Self {
        let feed_len = spec.feed_len as usize;
        let block_users = (block_items / feed_len).max(1);
        // Zeroed memory comes straight from the kernel, untouched: the threads
        // fault the pages in as they write them, in parallel.
        let mut table = Self::zeroed(spec.users as usize, feed_len);
        let blocks = Mutex::new(
            table
                .ids_mut()
                .chunks_mut(block_users * feed_len)
                .enumerate(),
        );
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| {
                    let mut scratch = Scratch::default();
                    loop {
                        // The lock is held only to take the next block.
                        let next = blocks.lock().map(|mut blocks| blocks.next());
                        let Ok(Some((block, chunk))) = next else {
                            return;
                        };
                        let first_user = (block * block_users) as u64;
                        for (i, feed) in chunk.chunks_exact_mut(feed_len).enumerate() {
                            let mut rng =
                                fastrand::Rng::with_seed(mix(spec.seed, first_user + i as u64));
                            fill_feed(&mut rng, spec.catalog_size, feed, &mut scratch);
                        }
                        progress.fetch_add((chunk.len() / feed_len) as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        table
    }
}

/// A thread's reused buffers for [`fill_feed`].
#[derive(Debug, Default)]
struct Scratch {
    seen: SeenSet,
    deck: Vec<u32>,
}

/// Catalogs smaller than this many times the feed are dealt from a deck;
/// larger ones are sampled, each candidate rejected with probability under
/// `1 / DENSE_FACTOR`. Laying out the deck costs more as the catalog grows,
/// sampling does not: the `generate` group of `feed-bench`'s `hot_path`
/// benchmark measures both sides of this factor.
const DENSE_FACTOR: u64 = 16;

/// Fills `feed` with distinct ids from `1..=catalog` (at least `feed.len()`
/// of them), in random order, using `rng` only.
///
/// Invariant: the work is linear in `feed.len()`, whatever the catalog's
/// size, even a catalog exactly as large as the feed.
///
/// - A catalog under `DENSE_FACTOR` times the feed is dealt: the deck
///   `1..=catalog` is laid out (under `DENSE_FACTOR` ids an item), then a
///   partial Fisher-Yates shuffle deals the feed, one draw an item.
/// - A larger catalog is sampled: each draw is rejected and drawn again if
///   the feed holds it already (an O(1) check, see [`crate::seen::Seen`]),
///   with probability under `1 / DENSE_FACTOR`, so under
///   `DENSE_FACTOR / (DENSE_FACTOR - 1)` draws an item are expected.
///
/// Either way every ordered choice of distinct ids is equally likely.
fn fill_feed(rng: &mut fastrand::Rng, catalog: u32, feed: &mut [u32], scratch: &mut Scratch) {
    if u64::from(catalog) < DENSE_FACTOR * feed.len() as u64 {
        let deck = &mut scratch.deck;
        deck.clear();
        deck.extend(1..=catalog);
        let len = deck.len();
        for (i, slot) in feed.iter_mut().enumerate() {
            deck.swap(i, rng.usize(i..len));
            *slot = deck[i];
        }
    } else {
        let mut seen = scratch.seen.start(feed.len());
        for i in 0..feed.len() {
            let (held, rest) = feed.split_at_mut(i);
            rest[0] = loop {
                let candidate = rng.u32(1..=catalog);
                if seen.insert(candidate, held) {
                    break candidate;
                }
            };
        }
    }
}

/// SplitMix64 of the seed and the user: independent, well-spread generator
/// seeds for neighbouring users.
fn mix(seed: u64, user: u64) -> u64 {
    let mut z = seed ^ user.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use feed_domain::UserId;
    use proptest::prelude::*;

    use super::*;

    fn generate(spec: &DataSpec, threads: usize) -> FeedTable {
        FeedTable::generate(spec, threads, &AtomicU64::new(0))
    }

    #[test]
    fn specs_are_validated() {
        assert_eq!(DataSpec::new(1, 0, 10, 0), Err(DataSpecError::FeedLen));
        let max = DataSpec::MAX_FEED_LEN;
        assert_eq!(
            DataSpec::new(1, max + 1, u32::MAX, 0),
            Err(DataSpecError::FeedTooLong {
                feed_len: max + 1,
                max
            })
        );
        assert!(DataSpec::new(1, max, max, 0).is_ok());
        assert_eq!(
            DataSpec::new(1, 11, 10, 0),
            Err(DataSpecError::Catalog {
                catalog_size: 10,
                feed_len: 11
            })
        );
        assert!(DataSpec::new(1, 10, 10, 0).is_ok());
    }

    #[test]
    fn generation_reports_progress_and_does_not_depend_on_threads() {
        // Both ways of drawing: a catalog far larger than a feed, and one
        // barely larger.
        for catalog in [1_000, 21] {
            let spec = DataSpec::new(20_000, 20, catalog, 42).unwrap();
            let progress = AtomicU64::new(0);
            let one = FeedTable::generate(&spec, 1, &progress);
            assert_eq!(progress.load(Ordering::Relaxed), 20_000);
            assert_eq!(one, generate(&spec, 3));
            // Nor on how the work is split.
            for block_items in [1, 999, 10_000] {
                let table = FeedTable::generate_in_blocks(&spec, 2, &progress, block_items);
                assert_eq!(one, table);
            }
            assert_ne!(
                one,
                generate(&DataSpec::new(20_000, 20, catalog, 43).unwrap(), 2)
            );
        }
    }

    fn feeds(table: &FeedTable) -> impl Iterator<Item = &[u32]> {
        (0..table.users()).map(|user| table.feed(UserId::new(user.into())).unwrap())
    }

    #[test]
    fn a_catalog_as_large_as_a_feed_gives_permutations_of_it() {
        let spec = DataSpec::new(500, 300, 300, 7).unwrap();
        let table = generate(&spec, 2);
        let catalog: Vec<u32> = (1..=300).collect();
        let mut firsts = HashSet::new();
        for feed in feeds(&table) {
            let mut sorted = feed.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, catalog);
            firsts.insert(feed[0]);
        }
        assert!(firsts.len() > 100, "{} distinct first items", firsts.len());
    }

    /// Counts, over many users, how often each id comes at `position`.
    fn counts_at(spec: &DataSpec, position: usize) -> Vec<u32> {
        let mut counts = vec![0; spec.catalog_size() as usize];
        for feed in feeds(&generate(spec, 2)) {
            counts[feed[position] as usize - 1] += 1;
        }
        counts
    }

    #[test]
    fn every_id_is_as_likely_at_every_position() {
        // Dealt (catalog < DENSE_FACTOR * feed_len) and sampled; each id is
        // expected 1,000 times at each position, with a standard deviation
        // of about 30.
        for (feed_len, catalog) in [(10, 40), (2, 40)] {
            let spec = DataSpec::new(40_000, feed_len, catalog, 5).unwrap();
            for position in [0, feed_len as usize - 1] {
                let counts = counts_at(&spec, position);
                assert!(
                    counts.iter().all(|&n| (850..1_150).contains(&n)),
                    "feed_len {feed_len}, position {position}: {counts:?}"
                );
            }
        }
    }

    #[test]
    fn the_longest_feeds_hold_distinct_catalog_items() {
        let max = DataSpec::MAX_FEED_LEN;
        let factor = DENSE_FACTOR as u32;
        for catalog in [max, max * factor - 1, max * factor, u32::MAX] {
            let spec = DataSpec::new(2, max, catalog, 1).unwrap();
            for feed in feeds(&generate(&spec, 2)) {
                assert_eq!(feed.iter().collect::<HashSet<_>>().len(), feed.len());
                assert!(feed.iter().all(|&i| (1..=catalog).contains(&i)));
            }
        }
    }

    proptest! {
        #[test]
        fn feeds_hold_distinct_catalog_items(users in 0u32..50, feed_len in 1u32..40, extra in 0u32..100, seed in any::<u64>()) {
            let spec = DataSpec::new(users, feed_len, feed_len + extra, seed).unwrap();
            let table = generate(&spec, 2);
            prop_assert_eq!(table.users(), users);
            for user in 0..users {
                let feed = table.feed(UserId::new(user.into())).unwrap();
                prop_assert_eq!(feed.len(), feed_len as usize);
                prop_assert_eq!(feed.iter().collect::<HashSet<_>>().len(), feed.len());
                prop_assert!(feed.iter().all(|&i| (1..=spec.catalog_size()).contains(&i)));
            }
            prop_assert!(table.feed(UserId::new(users.into())).is_none());
        }
    }
}
