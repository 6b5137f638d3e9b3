//! The domain of Fast Feed: what a feed request means, independent of how it
//! arrives or where the feeds live.
//!
//! [`FeedService`] answers "give user U their next N items". It asks a
//! [`FeedStorage`] for the user's next personal items (which also saves the
//! user's progress), fills any shortfall from a [`RandomFeed`] with catalog
//! items not already in the answer, and reports every storage failure to an
//! [`ErrorRecorder`]. The three ports are traits so that the service can run
//! against in-memory tables, a remote store, or test fakes.
//!
//! # What this crate must not know
//!
//! No HTTP, no async runtime, no serialization, no configuration files, no
//! logging framework. It depends on `thiserror` alone, so any service can
//! depend on it without pulling a framework in. The invariant is written in
//! `docs/ARCHITECTURE.md` and enforced by a test that reads `cargo metadata`.
//!
//! # Validated types
//!
//! Raw input becomes a [`UserId`] or a [`FeedSize`] through fallible
//! constructors at the edge; nothing in here handles unvalidated strings.
//!
//! # Example: plugging in your own adapters
//!
//! ```
//! use std::sync::Mutex;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use feed_domain::{
//!     ErrorRecorder, FeedError, FeedService, FeedSize, FeedStorage, IdempotencyKey, ItemId,
//!     Keyed, RandomFeed, RandomFillError, SizeLimits, StorageError, Taken, UserId,
//! };
//!
//! /// One shared feed for every user below 100, with a cursor per user and
//! /// their latest keyed request (key, start, size).
//! struct SmallStore {
//!     feed: Vec<ItemId>,
//!     cursors: Mutex<Vec<usize>>,
//!     latest: Mutex<Vec<Option<(IdempotencyKey, usize, usize)>>>,
//! }
//!
//! impl FeedStorage for SmallStore {
//!     // An in-process store answers at once: its future is already complete.
//!     fn take_next(&self, user: UserId, max: usize, out: &mut Vec<ItemId>)
//!         -> impl Future<Output = Result<Taken, StorageError>> + Send
//!     {
//!         std::future::ready(self.take(user, max, out))
//!     }
//!
//!     fn take_keyed(&self, user: UserId, max: usize, key: IdempotencyKey, out: &mut Vec<ItemId>)
//!         -> impl Future<Output = Result<Keyed, StorageError>> + Send
//!     {
//!         std::future::ready(self.take_keyed(user, max, key, out))
//!     }
//! }
//!
//! impl SmallStore {
//!     fn take(&self, user: UserId, max: usize, out: &mut Vec<ItemId>)
//!         -> Result<Taken, StorageError>
//!     {
//!         let mut cursors = self.cursors.lock().map_err(|_| StorageError::backend("poisoned"))?;
//!         let cursor = cursors
//!             .get_mut(user.get() as usize)
//!             .ok_or(StorageError::UnknownUser(user))?;
//!         let start = *cursor;
//!         let end = (start + max).min(self.feed.len());
//!         out.extend_from_slice(&self.feed[start..end]);
//!         *cursor = end;
//!         Ok(Taken { count: end - start, remaining: self.feed.len() - end })
//!     }
//!
//!     fn take_keyed(&self, user: UserId, max: usize, key: IdempotencyKey, out: &mut Vec<ItemId>)
//!         -> Result<Keyed, StorageError>
//!     {
//!         let mut latest = self.latest.lock().map_err(|_| StorageError::backend("poisoned"))?;
//!         let slot = latest.get_mut(user.get() as usize).ok_or(StorageError::UnknownUser(user))?;
//!         match *slot {
//!             Some((k, _, size)) if k == key && size != max => {
//!                 Ok(Keyed::OtherSize { first: size as u32 })
//!             }
//!             Some((k, start, _)) if k == key => {
//!                 let end = (start + max).min(self.feed.len());
//!                 out.extend_from_slice(&self.feed[start..end]);
//!                 let taken = Taken { count: end - start, remaining: self.feed.len() - end };
//!                 Ok(Keyed::Replayed { taken, start: start as u32 })
//!             }
//!             _ => {
//!                 let start = self.cursors.lock().map_err(|_| StorageError::backend("poisoned"))?
//!                     [user.get() as usize];
//!                 let taken = self.take(user, max, out)?;
//!                 *slot = Some((key, start, max));
//!                 Ok(Keyed::Fresh { taken, start: start as u32 })
//!             }
//!         }
//!     }
//! }
//!
//! /// Random items are 1000, 1001, ... skipping any already in the answer.
//! struct Counting;
//!
//! impl RandomFeed for Counting {
//!     fn fill(&self, items: &mut Vec<ItemId>, count: usize) -> Result<(), RandomFillError> {
//!         let mut next = 1000;
//!         let target = items.len() + count;
//!         while items.len() < target {
//!             let candidate = ItemId::new(next);
//!             if !items.contains(&candidate) {
//!                 items.push(candidate);
//!             }
//!             next += 1;
//!         }
//!         Ok(())
//!     }
//!
//!     // Counting ignores the seed: it is deterministic already.
//!     fn fill_seeded(&self, items: &mut Vec<ItemId>, count: usize, _seed: u64)
//!         -> Result<(), RandomFillError>
//!     {
//!         self.fill(items, count)
//!     }
//! }
//!
//! #[derive(Default)]
//! struct CountErrors(AtomicUsize);
//!
//! impl ErrorRecorder for CountErrors {
//!     fn record(&self, _user: UserId, _error: &FeedError) {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!     }
//! }
//!
//! let store = SmallStore {
//!     feed: (1..=5).map(ItemId::new).collect(),
//!     cursors: Mutex::new(vec![0; 100]),
//!     latest: Mutex::new(vec![None; 100]),
//! };
//! let limits = SizeLimits::new(3, 10).unwrap();
//! let service = FeedService::new(store, Counting, CountErrors::default(), limits);
//!
//! // `next_feed` is async. Over a store that answers at once its future is
//! // complete on the first poll, so this example polls it once; a server
//! // awaits it on its runtime.
//! fn now<F: std::future::Future>(future: F) -> F::Output {
//!     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//!     match std::pin::pin!(future).poll(&mut cx) {
//!         std::task::Poll::Ready(output) => output,
//!         std::task::Poll::Pending => unreachable!("SmallStore answers at once"),
//!     }
//! }
//!
//! let mut items = Vec::new();
//! let size = service.limits().resolve(0).unwrap(); // 0 means "the default", 3 here
//! now(service.next_feed(UserId::new(7), size, &mut items)).unwrap();
//! assert_eq!(items, [1, 2, 3].map(ItemId::new));
//!
//! // Only two personal items remain; the third comes from the random feed.
//! let served = now(service.next_feed(UserId::new(7), size, &mut items)).unwrap();
//! assert_eq!(items, [4, 5, 1000].map(ItemId::new));
//! assert_eq!((served.personal, served.random), (2, 1));
//!
//! // A user the store does not know gets a full random feed; the error is recorded.
//! let two: FeedSize = service.limits().resolve(2).unwrap();
//! now(service.next_feed(UserId::new(500), two, &mut items)).unwrap();
//! assert_eq!(items, [1000, 1001].map(ItemId::new));
//! assert_eq!(service.errors().0.load(Ordering::Relaxed), 1);
//!
//! // A request with a retry key, then its retry: the same answer, nothing moves.
//! let user = UserId::new(8);
//! let key = IdempotencyKey::parse(b"b7e2-0001").unwrap();
//! now(service.next_page(user, size, Some(key), &mut items)).unwrap();
//! let first = items.clone();
//! let served = now(service.next_page(user, size, Some(key), &mut items)).unwrap();
//! assert!(served.replayed);
//! assert_eq!(items, first);
//! ```

mod data;
mod error;
mod ports;
mod service;
mod status;
mod types;

pub use data::{
    BlocklistControl, BlocklistError, BlocklistPlan, DataChange, DataControl, DataControlError,
    DataInfo, DataVersion, MAX_BLOCKED, ProgressEvent, Publish, short_fallback,
};
pub use error::{
    FeedError, FeedSizeError, FeedUnavailable, IdempotencyKeyError, InvalidSetting, PageError,
    RandomFillError, SizeLimitsError, StorageError,
};
pub use ports::{BlockedItems, ErrorRecorder, FeedStorage, Keyed, RandomFeed, RankedFeeds, Taken};
pub use service::{FeedService, Served};
pub use status::{CircuitState, StorageHealth};
pub use types::{FeedSize, IdempotencyKey, ItemId, SizeLimits, UserId};
