//! Any feeds survive the whole path: written as Parquet (by the `parquet`
//! crate, snappy) and JSON Lines, imported,
//! written as a snapshot, mapped, and served by `FeedService` to threads
//! asking at once, every personal item handed out exactly once and in the
//! input's order.

use futures_util::FutureExt;

use std::collections::BTreeMap;
use std::sync::Arc;

use feed_domain::{SizeLimits, UserId};
use feed_memory::Snapshot;
use feed_memory::lifecycle::from_snapshot;
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

/// `rows` as a Parquet file with columns `user_id` (uint64) and `items`
/// (list of uint32), snappy, as a Rust batch job would write it.
fn write_parquet(path: &std::path::Path, rows: &[(&u64, &Vec<u32>)]) {
    use arrow_array::builder::{ListBuilder, UInt32Builder};
    use arrow_array::{ArrayRef, RecordBatch, UInt64Array};

    let users = UInt64Array::from_iter_values(rows.iter().map(|(user, _)| **user));
    let mut items = ListBuilder::new(UInt32Builder::new());
    for (_, feed) in rows {
        items.values().append_slice(feed);
        items.append(true);
    }
    let batch = RecordBatch::try_from_iter([
        ("user_id", Arc::new(users) as ArrayRef),
        ("items", Arc::new(items.finish()) as ArrayRef),
    ])
    .unwrap();
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn imported_feeds_are_served_in_input_order_under_concurrency(feeds in feeds(), seed in any::<u64>()) {
        let dir = std::env::temp_dir().join(format!("feed-roundtrip-{}-{seed:x}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // In a shuffled order (the import sorts users itself), half of the
        // users in a Parquet file, half in JSON Lines.
        let mut rows: Vec<(&u64, &Vec<u32>)> = feeds.iter().collect();
        fastrand::Rng::with_seed(seed).shuffle(&mut rows);
        let (parquet_rows, json_rows) = rows.split_at(rows.len() / 2);
        let lines: Vec<String> = json_rows
            .iter()
            .map(|(user, items)| format!(r#"{{"user_id": {user}, "items": {items:?}}}"#))
            .collect();
        let jsonl = dir.join("feeds.jsonl");
        std::fs::write(&jsonl, lines.join("\n")).unwrap();
        let parquet = dir.join("feeds.parquet");
        write_parquet(&parquet, parquet_rows);

        // Through the import's sort on disk: a run for every few feeds.
        let path = dir.join("feeds.snap");
        let how = feed_server::import::FileImport { sort_memory: Some(256), assume_free: None };
        feed_server::import::files(&[parquet, jsonl], None, &path, &how).unwrap();
        let opened = Snapshot::open(&path).unwrap();
        let fallback_empty = opened.fallback().is_empty();
        let users = opened.meta().users;
        let counters = Arc::new(feed_http::Counters::new(false));
        let recorder = Arc::new(LoggingRecorder::new(slog::Logger::root(slog::Discard, slog::o!()), counters));
        let limits = SizeLimits::new(3, 7).unwrap();
        let offsets = feed_memory::OffsetMap::in_memory(users as u32);
        let loaded = from_snapshot(opened, std::time::Duration::ZERO, limits, recorder, offsets);
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
                                let served = service.next_feed(UserId::new(user), size, &mut out).now_or_never().expect("the memory store answers at once");
                                // Every feed empty: no fallback item either, so a
                                // user with nothing left gets nothing at all.
                                let Ok(served) = served else {
                                    assert!(fallback_empty, "unavailable with a fallback list");
                                    break;
                                };
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
