//! Where a memory-mode server reads snapshots from and keeps progress:
//! [`SnapshotPlace`] confines a reload that names a file to the snapshot
//! folder, [`ProgressPlace`] opens (or starts) each version's progress file
//! and cleans the files of versions no longer held.

use std::path::{Path, PathBuf};

use feed_domain::DataControlError;
use slog::{Logger, error, info, warn};

use super::log_path;
use crate::progress::Kind;
use crate::rows::Rows;
use crate::{
    FeedTable, Given, OffsetMap, OnCorrupt, Opened, ProgressError, ProgressFile, Snapshot,
    words_for,
};

/// Where users' progress is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressPlace {
    /// The folder of the progress files; `None` keeps progress in memory.
    pub dir: Option<PathBuf>,
    /// What to do with a bad progress file.
    pub on_corrupt: OnCorrupt,
}

impl ProgressPlace {
    /// Progress in memory only.
    pub const MEMORY: Self = Self {
        dir: None,
        on_corrupt: OnCorrupt::Fail,
    };

    /// The offsets of data `id` with `users` users: restored from its
    /// progress file, or fresh; in memory without a folder. Says in the log
    /// which.
    ///
    /// # Errors
    /// [`ProgressError`] naming the file or folder.
    pub fn offsets(
        &self,
        id: u64,
        users: u32,
        logger: &Logger,
    ) -> Result<OffsetMap, ProgressError> {
        let Some(dir) = &self.dir else {
            return Ok(OffsetMap::in_memory(users));
        };
        let (file, opened) = ProgressFile::open(dir, id, users, self.on_corrupt)?;
        let path = log_path(file.path());
        let (keys, keys_opened) =
            ProgressFile::open_kind(Kind::Keys, dir, id, users, self.on_corrupt)?;
        if let Opened::Reset { reason, aside } = keys_opened {
            warn!(logger, "progress: the retry keys' file was bad, kept aside, starting fresh";
                "file" => log_path(keys.path()), "reason" => reason, "aside" => log_path(&aside));
        }
        let offsets = OffsetMap::in_files(file, keys);
        match opened {
            Opened::Fresh => info!(logger, "progress: fresh for this data";
                "data_id" => format!("{id:016x}"), "file" => &path),
            Opened::Restored => info!(logger, "progress: restored";
                "data_id" => format!("{id:016x}"), "file" => &path,
                "users_started" => offsets.started()),
            Opened::Reset { reason, aside } => warn!(logger,
                "progress: the file was bad, kept aside, starting fresh";
                "file" => &path, "reason" => reason, "aside" => log_path(&aside)),
        }
        Ok(offsets)
    }

    /// [`Self::offsets`] of an opened `snapshot`: keyed by its id, for its
    /// users (a verified snapshot has at most `u32::MAX`).
    ///
    /// # Errors
    /// As [`Self::offsets`].
    pub fn snapshot_offsets(
        &self,
        snapshot: &Snapshot,
        logger: &Logger,
    ) -> Result<OffsetMap, ProgressError> {
        self.offsets(snapshot.meta().id, snapshot.table().users(), logger)
    }

    /// The marks of the positions of data `id` (over `table`) given under
    /// the version served before it: kept in its files, created empty if
    /// there are none; in memory without a folder. A shadow file an
    /// earlier build wrote without the late bits is kept, every user late.
    ///
    /// # Errors
    /// [`ProgressError`] naming the file or folder.
    pub fn given(
        &self,
        id: u64,
        table: &FeedTable,
        logger: &Logger,
    ) -> Result<Given, ProgressError> {
        let positions = table.total_items();
        let Some(dir) = &self.dir else {
            return Ok(Given::in_memory(table.users(), positions));
        };
        let words = u32::try_from(words_for(positions)).map_err(|_| ProgressError::Corrupt {
            path: dir.join(ProgressFile::kind_file_name(Kind::Given, id)),
            reason: format!("{positions} feed positions are too many to mark"),
        })?;
        let late_kept = dir
            .join(ProgressFile::kind_file_name(Kind::Late, id))
            .exists();
        // The late bits first: a crash between the two creations leaves late
        // bits without a shadow (nothing to read), never a shadow without
        // them (which would be read for every user).
        let users = words_for(table.users() as usize) as u32;
        let (late, late_opened) =
            ProgressFile::open_kind(Kind::Late, dir, id, users, self.on_corrupt)?;
        let (file, opened) = ProgressFile::open_kind(Kind::Given, dir, id, words, self.on_corrupt)?;
        let shadow_kept = matches!(opened, Opened::Restored);
        if let Opened::Reset { reason, aside } = opened {
            warn!(logger, "progress: the file of items given before was bad, kept aside, starting fresh";
                "file" => log_path(file.path()), "reason" => reason, "aside" => log_path(&aside));
        }
        let opened = late_opened;
        // A shadow kept without its late bits (an earlier build wrote it,
        // or the late file was bad): every user's shadow is read.
        let every_user_late = shadow_kept && !matches!(opened, Opened::Restored);
        if let Opened::Reset { reason, aside } = opened {
            warn!(logger, "progress: the file of users marked late was bad, kept aside, \
                every user's marks are read from the file of items given before";
                "file" => log_path(late.path()), "reason" => reason, "aside" => log_path(&aside));
        } else if every_user_late && !late_kept {
            info!(logger, "progress: items given before kept by an earlier version, \
                read for every user"; "file" => log_path(file.path()));
        }
        let rows = dir.join(Rows::file_name(id));
        let given = Given::in_files(file, late, rows.clone(), id);
        if every_user_late {
            given.mark_every_user_late();
            // Durable at once: a restart must not find late bits that say
            // nobody's shadow is to be read.
            for file in given.files() {
                if let Err(e) = file.sync_all() {
                    error!(logger, "progress: the file of users marked late could not be synced, \
                        the next sync writes it"; "file" => log_path(file.path()), "error" => %e);
                }
            }
        }
        match Rows::read(&rows, id, table) {
            Ok(Some(read)) => given.install_rows(read),
            Ok(None) => {}
            Err(reason) if self.on_corrupt == OnCorrupt::Fail => {
                return Err(ProgressError::Corrupt { path: rows, reason });
            }
            Err(reason) => {
                let aside = rows.with_extension(format!("corrupt-{}", crate::now_unix_ms()));
                let moved = std::fs::rename(&rows, &aside);
                warn!(logger, "progress: the rows of items given before were bad, kept aside, \
                    served as if none were"; "file" => log_path(&rows), "reason" => reason,
                    "aside" => log_path(&aside), "moved" => moved.is_ok());
            }
        }
        Ok(given)
    }

