//! [`Metrics`]: what the server counts on the request path, and its
//! Prometheus exposition.
//!
//! Counters are plain atomics in per-thread shards (each on its own cache
//! lines), so two workers never contend for one counter; a scrape or a
//! dashboard sample adds the shards up. The exposition format is written by
//! `prometheus-client` through a [`Collector`], not by hand.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::guard::GuardCounts;
use crate::recorder::FeedErrorCounts;

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

/// The routes requests are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/feed/...`
    Feed,
    /// `/livez`, `/readyz`
    Health,
    /// Anything else (404s).
    Other,
}

impl Route {
    const ALL: [Self; 3] = [Self::Feed, Self::Health, Self::Other];

    /// The route of a request path.
    pub fn of(path: &str) -> Self {
        if path == "/feed" || path.starts_with("/feed/") {
            Self::Feed
        } else if path == "/livez" || path == "/readyz" {
            Self::Health
        } else {
            Self::Other
        }
    }

    const fn label(self) -> &'static str {
        match self {
            Self::Feed => "feed",
            Self::Health => "health",
            Self::Other => "other",
        }
    }
}

/// HTTP status codes counted one by one; anything else is counted as 0.
const STATUSES: usize = 600;

/// One thread's counters.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    requests: [[AtomicU64; STATUSES]; 3],
    latency: [AtomicU64; BUCKETS],
    latency_sum_ns: AtomicU64,
    items_personal: AtomicU64,
    items_random: AtomicU64,
    feed_answers: AtomicU64,
    random_fills: AtomicU64,
    exhausted: AtomicU64,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_ns: AtomicU64::new(0),
            items_personal: AtomicU64::new(0),
            items_random: AtomicU64::new(0),
            feed_answers: AtomicU64::new(0),
            random_fills: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        }
    }
}

/// Facts about the loaded data, set once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataInfo {
    /// Users with a feed.
    pub users: u64,
    /// Item ids held.
    pub items: u64,
    /// Bytes of feed data.
    pub bytes: u64,
    /// Seconds generation took.
    pub generation_seconds: f64,
}

/// Totals over all shards, for a scrape or a dashboard sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Requests by route (feed, health, other) and status.
    pub requests: Vec<(Route, u16, u64)>,
    /// All requests.
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
}

impl Totals {
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

/// The server's request metrics.
#[derive(Debug)]
pub struct Metrics {
    enabled: bool,
    shards: Box<[Shard]>,
    data: OnceLock<DataInfo>,
}

/// Spreads threads over shards.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Metrics with one shard per core (and a few more for other threads).
    /// When `enabled` is false nothing is recorded: the cost of the metrics
    /// can then be measured against a run with them on.
    pub fn new(enabled: bool) -> Self {
        let shards = std::thread::available_parallelism().map_or(2, usize::from) * 2 + 2;
        Self {
            enabled,
            shards: (0..shards).map(|_| Shard::default()).collect(),
            data: OnceLock::new(),
        }
    }

    /// Whether requests are being recorded.
    pub const fn enabled(&self) -> bool {
        self.enabled
    }

    fn shard(&self) -> &Shard {
        &self.shards[SHARD.with(|s| *s) % self.shards.len()]
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

    /// Sets the data gauges, once the data is loaded.
    pub fn set_data(&self, info: DataInfo) {
        let _ = self.data.set(info);
    }

    /// The data gauges, once set.
    pub fn data(&self) -> Option<DataInfo> {
        self.data.get().copied()
    }

    /// Adds up all shards.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        let sum = |f: fn(&Shard) -> &AtomicU64| -> u64 {
            self.shards
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        for route in Route::ALL {
            for status in 0..STATUSES {
                let count: u64 = self
                    .shards
                    .iter()
                    .map(|s| s.requests[route as usize][status].load(Ordering::Relaxed))
                    .sum();
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
            *bucket = self
                .shards
                .iter()
                .map(|s| s.latency[i].load(Ordering::Relaxed))
                .sum();
        }
        totals.latency_sum = sum(|s| &s.latency_sum_ns) as f64 / 1e9;
        totals.items_personal = sum(|s| &s.items_personal);
        totals.items_random = sum(|s| &s.items_random);
        totals.feed_answers = sum(|s| &s.feed_answers);
        totals.random_fills = sum(|s| &s.random_fills);
        totals.exhausted = sum(|s| &s.exhausted);
        totals
    }
}

/// Everything `/metrics` shows: the request metrics plus the guard's and
/// the error recorder's counters and the in-flight gauge.
#[derive(Debug)]
pub struct Exposition {
    metrics: std::sync::Arc<Metrics>,
    guard: actix_web::web::Data<crate::guard::Guard>,
    errors: std::sync::Arc<crate::recorder::LogRecorder>,
}

impl Exposition {
    /// A registry holding every metric of the server.
    pub fn registry(
        metrics: std::sync::Arc<Metrics>,
        guard: actix_web::web::Data<crate::guard::Guard>,
        errors: std::sync::Arc<crate::recorder::LogRecorder>,
    ) -> Registry {
        let mut registry = Registry::with_prefix("feed");
        registry.register_collector(Box::new(Self {
            metrics,
            guard,
            errors,
        }));
        registry
    }

