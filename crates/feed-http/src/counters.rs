//! [`Counters`]: what the server counts on the request path.
//!
//! Counters are plain atomics in per-thread shards (each on its own cache
//! lines), so two workers never contend for one counter: recording a request
//! is a few uncontended increments on the calling thread's shard. A scrape
//! or a dashboard sample adds the shards up ([`Counters::totals`]). The
//! Prometheus exposition of these totals lives in `exposition`, apart from
//! the hot path.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use feed_domain::{BlocklistControl, DataChange, DataInfo, FeedError, StorageError, StorageHealth};

use crate::route::Route;

/// Upper bounds of the latency buckets, in seconds: fine in the few
/// microseconds the app takes for a feed request (the time is measured from
/// the request reaching the app, network and parsing excluded), coarse above
/// a millisecond.
pub const LATENCY_BOUNDS: [f64; 31] = [
    0.000_001,
    0.000_002,
    0.000_003,
    0.000_005,
    0.000_007_5,
    0.000_01,
    0.000_015,
    0.000_02,
    0.000_03,
    0.000_05,
    0.000_075,
    0.000_1,
    0.000_15,
    0.000_2,
    0.000_3,
    0.000_5,
    0.000_75,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
];
const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// HTTP status codes counted one by one; anything else is counted as 0.
const STATUSES: usize = 600;

/// Requests the request gate refused, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many requests in flight: shed with 503.
    Shed,
    /// Over the per-client rate limit: 429.
    RateLimited,
    /// URL or headers over their limit: 414 or 431.
    Oversized,
}

impl Refusal {
    const ALL: [Self; 3] = [Self::Shed, Self::RateLimited, Self::Oversized];
}

/// Feed errors, by the kind the metrics and the log name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedErrorKind {
    /// A user the storage has no feed for.
    UnknownUser,
    /// The storage failed.
    Storage,
    /// The random fill came up short.
    RandomFill,
}

impl FeedErrorKind {
    /// Every kind, in label order.
    pub const ALL: [Self; 3] = [Self::UnknownUser, Self::Storage, Self::RandomFill];

    /// The kind of `error`.
    pub const fn of(error: &FeedError) -> Self {
        match error {
            FeedError::Storage(StorageError::UnknownUser(_)) => Self::UnknownUser,
            FeedError::Storage(StorageError::Backend(_)) => Self::Storage,
            FeedError::RandomFill(_) => Self::RandomFill,
        }
    }

    /// The `kind` label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown_user",
            Self::Storage => "storage",
            Self::RandomFill => "random_fill",
        }
    }
}

/// One thread's counters.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    started: AtomicU64,
    unanswered: AtomicU64,
    requests: [[AtomicU64; STATUSES]; Route::ALL.len()],
    latency: [AtomicU64; BUCKETS],
    latency_sum_ns: AtomicU64,
    items_personal: AtomicU64,
    items_random: AtomicU64,
    feed_answers: AtomicU64,
    random_fills: AtomicU64,
    exhausted: AtomicU64,
    replayed: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
    feed_errors: [AtomicU64; FeedErrorKind::ALL.len()],
}

impl Default for Shard {
    fn default() -> Self {
        let zero = |_| AtomicU64::new(0);
        Self {
            started: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
            requests: std::array::from_fn(|_| std::array::from_fn(zero)),
            latency: std::array::from_fn(zero),
            latency_sum_ns: AtomicU64::new(0),
            items_personal: AtomicU64::new(0),
            items_random: AtomicU64::new(0),
            feed_answers: AtomicU64::new(0),
            random_fills: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            refusals: std::array::from_fn(zero),
            feed_errors: std::array::from_fn(zero),
        }
    }
}

