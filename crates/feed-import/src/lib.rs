//! Reads the feeds that offline jobs compute, checks them, and returns them
//! sorted by user as compressed sparse rows ([`ImportedFeeds`]).
//!
//! The ranking runs elsewhere (pandas/pyarrow, Spark, a Rust batch job) and
//! writes, for every user, a ranked list of item ids. This crate is the one
//! place that reads those files, so the rules for what a valid input is live
//! here and nowhere else:
//!
//! - **Formats**, chosen by extension: Parquet (`.parquet`, as pyarrow and
//!   Spark write it by default: snappy, zstd or uncompressed) with columns
//!   `user_id` (any integer type) and `items` (a `List` or `LargeList` of any
//!   integer type), other columns ignored; and JSON Lines (`.jsonl`), one
//!   `{"user_id": 17, "items": [5, 9, 2]}` a line, blank lines ignored.
//!   Parquet is read column-wise, as Arrow record batches of the two
//!   columns only.
//! - **Values**: a user id is `0..=u64::MAX`; an item id is
//!   `1..=u32::MAX` (0 is the invalid item). Null, missing, negative or out
//!   of range is an error, never a value quietly skipped: a feed file that
//!   is wrong is wrong for every user, and the server must not start on it.
//! - **Users**: each user appears once across all inputs; a second
//!   appearance is an error naming both places. An empty feed is allowed.
//! - **Items**: an item repeated within a feed keeps its first (best)
//!   place; the later copies are dropped and counted.
//!
//! Every error is one [`ImportError`] whose message names the file, the row
//! (or line) and the column, so whoever ran the offline job can find the
//! value.
//!
//! Architecture Invariant: this crate knows files and values, nothing of
//! how the feeds are served. It has no HTTP, no server or domain types, and
//! no knowledge of the snapshot file that `feed-server import` writes from
//! [`ImportedFeeds`]; it depends on no other crate of this workspace.
//!
//! Memory: the items are held once, as `u32`, plus a few dozen bytes per
//! user; putting unsorted input in user order needs about one sixteenth of
//! the items more (see [`import`]).

mod collect;
mod error;
mod parquet_input;
mod progress;
mod text_input;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use error::{ImportError, Position, Problem};
pub use progress::ProgressReporter;

use collect::Collector;

/// Every user's feed, sorted by user id, as compressed sparse rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportedFeeds {
    /// The users, strictly increasing.
    pub user_ids: Vec<u64>,
    /// `user_ids.len() + 1` entries: `offsets[0] = 0`, non-decreasing; user
    /// `i`'s feed is `items[offsets[i]..offsets[i + 1]]`.
    pub offsets: Vec<u64>,
    /// Every feed, in rank order: each item in `1..=u32::MAX`, distinct
    /// within its feed.
    pub items: Vec<u32>,
    /// The fallback list, if one was given: distinct items in
    /// `1..=u32::MAX`, in file order (later repeats dropped).
    pub fallback: Option<Vec<u32>>,
}

impl ImportedFeeds {
    /// User `index`'s feed (the `index`-th smallest user id).
    ///
    /// # Panics
    /// If `index >= self.user_ids.len()`.
    pub fn feed(&self, index: usize) -> &[u32] {
        &self.items[self.offsets[index] as usize..self.offsets[index + 1] as usize]
    }
}

/// What an import read, for the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    /// Input files read.
    pub files: usize,
    /// Rows (Parquet) and non-blank lines (JSON Lines) read.
    pub rows: u64,
    /// Users imported (every row is one user).
    pub users: u64,
    /// Items kept, over all feeds.
    pub items: u64,
    /// The shortest feed's length (0 with no users).
    pub shortest: u64,
    /// The longest feed's length.
    pub longest: u64,
    /// The mean feed length (0 with no users).
    pub mean: f64,
    /// Repeated items dropped from feeds.
    pub duplicates_dropped: u64,
    /// Time spent, reading to sorted result.
    pub elapsed: Duration,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            self.rows as f64 / seconds
        } else {
            0.0
        };
        writeln!(
            f,
            "read {} rows from {} file(s) in {seconds:.1} s ({rate:.0} rows/s)",
            self.rows, self.files
        )?;
        writeln!(f, "{} users, {} items", self.users, self.items)?;
        writeln!(
            f,
            "feed length: shortest {}, longest {}, mean {:.1}",
            self.shortest, self.longest, self.mean
        )?;
        write!(f, "{} repeated items dropped", self.duplicates_dropped)
    }
}

/// How far an import has read; given to the `progress` callback of
/// [`import`] after every record batch (Parquet) or few thousand lines
/// (JSON Lines), and at the end of each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The index in `inputs` of the file being read.
    pub file: usize,
    /// Rows read so far, over all files.
    pub rows: u64,
}

/// The input formats, by extension.
#[derive(Debug, Clone, Copy)]
enum Format {
    Parquet,
    JsonLines,
}

impl Format {
    fn of(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?;
        if extension.eq_ignore_ascii_case("parquet") {
            Some(Format::Parquet)
        } else if extension.eq_ignore_ascii_case("jsonl") {
            Some(Format::JsonLines)
        } else {
            None
        }
    }
}

