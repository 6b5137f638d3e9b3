//! Writing inputs and checking an import's result.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{ArrayRef, GenericListArray, PrimitiveArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use feed_import::{
    Failure, Fallback, ImportError, ImportOptions, ImportSummary, ImportedFeeds, Order, Progress,
    Stage, import,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// One user's feed as written: `None` is a null.
pub(crate) type RawFeed = (Option<i128>, Option<Vec<Option<i128>>>);

/// A fresh, empty directory for one test's files.
pub(crate) fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "feed-import-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fixture: the committed one, or, when `FEED_IMPORT_FIXTURES` names a
/// folder, the one `fixtures/make_fixtures.py` wrote there (CI regenerates
/// them with the pyarrow it installs, so the tests also read files written
/// by a current pyarrow, not only by the one that wrote the committed set).
pub(crate) fn fixture(name: &str) -> PathBuf {
    match std::env::var_os("FEED_IMPORT_FIXTURES") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    }
}

/// How a Rust-written Parquet file is laid out.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) compression: Compression,
    pub(crate) row_group_rows: usize,
    pub(crate) user_type: DataType,
    pub(crate) item_type: DataType,
    pub(crate) large_list: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            compression: Compression::SNAPPY,
            row_group_rows: 1024,
            user_type: DataType::UInt64,
            item_type: DataType::Int64,
            large_list: false,
        }
    }
}

pub(crate) fn zstd() -> Compression {
    Compression::ZSTD(ZstdLevel::default())
}

/// Runs `$body` with `$t` the Arrow type of the integer `DataType` `$dt`.
macro_rules! with_integer_type {
    ($dt:expr, $t:ident => $body:expr) => {
        match $dt {
            DataType::Int8 => {
                type $t = Int8Type;
                $body
            }
            DataType::Int16 => {
                type $t = Int16Type;
                $body
            }
            DataType::Int32 => {
                type $t = Int32Type;
                $body
            }
            DataType::Int64 => {
                type $t = Int64Type;
                $body
            }
            DataType::UInt8 => {
                type $t = UInt8Type;
                $body
            }
            DataType::UInt16 => {
                type $t = UInt16Type;
                $body
            }
            DataType::UInt32 => {
                type $t = UInt32Type;
                $body
            }
            DataType::UInt64 => {
                type $t = UInt64Type;
                $body
            }
            other => panic!("not an integer type: {other}"),
        }
    };
}

/// `value` as the native type of `$t` (panics if it does not fit).
macro_rules! native {
    ($t:ty, $value:expr) => {
        <<$t as arrow_array::types::ArrowPrimitiveType>::Native>::try_from($value)
            .expect("the value fits the column type")
    };
}

fn user_column(feeds: &[RawFeed], data_type: &DataType) -> ArrayRef {
    with_integer_type!(data_type, T => Arc::new(
        feeds.iter().map(|(user, _)| user.map(|u| native!(T, u))).collect::<PrimitiveArray<T>>()
    ))
}

fn items_column(feeds: &[RawFeed], layout: &Layout) -> ArrayRef {
    fn lists<O: arrow_array::OffsetSizeTrait>(feeds: &[RawFeed], item_type: &DataType) -> ArrayRef {
        with_integer_type!(item_type, T => Arc::new(GenericListArray::<O>::from_iter_primitive::<T, _, _>(
            feeds.iter().map(|(_, items)| {
                items.as_ref().map(|items| items.iter().map(|item| item.map(|i| native!(T, i))).collect::<Vec<_>>())
            })
        )))
    }
    if layout.large_list {
        lists::<i64>(feeds, &layout.item_type)
    } else {
        lists::<i32>(feeds, &layout.item_type)
    }
}

