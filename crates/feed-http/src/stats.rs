//! [`Snapshot`]: the once-a-second picture of the server that `/stats`,
//! `/events` and the dashboard show, and [`Sampler`], which takes it.

use std::time::Instant;

use serde::Serialize;

use feed_domain::StorageHealth;

use crate::counters::{FeedErrorKind, Refusal, Totals, unix_ms};
use crate::gate::RequestGate;
use crate::serving::DataBody;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The blocklist as `/stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlocklistBody {
    /// Items blocked.
    pub items: usize,
    /// Personal items passed over because they were blocked, since start.
    pub skipped: u64,
}

/// A remote storage's health as `/stats` shows it (the port's
/// [`StorageHealth`], the breaker's state as its label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageBody {
    /// What the storage is, e.g. `"redis"`.
    pub kind: &'static str,
    /// `"closed"`, `"partial"` (some groups open) or `"open"`.
    pub breaker: &'static str,
    /// Groups whose breaker is open.
    pub open_groups: u64,
    /// Groups in all.
    pub groups: u64,
    /// Times a group's breaker has opened, since start.
    pub opened_total: u64,
    /// The data version being served.
    pub version: u64,
    /// The data version the storage says to serve: another than
    /// `version` while this instance cannot switch to it.
    pub published: u64,
}

impl From<StorageHealth> for StorageBody {
    fn from(health: StorageHealth) -> Self {
        Self {
            kind: health.kind,
            breaker: health.breaker.label(),
            open_groups: health.open_groups,
            groups: health.groups,
            opened_total: health.opened_total,
            version: health.version,
            published: health.published,
        }
    }
}

/// Items served per second, by source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Items {
    /// From users' personal feeds.
    pub personal: f64,
    /// Random fill.
    pub random: f64,
}

/// One second of the server, as JSON. Rates are over the last sampling
/// interval; totals are since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Unix time of the sample, in milliseconds.
    pub ts_ms: u64,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Loaded and not draining.
    pub ready: bool,
    /// Requests answered per second, all routes.
    pub rps: f64,
    /// Latency of the requests answered in the interval.
    pub latency_ms: Latency,
    /// 4xx and 5xx answers per second.
    pub errors_per_s: f64,
    /// Requests shed per second.
    pub shed_per_s: f64,
    /// Requests refused by the rate limit per second.
    pub rate_limited_per_s: f64,
    /// Share of feed answers that needed random items (0 to 1).
    pub random_fill_share: f64,
    /// Share of feed answers degraded by a storage failure (a timeout, a
    /// node down, an open circuit breaker), served from the fallback list
    /// (0 to 1).
    pub degraded_share: f64,
    /// The remote storage's health; `None` for the in-process storage.
    pub storage: Option<StorageBody>,
    /// Users who were served their last personal item, since start.
    pub exhausted_users: u64,
    /// Feed answers that replayed a retried request's answer, since start.
    pub replayed_answers: u64,
    /// The blocklist, where the storage kind has one.
    pub blocklist: Option<BlocklistBody>,
    /// Items served per second.
    pub items_per_s: Items,
    /// Resident memory of the process.
    pub memory_bytes: u64,
    /// Requests being handled now.
    pub in_flight: u64,
    /// The data being served, once loaded.
    pub data: Option<DataBody>,
    /// Milliseconds since the progress was last synced to disk; `None`
    /// when it never was (progress in memory, or not yet).
    pub progress_sync_age_ms: Option<u64>,
}

/// Takes [`Snapshot`]s: each call compares the counters with the previous
/// call's.
#[derive(Debug)]
pub struct Sampler {
    gate: RequestGate,
    started: Instant,
    previous: Option<(Instant, Totals)>,
}

impl Sampler {
    /// A sampler over the gate's counters.
    pub fn new(gate: RequestGate) -> Self {
        Self {
            gate,
            started: Instant::now(),
            previous: None,
        }
    }

    /// The picture now, with rates since the previous call (zero on the first).
    pub fn sample(&mut self) -> Snapshot {
        let now = Instant::now();
        let totals = self.gate.counters().totals();
        let now_ms = unix_ms();
        let mut snapshot = Snapshot {
            ts_ms: now_ms,
            uptime_s: self.started.elapsed().as_secs_f64(),
            ready: self.gate.lifecycle().is_ready(),
            exhausted_users: totals.exhausted,
            replayed_answers: totals.replayed,
            blocklist: self
                .gate
                .counters()
                .blocklist()
                .map(|(items, skipped)| BlocklistBody { items, skipped }),
            memory_bytes: resident_bytes(),
            in_flight: self.gate.in_flight(&totals),
            data: self.gate.counters().data().map(DataBody::from),
            storage: self.gate.counters().storage_health().map(StorageBody::from),
            progress_sync_age_ms: match self.gate.counters().progress_syncs().last_unix_ms {
                0 => None,
                last => Some(now_ms.saturating_sub(last)),
            },
            ..Snapshot::default()
        };
        if let Some((then, before)) = &self.previous {
            let seconds = now.duration_since(*then).as_secs_f64().max(1e-3);
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
            snapshot.rps = rate(totals.all_requests, before.all_requests);
            snapshot.errors_per_s = rate(totals.error_responses, before.error_responses);
            let refused = |reason| rate(totals.refused(reason), before.refused(reason));
            snapshot.shed_per_s = refused(Refusal::Shed);
            snapshot.rate_limited_per_s = refused(Refusal::RateLimited);
            snapshot.items_per_s = Items {
                personal: rate(totals.items_personal, before.items_personal),
                random: rate(totals.items_random, before.items_random),
            };
            let answers = totals.feed_answers.saturating_sub(before.feed_answers);
            if answers > 0 {
                let fills = totals.random_fills.saturating_sub(before.random_fills);
                snapshot.random_fill_share = fills as f64 / answers as f64;
                let storage = |t: &Totals| t.feed_errors_of(FeedErrorKind::Storage);
                let failed = storage(&totals).saturating_sub(storage(before));
                snapshot.degraded_share = failed as f64 / answers as f64;
            }
            let mut window = totals.latency;
            for (bucket, old) in window.iter_mut().zip(before.latency) {
                *bucket = bucket.saturating_sub(old);
            }
            let ms = |q| Totals::latency_quantile(&window, q).map_or(0.0, |s| s * 1e3);
            snapshot.latency_ms = Latency {
                p50: ms(0.5),
                p99: ms(0.99),
            };
        }
        self.previous = Some((now, totals));
        snapshot
    }
}

/// Resident set size from `/proc/self/statm` (0 where there is none).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;

    use actix_web::web;

    use super::*;
    use crate::counters::Counters;
    use crate::gate::RequestLimits;
    use crate::route::Route;
    use crate::state::Lifecycle;

    #[test]
    fn rates_come_from_the_difference_between_samples() {
        let metrics = Arc::new(Counters::new(true));
        let limits = RequestLimits {
            max_in_flight: 0,
            max_url_bytes: 0,
            max_header_bytes: 0,
        };
        let gate = RequestGate::builder(limits, web::Data::new(Lifecycle::loading()))
            .counters(Arc::clone(&metrics))
            .build();
        let mut sampler = Sampler::new(gate);
        let first = sampler.sample();
        assert_eq!(first.rps, 0.0);
        assert!(first.memory_bytes > 0);
        assert!(!first.ready);

        metrics.record_refusal(Refusal::Shed);
        for _ in 0..100 {
            metrics.record_request(Route::Feed, 200, Duration::from_micros(100));
        }
        metrics.record_request(Route::Feed, 400, Duration::from_micros(100));
        for _ in 0..10 {
            metrics.record_feed(10, 0, false);
        }
        metrics.record_feed(5, 5, true);
        metrics.record_feed_error(FeedErrorKind::Storage);
        std::thread::sleep(Duration::from_millis(100));
        let second = sampler.sample();
        assert!(second.rps > 0.0);
        assert!((second.errors_per_s / second.rps - 1.0 / 101.0).abs() < 1e-9);
        assert!(second.shed_per_s > 0.0);
        assert!((second.random_fill_share - 1.0 / 11.0).abs() < 1e-9);
        assert!((second.degraded_share - 1.0 / 11.0).abs() < 1e-9);
        assert_eq!(second.storage, None);
        assert_eq!(second.exhausted_users, 1);
        assert!(second.latency_ms.p50 > 0.075 && second.latency_ms.p50 <= 0.1);
        let json = serde_json::to_value(&second).unwrap();
        for key in [
            "ts_ms",
            "rps",
            "latency_ms",
            "items_per_s",
            "memory_bytes",
            "in_flight",
            "degraded_share",
            "storage",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