/// Totals over all shards, for a scrape or a dashboard sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Requests by route and status.
    pub requests: Vec<(Route, u16, u64)>,
    /// Requests that reached the gate.
    pub started: u64,
    /// Requests that ended without an answer (the client went away).
    pub unanswered: u64,
    /// Requests answered, all routes.
    pub all_requests: u64,
    /// Requests answered 4xx or 5xx.
    pub error_responses: u64,
    /// Latency bucket counts (not cumulative), one more than the bounds.
    pub latency: [u64; BUCKETS],
    /// Sum of latencies, in seconds.
    pub latency_sum: f64,
    /// Personal items served.
    pub items_personal: u64,
    /// Random items served.
    pub items_random: u64,
    /// Feed answers of 200.
    pub feed_answers: u64,
    /// Feed answers that needed random items.
    pub random_fills: u64,
    /// Users who got their last personal item.
    pub exhausted: u64,
    /// Feed answers that replayed a retried request's answer.
    pub replayed: u64,
    /// Requests refused, by [`Refusal`] (in its declaration order).
    pub refusals: [u64; 3],
    /// Feed errors, by [`FeedErrorKind`] (in [`FeedErrorKind::ALL`] order).
    pub feed_errors: [u64; 3],
}

impl Totals {
    /// Requests refused for `reason`.
    pub const fn refused(&self, reason: Refusal) -> u64 {
        self.refusals[reason as usize]
    }

    /// Feed errors of `kind`.
    pub const fn feed_errors_of(&self, kind: FeedErrorKind) -> u64 {
        self.feed_errors[kind as usize]
    }

    /// Requests that reached the gate and are not answered yet (0 when the
    /// request metrics are off).
    pub const fn in_flight(&self) -> u64 {
        self.started
            .saturating_sub(self.all_requests)
            .saturating_sub(self.unanswered)
    }

    /// The latency below which `q` (0..1) of the requests fell, estimated by
    /// linear interpolation inside the bucket; `None` without requests.
    pub fn latency_quantile(latency: &[u64; BUCKETS], q: f64) -> Option<f64> {
        let total: u64 = latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0.0;
        for (i, &count) in latency.iter().enumerate() {
            let next = seen + count as f64;
            if next >= rank && count > 0 {
                let lower = if i == 0 { 0.0 } else { LATENCY_BOUNDS[i - 1] };
                let upper = LATENCY_BOUNDS.get(i).copied().unwrap_or(lower * 2.0);
                return Some(lower + (upper - lower) * ((rank - seen) / count as f64));
            }
            seen = next;
        }
        LATENCY_BOUNDS.last().copied()
    }
}

/// Everything the server counts. Refusals and feed errors are always
/// counted; the per-request counters (requests, latency, items) only when
/// enabled, so that their cost can be measured against a run without them.
#[derive(Debug)]
pub struct Counters {
    enabled: bool,
    shards: Box<[Shard]>,
    data: Mutex<Option<DataInfo>>,
    storage: Mutex<Option<StorageHealth>>,
    changes: [AtomicU64; DataChange::ALL.len()],
    progress: ProgressSyncs,
    /// The blocklist, where the storage kind has one.
    blocklist: std::sync::OnceLock<Arc<dyn BlocklistControl>>,
}

/// Syncs of the progress files (rare: a few a second, shared counters).
#[derive(Debug, Default)]
struct ProgressSyncs {
    /// Offsets found beyond their feed's end (a damaged progress file) and
    /// clamped, by the versions served.
    clamped: AtomicU64,
    count: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
    last_unix_ms: AtomicU64,
    buckets: [AtomicU64; SYNC_BUCKETS],
}

/// Upper bounds of the progress sync duration buckets, in seconds.
pub const SYNC_BOUNDS: [f64; 10] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];
const SYNC_BUCKETS: usize = SYNC_BOUNDS.len() + 1;

/// Totals of the progress syncs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SyncTotals {
    /// Syncs done.
    pub count: u64,
    /// Syncs that failed.
    pub errors: u64,
    /// Bytes of progress written to disk.
    pub bytes: u64,
    /// Seconds spent syncing.
    pub seconds: f64,
    /// When the last sync ended, ms since the Unix epoch (0: never).
    pub last_unix_ms: u64,
    /// Offsets found beyond their feed's end and clamped.
    pub clamped: u64,
    /// Duration bucket counts (not cumulative), one more than the bounds.
    pub buckets: Vec<u64>,
}

/// Milliseconds since the Unix epoch, now (0 before it).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Spreads threads over shards.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

/// The calling thread's shard number (take it modulo the shard count).
#[inline]
pub(crate) fn shard_index() -> usize {
    SHARD.with(|s| *s)
}

/// Shards per set of per-thread counters: two per core, and a few more for
/// other threads.
pub(crate) fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from) * 2 + 2
}

/// [`shard_count`], worked out once.
pub(crate) static SHARDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

