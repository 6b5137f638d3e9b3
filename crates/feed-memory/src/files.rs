//! What the snapshot and progress files share about the filesystem: making
//! a creation or a rename durable, replacing a file whole, and (for tests)
//! a fresh folder.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Makes the creation or renaming of a file in `dir` durable (`dir` empty:
/// the current folder).
pub(crate) fn sync_folder(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Replaces the file at `path` whole, so that a reader sees either the old
/// file or the new one, never a part: creates `temporary` (beside `path`,
/// read and write, with `mode`), lets `write` fill it, syncs it, renames it
/// over `path` and syncs the folder. Returns what `write` returned.
///
/// The temporary file stays open until the folder is synced, so a lock
/// that `write` takes on it holds until then.
///
/// # Errors
/// The first error of `write`, the sync, the rename or the folder's sync;
/// `temporary` is removed then, and `path` is as it was unless only the
/// folder's sync failed.
pub(crate) fn replace_atomically<T>(
    path: &Path,
    temporary: &Path,
    mode: u32,
    write: impl FnOnce(&File) -> io::Result<T>,
) -> io::Result<T> {
    let replacement = Replacement::create(path, temporary, mode)?;
    let written = write(replacement.file())?;
    replacement.commit()?;
    Ok(written)
}

/// A file being written to replace another whole (see
/// [`replace_atomically`], which is this for a write done in one call): the
/// temporary file is created at once, filled by its owner for as long as it
/// likes, and only [`commit`](Self::commit) syncs it and renames it over the
/// target. Dropped without a commit (an error, a panic, an interruption),
/// it removes the temporary file.
pub(crate) struct Replacement {
    file: File,
    path: std::path::PathBuf,
    temporary: std::path::PathBuf,
    committed: bool,
}

impl Replacement {
    /// Creates (or truncates) `temporary`, read and write, with `mode`.
    pub(crate) fn create(path: &Path, temporary: &Path, mode: u32) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(temporary)?;
        Ok(Self {
            file,
            path: path.to_owned(),
            temporary: temporary.to_owned(),
            committed: false,
        })
    }

    /// The temporary file.
    pub(crate) const fn file(&self) -> &File {
        &self.file
    }

    /// Syncs the temporary file, renames it over the target and syncs the
    /// folder.
    ///
    /// # Errors
    /// The first error of the sync, the rename or the folder's sync; the
    /// temporary file is removed then.
    pub(crate) fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.temporary, &self.path)?;
        self.committed = true;
        // Make the rename itself durable.
        sync_folder(self.path.parent().unwrap_or(Path::new("")))
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// A fresh folder under the system's temporary one, named after `what`.
#[cfg(test)]
pub(crate) fn scratch_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "feed-{what}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The names in `dir`, sorted (for the tests that check what a write
/// leaves behind).
#[cfg(test)]
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_replaced_file_is_the_new_one_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch_dir("files");
        let path = dir.join("target");
        std::fs::write(&path, b"an older and longer content").unwrap();
        let written = replace_atomically(&path, &dir.join(".target.tmp"), 0o640, |mut file| {
            file.write_all(b"new")?;
            Ok(3)
        })
        .unwrap();
        assert_eq!(written, 3);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "{mode:o}");
        assert_eq!(
            names(&dir),
            ["target"],
            "the temporary file was left behind"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temporary() {
        let dir = scratch_dir("files");
        let path = dir.join("target");
        std::fs::write(&path, b"old").unwrap();
        let error = replace_atomically(&path, &dir.join(".target.tmp"), 0o600, |mut file| {
            file.write_all(b"half of it")?;
            Err::<(), _>(io::Error::other("no more"))
        })
        .unwrap_err();
        assert_eq!(error.to_string(), "no more");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(
            names(&dir),
            ["target"],
            "the temporary file was left behind"
        );
    }
}
