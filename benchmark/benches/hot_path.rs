//! Criterion micro-benchmarks of the request path, step by step and whole.
//!
//! `cargo bench -p feed-bench --bench hot_path` runs them all;
//! `cargo bench -p feed-bench --bench hot_path -- random_fill` one group.
//!
//! - `take_next`: `MemoryFeedStorage::take_next` for 10 items, for users who
//!   have items left, who are exhausted, and who do not exist. The table is
//!   100,000 users x 200 (80 MB, beyond the caches, as in production) and the
//!   users come in a random order, so each call pays the cache misses of a
//!   real request.
//! - `offsets`: `OffsetMap::advance` from 1, 2 and 4 threads at once, all on
//!   one user (every thread fights over one cache line) and on random users
//!   (no fight). The time is the wall time of all threads divided by all
//!   calls, so with no contention and enough cores it halves with two
//!   threads. This machine has two cores: four threads measure the
//!   scheduler too.
//! - `random_fill`: `CatalogRandomFeed::fill` from a catalog of 10,000,000
//!   into an empty answer, for 10, 200, 1,000 and 10,000 items (the largest
//!   answer a configuration may allow), and for 10 after 190 personal items,
//!   reported per item added: the fill is linear in the answer's size, so
//!   the figures should stay flat. Next to it, the same algorithm with a
//!   foldhash `HashSet` reused between calls (the best case for hashing)
//!   instead of the `SeenSet` filter.
//! - `generate`: `FeedTable::generate` on every core, per item: the shipped
//!   shape (feeds of 200 from 10,000,000), both sides of the catalog size
//!   where it switches from sampling to dealing from a deck, and a catalog
//!   exactly as large as a feed (every feed a permutation of it).
//! - `encode_items`: the hand-written encoder against `serde_json::to_vec`
//!   for 10 and 200 items, and both written into a `Vec<u8>` then turned
//!   into the `Bytes` that actix-web sends.
//! - `next_feed`: the whole `FeedService::next_feed` over the in-memory
//!   adapters (personal, exhausted with a random fill, unknown user), and
//!   `next_feed` followed by `encode_items`: everything a request does
//!   outside actix-web.
//!
//! Setup that must not be timed (fresh offsets for users with items left)
//! happens outside the measured loops, via `iter_custom`.

// `criterion_group!` defines a public function that cannot carry a doc.
#![allow(missing_docs)]

use futures_util::FutureExt;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use feed_domain::{
    ErrorRecorder, FeedError, FeedService, FeedStorage, ItemId, RandomFeed, RandomFillError,
    SizeLimits, UserId,
};
use feed_memory::{CatalogRandomFeed, DataSpec, FeedTable, MemoryFeedStorage, OffsetMap};

const USERS: u32 = 100_000;
const FEED_LEN: u32 = 200;
const CATALOG: u32 = 10_000_000;
const SIZE: usize = 10;

/// The shipped configuration's data, scaled down to 100,000 users.
fn table() -> FeedTable {
    let spec = DataSpec::new(USERS, FEED_LEN, CATALOG, 42).expect("a valid spec");
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    FeedTable::generate(&spec, threads, &AtomicU64::new(0))
}

/// Every user once, in a random order.
fn shuffled_users() -> Vec<UserId> {
    let mut users: Vec<UserId> = (0..u64::from(USERS)).map(UserId::new).collect();
    fastrand::Rng::with_seed(7).shuffle(&mut users);
    users
}

/// Storage over a copy of `table` in which every user has been seen once
/// (so the offset map entry exists, as for any returning user) and no item
/// has been taken.
fn fresh_storage(table: &FeedTable) -> MemoryFeedStorage {
    let storage = MemoryFeedStorage::new(table.clone());
    let mut out = Vec::new();
    for user in 0..USERS {
        storage
            .take_now(UserId::new(user.into()), 0, &mut out)
            .expect("a known user");
    }
    storage
}

