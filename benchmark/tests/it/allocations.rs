//! What a request allocates outside actix-web.
//!
//! The claim of `feed-domain` and `feed-memory`: once a user has been seen
//! and the worker's item buffer has grown to the largest size, serving a
//! feed allocates nothing, whether the items are personal, come partly or
//! wholly from the random fill, or the user is unknown. The HTTP layer then
//! encodes the answer into a new buffer per response; the test below pins
//! down exactly what that costs.

use futures_util::FutureExt;

use std::sync::atomic::{AtomicU64, Ordering};

use feed_domain::{ErrorRecorder, FeedError, FeedService, ItemId, Served, SizeLimits, UserId};
use feed_memory::{
    CatalogRandomFeed, DataSpec, FeedTable, MemoryFeedStorage, OffsetMap, OnCorrupt, ProgressFile,
};

use super::{Counts, allocations_in};

const USERS: u32 = 2_000;
const FEED_LEN: u32 = 200;
const MAX: u32 = 200;

/// Users `0..1000` keep personal items left; `1000..1500` are exhausted;
/// `1500..1600` have exactly 5 items left; ids from `USERS` up are unknown.
const PERSONAL: std::ops::Range<u32> = 0..1_000;
const EXHAUSTED: std::ops::Range<u32> = 1_000..1_500;
const FIVE_LEFT: std::ops::Range<u32> = 1_500..1_600;

/// Counts errors; allocates nothing.
#[derive(Debug, Default)]
struct CountErrors(AtomicU64);