impl Counters {
    /// Counters with one shard per core (and a few more for other threads).
    pub fn new(enabled: bool) -> Self {
        let shards = *SHARDS.get_or_init(shard_count);
        Self {
            enabled,
            shards: (0..shards).map(|_| Shard::default()).collect(),
            data: Mutex::new(None),
            storage: Mutex::new(None),
            changes: std::array::from_fn(|_| AtomicU64::new(0)),
            progress: ProgressSyncs::default(),
            blocklist: std::sync::OnceLock::new(),
        }
    }

    #[inline]
    fn shard(&self) -> &Shard {
        &self.shards[shard_index() % self.shards.len()]
    }

    /// A request reached the gate.
    #[inline]
    pub fn record_start(&self) {
        if self.enabled {
            self.shard().started.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request that reached the gate ended without an answer.
    #[cold]
    pub fn record_unanswered(&self) {
        if self.enabled {
            self.shard().unanswered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one answered request.
    #[inline]
    pub fn record_request(&self, route: Route, status: u16, took: Duration) {
        if !self.enabled {
            return;
        }
        let shard = self.shard();
        let status = if (status as usize) < STATUSES {
            status as usize
        } else {
            0
        };
        shard.requests[route as usize][status].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS - 1);
        shard.latency[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        shard.latency_sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records one feed answer of 200.
    #[inline]
    pub fn record_feed(&self, personal: usize, random: usize, exhausted_now: bool) {
        if !self.enabled {
            return;
        }
        let shard = self.shard();
        shard.feed_answers.fetch_add(1, Ordering::Relaxed);
        shard
            .items_personal
            .fetch_add(personal as u64, Ordering::Relaxed);
        if random > 0 {
            shard
                .items_random
                .fetch_add(random as u64, Ordering::Relaxed);
            shard.random_fills.fetch_add(1, Ordering::Relaxed);
        }
        if exhausted_now {
            shard.exhausted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records that a feed answer replayed a retried request's.
    pub fn record_replay(&self) {
        if self.enabled {
            self.shard().replayed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a request the gate refused.
    pub fn record_refusal(&self, reason: Refusal) {
        self.shard().refusals[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a feed error.
    pub fn record_feed_error(&self, kind: FeedErrorKind) {
        self.shard().feed_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the facts about the data being served.
    pub fn set_data(&self, info: DataInfo) {
        if let Ok(mut data) = self.data.lock() {
            *data = Some(info);
        }
    }

    /// The facts about the data being served, once set.
    pub fn data(&self) -> Option<DataInfo> {
        self.data.lock().ok().and_then(|data| data.clone())
    }

    /// Replaces the remote storage's health (a few times a second).
    pub fn set_storage_health(&self, health: StorageHealth) {
        if let Ok(mut storage) = self.storage.lock() {
            *storage = Some(health);
        }
    }

    /// Reports `blocklist`'s size and skips from now on.
    pub fn set_blocklist(&self, blocklist: Arc<dyn BlocklistControl>) {
        let _ = self.blocklist.set(blocklist);
    }

    /// Items blocked and personal items skipped for it, where there is a
    /// blocklist.
    pub fn blocklist(&self) -> Option<(usize, u64)> {
        self.blocklist
            .get()
            .map(|list| (list.len(), list.skipped()))
    }

    /// The remote storage's health; `None` for the in-process storage.
    pub fn storage_health(&self) -> Option<StorageHealth> {
        self.storage.lock().ok().and_then(|storage| storage.clone())
    }

    /// Counts a sync of a progress file of `bytes` bytes that took `took`.
    pub fn record_progress_sync(&self, took: Duration, bytes: u64) {
        let p = &self.progress;
        p.count.fetch_add(1, Ordering::Relaxed);
        p.bytes.fetch_add(bytes, Ordering::Relaxed);
        p.nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let seconds = took.as_secs_f64();
        let bucket = SYNC_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(SYNC_BUCKETS - 1);
        p.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        p.last_unix_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Counts a failed sync of a progress file.
    pub fn record_progress_sync_error(&self) {
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that all progress is durable now without a sync (a progress
    /// file was just opened, and opening folds it to disk): the age of the
    /// last good sync starts here.
    pub fn record_progress_durable(&self) {
        self.progress
            .last_unix_ms
            .store(unix_ms(), Ordering::Relaxed);
    }

    /// Counts `more` offsets found beyond their feed's end and clamped.
    pub fn record_progress_clamped(&self, more: u64) {
        self.progress.clamped.fetch_add(more, Ordering::Relaxed);
    }

    /// The progress syncs so far.
    pub fn progress_syncs(&self) -> SyncTotals {
        let p = &self.progress;
        SyncTotals {
            count: p.count.load(Ordering::Relaxed),
            errors: p.errors.load(Ordering::Relaxed),
            bytes: p.bytes.load(Ordering::Relaxed),
            seconds: p.nanos.load(Ordering::Relaxed) as f64 / 1e9,
            last_unix_ms: p.last_unix_ms.load(Ordering::Relaxed),
            clamped: p.clamped.load(Ordering::Relaxed),
            buckets: p
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// Counts a reload or rollback (rare: one shared counter is fine).
    pub fn record_data_change(&self, change: DataChange) {
        self.changes[change as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads and rollbacks of `change`'s kind so far.
    pub fn data_changes(&self, change: DataChange) -> u64 {
        self.changes[change as usize].load(Ordering::Relaxed)
    }

    /// Adds up all shards.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        let sum = |f: &dyn Fn(&Shard) -> &AtomicU64| -> u64 {
            self.shards
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        for route in Route::ALL {
            for status in 0..STATUSES {
                let count = sum(&|s| &s.requests[route as usize][status]);
                if count > 0 {
                    totals.requests.push((route, status as u16, count));
                    totals.all_requests += count;
                    if status >= 400 {
                        totals.error_responses += count;
                    }
                }
            }
        }
        for (i, bucket) in totals.latency.iter_mut().enumerate() {
            *bucket = sum(&|s| &s.latency[i]);
        }
        for (i, refusals) in totals.refusals.iter_mut().enumerate() {
            *refusals = sum(&|s| &s.refusals[i]);
        }
        for (i, errors) in totals.feed_errors.iter_mut().enumerate() {
            *errors = sum(&|s| &s.feed_errors[i]);
        }
        totals.started = sum(&|s| &s.started);
        totals.unanswered = sum(&|s| &s.unanswered);
        totals.latency_sum = sum(&|s| &s.latency_sum_ns) as f64 / 1e9;
        totals.items_personal = sum(&|s| &s.items_personal);
        totals.items_random = sum(&|s| &s.items_random);
        totals.feed_answers = sum(&|s| &s.feed_answers);
        totals.random_fills = sum(&|s| &s.random_fills);
        totals.exhausted = sum(&|s| &s.exhausted);
        totals.replayed = sum(&|s| &s.replayed);
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_across_threads() {
        let metrics = std::sync::Arc::new(Counters::new(true));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = std::sync::Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        metrics.record_request(Route::Feed, 200, Duration::from_micros(40));
                        metrics.record_feed(8, 2, false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        metrics.record_request(Route::Unmatched, 404, Duration::from_millis(2));
        let totals = metrics.totals();
        assert_eq!(totals.all_requests, 4001);
        assert_eq!(totals.error_responses, 1);
        assert!(totals.requests.contains(&(Route::Feed, 200, 4000)));
        assert_eq!(
            (totals.items_personal, totals.items_random),
            (32_000, 8_000)
        );
        assert_eq!(totals.random_fills, 4000);
        let p50 = Totals::latency_quantile(&totals.latency, 0.5).unwrap();
        assert!(p50 > 0.000_03 && p50 <= 0.000_05, "{p50}");
        let p100 = Totals::latency_quantile(&totals.latency, 1.0).unwrap();
        assert!(p100 > 0.0015 && p100 <= 0.002, "{p100}");
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        let metrics = Counters::new(false);
        metrics.record_request(Route::Feed, 200, Duration::from_micros(40));
        metrics.record_feed(1, 1, true);
        assert_eq!(metrics.totals(), Totals::default());
        // Refusals and feed errors are counted all the same.
        metrics.record_refusal(Refusal::Shed);
        metrics.record_feed_error(FeedErrorKind::UnknownUser);
        let totals = metrics.totals();
        assert_eq!(totals.refused(Refusal::Shed), 1);
        assert_eq!(totals.feed_errors_of(FeedErrorKind::UnknownUser), 1);
    }
}
