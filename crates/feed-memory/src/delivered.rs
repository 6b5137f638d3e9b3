//! What users were delivered of one data version, for
//! `feed-server export-delivered`: the items a user at offset `o` was
//! given are the first `o` of their feed, skipped ones included (an item
//! is skipped only by being given).
//!
//! - [`Served`] opens the data a memory-mode server serves (the snapshot
//!   of a given id, or the configured data) with a [`ProgressView`] of its
//!   progress, and [`Served::each`] gives every user with progress and
//!   their items, in user order.
//! - [`Join`] does the same for offsets read elsewhere (the Redis
//!   cluster's, in any order, maybe twice): each user's items, once.
//!
//! Architecture Invariant: an offset is a number read from a file or a
//! cluster, never an index: [`given`] clamps it to the feed's length.

use std::path::{Path, PathBuf};

use feed_domain::UserId;
use slog::Logger;

use crate::progress::{ProgressView, ViewError};
use crate::settings::{DataSettings, DataSource, ProgressSettings};
use crate::{DataSpec, FeedTable, Snapshot, SnapshotError};

/// The first `offset` items of `feed`, never more than the feed; and
/// whether `offset` was beyond it (clamped).
pub fn given(feed: &[u32], offset: u64) -> (&[u32], bool) {
    match usize::try_from(offset) {
        Ok(offset) if offset <= feed.len() => (&feed[..offset], false),
        _ => (feed, true),
    }
}

/// Why the delivered items of a memory-mode server cannot be read. One
/// line.
#[derive(Debug, thiserror::Error)]
pub enum DeliveredError {
    /// Progress is not kept in files (`progress.path` is empty): it lives
    /// only in the server's memory.
    #[error(
        "progress.path is empty: progress is kept only in the server's memory, there is nothing to export"
    )]
    NoProgressFolder,
    /// The snapshot cannot be found, opened or verified.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The snapshot the server serves is in none of the places looked at.
    #[error("the server serves snapshot {id:016x}, found neither at {} nor in {}", reported.display(), dir.display())]
    NotFound {
        /// Its id.
        id: u64,
        /// Where the server said it read it from.
        reported: PathBuf,
        /// The folder searched.
        dir: PathBuf,
    },
    /// The progress file cannot be read, or is not this data's.
    #[error(transparent)]
    Progress(#[from] ViewError),
}

/// What the server serves, as its admin listener tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedData {
    /// The snapshot with this id, loaded from `path` (as the server
    /// named it: relative to its working folder, maybe).
    Snapshot {
        /// The snapshot's id.
        id: u64,
        /// Where the server read it.
        path: PathBuf,
    },
    /// The synthetic set of the configuration.
    Synthetic,
}

/// The data a memory-mode server serves and a view of its progress.
#[derive(Debug)]
pub struct Served {
    /// The data's id (snapshot id, or the synthetic set's fingerprint).
    pub id: u64,
    /// Where the feeds come from: a snapshot's path, or `synthetic`.
    pub source: String,
    /// The feeds.
    pub table: FeedTable,
    /// The progress; `None` when no file exists for this data yet.
    pub progress: Option<ProgressView>,
}

/// What [`Served::each`] or a [`Join`] gave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveredCounts {
    /// Users with progress (rows given).
    pub users: u64,
    /// Items given in all rows.
    pub items: u64,
    /// Offsets beyond their feed's end, clamped to it.
    pub clamped: u64,
    /// Offsets of users the data does not hold, passed over.
    pub unknown: u64,
    /// Offsets of a user seen before, passed over.
    pub repeated: u64,
}