/// Runs `call(i)` for `iters` values of `i`, on fresh storage every
/// `20 * USERS` calls so that, visiting users round-robin 10 items at a
/// time, no user ever runs out. Only the calls are timed.
fn timed_on_fresh_storage(
    table: &FeedTable,
    iters: u64,
    mut call: impl FnMut(&MemoryFeedStorage, u64),
) -> Duration {
    let per_storage = u64::from(USERS) * u64::from(FEED_LEN) / SIZE as u64;
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let storage = fresh_storage(table);
        let n = (iters - done).min(per_storage);
        let start = Instant::now();
        for i in 0..n {
            call(&storage, i);
        }
        total += start.elapsed();
        done += n;
    }
    total
}

/// A storage in which every user in `users` has taken their whole feed.
fn exhaust(storage: &MemoryFeedStorage, users: impl IntoIterator<Item = UserId>) {
    let mut out = Vec::new();
    for user in users {
        storage
            .take_now(user, FEED_LEN as usize, &mut out)
            .expect("a known user");
    }
}

fn take_next(c: &mut Criterion) {
    let table = table();
    let order = shuffled_users();
    let mut group = c.benchmark_group("take_next");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(SIZE);

    group.bench_function("personal_10", |b| {
        b.iter_custom(|iters| {
            timed_on_fresh_storage(&table, iters, |storage, i| {
                out.clear();
                let user = order[(i % u64::from(USERS)) as usize];
                black_box(
                    storage
                        .take_next(black_box(user), SIZE, &mut out)
                        .now_or_never(),
                );
            })
        });
    });

    let storage = fresh_storage(&table);
    exhaust(&storage, order.iter().copied());
    let mut i = 0usize;
    group.bench_function("exhausted", |b| {
        b.iter(|| {
            out.clear();
            i = (i + 1) % order.len();
            black_box(
                storage
                    .take_next(black_box(order[i]), SIZE, &mut out)
                    .now_or_never(),
            );
        });
    });
    group.bench_function("unknown_user", |b| {
        b.iter(|| {
            out.clear();
            black_box(
                storage
                    .take_next(black_box(UserId::new(u64::from(USERS) + 5)), SIZE, &mut out)
                    .now_or_never(),
            );
        });
    });
    group.finish();
}

/// `threads` threads each call `advance` `iters / threads` times on the
/// users `pick` gives them; the result is the wall time of the slowest.
fn advance_from_threads(
    map: &Arc<OffsetMap>,
    threads: u64,
    iters: u64,
    pick: fn(&mut fastrand::Rng) -> u32,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let map = Arc::clone(map);
            let barrier = Arc::clone(&barrier);
            let n = iters / threads + u64::from(t < iters % threads);
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                let users: Vec<u32> = (0..1024).map(|_| pick(&mut rng)).collect();
                barrier.wait();
                let start = Instant::now();
                for i in 0..n {
                    // A feed of u32::MAX items: no thread ever reaches its end.
                    black_box(map.advance(users[i as usize % users.len()], 1, u32::MAX));
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a bench thread"))
        .max()
        .unwrap_or_default()
}

fn offsets(c: &mut Criterion) {
    const MAP_USERS: u32 = 1_000_000;
    let map = Arc::new(OffsetMap::in_memory(MAP_USERS));
    for user in 0..MAP_USERS {
        map.advance(user, 0, u32::MAX);
    }
    let mut group = c.benchmark_group("offsets");
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 2, 4] {
        group.bench_with_input(
            BenchmarkId::new("one_user", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| advance_from_threads(&map, threads, iters, |_| 3));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("random_users", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    advance_from_threads(&map, threads, iters, |rng| rng.u32(0..MAP_USERS))
                });
            },
        );
    }
    group.finish();
}

