//! The sections of the configuration this crate reads, with the checks of
//! their keys: `[data]` ([`DataSettings`]: where the feeds come from, the
//! synthetic set's size, the snapshot file, its folder and its watch) and
//! `[progress]` ([`ProgressSettings`]: where users' progress is kept across
//! restarts, how often it is synced, and what a bad progress file does,
//! [`OnCorrupt`]).
//!
//! A plain serde type: `feed-server` reads the file and the environment
//! into it; this crate knows nothing of how it was read.

use std::path::{Path, PathBuf};

use feed_domain::InvalidSetting;
use serde::Deserialize;

use crate::{DataSpec, DataSpecError, OnCorrupt, ProgressPlace, SnapshotPlace};

/// `[data]`: where the feeds come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    /// `synthetic` (generated from the keys below) or `snapshot` (the file
    /// at `snapshot`).
    pub source: DataSource,
    /// The snapshot file, for `source = "snapshot"` and reloads.
    pub snapshot: String,
    /// The folder a reload that names a path may read from; empty: the
    /// folder of `snapshot`.
    pub snapshot_dir: String,
    /// Reload when the file at `snapshot` is replaced.
    pub watch: bool,
    /// How often to look at the file, with `watch`.
    pub watch_interval_ms: u64,
    /// Users `0..users`.
    pub users: u32,
    /// Items per feed.
    pub feed_len: u32,
    /// Catalog items `1..=catalog_size`.
    pub catalog_size: u32,
    /// Seed of the generator.
    pub seed: u64,
}

/// Where the feeds come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    /// Generated at start-up from `data.users`, `feed_len`, `catalog_size`
    /// and `seed`.
    Synthetic,
    /// The snapshot file at `data.snapshot`.
    Snapshot,
}

impl DataSettings {
    /// Checks the keys of `[data]` for answers of up to `max_size` items
    /// (`api.max_size`), and makes the synthetic set's spec.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first bad key.
    pub fn validate(&self, max_size: u32) -> Result<DataSpec, InvalidSetting> {
        let data = self;
        if data.feed_len == 0 {
            return Err(InvalidSetting::new("data.feed_len", "must be at least 1"));
        }
        if data.catalog_size < data.feed_len {
            return Err(InvalidSetting::new(
                "data.catalog_size",
                format!(
                    "{} is smaller than data.feed_len ({})",
                    data.catalog_size, data.feed_len
                ),
            ));
        }
        if data.source == DataSource::Synthetic && data.catalog_size < max_size {
            return Err(InvalidSetting::new(
                "data.catalog_size",
                format!(
                    "{} is smaller than api.max_size ({}): a full answer needs that many distinct items",
                    data.catalog_size, max_size
                ),
            ));
        }
        let spec = DataSpec::new(data.users, data.feed_len, data.catalog_size, data.seed).map_err(
            |e| {
                let key = match e {
                    DataSpecError::TooLarge { .. } => "data.users",
                    DataSpecError::Catalog { .. } => "data.catalog_size",
                    _ => "data.feed_len",
                };
                InvalidSetting::new(key, e.to_string())
            },
        )?;
        if data.source == DataSource::Snapshot && data.snapshot.trim().is_empty() {
            return Err(InvalidSetting::new(
                "data.snapshot",
                "must name a file when data.source is \"snapshot\"",
            ));
        }
        if data.watch && data.source != DataSource::Snapshot {
            return Err(InvalidSetting::new(
                "data.watch",
                "watches the snapshot being served: it needs data.source = \"snapshot\"".to_owned(),
            ));
        }
        if data.watch && data.watch_interval_ms == 0 {
            return Err(InvalidSetting::new(
                "data.watch_interval_ms",
                "must be at least 1".to_owned(),
            ));
        }
        Ok(spec)
    }

    /// The snapshot file reloads use when they name none (`data.snapshot`,
    /// if set).
    pub fn snapshot_path(&self) -> Option<PathBuf> {
        let path = self.snapshot.trim();
        (!path.is_empty()).then(|| path.into())
    }

    /// Where snapshots are read from: the default file and the folder a
    /// reload that names a path is confined to (`data.snapshot_dir`, or
    /// the folder of `data.snapshot`).
    pub fn snapshot_place(&self) -> SnapshotPlace {
        let default = self.snapshot_path();
        let dir = self.snapshot_dir.trim();
        let dir = if dir.is_empty() {
            default.as_deref().and_then(Path::parent).map(|dir| {
                if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir.to_owned()
                }
            })
        } else {
            Some(dir.into())
        };
        SnapshotPlace { default, dir }
    }
}