impl Served {
    /// Opens the data `served` names, or the configured data when it is
    /// `None` (no server answers): the snapshot (verified whole, as the
    /// server verifies it) or the synthetic set (generated, as the server
    /// generates it), and the view of its progress in `progress.path`.
    ///
    /// A snapshot named by the server is looked for at the path the server
    /// gave, then at `data.snapshot`, then in the snapshot folder
    /// (`data.snapshot_dir`, or the folder of `data.snapshot`), by its id.
    ///
    /// # Errors
    /// [`DeliveredError`]: no progress folder, no such snapshot, a snapshot
    /// or progress file that is damaged or foreign.
    pub fn open(
        data: &DataSettings,
        spec: &DataSpec,
        progress: &ProgressSettings,
        served: Option<ServedData>,
        logger: &Logger,
    ) -> Result<Self, DeliveredError> {
        let dir = progress.dir().ok_or(DeliveredError::NoProgressFolder)?;
        let synthetic = || {
            let (table, _) = crate::lifecycle::generate(spec, logger);
            (spec.fingerprint(), "synthetic".to_owned(), table)
        };
        let (id, source, table) = match (served, data.source) {
            (Some(ServedData::Synthetic), _) | (None, DataSource::Synthetic) => synthetic(),
            (Some(ServedData::Snapshot { id, path }), _) => {
                let snapshot = find(data, id, &path)?;
                let source = snapshot.path().display().to_string();
                (id, source, snapshot.into_parts().1)
            }
            // No server said which: the configured file, whatever its id.
            (None, DataSource::Snapshot) => {
                let path = data.snapshot_path().unwrap_or_default();
                let snapshot = Snapshot::open(&path)?;
                let id = snapshot.meta().id;
                (id, path.display().to_string(), snapshot.into_parts().1)
            }
        };
        let progress = ProgressView::open(&dir, id, table.users())?;
        Ok(Self {
            id,
            source,
            table,
            progress,
        })
    }

    /// The largest user id the data holds (`None` for no users).
    pub fn largest_user(&self) -> Option<u64> {
        largest_user(&self.table)
    }

    /// Calls `row(user, items)` for every user with progress, in user
    /// order, with the items they were given, and returns the counts. The
    /// first error of `row` stops it.
    ///
    /// # Errors
    /// `row`'s.
    pub fn each<E>(
        &self,
        mut row: impl FnMut(u64, &[u32]) -> Result<(), E>,
    ) -> Result<DeliveredCounts, E> {
        let mut counts = DeliveredCounts::default();
        let Some(progress) = &self.progress else {
            return Ok(counts);
        };
        for ((user, feed), offset) in self.table.entries().zip(progress.offsets()) {
            if offset == 0 {
                continue;
            }
            let (items, clamped) = given(feed, u64::from(offset));
            counts.clamped += u64::from(clamped);
            counts.users += 1;
            counts.items += items.len() as u64;
            row(user, items)?;
        }
        Ok(counts)
    }
}

/// The largest user id of `table`.
pub fn largest_user(table: &FeedTable) -> Option<u64> {
    table.largest_user()
}

/// The snapshot `id`: at `reported`, at `data.snapshot`, or in the
/// snapshot folder.
fn find(data: &DataSettings, id: u64, reported: &Path) -> Result<Snapshot, DeliveredError> {
    let is_it = |path: &Path| Snapshot::peek(path).is_ok_and(|meta| meta.id == id);
    for path in [Some(reported.to_owned()), data.snapshot_path()]
        .into_iter()
        .flatten()
    {
        if is_it(&path) {
            let snapshot = Snapshot::open(&path)?;
            if snapshot.meta().id == id {
                return Ok(snapshot);
            }
        }
    }
    let dir = data.snapshot_place().dir.unwrap_or_else(|| ".".into());
    Snapshot::find(&dir, id, |_| false).map_err(|e| match e {
        // Nothing there with that id: say where else was looked.
        SnapshotError::Invalid { path, .. } if path == dir => DeliveredError::NotFound {
            id,
            reported: reported.to_owned(),
            dir,
        },
        e => e.into(),
    })
}

/// Joins offsets read in any order, maybe more than once (a cluster's
/// `SCAN`), with the feeds of a table: each user the table holds, once,
/// with the items given. Remembers one bit a user of the table.
#[derive(Debug)]
pub struct Join<'a> {
    table: &'a FeedTable,
    seen: Vec<u64>,
    counts: DeliveredCounts,
}

