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

/// A progress folder of its own.
fn progress_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "feed-damaged-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// No content of a progress file's array makes the server panic or
    /// answer wrong: random bytes written over it (a flipped bit, a foreign
    /// file, 0xFFFFFFF0 or 51 for a feed of 50), then a restart, and every
    /// answer is still exactly N distinct items, personal ones first and in
    /// order from wherever the damaged offset (clamped) says.
    #[test]
    fn a_damaged_progress_file_never_breaks_an_answer(
        feed_lens in prop::collection::vec(0usize..60, 1..12),
        garbage in prop::collection::vec(any::<u8>(), 1..64),
        at in any::<prop::sample::Index>(),
        sizes in prop::collection::vec(1u32..=20, 1..20),
    ) {
        use feed_memory::{FallbackList, OffsetMap, OnCorrupt, Opened, ProgressFile};
        let users = feed_lens.len() as u32;
        let mut offsets = vec![0u64];
        let mut items = Vec::new();
        for (user, &len) in feed_lens.iter().enumerate() {
            items.extend((1..=len as u32).map(|i| user as u32 * 1000 + i));
            offsets.push(items.len() as u64);
        }
        let ids: Vec<u64> = (0..u64::from(users)).map(|u| u * 7 + 1).collect();
        let table = || FeedTable::from_csr(ids.clone(), offsets.clone(), items.clone()).unwrap();
        let dir = progress_dir();
        drop(ProgressFile::open(&dir, 1, users, OnCorrupt::Fail).unwrap());
        // Damage the array (past the 4096-byte header) with random bytes.
        let path = dir.join(ProgressFile::file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        let array = &mut bytes[4096..];
        let start = at.index(array.len());
        for (i, byte) in garbage.iter().enumerate() {
            let n = array.len();
            array[(start + i) % n] = *byte;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (file, opened) = ProgressFile::open(&dir, 1, users, OnCorrupt::Fail).unwrap();
        prop_assert_eq!(opened, Opened::Restored);
        let fallback: Vec<u32> = (1_000_000..1_000_020).collect();
        let service = FeedService::new(
            MemoryFeedStorage::with_offsets(table(), OffsetMap::in_file(file)),
            CatalogRandomFeed::from_list(FallbackList::from_vec(fallback)),
            Arc::new(Recorded::default()),
            SizeLimits::new(10, 20).unwrap(),
        );
        for (request, &size) in sizes.iter().enumerate() {
            let user = request as u32 % users;
            let feed = service.storage().table().feed(UserId::new(ids[user as usize])).unwrap().to_vec();
            let before = service.storage().offsets().offset(user);
            prop_assert!(before as usize <= feed.len());
            let mut out = Vec::new();
            let size = service.limits().resolve(size).unwrap();
            let served = service.next_feed(UserId::new(ids[user as usize]), size, &mut out).now_or_never().expect(AT_ONCE).unwrap();
            prop_assert_eq!(out.len(), size.get());
            prop_assert_eq!(out.iter().collect::<HashSet<_>>().len(), out.len());
            let personal: Vec<u32> = out[..served.personal].iter().map(|i| i.get()).collect();
            prop_assert_eq!(&personal[..], &feed[before as usize..before as usize + served.personal]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