impl ErrorRecorder for CountErrors {
    fn record(&self, _user: UserId, _error: &FeedError) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type Service = FeedService<MemoryFeedStorage, CatalogRandomFeed, CountErrors>;

/// Where the service keeps progress.
#[derive(Debug, Clone, Copy)]
enum Progress {
    Memory,
    /// A progress file, as `feed-server` runs with `[progress] path` set.
    Durable,
}

fn service(progress: Progress) -> Service {
    let spec = DataSpec::new(USERS, FEED_LEN, 10_000_000, 42).unwrap();
    let table = FeedTable::generate(&spec, 2, &AtomicU64::new(0));
    let offsets = match progress {
        Progress::Memory => OffsetMap::in_memory(USERS),
        Progress::Durable => {
            let dir = std::env::temp_dir().join(format!(
                "feed-alloc-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            let (file, _) =
                ProgressFile::open(&dir, spec.fingerprint(), USERS, OnCorrupt::Fail).unwrap();
            OffsetMap::in_file(file)
        }
    };
    FeedService::new(
        MemoryFeedStorage::with_offsets(table, offsets),
        CatalogRandomFeed::new(spec.catalog_size()),
        CountErrors::default(),
        SizeLimits::new(10, MAX).unwrap(),
    )
}

fn call(service: &Service, user: u32, size: u32, out: &mut Vec<ItemId>) -> Served {
    let size = service.limits().resolve(size).unwrap();
    service
        .next_feed(UserId::new(user.into()), size, out)
        .now_or_never()
        .expect("the memory store answers at once")
        .unwrap()
}

/// Every user seen once, on this thread, with a buffer of the largest size:
/// the state of a worker thread that has been serving for a while.
fn warmed_up(progress: Progress) -> (Service, Vec<ItemId>) {
    let service = service(progress);
    let mut out = Vec::with_capacity(MAX as usize);
    for user in 0..USERS {
        call(&service, user, 10, &mut out);
    }
    for user in EXHAUSTED {
        assert!(call(&service, user, 190, &mut out).exhausted_now);
        assert_eq!(call(&service, user, 10, &mut out).random, 10);
    }
    for user in FIVE_LEFT {
        call(&service, user, 185, &mut out);
    }
    call(&service, USERS, 10, &mut out);
    (service, out)
}

#[test]
fn serving_a_feed_allocates_nothing() {
    serves_without_allocating(Progress::Memory);
}

#[test]
fn serving_a_feed_with_durable_progress_allocates_nothing() {
    serves_without_allocating(Progress::Durable);
}

fn serves_without_allocating(progress: Progress) {
    let (service, mut out) = warmed_up(progress);
    let errors_before = service.errors().0.load(Ordering::Relaxed);
    let mut calls = 0u64;
    let mut rng = fastrand::Rng::with_seed(3);
    let (counts, ()) = allocations_in(|| {
        // Personal only: 10 passes of sizes 1..=10, 55 more items per user,
        // well within the 190 each has left.
        for pass in 1..=10 {
            for user in PERSONAL {
                let s = call(&service, user, pass, &mut out);
                assert_eq!((s.personal, s.random), (pass as usize, 0));
                calls += 1;
            }
        }
        // The last 5 personal items, then 5 random ones.
        for user in FIVE_LEFT {
            let s = call(&service, user, 10, &mut out);
            assert_eq!((s.personal, s.random, s.exhausted_now), (5, 5, true));
            calls += 1;
        }
        // Exhausted: the whole answer from the random fill, up to the maximum.
        for (i, user) in EXHAUSTED.cycle().take(2_000).enumerate() {
            let size = [1, 10, 100, MAX][i % 4];
            let s = call(&service, user, size, &mut out);
            assert_eq!((s.personal, s.random), (0, size as usize));
            calls += 1;
        }
        // Unknown users: an error for the recorder, then a random answer.
        for _ in 0..2_000 {
            let user = rng.u32(USERS..);
            let s = call(&service, user, 10, &mut out);
            assert_eq!((s.personal, s.random), (0, 10));
            calls += 1;
        }
    });
    assert_eq!(calls, 10_000 + 100 + 2_000 + 2_000);
    assert_eq!(
        service.errors().0.load(Ordering::Relaxed) - errors_before,
        2_000
    );
    assert_eq!(
        counts,
        Counts::default(),
        "{calls} next_feed calls allocated"
    );
}

/// Progress is a flat array by user position, in memory or in a file: a
/// user's first request takes no allocation either.
#[test]
fn a_first_visit_allocates_nothing() {
    for progress in [Progress::Memory, Progress::Durable] {
        let mut out = Vec::with_capacity(MAX as usize);
        let fresh = self::service(progress);
        // Warm this thread's fastrand state on one user first.
        call(&fresh, 0, 10, &mut out);
        let (counts, ()) = allocations_in(|| {
            for user in 1..101 {
                call(&fresh, user, 10, &mut out);
            }
        });
        assert_eq!(counts, Counts::default(), "{progress:?}");
    }
}

/// Bodies are split off a per-thread chunk: answers sent one after the
/// other (a keep-alive client) reuse it and allocate nothing; answers held
/// at once (slow clients) allocate a chunk each time one is used up.
#[test]
fn encoding_allocates_a_chunk_at_a_time() {
    let ten: Vec<ItemId> = (0..10).map(|i| ItemId::new(1_000_000 + i)).collect();
    let many: Vec<ItemId> = (0..200).map(|i| ItemId::new(1_000_000 + i)).collect();
    let ids = |items: &[ItemId]| items.iter().map(|item| item.get()).collect::<Vec<_>>();
    for items in [&ten, &many] {
        let expected = serde_json::to_vec(&ids(items)).unwrap();
        let bound = feed_http::encoded_len_hint(items.len());
        let answers = 1_000;
        // A new chunk each time the current one has less room than the
        // longest answer, and one more for the first.
        let chunks = (answers * expected.len()).div_ceil(feed_http::CHUNK - bound) as u64 + 1;
        // The chunk this thread starts from.
        drop(feed_http::encode_items(items));
        for held in [false, true] {
            let mut kept = Vec::with_capacity(answers);
            let (counts, ()) = allocations_in(|| {
                for _ in 0..answers {
                    let body = feed_http::encode_items(items);
                    if held {
                        kept.push(body);
                    } else {
                        assert_eq!(body[..], expected[..]);
                    }
                }
            });
            // Each chunk is the buffer and, at its first split, the shared
            // header that counts its bodies.
            let chunks = if held { chunks } else { 0 };
            assert!(
                counts.allocations <= 2 * chunks
                    && counts.bytes <= chunks * (feed_http::CHUNK as u64 + 64),
                "{} items, held {held}: {counts:?}, {chunks} chunks",
                items.len()
            );
            assert!(kept.iter().all(|body| body[..] == expected[..]));
        }
    }
}

/// A flood of unknown users costs the logger a bounded number of
/// allocations: the recorder writes at most a few lines a second per kind
/// (each line allocates, to cross to the writer thread), and counts the rest
/// without allocating.
#[test]
fn a_flood_of_feed_errors_stays_within_an_allocation_budget() {
    use std::sync::Arc;

    use feed_domain::StorageError;
    use feed_http::Counters;
    use feed_server::recorder::LoggingRecorder;
    use slog::Drain;

    // The server's recorder behind an async drain, as `feed-server` builds
    // it, writing nowhere.
    let (drain, guard) = slog_async::Async::new(slog::Discard)
        .chan_size(8192)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .build_with_guard();
    let recorder = LoggingRecorder::new(
        slog::Logger::root(drain.fuse(), slog::o!()),
        Arc::new(Counters::new(true)),
    );
    let user = UserId::new(u64::from(USERS) + 1);
    recorder.record(user, &StorageError::UnknownUser(user).into());
    const RECORDS: u64 = 10_000;
    let (counts, ()) = allocations_in(|| {
        for _ in 0..RECORDS {
            recorder.record(user, &StorageError::UnknownUser(user).into());
        }
    });
    eprintln!(
        "LoggingRecorder::record through slog-async: {} allocations, {} bytes for {RECORDS} records",
        counts.allocations, counts.bytes
    );
    // Budget: the lines of two one-second windows (the loop may straddle a
    // window's end), at a generous 50 allocations a line; the records beyond
    // the budget allocate nothing.
    assert!(counts.allocations <= 2 * 5 * 50, "{counts:?}");
    drop(guard);
}