impl<'a> Join<'a> {
    /// A join over `table`'s feeds.
    pub fn new(table: &'a FeedTable) -> Self {
        Self {
            table,
            seen: vec![0; (table.users() as usize).div_ceil(64)],
            counts: DeliveredCounts::default(),
        }
    }

    /// The items `user` was given at `offset`; `None` for no progress (0),
    /// a user the table does not hold, or one seen before (each counted).
    pub fn row(&mut self, user: u64, offset: u64) -> Option<&'a [u32]> {
        if offset == 0 {
            return None;
        }
        let Some((position, feed)) = self.table.lookup(UserId::new(user)) else {
            self.counts.unknown += 1;
            return None;
        };
        let (word, bit) = (position as usize / 64, 1u64 << (position % 64));
        if self.seen[word] & bit != 0 {
            self.counts.repeated += 1;
            return None;
        }
        self.seen[word] |= bit;
        let (items, clamped) = given(feed, offset);
        self.counts.clamped += u64::from(clamped);
        self.counts.users += 1;
        self.counts.items += items.len() as u64;
        Some(items)
    }

    /// What was given so far.
    pub const fn counts(&self) -> DeliveredCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OffsetMap, OnCorrupt, ProgressFile};

    fn table() -> FeedTable {
        FeedTable::from_csr(
            vec![3, 9, 1 << 40],
            vec![0, 4, 4, 7],
            vec![7, 1, 4, 5, 2, 8, 6],
        )
        .unwrap()
    }

    #[test]
    fn offsets_are_clamped_to_the_feed() {
        let feed = [4, 5, 6];
        assert_eq!(given(&feed, 0), (&[][..], false));
        assert_eq!(given(&feed, 2), (&[4, 5][..], false));
        assert_eq!(given(&feed, 3), (&[4, 5, 6][..], false));
        assert_eq!(given(&feed, 4), (&[4, 5, 6][..], true));
        assert_eq!(given(&feed, u64::MAX), (&[4, 5, 6][..], true));
    }

    #[test]
    fn a_join_gives_each_known_user_once() {
        let table = table();
        let mut join = Join::new(&table);
        assert_eq!(join.row(1 << 40, 2), Some(&[2, 8][..]));
        assert_eq!(join.row(3, 99), Some(&[7, 1, 4, 5][..]));
        assert_eq!(join.row(3, 1), None, "seen");
        assert_eq!(join.row(4, 1), None, "unknown");
        assert_eq!(join.row(9, 0), None, "no progress");
        assert_eq!(
            join.counts(),
            DeliveredCounts {
                users: 2,
                items: 6,
                clamped: 1,
                unknown: 1,
                repeated: 1,
            }
        );
        assert_eq!(largest_user(&table), Some(1 << 40));
    }

    #[test]
    fn each_gives_users_with_progress_in_order_clamped() {
        let dir = crate::files::scratch_dir("delivered");
        let table = table();
        let (file, _) = ProgressFile::open(&dir, 77, 3, OnCorrupt::Fail).unwrap();
        let offsets = OffsetMap::in_file(file);
        offsets.advance(0, 2, 4);
        // A damaged offset far beyond the feed (written as another process
        // could): clamped, never an index.
        offsets.advance(2, 1_000, 1_000);
        let served = Served {
            id: 77,
            source: "test".into(),
            progress: ProgressView::open(&dir, 77, 3).unwrap(),
            table,
        };
        let mut rows = Vec::new();
        let counts = served
            .each(|user, items| {
                rows.push((user, items.to_vec()));
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(rows, [(3, vec![7, 1]), (1 << 40, vec![2, 8, 6])]);
        assert_eq!((counts.users, counts.items, counts.clamped), (2, 5, 1));
        // The first error stops it.
        assert_eq!(served.each(|_, _| Err("full")), Err("full"));
    }
}
