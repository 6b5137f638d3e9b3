//! [`FeedService`]: the one use case of the product.

use crate::error::{FeedError, FeedUnavailable, PageError, StorageError};
use crate::ports::{ErrorRecorder, FeedStorage, Keyed, RandomFeed};
use crate::types::{FeedSize, IdempotencyKey, ItemId, SizeLimits, UserId};

/// What one [`FeedService::next_feed`] call served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Items taken from the user's personal feed (they come first).
    pub personal: usize,
    /// Random catalog items that filled the rest.
    pub random: usize,
    /// This call handed out the last personal item of the user's feed.
    pub exhausted_now: bool,
    /// The answer is a retry's: the same items as the first answer to the
    /// same idempotency key, and nothing advanced.
    pub replayed: bool,
}

/// Serves each user their next feed items, with progress saved, and fills any
/// shortfall with random catalog items.
///
/// Generic over its ports so that the hot path has no dynamic dispatch: the
/// binary names the concrete adapters once.
#[derive(Debug)]
pub struct FeedService<S, R, E> {
    storage: S,
    random: R,
    errors: E,
    limits: SizeLimits,
}

impl<S: FeedStorage, R: RandomFeed, E: ErrorRecorder> FeedService<S, R, E> {
    /// A service over the given ports.
    pub const fn new(storage: S, random: R, errors: E, limits: SizeLimits) -> Self {
        Self {
            storage,
            random,
            errors,
            limits,
        }
    }

    /// The sizes requests may ask for.
    pub const fn limits(&self) -> &SizeLimits {
        &self.limits
    }

    /// The feed storage port.
    pub const fn storage(&self) -> &S {
        &self.storage
    }

    /// The random-feed port.
    pub const fn random(&self) -> &R {
        &self.random
    }

    /// The error-recorder port.
    pub const fn errors(&self) -> &E {
        &self.errors
    }

    /// Replaces the contents of `out` with `user`'s next `size` items: first
    /// the next personal items (advancing the user's saved offset), then
    /// random catalog items distinct from everything before them.
    ///
    /// A storage failure or an unknown user is reported to the
    /// [`ErrorRecorder`] and the whole answer comes from the random feed; so is
    /// a random fill that comes up short. Pass the same `out` again to reuse
    /// its capacity: with enough capacity this allocates nothing.
    ///
    /// # Errors
    /// [`FeedUnavailable`] only when not a single item could be served.
    ///
    /// The future completes as soon as the storage's does: at once over an
    /// in-process store. It is `Send` whenever the ports are.
    pub async fn next_feed(
        &self,
        user: UserId,
        size: FeedSize,
        out: &mut Vec<ItemId>,
    ) -> Result<Served, FeedUnavailable> {
        let want = size.get();
        out.clear();
        let taken = self.storage.take_next(user, want, out).await;
        let exhausted_now = match taken {
            Ok(taken) => taken.count > 0 && taken.remaining == 0,
            Err(error) => {
                self.failed(user, error, out);
                false
            }
        };
        self.fill(user, want, None, out, exhausted_now, false)
    }

    /// [`Self::next_feed`] for a request that may carry a retry key.
    ///
    /// Without a key, exactly [`Self::next_feed`]. With one, a retry of the
    /// user's latest keyed request (same key, same size, same data version)
    /// gets the same answer, item for item, and advances nothing
    /// ([`Served::replayed`]); any other key gets a new page, and becomes
    /// the latest. The random fill of a keyed answer is seeded from the
    /// user, the key, where the page starts and its size, so that a replay
    /// fills alike; so is a user the storage does not know (their retries
    /// get the same random answer, though nothing is remembered). After a
    /// storage failure the answer is random as usual, and not replayable.
    ///
    /// # Errors
    /// [`PageError::KeyReused`] when the key's request asked for another
    /// size (nothing is served and nothing advances);
    /// [`PageError::Unavailable`] as [`Self::next_feed`].
    pub async fn next_page(
        &self,
        user: UserId,
        size: FeedSize,
        key: Option<IdempotencyKey>,
        out: &mut Vec<ItemId>,
    ) -> Result<Served, PageError> {
        let Some(key) = key else {
            return Ok(self.next_feed(user, size, out).await?);
        };
        let want = size.get();
        out.clear();
        let (seed, exhausted_now, replayed) =
            match self.storage.take_keyed(user, want, key, out).await {
                Ok(Keyed::Fresh { taken, start }) => (
                    Some(fill_seed(user, key, start, want)),
                    taken.count > 0 && taken.remaining == 0,
                    false,
                ),
                Ok(Keyed::Replayed { start, .. }) => {
                    (Some(fill_seed(user, key, start, want)), false, true)
                }
                Ok(Keyed::OtherSize { first }) => {
                    out.clear();
                    return Err(PageError::KeyReused {
                        first,
                        requested: u32::try_from(want).unwrap_or(u32::MAX),
                    });
                }
                Err(error) => {
                    let seed = matches!(error, StorageError::UnknownUser(_))
                        .then(|| fill_seed(user, key, 0, want));
                    self.failed(user, error, out);
                    (seed, false, false)
                }
            };
        Ok(self.fill(user, want, seed, out, exhausted_now, replayed)?)
    }

