//! Any feeds survive the whole path: written as JSON Lines, imported,
//! written as a snapshot, mapped, and served by `FeedService` to threads
//! asking at once, every personal item handed out exactly once and in the
//! input's order.

use std::collections::BTreeMap;
use std::sync::Arc;

use feed_domain::{SizeLimits, UserId};
use feed_memory::{Snapshot, snapshot};
use feed_server::data::from_snapshot;
use feed_server::recorder::LoggingRecorder;
use proptest::prelude::*;

fn feeds() -> impl Strategy<Value = BTreeMap<u64, Vec<u32>>> {
    let id = prop_oneof![any::<u64>(), 0u64..50, Just(u64::MAX)];
    let feed = prop::collection::vec(1u32..=u32::MAX, 0..40).prop_map(|mut items| {
        // Distinct, in an arbitrary (non-sorted) order.
        let mut seen = std::collections::HashSet::new();
        items.retain(|i| seen.insert(*i));
        items
    });
    prop::collection::btree_map(id, feed, 1..25)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn imported_feeds_are_served_in_input_order_under_concurrency(feeds in feeds(), seed in any::<u64>()) {
        let dir = std::env::temp_dir().join(format!("feed-roundtrip-{}-{seed:x}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The lines in a shuffled order: the import sorts users itself.
        let mut lines: Vec<String> = feeds
            .iter()
            .map(|(user, items)| format!(r#"{{"user_id": {user}, "items": {items:?}}}"#))
            .collect();
        fastrand::Rng::with_seed(seed).shuffle(&mut lines);
        let input = dir.join("feeds.jsonl");
        std::fs::write(&input, lines.join("\n")).unwrap();

        let (imported, _) = feed_import::import(&[input], None, &mut |_| {}).unwrap();
        let fallback = feed_import::distinct_items(&imported.items);
        let path = dir.join("feeds.snap");
        snapshot::write_csr(&path, &imported.user_ids, &imported.offsets, &imported.items, &fallback, 1).unwrap();
        let opened = Snapshot::open(&path).unwrap();
        opened.verify_items().unwrap();
        let counters = Arc::new(feed_http::Counters::new(false));
        let recorder = Arc::new(LoggingRecorder::new(slog::Logger::root(slog::Discard, slog::o!()), counters));
        let limits = SizeLimits::new(3, 7).unwrap();
        let offsets = feed_memory::OffsetMap::in_memory(imported.user_ids.len() as u32);
        let (loaded, _) = from_snapshot(opened, std::time::Duration::ZERO, limits, recorder, offsets);
        let service = Arc::new(loaded.service);

        // Three threads take every user's feed, a few items at a time.
        let taken: Vec<Vec<(u64, Vec<u32>)>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..3u32)
                .map(|t| {
                    let (service, feeds) = (Arc::clone(&service), &feeds);
                    scope.spawn(move || {
                        let mut taken = Vec::new();
                        let mut out = Vec::new();
                        let size = limits.resolve(1 + t * 3).unwrap();
                        for &user in feeds.keys() {
                            loop {
                                let served = service.next_feed(UserId::new(user), size, &mut out).unwrap();
                                if served.personal == 0 {
                                    break;
                                }
                                taken.push((user, out[..served.personal].iter().map(|i| i.get()).collect()));
                            }
                        }
                        taken
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });

        for (user, feed) in &feeds {
            // Every answer is a contiguous run of the feed, in order ...
            let mut runs: Vec<(usize, &Vec<u32>)> = Vec::new();
            for (u, items) in taken.iter().flatten() {
                if u == user {
                    let start = feed.iter().position(|i| *i == items[0]).unwrap();
                    prop_assert_eq!(&feed[start..start + items.len()], &items[..]);
                    runs.push((start, items));
                }
            }
            // ... and together they are the whole feed, each item once.
            runs.sort();
            let joined: Vec<u32> = runs.into_iter().flat_map(|(_, items)| items.iter().copied()).collect();
            prop_assert_eq!(&joined, feed);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
