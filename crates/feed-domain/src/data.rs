//! Data versions: the ports between a storage kind's data lifecycle (which
//! loads versions of the feeds, swaps them in and out, and keeps users'
//! progress) and the delivery layer (which serves them, shows what is
//! served, and lets an operator reload or roll back), in words that name no
//! storage kind.
//!
//! - [`Publish`] is what a lifecycle calls: "serve this service, it holds
//!   this data", "the data changed", "the storage's health is", "progress
//!   was synced". The delivery layer implements it.
//! - [`DataControl`] is what the delivery layer calls: "reload", "roll
//!   back". A lifecycle that can do them implements it.
//! - [`DataInfo`], [`DataVersion`], [`DataChange`] and [`ProgressEvent`]
//!   are the values they exchange; none is serializable (wire types belong
//!   to the delivery layer).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::{ItemId, StorageHealth};

/// Facts about the data being served, replaced whenever it is.
#[derive(Debug, Clone, PartialEq)]
pub struct DataInfo {
    /// Users with a feed.
    pub users: u64,
    /// Item ids held.
    pub items: u64,
    /// Bytes of feed data.
    pub bytes: u64,
    /// Seconds loading (or generating) the data took.
    pub load_seconds: f64,
    /// The version it is; `None` for data made at start-up (the synthetic
    /// set), which has no identity beyond this process.
    pub version: Option<DataVersion>,
}

/// Which version of the data is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVersion {
    /// The version's id, as 16 hex digits.
    pub id: String,
    /// When the version was written, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Where it was loaded from: a file's path, or the storage's name for it.
    pub source: String,
}

/// How a reload or rollback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataChange {
    /// New data was swapped in.
    Reloaded,
    /// A load failed; the data being served stayed.
    Failed,
    /// The previous data was swapped back in.
    RolledBack,
}

impl DataChange {
    /// Every kind, in label order.
    pub const ALL: [Self; 3] = [Self::Reloaded, Self::Failed, Self::RolledBack];

    /// The `result` label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Reloaded => "reloaded",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// What happened to the users' progress where it is kept durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressEvent {
    /// All progress is durable without a sync (a progress file was just
    /// opened, and opening folds it to disk).
    Durable,
    /// A sync of `bytes` bytes took `took`.
    Synced {
        /// How long it took.
        took: Duration,
        /// Bytes written.
        bytes: u64,
    },
    /// A sync failed; nothing is lost, the next one writes it all.
    SyncFailed,
    /// This many more offsets were found beyond their feed's end (a
    /// damaged file) and clamped.
    Clamped(u64),
}

/// Where a data lifecycle puts the service it serves and tells what happens
/// to its data. The delivery layer implements it; every method returns at
/// once and cannot fail.
pub trait Publish<T>: Send + Sync + 'static {
    /// Serves `service`, which holds `info`, from now on. A request keeps
    /// the service it started with to its end.
    fn serve(&self, service: Arc<T>, info: DataInfo);

    /// The first data is in place: the server is ready.
    fn ready(&self);

    /// A reload or rollback ended as `change`.
    fn changed(&self, change: DataChange);

    /// The remote storage's health now.
    fn health(&self, health: StorageHealth);

    /// Something happened to the durable progress.
    fn progress(&self, event: ProgressEvent);
}

/// What an operator can ask of a lifecycle that keeps versions: the port
/// through which the admin listener changes the data being served. Both
/// calls block (a load reads and checks a whole version); callers run them
/// on a blocking thread.
pub trait DataControl: std::fmt::Debug + Send + Sync + 'static {
    /// Loads and verifies the version at `path` (or the configured one)
    /// and swaps it in.
    ///
    /// # Errors
    /// [`DataControlError`]; the data being served stays as it was.
    fn reload(&self, path: Option<PathBuf>) -> Result<DataInfo, DataControlError>;

    /// Swaps the data served before the last reload back in.
    ///
    /// # Errors
    /// [`DataControlError::NoPrevious`] when there is none,
    /// [`DataControlError::Busy`] while another change runs.
    fn rollback(&self) -> Result<DataInfo, DataControlError>;
}

