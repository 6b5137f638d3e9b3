//! [`Exposition`]: the server's [`Counters`] as Prometheus text, written by
//! `prometheus-client` through a [`Collector`], not by hand. It runs only
//! when `/metrics` is scraped, never on the request path.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use feed_domain::DataChange;

use crate::counters::{Counters, FeedErrorKind, LATENCY_BOUNDS, Refusal, SYNC_BOUNDS};
use crate::gate::RequestGate;

/// Everything `/metrics` shows: the totals of the gate's [`Counters`] and
/// the in-flight gauge.
#[derive(Debug)]
pub struct Exposition {
    gate: RequestGate,
}

impl Exposition {
    /// A registry holding every metric the gate counts.
    pub fn registry(gate: RequestGate) -> Registry {
        let mut registry = Registry::with_prefix("feed");
        registry.register_collector(Box::new(Self { gate }));
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

    fn counters(&self) -> &Counters {
        self.gate.counters()
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
        let totals = self.counters().totals();
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
            self.gate.in_flight(&totals) as f64,
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
        counter(
            &mut encoder,
            "replayed_answers",
            "Feed answers that replayed the answer of a retried request (same Idempotency-Key)",
            totals.replayed,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "feed_errors",
                "Feed errors, by kind",
                None,
                MetricType::Counter,
            )?;
            for kind in FeedErrorKind::ALL {
                ConstCounter::new(totals.feed_errors_of(kind))
                    .encode(family.encode_family(&[("kind", kind.label())])?)?;
            }
        }
        for (reason, name, help) in [
            (
                Refusal::Shed,
                "shed_requests",
                "Requests shed with 503 because too many were in flight",
            ),
            (
                Refusal::RateLimited,
                "rate_limited_requests",
                "Requests refused with 429 by the per-client rate limit",
            ),
            (
                Refusal::Oversized,
                "oversized_requests",
                "Requests refused with 414 or 431",
            ),
        ] {
            counter(&mut encoder, name, help, totals.refused(reason))?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "data_changes",
                "Snapshot reloads and rollbacks, by result",
                None,
                MetricType::Counter,
            )?;
            for change in DataChange::ALL {
                ConstCounter::new(self.counters().data_changes(change))
                    .encode(family.encode_family(&[("result", change.label())])?)?;
            }
        }
        let syncs = self.counters().progress_syncs();
        if syncs.count > 0 || syncs.errors > 0 || syncs.last_unix_ms > 0 {
            let buckets: Vec<(f64, u64)> = SYNC_BOUNDS
                .iter()
                .copied()
                .chain(std::iter::once(f64::MAX))
                .zip(syncs.buckets.iter().copied())
                .collect();
            encoder
                .encode_descriptor(
                    "progress_sync_duration_seconds",
                    "Time one sync of a progress file to disk took",
                    None,
                    MetricType::Histogram,
                )?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    syncs.seconds,
                    syncs.count,
                    &buckets,
                    None,
                )?;
            counter(
                &mut encoder,
                "progress_synced_bytes",
                "Bytes of progress written to disk (journal batches, and arrays when folded)",
                syncs.bytes,
            )?;
            counter(
                &mut encoder,
                "progress_sync_errors",
                "Progress syncs that failed",
                syncs.errors,
            )?;
            gauge(
                &mut encoder,
                "progress_last_sync_timestamp_seconds",
                "When the last successful progress sync ended, Unix time",
                syncs.last_unix_ms as f64 / 1e3,
            )?;
            if syncs.last_unix_ms > 0 {
                gauge(
                    &mut encoder,
                    "progress_last_sync_age_seconds",
                    "Seconds since the last successful progress sync (alert when it exceeds a few sync_ms)",
                    crate::counters::unix_ms().saturating_sub(syncs.last_unix_ms) as f64 / 1e3,
                )?;
            }
            counter(
                &mut encoder,
                "progress_offsets_clamped",
                "Offsets found beyond their feed's end in a progress file (damage) and clamped to it",
                syncs.clamped,
            )?;
        }
        if let Some(data) = self.counters().data() {
            if let Some(snapshot) = &data.version {
                encoder
                    .encode_descriptor(
                        "data_snapshot",
                        "The snapshot being served",
                        None,
                        MetricType::Info,
                    )?
                    .encode_info(&[
                        ("id", snapshot.id.as_str()),
                        ("path", snapshot.source.as_str()),
                    ])?;
                gauge(
                    &mut encoder,
                    "data_snapshot_created_seconds",
                    "When the snapshot being served was written, Unix time",
                    snapshot.created_unix_ms as f64 / 1e3,
                )?;
            }
            for (name, help, value) in [
                ("data_users", "Users with a feed", data.users as f64),
                ("data_items", "Feed item ids held", data.items as f64),
                ("data_bytes", "Bytes of feed data held", data.bytes as f64),
                (
                    "data_load_seconds",
                    "Seconds the data being served took to load",
                    data.load_seconds,
                ),
            ] {
                gauge(&mut encoder, name, help, value)?;
            }
        }
        if let Some((items, skipped)) = self.counters().blocklist() {
            gauge(
                &mut encoder,
                "blocklist_items",
                "Items taken down: never served",
                items as f64,
            )?;
            counter(
                &mut encoder,
                "blocklist_skipped_items",
                "Personal items passed over because they were blocked",
                skipped,
            )?;
        }
        if let Some(storage) = self.counters().storage_health() {
            encoder
                .encode_descriptor(
                    "storage_breaker",
                    "The remote storage's circuit breaker: closed, partial or open",
                    None,
                    MetricType::Info,
                )?
                .encode_info(&[("kind", storage.kind), ("state", storage.breaker.label())])?;
            for (name, help, value) in [
                (
                    "storage_breaker_open_groups",
                    "Slot groups whose circuit breaker is open (their users get fallback items)",
                    storage.open_groups as f64,
                ),
                (
                    "storage_breaker_groups",
                    "Slot groups with a circuit breaker of their own",
                    storage.groups as f64,
                ),
                (
                    "storage_data_version",
                    "The data version being served from the remote storage",
                    storage.version as f64,
                ),
                (
                    "storage_published_version",
                    "The data version the remote storage says to serve (another than the one served while this instance cannot switch to it)",
                    storage.published as f64,
                ),
            ] {
                gauge(&mut encoder, name, help, value)?;
            }
            counter(
                &mut encoder,
                "storage_breaker_opened",
                "Times a slot group's circuit breaker opened",
                storage.opened_total,
            )?;
        }
        encoder
            .encode_descriptor("build", "Build information", None, MetricType::Info)?
            .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}