/// `[progress]`: where users' progress is kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressSettings {
    /// The folder of the progress files (created if missing); empty: keep
    /// progress in memory only.
    pub path: String,
    /// How often progress is written to disk: what a machine crash or
    /// power loss can cost.
    pub sync_ms: u64,
    /// What to do with a torn, truncated or foreign progress file: `fail`
    /// (refuse to start, with one line naming the file) or `reset` (keep
    /// the bad file aside, start fresh, log a warning).
    pub on_corrupt: OnCorrupt,
}

impl ProgressSettings {
    /// Checks the keys of `[progress]`.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming `progress.sync_ms` when it is 0.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.sync_ms == 0 {
            return Err(InvalidSetting {
                key: "progress.sync_ms",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// The progress folder, `None` for progress in memory only.
    pub fn dir(&self) -> Option<PathBuf> {
        let path = self.path.trim();
        (!path.is_empty()).then(|| path.into())
    }

    /// Where progress is kept: `progress.path` and `progress.on_corrupt`.
    pub fn place(&self) -> ProgressPlace {
        ProgressPlace {
            dir: self.dir(),
            on_corrupt: self.on_corrupt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(path: &str, sync_ms: u64) -> ProgressSettings {
        ProgressSettings {
            path: path.into(),
            sync_ms,
            on_corrupt: OnCorrupt::Fail,
        }
    }

    #[test]
    fn sync_ms_must_be_positive() {
        assert!(progress("", 1_000).validate().is_ok());
        assert_eq!(
            progress("", 0).validate().unwrap_err().to_string(),
            "configuration: progress.sync_ms: must be at least 1"
        );
    }

    #[test]
    fn an_empty_path_keeps_progress_in_memory() {
        assert_eq!(progress(" ", 1).dir(), None);
        assert_eq!(progress(" progress ", 1).dir(), Some("progress".into()));
    }

    fn data() -> DataSettings {
        DataSettings {
            source: DataSource::Synthetic,
            snapshot: String::new(),
            snapshot_dir: String::new(),
            watch: false,
            watch_interval_ms: 1_000,
            users: 100,
            feed_len: 20,
            catalog_size: 1_000,
            seed: 42,
        }
    }

    /// Each key of `[data]` that cannot be used is named, in the words the
    /// binary prints.
    #[test]
    fn data_keys_are_checked_and_named() {
        assert_eq!(data().validate(50).unwrap().users(), 100);
        for (change, max_size, expected) in [
            (
                (|d: &mut DataSettings| d.feed_len = 0) as fn(&mut DataSettings),
                50,
                "data.feed_len: must be at least 1",
            ),
            (
                |d| d.catalog_size = 10,
                5,
                "data.catalog_size: 10 is smaller than data.feed_len (20)",
            ),
            (
                |_| {},
                2_000,
                "data.catalog_size: 1000 is smaller than api.max_size (2000): a full answer needs that many distinct items",
            ),
            (
                |d| d.source = DataSource::Snapshot,
                50,
                "data.snapshot: must name a file when data.source is \"snapshot\"",
            ),
            (
                |d| d.watch = true,
                50,
                "data.watch: watches the snapshot being served: it needs data.source = \"snapshot\"",
            ),
        ] {
            let mut settings = data();
            change(&mut settings);
            let error = settings.validate(max_size).unwrap_err().to_string();
            assert_eq!(error, format!("configuration: {expected}"));
        }
    }

    #[test]
    fn reloads_are_confined_to_the_snapshot_folder_by_default() {
        let mut settings = data();
        settings.snapshot = "/srv/feeds/today.snap".into();
        let place = settings.snapshot_place();
        assert_eq!(place.default, Some("/srv/feeds/today.snap".into()));
        assert_eq!(place.dir, Some("/srv/feeds".into()));
        settings.snapshot = "today.snap".into();
        assert_eq!(settings.snapshot_place().dir, Some(".".into()));
        settings.snapshot_dir = "/srv/other".into();
        assert_eq!(settings.snapshot_place().dir, Some("/srv/other".into()));
    }
}