/// Why a reload or rollback did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataControlError {
    /// Another reload or rollback is running.
    #[error("a reload or rollback is already running")]
    Busy,
    /// There is nothing to roll back to.
    #[error("there is no previous snapshot to roll back to")]
    NoPrevious,
    /// There is no path to reload from.
    #[error("no snapshot path: give one as {{\"path\": \"...\"}} or set data.snapshot")]
    NoPath,
    /// The request may not read that file (outside the folder versions are
    /// read from). Says nothing of whether it exists.
    #[error("{0}")]
    Forbidden(String),
    /// The version could not be loaded.
    #[error("{0}")]
    Failed(String),
}

/// The most items a blocklist holds.
pub const MAX_BLOCKED: usize = 1_000_000;

/// What the delivery layer calls to take items down: blocked items are
/// never served, from personal feeds (progress moves past them) or from
/// the random fill, by any version. A storage kind that can block items
/// implements it.
pub trait BlocklistControl: std::fmt::Debug + Send + Sync + 'static {
    /// Blocks `add` and unblocks `remove` (an item in both is blocked), in
    /// one durable step, and says so in the audit log, naming `client`.
    /// Returns how many items are blocked now.
    ///
    /// # Errors
    /// [`BlocklistError`]; nothing changed.
    fn change(
        &self,
        add: &[ItemId],
        remove: &[ItemId],
        client: &str,
    ) -> Result<usize, BlocklistError>;

    /// Every blocked item, in id order.
    fn items(&self) -> Vec<ItemId>;

    /// How many items are blocked.
    fn len(&self) -> usize;

    /// Whether none is.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Personal items skipped because they were blocked, since start.
    fn skipped(&self) -> u64;
}

/// Why a blocklist change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlocklistError {
    /// Item 0 is no item.
    #[error("item 0 is not an item id")]
    ZeroItem,
    /// More items than the list holds.
    #[error("the blocklist holds at most {max} items, this change would make it {would}")]
    TooMany {
        /// The most it holds.
        max: usize,
        /// What it would hold.
        would: usize,
    },
    /// Too few fallback items would stay unblocked to fill an answer.
    #[error(
        "this change would leave {left} fallback items unblocked, api.max_size is {need}: every \
         answer must be able to hold max_size distinct items"
    )]
    FallbackTooShort {
        /// Unblocked fallback items after the change.
        left: usize,
        /// `api.max_size`.
        need: usize,
    },
    /// The change could not be made durable (the disk): nothing changed.
    #[error("the change could not be saved: {0}")]
    Failed(String),
}

/// Why a fallback list of `fallback` items cannot serve answers of up to
/// `max_size` items, if it cannot: a request for `max_size` items of a user
/// without a feed (or whose storage is down) is filled from the fallback
/// list alone. A version with such a list is refused (at start, on reload,
/// by a loader and by a frontend's watcher), so that every answer holds
/// exactly N distinct items.
pub fn short_fallback(fallback: usize, max_size: usize) -> Option<String> {
    (fallback < max_size).then(|| {
        format!(
            "the fallback list has {fallback} items, api.max_size is {max_size}: every answer \
             must be able to hold max_size distinct items"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fallback_list_must_hold_the_largest_answer() {
        assert_eq!(short_fallback(50, 50), None);
        assert_eq!(
            short_fallback(3, 50).as_deref(),
            Some(
                "the fallback list has 3 items, api.max_size is 50: every answer must be able \
                 to hold max_size distinct items"
            )
        );
    }

    #[test]
    fn change_labels_are_the_metric_values() {
        let labels: Vec<_> = DataChange::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels, ["reloaded", "failed", "rolled_back"]);
    }
}
