//! [`Seen`]: which ids one random draw has taken so far, kept in a
//! [`SeenSet`]'s reused memory. The random fill ([`crate::CatalogRandomFeed`])
//! and the generator ([`crate::FeedTable::generate`]) both draw distinct ids
//! by rejecting those already taken, and both ask this one type.
//!
//! Architecture Invariant: a draw of up to `n` ids costs O(n) to start and
//! O(1) expected per check, whatever `n` is, so drawing `n` distinct ids is
//! linear in `n`. This is what keeps a request's work proportional to its
//! size up to the largest answer allowed (`SizeLimits::CEILING`), and
//! generation linear in `feed_len`. The tests in `random.rs` and
//! `generate.rs` draw at those largest sizes; the `random_fill` benchmark
//! reports the cost per item for answers of 10 to 10,000 items.
//!
//! How: a filter of at least [`BITS_PER_ID`] bits an id, a power of two,
//! indexed by a multiplicative hash of the id, answers "certainly new" for
//! almost every fresh candidate with one load and one well-predicted branch.
//! When the bit is already set the answer must be exact, and it stays O(1):
//! for draws of up to [`SCAN_LIMIT`] ids a scan of the ids taken (at most
//! that many compares, in cache, and measured faster than the chains for
//! answers of a few hundred items), above it a walk of one hash chain
//! (bucket heads and links into the caller's list, about one id a bucket).
//! An exact scan at every size behind a filter of fixed size, as before
//! this type, costs O(n) a check and O(n^2) a draw once the filter fills.

use feed_domain::ItemId;

/// Filter bits an id, at least: the filter is the next power of two. While
/// a set fills, under 1/16 of the bits are set, so a fresh candidate finds
/// its bit clear and skips the exact check nearly always.
const BITS_PER_ID: usize = 16;

/// Sets sized for at most this many ids check set bits with a scan of the
/// caller's list; larger ones with hash chains.
pub(crate) const SCAN_LIMIT: usize = 256;

/// The golden-ratio multiplier of Fibonacci hashing: the top bits of
/// `id * GOLDEN` spread both random and consecutive ids evenly.
const GOLDEN: u32 = 0x9E37_79B1;

/// An id a [`Seen`] can check: a `u32`, or a newtype of one.
pub(crate) trait Id: Copy {
    /// The raw id, which the set hashes.
    fn raw(self) -> u32;
}

impl Id for u32 {
    fn raw(self) -> u32 {
        self
    }
}

impl Id for ItemId {
    fn raw(self) -> u32 {
        self.get()
    }
}

/// The memory of a [`Seen`], kept from one draw to the next: starting a
/// draw clears it without freeing, so once its buffers have grown to the
/// largest draw asked for, it never allocates.
#[derive(Debug, Default)]
pub(crate) struct SeenSet {
    words: Vec<u64>,
    heads: Vec<u32>,
    links: Vec<u32>,
}

impl SeenSet {
    /// Buffers with room for a draw of up to `capacity` ids, and at most
    /// [`SCAN_LIMIT`]: such draws never allocate.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let (bits, _) = filter_bits(capacity.min(SCAN_LIMIT));
        Self {
            words: Vec::with_capacity(bits / 64),
            ..Self::default()
        }
    }

    /// An empty [`Seen`] for a draw of up to `capacity` ids. Taking more is
    /// correct but may allocate and makes checks slower.
    pub(crate) fn start(&mut self, capacity: usize) -> Seen<'_> {
        let (bits, log2) = filter_bits(capacity);
        self.words.clear();
        self.words.resize(bits / 64, 0);
        self.heads.clear();
        self.links.clear();
        let chains = (capacity > SCAN_LIMIT).then(|| {
            // About one id a bucket, and never more buckets than filter bits.
            let log2_buckets = ceil_log2(capacity).min(log2);
            self.heads.resize(1 << log2_buckets, 0);
            self.links.reserve(capacity);
            Chains {
                heads: &mut self.heads,
                bucket_shift: 32 - log2_buckets,
                links: &mut self.links,
            }
        });
        Seen {
            words: &mut self.words,
            filter_shift: 32 - log2,
            chains,
        }
    }
}

