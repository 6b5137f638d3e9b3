//! [`Serving`]: the delivery layer's side of the domain's
//! [`Publish`] port (a lifecycle puts its service in the [`FeedSlot`],
//! marks the server ready, and its facts go to the [`Counters`]), and
//! [`DataBody`], the data's facts as the admin endpoints show them.

use std::sync::Arc;

use actix_web::web;
use feed_domain::{DataChange, DataInfo, ProgressEvent, Publish, StorageHealth};
use serde::Serialize;

use crate::counters::Counters;
use crate::routes::FeedSlot;
use crate::state::Lifecycle;

/// Where a data lifecycle publishes: the slot the feed route reads, the
/// lifecycle `/readyz` reads and the counters the metrics read.
#[derive(Debug)]
pub struct Serving<T> {
    slot: web::Data<FeedSlot<T>>,
    lifecycle: web::Data<Lifecycle>,
    counters: Arc<Counters>,
}

impl<T> Serving<T> {
    /// Publishes into `slot`, `lifecycle` and `counters`.
    pub const fn new(
        slot: web::Data<FeedSlot<T>>,
        lifecycle: web::Data<Lifecycle>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            slot,
            lifecycle,
            counters,
        }
    }
}

impl<T: Send + Sync + 'static> Publish<T> for Serving<T> {
    fn serve(&self, service: Arc<T>, info: DataInfo) {
        self.slot.replace(service);
        self.counters.set_data(info);
    }

    fn ready(&self) {
        self.lifecycle.mark_loaded();
    }

    fn changed(&self, change: DataChange) {
        self.counters.record_data_change(change);
    }

    fn health(&self, health: StorageHealth) {
        self.counters.set_storage_health(health);
    }

    fn progress(&self, event: ProgressEvent) {
        match event {
            ProgressEvent::Durable => self.counters.record_progress_durable(),
            ProgressEvent::Synced { took, bytes } => {
                self.counters.record_progress_sync(took, bytes);
            }
            ProgressEvent::SyncFailed => self.counters.record_progress_sync_error(),
            ProgressEvent::Clamped(more) => self.counters.record_progress_clamped(more),
        }
    }
}

/// The data's facts in `/stats` and the answers of a reload or rollback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataBody {
    /// Users with a feed.
    pub users: u64,
    /// Item ids held.
    pub items: u64,
    /// Bytes of feed data.
    pub bytes: u64,
    /// Seconds loading (or generating) the data took.
    pub load_seconds: f64,
    /// The version served; `None` for the synthetic set.
    pub snapshot: Option<VersionBody>,
}

/// The version served, as `/stats` and the admin answers show it (under
/// the key `snapshot`, the name it has always had there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionBody {
    /// The version's id, as 16 hex digits.
    pub id: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Where it was loaded from.
    pub path: String,
}

impl From<DataInfo> for DataBody {
    fn from(info: DataInfo) -> Self {
        Self {
            users: info.users,
            items: info.items,
            bytes: info.bytes,
            load_seconds: info.load_seconds,
            snapshot: info.version.map(|version| VersionBody {
                id: version.id,
                created_unix_ms: version.created_unix_ms,
                path: version.source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What a lifecycle publishes is what the feed route, `/readyz` and
    /// the counters then see.
    #[test]
    fn publishing_reaches_the_slot_the_lifecycle_and_the_counters() {
        let slot = web::Data::new(FeedSlot::<u32>::empty());
        let lifecycle = web::Data::new(Lifecycle::loading());
        let counters = Arc::new(Counters::new(true));
        let serving = Serving::new(slot.clone(), lifecycle.clone(), Arc::clone(&counters));
        let info = DataInfo {
            users: 2,
            items: 3,
            bytes: 12,
            load_seconds: 0.5,
            version: None,
        };
        serving.serve(Arc::new(7), info.clone());
        assert_eq!(slot.replace(Arc::new(8)).as_deref(), Some(&7));
        assert_eq!(counters.data(), Some(info));
        assert!(!lifecycle.is_loaded());
        serving.ready();
        assert!(lifecycle.is_loaded());
        serving.changed(DataChange::RolledBack);
        assert_eq!(counters.data_changes(DataChange::RolledBack), 1);
        serving.progress(ProgressEvent::Synced {
            took: Duration::from_millis(2),
            bytes: 64,
        });
        serving.progress(ProgressEvent::SyncFailed);
        serving.progress(ProgressEvent::Clamped(5));
        let syncs = counters.progress_syncs();
        assert_eq!(
            (syncs.count, syncs.bytes, syncs.errors, syncs.clamped),
            (1, 64, 1, 5)
        );
    }
}