/// `CatalogRandomFeed::fill`'s algorithm with the duplicate check done by a
/// hash set that the caller keeps between calls (cleared, never shrunk).
fn fill_with_set<S: BuildHasher>(
    catalog: u32,
    set: &mut HashSet<u32, S>,
    items: &mut Vec<ItemId>,
    count: usize,
) -> Result<(), RandomFillError> {
    set.clear();
    set.extend(items.iter().map(|i| i.get()));
    let target = items.len() + count;
    let mut draws = count.saturating_mul(4).saturating_add(32);
    while items.len() < target && draws > 0 {
        draws -= 1;
        let candidate = fastrand::u32(1..=catalog);
        if set.insert(candidate) {
            items.push(ItemId::new(candidate));
        }
    }
    // The catalog walk of the real fill is left out: with a catalog of
    // 10,000,000 and at most 10,000 items, the draws never run out.
    match target - items.len() {
        0 => Ok(()),
        missing => Err(RandomFillError::Shortfall { missing }),
    }
}

/// The largest random fill: a whole answer of the largest size a
/// configuration may allow.
const LARGEST_FILL: usize = SizeLimits::CEILING as usize;

fn random_fill(c: &mut Criterion) {
    let random = CatalogRandomFeed::new(CATALOG);
    let personal: Vec<ItemId> = (1..=190).map(|i| ItemId::new(i * 7)).collect();
    let mut group = c.benchmark_group("random_fill");
    // (name, items already in the answer, items to add)
    let cases = [
        ("10", 0, 10),
        ("200", 0, 200),
        ("1000", 0, 1_000),
        ("10000", 0, LARGEST_FILL),
        ("10_after_190", 190, 10),
    ];
    let mut items = Vec::with_capacity(LARGEST_FILL);
    for (name, before, count) in cases {
        let mut reused = HashSet::with_capacity_and_hasher(
            before + count,
            foldhash::fast::RandomState::default(),
        );
        // Per item added, so that a fill linear in its size reads flat.
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(BenchmarkId::new("fill", name), |b| {
            b.iter(|| {
                items.clear();
                items.extend_from_slice(&personal[..before]);
                random.fill(&mut items, black_box(count)).ok();
                black_box(&items);
            });
        });
        group.bench_function(BenchmarkId::new("foldhash_set_reused", name), |b| {
            b.iter(|| {
                items.clear();
                items.extend_from_slice(&personal[..before]);
                fill_with_set(CATALOG, &mut reused, &mut items, black_box(count)).ok();
                black_box(&items);
            });
        });
    }
    group.finish();
}

/// `FeedTable::generate` on every core, per item generated. Catalogs from
/// 16 times a feed up are sampled, smaller ones dealt from a deck (see
/// `feed-memory`'s `generate.rs`).
fn generate(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut group = c.benchmark_group("generate");
    group.sample_size(10);
    // (name, users, feed_len, catalog_size)
    let cases = [
        ("100000x200_of_10000000", 100_000, 200, CATALOG),
        ("100000x200_of_3200", 100_000, 200, 3_200),
        ("100000x200_of_3199", 100_000, 200, 3_199),
        ("10000x1000_of_1000", 10_000, 1_000, 1_000),
    ];
    for (name, users, feed_len, catalog) in cases {
        let spec = DataSpec::new(users, feed_len, catalog, 42).expect("a valid spec");
        group.throughput(Throughput::Elements(u64::from(users) * u64::from(feed_len)));
        group.bench_function(name, |b| {
            b.iter(|| FeedTable::generate(&spec, threads, &AtomicU64::new(0)));
        });
    }
    group.finish();
}

/// The encoder's loop (`feed_http::write_items`) into a fresh `Vec<u8>` per
/// call, where `encode_items` splits each body off a per-thread chunk.
fn itoa_vec(items: &[ItemId]) -> Vec<u8> {
    let mut out = vec![0; feed_http::encoded_len_hint(items.len())];
    let len = feed_http::write_items(items, &mut out);
    out.truncate(len);
    out
}