    /// [`Self::given`], only when data `id` has such a file from an earlier
    /// run (at start: the data served then kept what it had carried).
    ///
    /// # Errors
    /// As [`Self::given`].
    pub fn given_kept(
        &self,
        id: u64,
        table: &FeedTable,
        logger: &Logger,
    ) -> Result<Option<Given>, ProgressError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        if !dir
            .join(ProgressFile::kind_file_name(Kind::Given, id))
            .exists()
        {
            return Ok(None);
        }
        self.given(id, table, logger).map(Some)
    }

    /// Removes progress files of data other than `keep`.
    pub(crate) fn clean(&self, keep: &[u64], logger: &Logger) {
        if let Some(dir) = &self.dir {
            match ProgressFile::clean(dir, keep) {
                Ok(removed) if !removed.is_empty() => info!(logger, "progress: old files removed";
                    "files" => removed.iter().map(|p| log_path(p)).collect::<Vec<_>>().join(", ")),
                Ok(_) => {}
                Err(e) => warn!(logger, "progress: cannot clean the folder"; "error" => %e),
            }
        }
    }
}

/// Where snapshots are read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotPlace {
    /// The file a reload reads when it names none (`data.snapshot`).
    pub default: Option<PathBuf>,
    /// The only folder a reload that names a path may read from.
    pub dir: Option<PathBuf>,
}

impl SnapshotPlace {
    /// The file a reload asked for `path` reads: `path` (relative to the
    /// folder, or absolute) resolved, links and all, inside the folder.
    /// Whether a path outside it exists is never told: every such path
    /// gets the same answer.
    ///
    /// # Errors
    /// [`DataControlError::Forbidden`] for a path outside the folder (or
    /// when there is no folder); [`DataControlError::Failed`] for a path
    /// inside it that cannot be resolved.
    pub fn confine(&self, path: &Path) -> Result<PathBuf, DataControlError> {
        let outside = || {
            DataControlError::Forbidden(
                "a reload may only name a file inside data.snapshot_dir".into(),
            )
        };
        let dir = self.dir.as_deref().ok_or_else(|| {
            DataControlError::Forbidden(
                "a reload may not name a file: set data.snapshot_dir (or data.snapshot)".into(),
            )
        })?;
        let dir = dir
            .canonicalize()
            .map_err(|e| DataControlError::Failed(format!("data.snapshot_dir: {e}")))?;
        if path
            .components()
            .any(|part| part == std::path::Component::ParentDir)
        {
            return Err(outside());
        }
        let joined = dir.join(path); // an absolute `path` replaces `dir`
        match joined.canonicalize() {
            Ok(real) if real.starts_with(&dir) => Ok(real),
            Ok(_) => Err(outside()),
            // "Not found" only for a plain name in the folder itself that is
            // not a link: through a link or a subfolder it could tell
            // whether something outside exists.
            Err(e)
                if joined.parent() == Some(dir.as_path())
                    && std::fs::symlink_metadata(&joined)
                        .map_or(true, |meta| !meta.file_type().is_symlink()) =>
            {
                Err(DataControlError::Failed(format!(
                    "{}: {e}",
                    joined.display()
                )))
            }
            Err(_) => Err(outside()),
        }
    }
}