    /// Records a storage failure; the answer starts over, all random.
    fn failed(&self, user: UserId, error: StorageError, out: &mut Vec<ItemId>) {
        out.clear();
        self.errors.record(user, &FeedError::Storage(error));
    }

    /// Cuts `out` (the personal items) to `want` and fills the rest at
    /// random (from `seed` when given).
    fn fill(
        &self,
        user: UserId,
        want: usize,
        seed: Option<u64>,
        out: &mut Vec<ItemId>,
        exhausted_now: bool,
        replayed: bool,
    ) -> Result<Served, FeedUnavailable> {
        out.truncate(want);
        let personal = out.len();
        let missing = want - personal;
        if missing > 0 {
            let filled = match seed {
                Some(seed) => self.random.fill_seeded(out, missing, seed),
                None => self.random.fill(out, missing),
            };
            if let Err(error) = filled {
                self.errors.record(user, &FeedError::RandomFill(error));
            }
            out.truncate(want);
        }
        if out.is_empty() {
            return Err(FeedUnavailable { user });
        }
        Ok(Served {
            personal,
            random: out.len() - personal,
            exhausted_now,
            replayed,
        })
    }
}

/// The random fill's seed of a keyed page: the same page gets the same
/// seed, and different users, keys, starts or sizes almost always differ.
fn fill_seed(user: UserId, key: IdempotencyKey, start: u32, size: usize) -> u64 {
    // SplitMix64's finaliser over the fields, folded in one at a time.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for field in [
        user.get(),
        u64::from(key.hash()),
        u64::from(start),
        size as u64,
    ] {
        seed = (seed ^ field).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        seed ^= seed >> 31;
        seed = seed.wrapping_mul(0x94d0_49bb_1331_11eb);
        seed ^= seed >> 29;
    }
    seed
}

#[cfg(test)]
mod tests {
    //! Properties of the service against fakes of every port. The same
    //! properties run against the real in-memory adapters in `feed-memory`.

    use std::collections::{HashMap, HashSet};
    use std::pin::pin;
    use std::sync::Mutex;
    use std::task::{Context, Poll, Waker};

    use proptest::prelude::*;

    use super::*;
    use crate::error::{RandomFillError, StorageError};
    use crate::ports::Taken;

    /// Feeds by user, each with a cursor; some users fail on every read.
    struct FakeStorage {
        feeds: Mutex<HashMap<u64, (Vec<ItemId>, usize)>>,
        /// Each user's latest keyed request: key, start, size.
        latest: Mutex<HashMap<u64, (IdempotencyKey, usize, usize)>>,
        failing: HashSet<u64>,
    }

    impl FeedStorage for FakeStorage {
        fn take_next(
            &self,
            user: UserId,
            max: usize,
            out: &mut Vec<ItemId>,
        ) -> impl Future<Output = Result<Taken, StorageError>> + Send {
            std::future::ready(self.take_now(user, max, out))
        }

        fn take_keyed(
            &self,
            user: UserId,
            max: usize,
            key: IdempotencyKey,
            out: &mut Vec<ItemId>,
        ) -> impl Future<Output = Result<Keyed, StorageError>> + Send {
            std::future::ready(self.take_keyed_now(user, max, key, out))
        }
    }

    impl FakeStorage {
        fn take_keyed_now(
            &self,
            user: UserId,
            max: usize,
            key: IdempotencyKey,
            out: &mut Vec<ItemId>,
        ) -> Result<Keyed, StorageError> {
            let mut latest = self.latest.lock().unwrap();
            if let Some(&(k, start, size)) = latest.get(&user.get())
                && k == key
            {
                if size != max {
                    return Ok(Keyed::OtherSize { first: size as u32 });
                }
                let feeds = self.feeds.lock().unwrap();
                let feed = &feeds[&user.get()].0;
                let end = (start + max).min(feed.len());
                out.extend_from_slice(&feed[start.min(end)..end]);
                let taken = Taken {
                    count: end - start.min(end),
                    remaining: 0,
                };
                return Ok(Keyed::Replayed {
                    taken,
                    start: start as u32,
                });
            }
            let start = self
                .feeds
                .lock()
                .unwrap()
                .get(&user.get())
                .map_or(0, |f| f.1);
            let taken = self.take_now(user, max, out)?;
            latest.insert(user.get(), (key, start, max));
            Ok(Keyed::Fresh {
                taken,
                start: start as u32,
            })
        }

