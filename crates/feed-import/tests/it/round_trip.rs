//! Feeds written by the Rust Parquet writer and as JSON Lines come back
//! exactly: sorted by user, repeats dropped at their later places.

use std::path::PathBuf;

use arrow_schema::DataType;
use parquet::basic::Compression;
use proptest::prelude::*;

use crate::support::{Layout, check, feeds_of, run, scratch, write_jsonl, write_parquet, zstd};

/// The feeds as an import must return them, and how many repeats it drops.
fn expected(feeds: &[(u64, Vec<u32>)]) -> (Vec<(u64, Vec<u32>)>, u64) {
    let mut dropped = 0;
    let mut sorted: Vec<(u64, Vec<u32>)> = feeds
        .iter()
        .map(|(user, items)| {
            let mut kept = Vec::new();
            for &item in items {
                if kept.contains(&item) {
                    dropped += 1;
                } else {
                    kept.push(item);
                }
            }
            (*user, kept)
        })
        .collect();
    sorted.sort_by_key(|(user, _)| *user);
    (sorted, dropped)
}

fn sample() -> Vec<(u64, Vec<u32>)> {
    (0..40u64)
        .map(|k| {
            let user = (k * 2_654_435_761) % 1000;
            let items = (0..(k % 23) as u32)
                .map(|i| (i * 7 + k as u32) % 30 + 1)
                .collect();
            (user, items)
        })
        .collect()
}

#[test]
fn every_codec_row_group_size_and_integer_type() {
    let dir = scratch("codecs");
    let feeds = sample();
    let (want, dropped) = expected(&feeds);
    let want: Vec<(u64, &[u32])> = want.iter().map(|(u, i)| (*u, i.as_slice())).collect();
    let codecs = [Compression::SNAPPY, zstd(), Compression::UNCOMPRESSED];
    let user_types = [
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
    ];
    let item_types = [
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
    ];
    let mut case = 0;
    for compression in codecs {
        for row_group_rows in [1, 7, 1024] {
            for (k, item_type) in item_types.iter().enumerate() {
                let layout = Layout {
                    compression,
                    row_group_rows,
                    user_type: user_types[(case + k) % user_types.len()].clone(),
                    item_type: item_type.clone(),
                    large_list: case % 2 == 0,
                };
                let path = dir.join(format!("case{case}.parquet"));
                write_parquet(&path, &feeds, &layout);
                let summary = check(&[path], &want, dropped);
                assert_eq!(summary.files, 1, "{layout:?}");
                case += 1;
            }
        }
    }
}

#[test]
fn eight_bit_users_and_items_at_their_limits() {
    let dir = scratch("narrow");
    let path = dir.join("narrow.parquet");
    let layout = Layout {
        user_type: DataType::Int8,
        item_type: DataType::UInt8,
        ..Layout::default()
    };
    write_parquet(&path, &[(127, vec![255, 1]), (0, vec![])], &layout);
    check(&[path], &[(0, &[]), (127, &[255, 1])], 0);
}

#[test]
fn several_files_of_both_formats_merge_into_one_sorted_table() {
    let dir = scratch("several");
    let feeds = sample();
    let mut inputs = Vec::new();
    for (k, part) in feeds.chunks(9).enumerate() {
        let path = if k % 2 == 0 {
            let path = dir.join(format!("part{k}.parquet"));
            write_parquet(
                &path,
                part,
                &Layout {
                    row_group_rows: 4,
                    ..Layout::default()
                },
            );
            path
        } else {
            let path = dir.join(format!("part{k}.jsonl"));
            write_jsonl(&path, part);
            path
        };
        inputs.push(path);
    }
    let (want, dropped) = expected(&feeds);
    let want: Vec<(u64, &[u32])> = want.iter().map(|(u, i)| (*u, i.as_slice())).collect();
    let summary = check(&inputs, &want, dropped);
    assert_eq!(summary.files, 5);
}

#[test]
fn input_already_sorted_across_files_stays_as_read() {
    let dir = scratch("sorted");
    let a = dir.join("a.parquet");
    let b = dir.join("b.jsonl");
    write_parquet(&a, &[(1, vec![3, 2]), (5, vec![])], &Layout::default());
    // 2^53 + 1 and u64::MAX are read exactly, not through an f64.
    write_jsonl(
        &b,
        &[
            (6, vec![9, 9, 8]),
            ((1 << 53) + 1, vec![1]),
            (u64::MAX, vec![u32::MAX]),
        ],
    );
    check(
        &[a, b],
        &[
            (1, &[3, 2]),
            (5, &[]),
            (6, &[9, 8]),
            ((1 << 53) + 1, &[1]),
            (u64::MAX, &[u32::MAX]),
        ],
        1,
    );
}

#[test]
fn jsonl_with_a_byte_order_mark_crlf_and_other_fields() {
    let path = scratch("bom").join("feeds.jsonl");
    let text = "\u{feff}{\"user_id\": 2, \"items\": [3], \"model\": \"v2\"}\r\n\r\n  {\"items\": [], \"user_id\": 1}\r\n";
    std::fs::write(&path, text).unwrap();
    check(&[path], &[(1, &[]), (2, &[3])], 0);
}

#[test]
fn empty_files_import_as_no_users() {
    let dir = scratch("empty");
    let a = dir.join("a.parquet");
    let b = dir.join("b.jsonl");
    write_parquet(&a, &[], &Layout::default());
    std::fs::write(&b, "\n\n").unwrap();
    let summary = check(&[a, b], &[], 0);
    assert_eq!(summary.mean, 0.0);
}