fn encode(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut group = c.benchmark_group("encode_items");
    for n in [10usize, 200] {
        let ids: Vec<u32> = (0..n).map(|_| rng.u32(1..=CATALOG)).collect();
        let items: Vec<ItemId> = ids.iter().copied().map(ItemId::new).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("hand_written", n), &items, |b, items| {
            b.iter(|| feed_http::encode_items(black_box(items)));
        });
        group.bench_with_input(BenchmarkId::new("serde_json", n), &ids, |b, ids| {
            b.iter(|| serde_json::to_vec(black_box(ids)).expect("u32s serialize"));
        });
        // What actix-web needs is `Bytes`: the same two, made into `Bytes`.
        group.bench_with_input(
            BenchmarkId::new("itoa_vec_to_bytes", n),
            &items,
            |b, items| {
                b.iter(|| Bytes::from(itoa_vec(black_box(items))));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_to_bytes", n),
            &ids,
            |b, ids| {
                b.iter(|| Bytes::from(serde_json::to_vec(black_box(ids)).expect("u32s serialize")));
            },
        );
    }
    group.finish();
}

/// Counts errors and nothing else: the service's cost without logging.
#[derive(Debug, Default)]
struct CountErrors(AtomicU64);

impl ErrorRecorder for CountErrors {
    fn record(&self, _user: UserId, _error: &FeedError) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type Service = FeedService<MemoryFeedStorage, CatalogRandomFeed, CountErrors>;

fn service(storage: MemoryFeedStorage) -> Service {
    FeedService::new(
        storage,
        CatalogRandomFeed::new(CATALOG),
        CountErrors::default(),
        SizeLimits::new(SIZE as u32, FEED_LEN).expect("valid limits"),
    )
}

fn next_feed(c: &mut Criterion) {
    let table = table();
    let order = shuffled_users();
    let limits = SizeLimits::new(SIZE as u32, FEED_LEN).expect("valid limits");
    let size = limits.default_size();
    let mut group = c.benchmark_group("next_feed");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(FEED_LEN as usize);

    // The service owns its storage, so fresh storage means a fresh service:
    // build it per batch, outside the timed loop.
    let per_service = u64::from(USERS) * u64::from(FEED_LEN) / SIZE as u64;
    let fresh_batches = |iters: u64, encode: bool, out: &mut Vec<ItemId>| {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let svc = service(fresh_storage(&table));
            let n = (iters - done).min(per_service);
            let start = Instant::now();
            for i in 0..n {
                let user = order[(i % u64::from(USERS)) as usize];
                black_box(svc.next_feed(black_box(user), size, out).now_or_never());
                if encode {
                    black_box(feed_http::encode_items(out));
                }
            }
            total += start.elapsed();
            done += n;
        }
        total
    };
    group.bench_function("personal_10", |b| {
        b.iter_custom(|iters| fresh_batches(iters, false, &mut out));
    });
    group.bench_function("personal_10_and_encode", |b| {
        b.iter_custom(|iters| fresh_batches(iters, true, &mut out));
    });

    let svc = service(fresh_storage(&table));
    exhaust(svc.storage(), order.iter().copied());
    let mut i = 0usize;
    for requested in [10u32, 200] {
        let size = limits.resolve(requested).expect("within limits");
        group.bench_function(BenchmarkId::new("exhausted", requested), |b| {
            b.iter(|| {
                i = (i + 1) % order.len();
                black_box(
                    svc.next_feed(black_box(order[i]), size, &mut out)
                        .now_or_never(),
                );
            });
        });
    }
    group.bench_function("unknown_user_10", |b| {
        b.iter(|| {
            black_box(
                svc.next_feed(black_box(UserId::new(u64::from(USERS) + 1)), size, &mut out)
                    .now_or_never(),
            );
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    take_next,
    offsets,
    random_fill,
    generate,
    encode,
    next_feed
);
criterion_main!(benches);
