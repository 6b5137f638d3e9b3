//! The wall clock, read in one place: [`now_unix_ms`].

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, by the system's wall clock: 0 for a
/// clock set before 1970, [`u64::MAX`] past what a `u64` holds.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