#[test]
fn fallback_lists_keep_file_order_and_drop_repeats() {
    let dir = scratch("fallback");
    let input = dir.join("feeds.jsonl");
    write_jsonl(&input, &[(1, vec![2])]);
    let text = dir.join("fallback.csv");
    std::fs::write(&text, "7\n\n3\n7\n 4294967295 \n1\n").unwrap();
    let (feeds, _) = run(std::slice::from_ref(&input), Some(&text)).unwrap();
    assert_eq!(feeds.fallback, Some(vec![7, 3, u32::MAX, 1]));
}

/// A user id, often one of the extremes or a small one.
fn user() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), 0..50u64, any::<u64>()]
}

/// An item id, often an extreme or from a small range (so feeds repeat).
fn item() -> impl Strategy<Value = u32> {
    prop_oneof![Just(1), Just(u32::MAX), 1..12u32, 1..=u32::MAX]
}

/// Distinct users in random order, each with a feed of 0..50 items.
fn feeds() -> impl Strategy<Value = Vec<(u64, Vec<u32>)>> {
    proptest::collection::btree_map(user(), proptest::collection::vec(item(), 0..50), 0..40)
        .prop_map(|feeds| feeds.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

/// How to write one file: Parquet with a layout, or JSON Lines.
fn format() -> impl Strategy<Value = Option<Layout>> {
    let compression = prop_oneof![
        Just(Compression::SNAPPY),
        Just(zstd()),
        Just(Compression::UNCOMPRESSED)
    ];
    let item_type = prop_oneof![
        Just(DataType::Int64),
        Just(DataType::UInt32),
        Just(DataType::UInt64)
    ];
    let layout = (compression, 1..12usize, item_type, any::<bool>()).prop_map(
        |(compression, row_group_rows, item_type, large_list)| Layout {
            compression,
            row_group_rows,
            user_type: DataType::UInt64,
            item_type,
            large_list,
        },
    );
    prop_oneof![3 => layout.prop_map(Some), 1 => Just(None)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arbitrary_feeds_survive_import_exactly(
        feeds in feeds(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        formats in proptest::collection::vec(format(), 3),
    ) {
        let dir = scratch("proptest");
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(feeds.len() + 1)).collect();
        cuts.push(0);
        cuts.push(feeds.len());
        cuts.sort_unstable();
        let mut inputs: Vec<PathBuf> = Vec::new();
        for (k, pair) in cuts.windows(2).enumerate() {
            let part = &feeds[pair[0]..pair[1]];
            let path = match &formats[k % formats.len()] {
                Some(layout) => {
                    let path = dir.join(format!("{k}.parquet"));
                    write_parquet(&path, part, layout);
                    path
                }
                None => {
                    let path = dir.join(format!("{k}.jsonl"));
                    write_jsonl(&path, part);
                    path
                }
            };
            inputs.push(path);
        }
        let (got, summary) = run(&inputs, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (want, dropped) = expected(&feeds);
        prop_assert_eq!(feeds_of(&got), want);
        prop_assert_eq!(summary.duplicates_dropped, dropped);
        prop_assert_eq!(summary.users, feeds.len() as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// An interruption during the sort (the flag a signal handler sets; set
/// here by the sort's first progress report, with runs already on disk, so
/// nothing is left to timing) stops the import with `Interrupted` within
/// the next rows read, removes the sort's runs and folder, and gives the
/// sink nothing.
#[test]
fn an_interrupted_sort_stops_and_leaves_nothing_behind() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use feed_import::{Failure, ImportError, ImportOptions, ImportedFeeds, Stage, import};

    let dir = scratch("interrupted");
    let input = dir.join("feeds.jsonl");
    // Users in falling order: the sort is needed from the second row on,
    // and there are rows enough for a progress report before the end.
    let feeds: Vec<(u64, Vec<u32>)> = (0..20_000u64).map(|k| (50_000 - k, vec![1, 2])).collect();
    write_jsonl(&input, &feeds);
    let runs = scratch("interrupted-runs");
    let mut options = ImportOptions::new(&runs);
    // A few hundred feeds a run: runs are on disk long before the report.
    options.run_bytes = 4096;
    let interrupted = AtomicBool::new(false);
    let mut runs_on_disk_when_interrupted = None;
    let mut sink = ImportedFeeds::default();
    let outcome = import(
        &[input],
        None,
        &options,
        Some(&interrupted),
        &mut |p| {
            if matches!(p.stage, Stage::Reading { sorting: true, .. })
                && p.rows > 0
                && runs_on_disk_when_interrupted.is_none()
            {
                let files = walk(&runs);
                runs_on_disk_when_interrupted = Some(files);
                interrupted.store(true, Ordering::Relaxed);
            }
        },
        &mut sink,
    );
    let files = runs_on_disk_when_interrupted.expect("the sort reported progress");
    assert!(files > 0, "no run was on disk yet");
    match outcome {
        Err(Failure::Input(ImportError::Interrupted)) => {}
        other => panic!("expected an interruption, got {:?}", other.map(|_| ())),
    }
    assert!(sink.user_ids.is_empty(), "the sink got feeds");
    assert_eq!(walk(&runs), 0, "the sort left files behind");
}

/// Files (not folders) under `dir`, at any depth.
fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() { walk(&path) } else { 1 }
        })
        .sum()
}