    /// The registry as Prometheus text.
    ///
    /// # Errors
    /// Only if formatting fails, which writing to a `String` does not.
    pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry)?;
        Ok(text)
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let totals = self.metrics.totals();
        {
            let mut family = encoder.encode_descriptor(
                "http_requests",
                "HTTP requests answered, by route and status",
                None,
                MetricType::Counter,
            )?;
            for &(route, status, count) in &totals.requests {
                let mut digits = itoa::Buffer::new();
                let status = if status == 0 {
                    "other"
                } else {
                    digits.format(status)
                };
                let labels = [("route", route.label()), ("status", status)];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
                .iter()
                .copied()
                .chain(std::iter::once(f64::MAX))
                .zip(totals.latency)
                .collect();
            let count = totals.latency.iter().sum();
            encoder
                .encode_descriptor(
                    "http_request_duration_seconds",
                    "Time from the request reaching the app to its response, all routes",
                    None,
                    MetricType::Histogram,
                )?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    totals.latency_sum,
                    count,
                    &buckets,
                    None,
                )?;
        }
        gauge(
            &mut encoder,
            "http_requests_in_flight",
            "Requests being handled",
            self.guard.in_flight() as f64,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "items_served",
                "Feed items served, by source",
                None,
                MetricType::Counter,
            )?;
            for (source, value) in [
                ("personal", totals.items_personal),
                ("random", totals.items_random),
            ] {
                ConstCounter::new(value).encode(family.encode_family(&[("source", source)])?)?;
            }
        }
        counter(
            &mut encoder,
            "feed_answers",
            "Feed answers of 200",
            totals.feed_answers,
        )?;
        counter(
            &mut encoder,
            "random_fills",
            "Feed answers that needed random items",
            totals.random_fills,
        )?;
        counter(
            &mut encoder,
            "exhausted_users",
            "Users who were served the last item of their feed",
            totals.exhausted,
        )?;
        {
            let errors: &FeedErrorCounts = self.errors.counts();
            let mut family = encoder.encode_descriptor(
                "feed_errors",
                "Feed errors, by kind",
                None,
                MetricType::Counter,
            )?;
            for (kind, value) in [
                ("unknown_user", errors.unknown_user()),
                ("storage", errors.storage()),
                ("random_fill", errors.random_fill()),
            ] {
                ConstCounter::new(value).encode(family.encode_family(&[("kind", kind)])?)?;
            }
        }
        let guard: &GuardCounts = self.guard.counts();
        counter(
            &mut encoder,
            "shed_requests",
            "Requests shed with 503 because too many were in flight",
            guard.shed(),
        )?;
        counter(
            &mut encoder,
            "rate_limited_requests",
            "Requests refused with 429 by the per-client rate limit",
            guard.rate_limited(),
        )?;
        counter(
            &mut encoder,
            "oversized_requests",
            "Requests refused with 414 or 431",
            guard.too_large(),
        )?;
        if let Some(data) = self.metrics.data() {
            gauge(
                &mut encoder,
                "data_users",
                "Users with a feed",
                data.users as f64,
            )?;
            gauge(
                &mut encoder,
                "data_items",
                "Feed item ids held",
                data.items as f64,
            )?;
            gauge(
                &mut encoder,
                "data_bytes",
                "Bytes of feed data held",
                data.bytes as f64,
            )?;
            gauge(
                &mut encoder,
                "data_generation_seconds",
                "Seconds the data took to generate",
                data.generation_seconds,
            )?;
        }
        encoder
            .encode_descriptor("build", "Build information", None, MetricType::Info)?
            .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_across_threads() {
        let metrics = std::sync::Arc::new(Metrics::new(true));
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
        metrics.record_request(Route::Other, 404, Duration::from_millis(2));
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
        let metrics = Metrics::new(false);
        metrics.record_request(Route::Feed, 200, Duration::from_micros(40));
        metrics.record_feed(1, 1, true);
        assert_eq!(metrics.totals(), Totals::default());
    }
}
