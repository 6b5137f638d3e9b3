//! Housekeeping of the progress folder: the names of the files put aside
//! and of temporaries, the lock every user of a file holds, and cleaning.
//!
//! Architecture Invariant: cleaning never removes a file another process
//! holds (it takes each file's lock before removing it), and what it keeps
//! is bounded: the files of the data named, the newest other one, the
//! newest [`MAX_ASIDE`] corrupt files, and no temporaries.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Corrupt files kept aside for an operator to look at.
const MAX_ASIDE: usize = 3;

/// Where a bad progress file at `path` is put aside.
pub(super) fn aside_name(path: &Path, now_ms: u64) -> PathBuf {
    path.with_extension(format!("corrupt-{now_ms}"))
}

/// Where a progress file for `path` is written before it is renamed.
pub(super) fn temporary_name(path: &Path) -> PathBuf {
    path.with_extension(format!("{}.tmp", std::process::id()))
}

/// Takes `file`'s advisory lock, or says that another process holds it.
pub(super) fn lock(file: &File) -> std::io::Result<()> {
    file.try_lock().map_err(|e| match e {
        TryLockError::WouldBlock => std::io::Error::new(
            std::io::ErrorKind::ResourceBusy,
            "another process is using this progress file",
        ),
        TryLockError::Error(e) => e,
    })
}

/// Removes `path` (and its journal) unless another process holds its
/// lock; whether it did.
fn remove_unused(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    if lock(&file).is_err() {
        return false;
    }
    let removed = std::fs::remove_file(path).is_ok();
    if removed {
        let _ = std::fs::remove_file(path.with_extension("journal"));
    }
    removed
}

/// See [`super::ProgressFile::clean`]; `keep` holds file names.
pub(super) fn clean(dir: &Path, keep: &[String]) -> std::io::Result<Vec<PathBuf>> {
    // The files of other data, offsets and retry keys apart: the newest of
    // each kind stays.
    let mut others = Vec::new();
    let mut other_keys = Vec::new();
    let mut other_given = Vec::new();
    let mut other_late = Vec::new();
    let mut other_rows = Vec::new();
    let mut aside = Vec::new();
    let mut temporaries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("progress-") {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let path = dir.join(&name);
        if name.ends_with("-keys.bin") && !keep.contains(&name) {
            other_keys.push((modified, path));
        } else if name.ends_with("-given.bin") && !keep.contains(&name) {
            other_given.push((modified, path));
        } else if name.ends_with("-late.bin") && !keep.contains(&name) {
            other_late.push((modified, path));
        } else if name.ends_with("-rows.bin") && !keep.contains(&name) {
            other_rows.push((modified, path));
        } else if name.ends_with(".bin") && !keep.contains(&name) {
            others.push((modified, path));
        } else if name.contains(".corrupt-") {
            aside.push((modified, path));
        } else if name.ends_with(".tmp") {
            temporaries.push(path);
        }
    }
    // Newest first; the newest stays.
    others.sort_by(|a, b| b.cmp(a));
    other_keys.sort_by(|a, b| b.cmp(a));
    other_given.sort_by(|a, b| b.cmp(a));
    aside.sort_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    let others = others.into_iter().skip(1);
    let others = others
        .chain(other_keys.into_iter().skip(1))
        .chain(other_given.into_iter().skip(1));
    for (_, path) in others {
        if remove_unused(&path) {
            removed.push(path);
        }
    }
    // The late bits and the rows of a data id go with its file of items
    // given before (the rows file is never held locked: it goes only once
    // that file, which its owner holds, is gone).
    for (_, path) in other_late.into_iter().chain(other_rows) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let Some(id) = name
            .strip_suffix("-late.bin")
            .or_else(|| name.strip_suffix("-rows.bin"))
        else {
            continue;
        };
        if !dir.join(format!("{id}-given.bin")).exists() && remove_unused(&path) {
            removed.push(path);
        }
    }
    for (_, path) in aside.into_iter().skip(MAX_ASIDE) {
        if std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    for path in temporaries {
        if remove_unused(&path) {
            removed.push(path);
        }
    }
    Ok(removed)
}
