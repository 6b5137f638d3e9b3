//! Tests of the `feed-server` crate: configuration, the real binary, and the
//! architecture invariants of the whole workspace. One test binary.

mod admin;
mod architecture;
mod binary;
mod blocklist;
#[path = "../../../feed-redis/tests/it/cluster.rs"]
mod cluster;
mod config;
mod dashboard;
mod durable;
mod export;
mod import;
mod inprocess;
mod lifecycle;
mod protection;
mod replay;
mod roundtrip;
mod scaleout;
mod server;
mod snapshot;

use std::path::PathBuf;

/// The workspace root.
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