/// The filter's size for `capacity` ids: a power of two from 64 to 2^32
/// bits, and its base-2 logarithm.
fn filter_bits(capacity: usize) -> (usize, u32) {
    let log2 = ceil_log2(capacity.saturating_mul(BITS_PER_ID)).clamp(6, 32);
    (1 << log2, log2)
}

/// Which ids one draw has taken so far, in a [`SeenSet`]'s memory.
///
/// The only way to one is [`SeenSet::start`], so every draw starts empty
/// and sized for itself. It keeps no copy of the ids: the caller's own list
/// is the record (the answer so far, or the feed so far), passed as `held`
/// to each call, and every id accepted must be appended to it. The exact
/// check reads that list.
#[derive(Debug)]
pub(crate) struct Seen<'a> {
    /// The filter: bit `hash >> filter_shift` is set for every id held.
    words: &'a mut [u64],
    filter_shift: u32,
    /// The exact check of a set bit for large draws; small ones scan `held`.
    chains: Option<Chains<'a>>,
}

/// Hash chains over the caller's list.
#[derive(Debug)]
struct Chains<'a> {
    /// Per bucket `hash >> bucket_shift`: one plus the index in `held` of
    /// the newest id in the bucket, 0 for none.
    heads: &'a mut [u32],
    bucket_shift: u32,
    /// Per id held, in the order of `held`: the link to the next older id of
    /// its bucket, encoded as in `heads`.
    links: &'a mut Vec<u32>,
}

impl Seen<'_> {
    /// Takes note of every id of `held`, the caller's list so far, at the
    /// start of a draw.
    pub(crate) fn hold_all<T: Id>(&mut self, held: &[T]) {
        for &id in held {
            let slot = (id.raw().wrapping_mul(GOLDEN) >> self.filter_shift) as usize;
            self.words[slot / 64] |= 1 << (slot % 64);
        }
        if let Some(chains) = &mut self.chains {
            debug_assert!(chains.links.is_empty());
            for (index, &id) in held.iter().enumerate() {
                chains.link(id.raw().wrapping_mul(GOLDEN), index);
            }
        }
    }

    /// Whether `id` is new, not in `held` (the caller's list of ids taken so
    /// far). If it is, the set takes note of it as the next id of `held`,
    /// and the caller must append it there.
    ///
    /// Always inlined: it is the body of every draw loop, and a call per
    /// candidate (which the optimiser chose in the benchmark's build)
    /// costs more than the check itself.
    #[inline(always)]
    pub(crate) fn insert<T: Id>(&mut self, id: T, held: &[T]) -> bool {
        let hash = id.raw().wrapping_mul(GOLDEN);
        let slot = (hash >> self.filter_shift) as usize;
        let (word, bit) = (slot / 64, 1 << (slot % 64));
        if self.words[word] & bit != 0 && self.holds(id, hash, held) {
            return false;
        }
        self.words[word] |= bit;
        if let Some(chains) = &mut self.chains {
            chains.link(hash, held.len());
        }
        true
    }

    /// Whether `id` is in `held`, every id of which was taken note of
    /// (by [`Self::hold_all`] or [`Self::insert`]). Changes nothing.
    #[inline]
    pub(crate) fn contains<T: Id>(&self, id: T, held: &[T]) -> bool {
        let hash = id.raw().wrapping_mul(GOLDEN);
        let slot = (hash >> self.filter_shift) as usize;
        self.words[slot / 64] & (1 << (slot % 64)) != 0 && self.holds(id, hash, held)
    }

    /// The exact check, for an id whose filter bit is set.
    #[cold]
    fn holds<T: Id>(&self, id: T, hash: u32, held: &[T]) -> bool {
        let raw = id.raw();
        let Some(chains) = &self.chains else {
            // Whole chunks compared without an early exit: the compiler
            // vectorises this, as it does `<[u32]>::contains` but not the
            // same for a newtype.
            return held.chunks(16).any(|chunk| {
                chunk
                    .iter()
                    .fold(false, |found, h| found | (h.raw() == raw))
            });
        };
        let mut link = chains.heads[(hash >> chains.bucket_shift) as usize];
        while let Some(index) = (link as usize).checked_sub(1) {
            if held[index].raw() == raw {
                return true;
            }
            link = chains.links[index];
        }
        false
    }
}

