//! The domain's invariants, held by `FeedService` over the real in-memory
//! adapters: one test binary for the crate.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use feed_domain::{ErrorRecorder, FeedError, FeedService, ItemId, SizeLimits, UserId};
use feed_memory::{CatalogRandomFeed, DataSpec, FeedTable, MemoryFeedStorage};
use futures_util::FutureExt;
use proptest::prelude::*;

/// The in-memory store answers at once: its futures are complete when made.
const AT_ONCE: &str = "the memory store answers at once";

#[derive(Default)]
struct Recorded(Mutex<Vec<UserId>>);

impl ErrorRecorder for Recorded {
    fn record(&self, user: UserId, _error: &FeedError) {
        self.0.lock().unwrap().push(user);
    }
}

type Service = FeedService<MemoryFeedStorage, CatalogRandomFeed, Arc<Recorded>>;

fn service(users: u32, feed_len: u32, catalog: u32, seed: u64) -> (Service, Arc<Recorded>) {
    let spec = DataSpec::new(users, feed_len, catalog, seed).unwrap();
    let table = FeedTable::generate(&spec, 2, &AtomicU64::new(0));
    let recorded = Arc::new(Recorded::default());
    let service = FeedService::new(
        MemoryFeedStorage::new(table),
        CatalogRandomFeed::new(catalog),
        Arc::clone(&recorded),
        SizeLimits::new(10, 200).unwrap(),
    );
    (service, recorded)
}

fn feed(service: &Service, user: u64) -> Vec<ItemId> {
    let table = service.storage().table();
    table
        .feed(UserId::new(user))
        .unwrap()
        .iter()
        .copied()
        .map(ItemId::new)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Length, distinctness, order, progress, random items outside the
    /// personal ones, offsets that only move forward to at most the feed
    /// length, and the recorder called exactly for unknown users.
    #[test]
    fn the_domain_invariants_hold(
        feed_len in 1u32..80,
        seed in any::<u64>(),
        reqs in prop::collection::vec((0u32..6, 0u32..=120), 1..40),
    ) {
        let users = 4;
        let (service, recorded) = service(users, feed_len, 300.max(feed_len), seed);
        let feeds: Vec<_> = (0..users).map(|u| feed(&service, u.into())).collect();
        let mut offsets = vec![0usize; users as usize];
        let mut out = Vec::new();
        for (user, requested) in reqs {
            let size = service.limits().resolve(requested).unwrap();
            let errors_before = recorded.0.lock().unwrap().len();
            let served = service.next_feed(UserId::new(user.into()), size, &mut out).now_or_never().expect(AT_ONCE).unwrap();

            prop_assert_eq!(out.len(), size.get());
            prop_assert_eq!(out.iter().collect::<HashSet<_>>().len(), out.len());
            prop_assert!(out.iter().all(|i| (1..=300.max(feed_len)).contains(&i.get())));
            let personal: HashSet<_> = out[..served.personal].iter().collect();
            prop_assert!(out[served.personal..].iter().all(|i| !personal.contains(i)));

            let errors = recorded.0.lock().unwrap()[errors_before..].to_vec();
            if user < users {
                let start = offsets[user as usize];
                let end = (start + size.get()).min(feed_len as usize);
                prop_assert_eq!(&out[..served.personal], &feeds[user as usize][start..end]);
                offsets[user as usize] = end;
                let saved = service.storage().offsets().offset(user) as usize;
                prop_assert_eq!(saved, end);
                prop_assert!(saved <= feed_len as usize && saved >= start);
                prop_assert!(errors.is_empty());
            } else {
                prop_assert_eq!(served.personal, 0);
                prop_assert_eq!(errors, vec![UserId::new(user.into())]);
            }
        }
        // Only known users ever move.
        prop_assert!(service.storage().offsets().started() <= users as usize);
    }
}

/// Many threads, one user: no personal item is handed out twice, and all of
/// the feed is handed out.
#[test]
fn concurrent_requests_for_one_user_never_share_an_item() {
    const FEED_LEN: u32 = 200;
    let (service, recorded) = service(3, FEED_LEN, 1_000_000, 11);
    let service = Arc::new(service);
    let expected: HashSet<_> = feed(&service, 2).into_iter().collect();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let service = Arc::clone(&service);
            std::thread::spawn(move || {
                let size = service.limits().resolve(1 + t % 4).unwrap();
                let mut out = Vec::new();
                let mut personal = Vec::new();
                for _ in 0..200 {
                    let served = service
                        .next_feed(UserId::new(2), size, &mut out)
                        .now_or_never()
                        .expect(AT_ONCE)
                        .unwrap();
                    personal.extend_from_slice(&out[..served.personal]);
                }
                personal
            })
        })
        .collect();
    let mut all = Vec::new();
    for thread in threads {
        all.extend(thread.join().unwrap());
    }
    assert_eq!(all.len(), FEED_LEN as usize, "personal items handed out");
    let distinct: HashSet<_> = all.into_iter().collect();
    assert_eq!(distinct, expected);
    assert!(recorded.0.lock().unwrap().is_empty());
}