        fn take_now(
            &self,
            user: UserId,
            max: usize,
            out: &mut Vec<ItemId>,
        ) -> Result<Taken, StorageError> {
            if self.failing.contains(&user.get()) {
                return Err(StorageError::backend("disk on fire"));
            }
            let mut feeds = self.feeds.lock().unwrap();
            let (feed, cursor) = feeds
                .get_mut(&user.get())
                .ok_or(StorageError::UnknownUser(user))?;
            let end = (*cursor + max).min(feed.len());
            out.extend_from_slice(&feed[*cursor..end]);
            let count = end - *cursor;
            *cursor = end;
            Ok(Taken {
                count,
                remaining: feed.len() - end,
            })
        }
    }

    /// Polls `future` once: every fake here answers at once, so it must be
    /// complete.
    fn now<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("the service waited on a store that answers at once"),
        }
    }

    /// A catalog `1..=size`, walked from a rotating start.
    struct FakeRandom {
        catalog: u32,
        start: Mutex<u32>,
    }

    impl RandomFeed for FakeRandom {
        fn fill(&self, items: &mut Vec<ItemId>, count: usize) -> Result<(), RandomFillError> {
            let mut start = self.start.lock().unwrap();
            *start = start.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let target = items.len() + count;
            for step in 0..self.catalog {
                if items.len() == target {
                    return Ok(());
                }
                let candidate = ItemId::new((*start).wrapping_add(step) % self.catalog + 1);
                if !items.contains(&candidate) {
                    items.push(candidate);
                }
            }
            match target - items.len() {
                0 => Ok(()),
                missing => Err(RandomFillError::Shortfall { missing }),
            }
        }

        fn fill_seeded(
            &self,
            items: &mut Vec<ItemId>,
            count: usize,
            seed: u64,
        ) -> Result<(), RandomFillError> {
            let seeded = Self {
                catalog: self.catalog,
                start: Mutex::new(seed as u32),
            };
            seeded.fill(items, count)
        }
    }

    #[derive(Default)]
    struct FakeRecorder(Mutex<Vec<(UserId, &'static str)>>);

    impl ErrorRecorder for FakeRecorder {
        fn record(&self, user: UserId, error: &FeedError) {
            let kind = match error {
                FeedError::Storage(StorageError::UnknownUser(_)) => "unknown",
                FeedError::Storage(StorageError::Backend(_)) => "backend",
                FeedError::RandomFill(_) => "shortfall",
            };
            self.0.lock().unwrap().push((user, kind));
        }
    }

    /// Users 0..n with distinct-item feeds of the given lengths; user ids at
    /// and above n are unknown, and `failing` users always fail.
    fn service(
        feed_lens: &[usize],
        failing: &[u64],
        catalog: u32,
    ) -> (
        FeedService<FakeStorage, FakeRandom, FakeRecorder>,
        Vec<Vec<ItemId>>,
    ) {
        let feeds: Vec<Vec<ItemId>> = feed_lens
            .iter()
            .enumerate()
            .map(|(user, &len)| {
                (0..len)
                    .map(|i| ItemId::new((user * 1000 + i) as u32 % catalog.max(1) + 1))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect()
            })
            .collect();
        let storage = FakeStorage {
            feeds: Mutex::new(
                feeds
                    .iter()
                    .enumerate()
                    .map(|(u, f)| (u as u64, (f.clone(), 0)))
                    .collect(),
            ),
            latest: Mutex::default(),
            failing: failing.iter().copied().collect(),
        };
        let random = FakeRandom {
            catalog,
            start: Mutex::new(7),
        };
        let limits = SizeLimits::new(10, 200).unwrap();
        (
            FeedService::new(storage, random, FakeRecorder::default(), limits),
            feeds,
        )
    }

    fn requests() -> impl Strategy<Value = Vec<(u64, u32)>> {
        prop::collection::vec((0u64..8, 0u32..=60), 1..40)
    }

    proptest! {
        /// (3), (4), (5): every answer is full and distinct; personal items
        /// come first, in feed order, continuing exactly where the previous
        /// answer stopped; random items are never among the personal ones;
        /// the recorder hears of unknown and failing users and nothing else.
        #[test]
        fn answers_are_full_ordered_and_progress_is_saved(
            lens in prop::collection::vec(0usize..120, 1..6),
            failing in prop::collection::vec(0u64..8, 0..2),
            reqs in requests(),
        ) {
            let (service, feeds) = service(&lens, &failing, 10_000);
            let mut offsets = vec![0usize; feeds.len()];
            let mut out = Vec::new();
            for (user, requested) in reqs {
                let size = service.limits().resolve(requested).unwrap();
                let before = service.errors().0.lock().unwrap().len();
                let served = now(service.next_feed(UserId::new(user), size, &mut out)).unwrap();

                prop_assert_eq!(out.len(), size.get());
                prop_assert_eq!(out.iter().collect::<HashSet<_>>().len(), out.len());
                prop_assert_eq!(served.personal + served.random, out.len());

                let known = (user as usize) < feeds.len() && !failing.contains(&user);
                if known {
                    let feed = &feeds[user as usize];
                    let start = offsets[user as usize];
                    let expected = &feed[start..(start + size.get()).min(feed.len())];
                    prop_assert_eq!(&out[..served.personal], expected);
                    offsets[user as usize] = start + served.personal;
                    prop_assert!(offsets[user as usize] <= feed.len());
                    prop_assert_eq!(served.exhausted_now, served.personal > 0 && offsets[user as usize] == feed.len());
                } else {
                    prop_assert_eq!(served.personal, 0);
                }
                let personal: HashSet<_> = out[..served.personal].iter().collect();
                prop_assert!(out[served.personal..].iter().all(|i| !personal.contains(i)));

                let recorded = service.errors().0.lock().unwrap()[before..].to_vec();
                let expected_kind = if (user as usize) >= feeds.len() && !failing.contains(&user) {
                    vec![(UserId::new(user), "unknown")]
                } else if failing.contains(&user) {
                    vec![(UserId::new(user), "backend")]
                } else {
                    vec![]
                };
                prop_assert_eq!(recorded, expected_kind);
            }
        }

        /// Consecutive requests never repeat a personal item, and together
        /// they hand out the whole feed exactly once.
        #[test]
        fn a_feed_is_handed_out_exactly_once(len in 0usize..300, sizes in prop::collection::vec(1u32..=200, 1..30)) {
            let (service, feeds) = service(&[len], &[], 1_000_000);
            let mut out = Vec::new();
            let mut personal = Vec::new();
            for size in sizes {
                let size = service.limits().resolve(size).unwrap();
                let served = now(service.next_feed(UserId::new(0), size, &mut out)).unwrap();
                personal.extend_from_slice(&out[..served.personal]);
            }
            prop_assert_eq!(&personal[..], &feeds[0][..personal.len()]);
        }

        /// A retry (same key, same size) gets the same answer and moves
        /// nothing; another key moves on; the same key with another size is
        /// refused and moves nothing; retries of an unknown user are alike.
        #[test]
        fn a_retry_gets_the_same_answer_and_moves_nothing(
            len in 0usize..80,
            steps in prop::collection::vec((0u8..4, 1u32..=30, any::<bool>()), 1..30),
        ) {
            let (service, feeds) = service(&[len], &[], 10_000);
            let user = UserId::new(0);
            let mut given = 0;
            let mut latest: Option<(IdempotencyKey, u32, Vec<ItemId>)> = None;
            let mut out = Vec::new();
            for (key, requested, unknown) in steps {
                let key = IdempotencyKey::parse(format!("key-{key}").as_bytes()).unwrap();
                let size = service.limits().resolve(requested).unwrap();
                if unknown {
                    let stranger = UserId::new(99);
                    let first = now(service.next_page(stranger, size, Some(key), &mut out)).unwrap();
                    let answer = out.clone();
                    let again = now(service.next_page(stranger, size, Some(key), &mut out)).unwrap();
                    prop_assert_eq!(&out, &answer);
                    prop_assert!(!first.replayed && !again.replayed);
                    continue;
                }
                let result = now(service.next_page(user, size, Some(key), &mut out));
                match &latest {
                    Some((k, first, answer)) if *k == key && *first == requested => {
                        let served = result.unwrap();
                        prop_assert!(served.replayed);
                        prop_assert_eq!(&out, answer);
                    }
                    Some((k, first, _)) if *k == key => {
                        prop_assert_eq!(result, Err(PageError::KeyReused { first: *first, requested }));
                        prop_assert!(out.is_empty());
                    }
                    _ => {
                        let served = result.unwrap();
                        prop_assert!(!served.replayed);
                        let expected = &feeds[0][given..(given + size.get()).min(feeds[0].len())];
                        prop_assert_eq!(&out[..served.personal], expected);
                        prop_assert_eq!(out.len(), size.get());
                        given += served.personal;
                        latest = Some((key, requested, out.clone()));
                    }
                }
            }
            // Whatever the retries, the next unkeyed page continues the feed.
            let size = service.limits().resolve(5).unwrap();
            let served = now(service.next_feed(user, size, &mut out)).unwrap();
            prop_assert_eq!(&out[..served.personal], &feeds[0][given..(given + 5).min(feeds[0].len())]);
        }

        /// A catalog too small for the request gives as many distinct items as
        /// it has, records the shortfall, and never loops or pads.
        #[test]
        fn a_small_catalog_gives_what_it_has(catalog in 1u32..20, requested in 1u32..=40) {
            let (service, _) = service(&[], &[], catalog);
            let size = service.limits().resolve(requested).unwrap();
            let mut out = Vec::new();
            now(service.next_feed(UserId::new(3), size, &mut out)).unwrap();
            prop_assert_eq!(out.len(), size.get().min(catalog as usize));
            prop_assert_eq!(out.iter().collect::<HashSet<_>>().len(), out.len());
            prop_assert!(out.iter().all(|i| (1..=catalog).contains(&i.get())));
            let kinds: Vec<_> = service.errors().0.lock().unwrap().iter().map(|e| e.1).collect();
            if size.get() > catalog as usize {
                prop_assert_eq!(kinds, vec!["unknown", "shortfall"]);
            } else {
                prop_assert_eq!(kinds, vec!["unknown"]);
            }
        }
    }

    /// A store that answers on the second poll, as one across the network
    /// does: its items are appended only then, and the service serves them.
    struct Remote(Vec<ItemId>);

    impl FeedStorage for Remote {
        fn take_next(
            &self,
            _user: UserId,
            max: usize,
            out: &mut Vec<ItemId>,
        ) -> impl Future<Output = Result<Taken, StorageError>> + Send {
            let mut polled = false;
            std::future::poll_fn(move |cx| {
                if !polled {
                    polled = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let end = max.min(self.0.len());
                out.extend_from_slice(&self.0[..end]);
                Poll::Ready(Ok(Taken {
                    count: end,
                    remaining: self.0.len() - end,
                }))
            })
        }

        fn take_keyed(
            &self,
            _user: UserId,
            _max: usize,
            _key: IdempotencyKey,
            _out: &mut Vec<ItemId>,
        ) -> impl Future<Output = Result<Keyed, StorageError>> + Send {
            std::future::ready(Err(StorageError::backend("not used here")))
        }
    }

    #[test]
    fn a_store_that_answers_later_is_awaited() {
        fn assert_send<T: Send>(value: T) -> T {
            value
        }
        let feed: Vec<_> = (1..=3).map(ItemId::new).collect();
        let random = FakeRandom {
            catalog: 100,
            start: Mutex::new(7),
        };
        let limits = SizeLimits::new(5, 10).unwrap();
        let service = FeedService::new(Remote(feed), random, FakeRecorder::default(), limits);
        let size = service.limits().resolve(5).unwrap();
        let mut out = Vec::new();
        let served = {
            let mut future = pin!(assert_send(service.next_feed(
                UserId::new(1),
                size,
                &mut out
            )));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(future.as_mut().poll(&mut cx).is_pending());
            let Poll::Ready(served) = future.poll(&mut cx) else {
                panic!("the service did not finish once the store answered");
            };
            served
        };
        assert_eq!(
            served.map(|s| (s.personal, s.random, s.exhausted_now)),
            Ok((3, 2, true))
        );
        assert_eq!(out[..3], [1, 2, 3].map(ItemId::new));
        assert!(service.errors().0.lock().unwrap().is_empty());
    }

    #[test]
    fn nothing_to_serve_is_unavailable() {
        let (service, _) = service(&[], &[], 0);
        let mut out = vec![ItemId::new(5)];
        let size = service.limits().resolve(3).unwrap();
        assert_eq!(
            now(service.next_feed(UserId::new(1), size, &mut out)),
            Err(FeedUnavailable {
                user: UserId::new(1)
            })
        );
        assert!(out.is_empty());
    }
}