impl Chains<'_> {
    /// Chains `held[index]`, whose hash is `hash`, into its bucket.
    #[inline]
    fn link(&mut self, hash: u32, index: usize) {
        debug_assert_eq!(self.links.len(), index, "every id taken is held");
        let bucket = (hash >> self.bucket_shift) as usize;
        self.links.push(self.heads[bucket]);
        // Held lists are answers and feeds, far shorter than u32::MAX ids.
        debug_assert!(index < u32::MAX as usize);
        self.heads[bucket] = index as u32 + 1;
    }
}

/// The base-2 logarithm of the smallest power of two at least `n` (0 for
/// 0), without overflow.
const fn ceil_log2(n: usize) -> u32 {
    match n {
        0 => 0,
        n => usize::BITS - (n - 1).leading_zeros(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// Offers `ids` to a set sized for `capacity`, twice over (the second
    /// time to the reused set), checking every answer against a `HashSet`.
    fn check(capacity: usize, ids: &[u32]) {
        let mut set = SeenSet::with_capacity(8);
        for round in 0..2 {
            let mut seen = set.start(capacity);
            let (mut held, mut model) = (Vec::new(), HashSet::new());
            for &id in ids {
                let new = seen.insert(id, &held);
                assert_eq!(new, model.insert(id), "{id} in round {round}");
                if new {
                    held.push(id);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn answers_as_a_hash_set(capacity in 0usize..2_000, ids in prop::collection::vec(any::<u32>(), 0..600)) {
            check(capacity, &ids);
        }

        #[test]
        fn answers_as_a_hash_set_with_many_repeats(capacity in 0usize..2_000, ids in prop::collection::vec(0u32..300, 0..1_500)) {
            check(capacity, &ids);
        }

        #[test]
        fn holds_what_it_is_told(capacity in 0usize..2_000, held in prop::collection::vec(0u32..3_000, 0..400), ids in prop::collection::vec(0u32..3_000, 0..400)) {
            let mut set = SeenSet::default();
            let mut seen = set.start(capacity);
            let mut held: Vec<ItemId> = held.into_iter().map(ItemId::new).collect();
            seen.hold_all(&held);
            let mut model: HashSet<ItemId> = held.iter().copied().collect();
            for id in ids.into_iter().map(ItemId::new) {
                let new = seen.insert(id, &held);
                prop_assert_eq!(new, model.insert(id));
                if new {
                    held.push(id);
                }
            }
        }
    }

    #[test]
    fn consecutive_ids_and_both_modes() {
        let ids: Vec<u32> = (0..5_000).chain(0..5_000).chain([u32::MAX, 0]).collect();
        for capacity in [0, 1, SCAN_LIMIT, SCAN_LIMIT + 1, 5_000, 10_002] {
            check(capacity, &ids);
        }
    }

    #[test]
    fn huge_capacities_are_clamped_not_overflowed() {
        assert_eq!(filter_bits(0), (64, 6));
        assert_eq!(filter_bits(usize::MAX), (1 << 32, 32));
        assert_eq!(filter_bits(1 << 28), (1 << 32, 32));
        assert_eq!(filter_bits(1 << 27), (1 << 31, 31));
        assert_eq!(ceil_log2(usize::MAX), usize::BITS);
    }
}
