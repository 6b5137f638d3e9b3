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

use std::collections::BTreeSet;

use crate::{BlockedItems, ItemId, StorageHealth};

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

    /// The items blocked, as this server's requests check them.
    fn blocked(&self) -> &dyn BlockedItems;

    /// Every blocked item, in id order.
    fn items(&self) -> Vec<ItemId> {
        self.blocked()
            .items()
            .into_iter()
            .map(ItemId::new)
            .collect()
    }

    /// How many items are blocked.
    fn len(&self) -> usize {
        self.blocked().len()
    }

    /// Whether none is.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Personal items skipped because they were blocked, since start.
    fn skipped(&self) -> u64 {
        self.blocked().skipped()
    }
}

/// A blocklist change that keeps the rules every blocklist keeps, ready to
/// be saved and applied: the lists as sets, an item in both blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlocklistPlan {
    /// Items to block, in id order.
    pub add: Vec<u32>,
    /// Items to unblock, in id order, none of `add`.
    pub remove: Vec<u32>,
}

impl BlocklistPlan {
    /// Checks blocking `add` and unblocking `remove` in `blocked` (the
    /// list as it is), with `left` counting the fallback items of the
    /// version served that would stay unblocked (`None` before one is).
    ///
    /// # Errors
    /// [`BlocklistError::ZeroItem`], [`BlocklistError::TooMany`] past
    /// [`MAX_BLOCKED`], [`BlocklistError::FallbackTooShort`] under `need`.
    pub fn check(
        add: &[ItemId],
        remove: &[ItemId],
        blocked: &dyn BlockedItems,
        need: usize,
        left: impl FnOnce(&dyn Fn(u32) -> bool) -> Option<usize>,
    ) -> Result<Self, BlocklistError> {
        if add.iter().chain(remove).any(|item| item.get() == 0) {
            return Err(BlocklistError::ZeroItem);
        }
        let add: BTreeSet<u32> = add.iter().map(|item| item.get()).collect();
        let remove: BTreeSet<u32> = remove
            .iter()
            .map(|item| item.get())
            .filter(|item| !add.contains(item))
            .collect();
        let would = blocked.len() + add.iter().filter(|&&i| !blocked.contains(i)).count()
            - remove.iter().filter(|&&i| blocked.contains(i)).count();
        if would > MAX_BLOCKED {
            return Err(BlocklistError::TooMany {
                max: MAX_BLOCKED,
                would,
            });
        }
        let after =
            |item: u32| add.contains(&item) || (blocked.contains(item) && !remove.contains(&item));
        if let Some(left) = left(&after)
            && left < need
        {
            return Err(BlocklistError::FallbackTooShort { left, need });
        }
        Ok(Self {
            add: add.into_iter().collect(),
            remove: remove.into_iter().collect(),
        })
    }

    /// Applies it to `blocked`.
    pub fn apply(&self, blocked: &dyn BlockedItems) {
        for &item in &self.remove {
            blocked.set(item, false);
        }
        for &item in &self.add {
            blocked.set(item, true);
        }
    }

    /// Up to 1000 ids of `items`, for an audit line ("... and N more").
    pub fn shown(items: &[u32]) -> String {
        let shown: Vec<String> = items.iter().take(1000).map(u32::to_string).collect();
        match items.len().saturating_sub(1000) {
            0 => shown.join(","),
            more => format!("{} and {more} more", shown.join(",")),
        }
    }
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

    /// A set of ids, as a blocklist's copy is.
    #[derive(Debug, Default)]
    struct Set(std::sync::Mutex<BTreeSet<u32>>);

    impl BlockedItems for Set {
        fn contains(&self, item: u32) -> bool {
            self.0.lock().unwrap().contains(&item)
        }
        fn set(&self, item: u32, on: bool) -> bool {
            let mut set = self.0.lock().unwrap();
            if on {
                set.insert(item)
            } else {
                set.remove(&item)
            }
        }
        fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        fn items(&self) -> Vec<u32> {
            self.0.lock().unwrap().iter().copied().collect()
        }
        fn count_skipped(&self, _: usize) {}
        fn skipped(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_blocklist_change_keeps_the_rules() {
        let ids = |raw: &[u32]| raw.iter().copied().map(ItemId::new).collect::<Vec<_>>();
        let set = Set::default();
        let fallback = [1u32, 2, 3, 4];
        let left =
            |after: &dyn Fn(u32) -> bool| Some(fallback.iter().filter(|&&i| !after(i)).count());
        let plan = BlocklistPlan::check(&ids(&[3, 1, 9]), &ids(&[9, 5]), &set, 2, left).unwrap();
        assert_eq!(
            (plan.add.clone(), plan.remove.clone()),
            (vec![1, 3, 9], vec![5])
        );
        plan.apply(&set);
        assert_eq!(set.items(), [1, 3, 9]);
        // One more fallback item would leave one: fewer than 2.
        assert_eq!(
            BlocklistPlan::check(&ids(&[2]), &[], &set, 2, left),
            Err(BlocklistError::FallbackTooShort { left: 1, need: 2 })
        );
        // Unblocking one in the same change keeps two.
        assert!(BlocklistPlan::check(&ids(&[2]), &ids(&[1]), &set, 2, left).is_ok());
        assert_eq!(
            BlocklistPlan::check(&ids(&[0]), &[], &set, 2, left),
            Err(BlocklistError::ZeroItem)
        );
        assert_eq!(BlocklistPlan::shown(&[1, 2]), "1,2");
        let many: Vec<u32> = (1..=1002).collect();
        assert!(BlocklistPlan::shown(&many).ends_with(",1000 and 2 more"));
    }

    #[test]
    fn change_labels_are_the_metric_values() {
        let labels: Vec<_> = DataChange::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels, ["reloaded", "failed", "rolled_back"]);
    }
}