/// Reads `inputs` (`.parquet` or `.jsonl`, in this order) and the optional
/// `fallback` list (`.parquet` with an integer column `item_id`; any other
/// extension is text, one item id a line, blank lines ignored), checks every
/// value, and returns the feeds sorted by user with a summary.
///
/// Every extension is checked and the fallback list read before the first
/// feed, so a typo fails at once. Values are checked as they are read and
/// the first bad one stops the import; a user that appears twice is found
/// after all inputs are read, and the one reported is the earliest second
/// appearance in input order.
///
/// Memory: the items once, plus a few dozen bytes per user. Input already in
/// user order (across the inputs, in the order given) is returned as read;
/// otherwise the sort moves the items through sixteen buckets, and the peak
/// is the items plus about one bucket.
///
/// # Errors
/// [`ImportError::NoInputs`] for an empty `inputs`; otherwise the first
/// unreadable file or bad value met, or a repeated user: see
/// [`ImportError`].
pub fn import(
    inputs: &[PathBuf],
    fallback: Option<&Path>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(ImportedFeeds, ImportSummary), ImportError> {
    let start = Instant::now();
    if inputs.is_empty() {
        return Err(ImportError::NoInputs);
    }
    let formats = inputs
        .iter()
        .map(|path| {
            Format::of(path).ok_or_else(|| ImportError::UnknownFormat { path: path.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fallback = fallback.map(read_fallback).transpose()?;

    let mut collector = Collector::new();
    for (file, (path, format)) in inputs.iter().zip(formats).enumerate() {
        match format {
            Format::Parquet => parquet_input::read_feeds(path, file, &mut collector, progress)?,
            Format::JsonLines => text_input::read_feeds(path, file, &mut collector, progress)?,
        }
    }
    let (mut feeds, stats) = collector.finish()?;
    feeds.fallback = fallback;

    let users = feeds.user_ids.len() as u64;
    let lengths = feeds.offsets.windows(2).map(|pair| pair[1] - pair[0]);
    let summary = ImportSummary {
        files: inputs.len(),
        rows: stats.rows,
        users,
        items: feeds.items.len() as u64,
        shortest: lengths.clone().min().unwrap_or(0),
        longest: lengths.max().unwrap_or(0),
        mean: if users == 0 {
            0.0
        } else {
            feeds.items.len() as f64 / users as f64
        },
        duplicates_dropped: stats.duplicates_dropped,
        elapsed: start.elapsed(),
    };
    Ok((feeds, summary))
}

/// The fallback list at `path`, checked, repeats dropped (first kept).
fn read_fallback(path: &Path) -> Result<Vec<u32>, ImportError> {
    let ids = match Format::of(path) {
        Some(Format::Parquet) => parquet_input::read_item_ids(path)?,
        _ => text_input::read_item_ids(path)?,
    };
    let mut seen = HashSet::with_capacity(ids.len());
    Ok(ids.into_iter().filter(|&id| seen.insert(id)).collect())
}

/// The distinct items of `items`, sorted: a catalog for the random fill when
/// no fallback list is given (`distinct_items(&feeds.items)`).
///
/// Work and memory are linear in `items.len()` plus a bit for every id up
/// to the largest (a bitmap) when the ids are dense, as catalogs are;
/// sparse ids are sorted instead, so a lone `u32::MAX` costs no 512 MiB.
pub fn distinct_items(items: &[u32]) -> Vec<u32> {
    let Some(&largest) = items.iter().max() else {
        return Vec::new();
    };
    let words = largest as usize / 64 + 1;
    if words > 4 * items.len() + 1024 {
        let mut sorted = items.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        return sorted;
    }
    let mut bits = vec![0u64; words];
    for &item in items {
        bits[item as usize / 64] |= 1 << (item % 64);
    }
    let mut distinct = Vec::new();
    for (word_index, &word) in bits.iter().enumerate() {
        let mut word = word;
        while word != 0 {
            distinct.push((word_index * 64) as u32 + word.trailing_zeros());
            word &= word - 1;
        }
    }
    distinct
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_distinct(items: &[u32]) {
        let mut expected = items.to_vec();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(distinct_items(items), expected);
    }

    proptest! {
        #[test]
        fn distinct_items_are_sorted_and_complete_dense(items in proptest::collection::vec(0u32..5000, 0..3000)) {
            check_distinct(&items);
        }

        #[test]
        fn distinct_items_are_sorted_and_complete_sparse(items in proptest::collection::vec(any::<u32>(), 0..300)) {
            check_distinct(&items);
        }
    }

    #[test]
    fn distinct_items_at_the_edges() {
        check_distinct(&[]);
        check_distinct(&[u32::MAX]);
        check_distinct(&[1, u32::MAX, 1, 63, 64, 65]);
        check_distinct(&(1..=10_000).rev().chain(1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn summary_reads_as_a_few_lines() {
        let summary = ImportSummary {
            files: 2,
            rows: 3000,
            users: 3000,
            items: 600_000,
            shortest: 0,
            longest: 200,
            mean: 200.0,
            duplicates_dropped: 7,
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(
            summary.to_string(),
            "read 3000 rows from 2 file(s) in 1.5 s (2000 rows/s)\n\
             3000 users, 600000 items\n\
             feed length: shortest 0, longest 200, mean 200.0\n\
             7 repeated items dropped"
        );
    }
}
