//! Fast Feed's benchmarks: the pieces that measure the server, and the tools
//! that turn measurements into something to read.
//!
//! - `benches/hot_path.rs`: criterion micro-benchmarks of each step of a
//!   request (taking items from the table, the offset update under
//!   contention, the random fill, the body encoding) and of the whole
//!   service call. `cargo bench -p feed-bench`.
//! - `tests/it`: a counting global allocator that proves the domain and
//!   in-memory path allocates nothing per request, and pins down what the
//!   HTTP body encoding allocates.
//! - [`floor`] and the `feed-floor` binary: a constant-response actix-web
//!   server with the feed route's shape, so that a load test can say how
//!   much of the time is the feed's and how much is actix-web, the kernel
//!   and wrk sharing two cores.
//! - `run.sh` and `wrk/*.lua`: the load runner (wrk closed loop, feed and
//!   floor alternating; oha open loop at fixed rates), which writes
//!   `results/*.json`.
//! - [`report`], [`plot`] and the `feed-report` binary: the summary
//!   (feed/floor ratios and their medians), the markdown table and the SVG
//!   plot of a results file.
//!
//! The method, and how to read the numbers, are in `docs/BENCHMARKS.md`.
//! Nothing here is part of the product: the server does not depend on this
//! crate, and it is not a default workspace member.

pub mod floor;
pub mod plot;
pub mod report;
