//! The `[progress]` section of the configuration ([`ProgressSettings`]):
//! where users' progress is kept across restarts, how often it is synced,
//! and what a bad progress file does ([`OnCorrupt`]), with the checks of
//! its keys.
//!
//! A plain serde type: `feed-server` reads the file and the environment
//! into it; this crate knows nothing of how it was read.

use std::path::PathBuf;

use feed_domain::InvalidSetting;
use serde::Deserialize;

use crate::OnCorrupt;

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
}
