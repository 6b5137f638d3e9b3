//! In-memory adapters for the ports of `feed-domain`.
//!
//! - [`FeedTable`]: every user's feed in a few flat blocks, read-only after
//!   start-up: compressed sparse rows of `u32` item ids, users either dense
//!   (`0..n`, fixed-length feeds, the synthetic set) or sparse 64-bit ids
//!   found through a bucket index: no per-user allocation, no pointer
//!   chasing.
//! - [`Snapshot`]: a [`FeedTable`] and a fallback list in one file, mapped
//!   rather than parsed, with checksums; [`snapshot::write()`] writes one.
//!   The [`snapshot`] folder splits it by job: the format and types
//!   (`mod.rs`), writing (`write.rs`), opening and mapping (`read.rs`),
//!   verifying on every core (`verify.rs`).
//! - [`OffsetMap`]: each user's progress, a flat array of `AtomicU32` by the
//!   user's position, updated in place with one compare-and-swap loop, so
//!   two concurrent requests for one user can never be handed the same item;
//!   in memory, or in a [`ProgressFile`] mapped shared, so that it survives
//!   a crash. The [`progress`] folder holds the file (`mod.rs`: open,
//!   recover, sync), its on-disk header (`format.rs`), the dirty logs
//!   (`dirty.rs`), the journal (`journal.rs`) and the folder's housekeeping
//!   (`folder.rs`).
//! - [`MemoryFeedStorage`]: the two above, as a [`feed_domain::FeedStorage`].
//! - [`CatalogRandomFeed`]: random items from the catalog `1..=catalog_size`,
//!   as a [`feed_domain::RandomFeed`].
//! - [`DataSpec`] and [`FeedTable::generate`]: the synthetic data set,
//!   reproducible from a seed and generated on all cores.
//! - Shared by both files: `files.rs` replaces a file whole
//!   (`replace_atomically`: a temporary beside it, synced, renamed over it,
//!   the folder synced); [`now_unix_ms`] (`clock.rs`) is the one wall clock.
//!
//! - [`delivered`]: what users were delivered of one data version, for the
//!   export: the data a server serves with a read-only [`ProgressView`] of
//!   its progress (taking no lock, writing nothing), and the join of
//!   offsets read elsewhere (the cluster's) with a table.
//! - [`lifecycle`]: the memory mode's data lifecycle ([`DataManager`]):
//!   versions, reloads, rollbacks, the file watch, progress ownership,
//!   syncing and cleaning, behind the domain's `Publish` and `DataControl`
//!   ports.
//! - [`settings`]: its section of the configuration, `[progress]`
//!   ([`ProgressSettings`]), as a serde type with the checks of its keys.
//!
//! This crate knows the domain and nothing of HTTP or of the configuration
//! library (it only declares its section as a serde type); it logs its
//! lifecycle through `slog`.

mod blocklist;
mod carry;
mod clock;
pub mod delivered;
mod files;
mod generate;
pub mod lifecycle;
mod offsets;
pub mod progress;
mod random;
mod rows;
mod seen;
pub mod settings;
pub mod snapshot;
mod storage;
mod table;

pub use blocklist::{BlockLog, Blocked, MAX_BLOCKED};
pub use carry::{Carried, Given, Served, carry, words_for};
pub use clock::now_unix_ms;
pub use generate::{DataSpec, DataSpecError};
pub use lifecycle::{
    Background, DataManager, Loaded, MemoryFeedService, ProgressPlace, SnapshotPlace,
};
pub use offsets::{KeyedRange, OffsetMap};
pub use progress::{OnCorrupt, Opened, ProgressError, ProgressFile, ProgressView, ViewError};
pub use random::CatalogRandomFeed;
pub use settings::{DataSettings, DataSource, ProgressSettings};
pub use snapshot::{FallbackList, FileIdentity, Snapshot, SnapshotError, SnapshotMeta};
pub use storage::MemoryFeedStorage;
pub use table::{FeedTable, TableError};
