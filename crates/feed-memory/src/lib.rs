//! In-memory adapters for the ports of `feed-domain`.
//!
//! - [`FeedTable`]: every user's feed in one contiguous block of `u32` ids,
//!   read-only after start-up. User `u`'s feed is the slice
//!   `[u * feed_len, (u + 1) * feed_len)`: no per-user allocation, no pointer
//!   chasing, and the memory is the raw ids (4 bytes an item) and nothing more.
//! - [`OffsetMap`]: each user's progress, a lock-free `papaya` map from user
//!   to an `AtomicU32` updated in place with one compare-and-swap loop, so two
//!   concurrent requests for one user can never be handed the same item.
//! - [`MemoryFeedStorage`]: the two above, as a [`feed_domain::FeedStorage`].
//! - [`CatalogRandomFeed`]: random items from the catalog `1..=catalog_size`,
//!   as a [`feed_domain::RandomFeed`].
//! - [`DataSpec`] and [`FeedTable::generate`]: the synthetic data set,
//!   reproducible from a seed and generated on all cores.
//!
//! This crate knows the domain and nothing of HTTP, configuration or logging.

mod generate;
mod offsets;
mod random;
mod storage;
mod table;

pub use generate::{DataSpec, DataSpecError};
pub use offsets::OffsetMap;
pub use random::CatalogRandomFeed;
pub use storage::MemoryFeedStorage;
pub use table::{FeedTable, TableError};