/// Writes `feeds` (nulls and all) as Parquet with columns `user_id`,
/// `items` and an ignored `score`.
pub(crate) fn write_raw_parquet(path: &Path, feeds: &[RawFeed], layout: &Layout) {
    let users = user_column(feeds, &layout.user_type);
    let items = items_column(feeds, layout);
    let score: ArrayRef = Arc::new(arrow_array::Float64Array::from(vec![0.5; feeds.len()]));
    let schema = Arc::new(Schema::new(vec![
        Field::new("score", DataType::Float64, false),
        Field::new("user_id", users.data_type().clone(), true),
        Field::new("items", items.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), vec![score, users, items]).unwrap();
    let properties = WriterProperties::builder()
        .set_compression(layout.compression)
        .set_max_row_group_row_count(Some(layout.row_group_rows))
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Writes valid `feeds` as Parquet.
pub(crate) fn write_parquet(path: &Path, feeds: &[(u64, Vec<u32>)], layout: &Layout) {
    write_raw_parquet(path, &raw(feeds), layout);
}

fn raw(feeds: &[(u64, Vec<u32>)]) -> Vec<RawFeed> {
    feeds
        .iter()
        .map(|(user, items)| {
            (
                Some(i128::from(*user)),
                Some(items.iter().map(|&i| Some(i128::from(i))).collect()),
            )
        })
        .collect()
}

/// Writes valid `feeds` as JSON Lines, with a blank line between two.
pub(crate) fn write_jsonl(path: &Path, feeds: &[(u64, Vec<u32>)]) {
    let text: String = feeds
        .iter()
        .map(|(user, items)| format!("{{\"user_id\": {user}, \"items\": {items:?}}}\n\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// What an import gave: the feeds, and the fallback list when one was given.
#[derive(Debug, PartialEq)]
pub(crate) struct Feeds {
    pub(crate) feeds: ImportedFeeds,
    pub(crate) fallback: Option<Vec<u32>>,
    /// The distinct items of the feeds, when no fallback list was given.
    pub(crate) distinct: Option<Vec<u32>>,
}

impl std::ops::Deref for Feeds {
    type Target = ImportedFeeds;
    fn deref(&self) -> &ImportedFeeds {
        &self.feeds
    }
}

/// Imports `inputs` with `fallback` twice, checking the progress reports on
/// the way: with the default sort memory, and with so little that every
/// feed of an unsorted input is a run of its own on disk (and runs are
/// merged more than once). Both must give exactly the same feeds, or the
/// same error.
pub(crate) fn run(
    inputs: &[PathBuf],
    fallback: Option<&Path>,
) -> Result<(Feeds, ImportSummary), ImportError> {
    let dir = scratch("sort");
    let mut options = ImportOptions::new(&dir);
    let roomy = run_with(inputs, fallback, &options);
    options.run_bytes = 1;
    let tight = run_with(inputs, fallback, &options);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "the sort left files behind: {left:?}");
    match (&roomy, &tight) {
        (Ok((a, summary)), Ok((b, tight_summary))) => {
            assert_eq!(a, b, "the sort on disk gives the same feeds");
            match summary.order {
                Order::Streamed => assert_eq!(tight_summary.order, Order::Streamed),
                Order::SortedInMemory => assert!(
                    matches!(tight_summary.order, Order::SortedOnDisk { runs, .. } if runs as u64 == summary.users),
                    "{:?}",
                    tight_summary.order
                ),
                Order::SortedOnDisk { .. } => panic!("a small input went to disk"),
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the sort on disk and in memory disagree: {roomy:?} / {tight:?}"),
    }
    roomy
}

fn run_with(
    inputs: &[PathBuf],
    fallback: Option<&Path>,
    options: &ImportOptions,
) -> Result<(Feeds, ImportSummary), ImportError> {
    let mut reports: Vec<Progress> = Vec::new();
    let mut feeds = ImportedFeeds::default();
    let result = import(
        inputs,
        fallback,
        options,
        None,
        &mut |p| reports.push(p),
        &mut feeds,
    );
    let key = |p: &Progress| match p.stage {
        Stage::Reading { file, sorting } => (u8::from(sorting), file, 0),
        Stage::Merging { .. } => (2, 0, 0),
    };
    assert!(
        reports.windows(2).all(|w| key(&w[0]) <= key(&w[1])
            && (key(&w[0]).0 != key(&w[1]).0 || w[0].rows <= w[1].rows)),
        "progress goes forward: {reports:?}"
    );
    let imported = match result {
        Ok(imported) => imported,
        Err(Failure::Input(error)) => return Err(error),
        Err(Failure::Sink(never)) => match never {},
    };
    let summary = imported.summary;
    let last = reports.last().map_or(0, |p| p.rows);
    match summary.order {
        Order::Streamed => assert_eq!(last, summary.rows),
        _ => assert_eq!(last, summary.users),
    }
    let (fallback, distinct) = match imported.fallback {
        Fallback::Given(list) => (Some(list), None),
        Fallback::Distinct(set) => (None, Some(set.iter().collect())),
    };
    Ok((
        Feeds {
            feeds,
            fallback,
            distinct,
        },
        summary,
    ))
}

/// The feeds as (user, items) pairs, after checking the CSR invariants.
pub(crate) fn feeds_of(feeds: &ImportedFeeds) -> Vec<(u64, Vec<u32>)> {
    assert_eq!(feeds.offsets.len(), feeds.user_ids.len() + 1);
    assert_eq!(feeds.offsets[0], 0);
    assert_eq!(*feeds.offsets.last().unwrap(), feeds.items.len() as u64);
    assert!(
        feeds.user_ids.windows(2).all(|w| w[0] < w[1]),
        "users strictly increase"
    );
    (0..feeds.user_ids.len())
        .map(|i| {
            let feed = feeds.feed(i);
            assert!(feed.iter().all(|&item| item != 0));
            let mut distinct = feed.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), feed.len(), "items are distinct in a feed");
            (feeds.user_ids[i], feed.to_vec())
        })
        .collect()
}

/// Imports `inputs` and checks the result is exactly `expected` (sorted by
/// user) with `dropped` repeats dropped; returns the summary.
pub(crate) fn check(inputs: &[PathBuf], expected: &[(u64, &[u32])], dropped: u64) -> ImportSummary {
    let (feeds, summary) = run(inputs, None).unwrap_or_else(|e| panic!("{e}"));
    let expected: Vec<(u64, Vec<u32>)> = expected
        .iter()
        .map(|(u, items)| (*u, items.to_vec()))
        .collect();
    assert_eq!(feeds_of(&feeds), expected);
    assert_eq!(feeds.fallback, None);
    assert_eq!(summary.files, inputs.len());
    assert_eq!(summary.users, expected.len() as u64);
    assert_eq!(summary.rows, expected.len() as u64);
    assert_eq!(summary.items, feeds.items.len() as u64);
    assert_eq!(summary.duplicates_dropped, dropped);
    let lengths = expected.iter().map(|(_, items)| items.len() as u64);
    assert_eq!(summary.shortest, lengths.clone().min().unwrap_or(0));
    assert_eq!(summary.longest, lengths.max().unwrap_or(0));
    summary
}

/// Imports `inputs` and checks it fails with exactly `message`.
pub(crate) fn check_error(inputs: &[PathBuf], fallback: Option<&Path>, message: &str) {
    match run(inputs, fallback) {
        Ok(_) => panic!("imported, but should fail with: {message}"),
        Err(err) => assert_eq!(err.to_string(), message),
    }
}
