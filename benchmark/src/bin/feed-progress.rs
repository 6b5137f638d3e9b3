//! `feed-progress`: gives a share of a snapshot's users progress, in the
//! progress file a server would keep for it, so that
//! `feed-server export-delivered` can be measured at scale without serving
//! millions of requests first (docs/BENCHMARKS.md, "Export of delivered
//! items").

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use feed_memory::{OffsetMap, OnCorrupt, ProgressFile, Snapshot};

/// Moves the offsets of a share of the users of a snapshot, each to a
/// random point of their feed, in the progress file for that snapshot.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The snapshot (written by `feed-server import`).
    #[arg(long)]
    snapshot: PathBuf,
    /// The progress folder (`progress.path`).
    #[arg(long)]
    progress: PathBuf,
    /// The share of users given progress, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    share: f64,
    /// Seed of the choice of users and offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let snapshot = match Snapshot::open(&cli.snapshot) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            eprintln!("feed-progress: {e}");
            return ExitCode::from(2);
        }
    };
    let (meta, table, _) = snapshot.into_parts();
    let offsets = match ProgressFile::open(&cli.progress, meta.id, table.users(), OnCorrupt::Fail) {
        Ok((file, _)) => OffsetMap::in_file(file),
        Err(e) => {
            eprintln!("feed-progress: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rng = fastrand::Rng::with_seed(cli.seed);
    let (mut users, mut items) = (0u64, 0u64);
    for (position, (_, feed)) in table.entries().enumerate() {
        let len = feed.len() as u32;
        if len == 0 || rng.f64() >= cli.share {
            continue;
        }
        let range = offsets.advance(position as u32, rng.u32(1..=len), len);
        users += 1;
        items += u64::from(range.end);
    }
    if let Err(e) = offsets.file().map(ProgressFile::sync_all).transpose() {
        eprintln!("feed-progress: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "{users} of {} users given progress, {items} items, in {}",
        table.users(),
        cli.progress.display()
    );
    ExitCode::SUCCESS
}
