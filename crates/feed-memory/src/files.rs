//! What the snapshot and progress files share about the filesystem: making
//! a creation or a rename durable, and (for tests) a fresh folder.

use std::fs::File;
use std::path::Path;

/// Makes the creation or renaming of a file in `dir` durable (`dir` empty:
/// the current folder).
pub(crate) fn sync_folder(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
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
