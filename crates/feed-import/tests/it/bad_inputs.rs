//! Every kind of bad input fails with one line naming the file, the row (or
//! line) and the column; these tests pin each message exactly.

use std::path::{Path, PathBuf};

use crate::support::{
    Layout, RawFeed, check_error, fixture, scratch, write_jsonl, write_parquet, write_raw_parquet,
};

/// The pyarrow-written bad fixture `name` fails with `{path}: {message}`.
fn check_fixture(name: &str, message: &str) {
    let path = fixture(name);
    check_error(
        std::slice::from_ref(&path),
        None,
        &format!("{}: {message}", path.display()),
    );
}

#[test]
fn null_user_id_in_a_later_row_group() {
    check_fixture("bad_null_user.parquet", "row 4, column `user_id`: null");
}

#[test]
fn negative_user_id() {
    check_fixture(
        "bad_negative_user.parquet",
        "row 2, column `user_id`: -5 is outside 0..=18446744073709551615",
    );
}

#[test]
fn negative_item_in_a_later_row_group() {
    check_fixture(
        "bad_negative_item.parquet",
        "row 5, column `items`: the value at index 1 is -1, outside 1..=4294967295",
    );
}

#[test]
fn item_zero() {
    check_fixture(
        "bad_item_zero.parquet",
        "row 2, column `items`: the value at index 0 is 0, outside 1..=4294967295",
    );
}

#[test]
fn item_two_to_the_32() {
    check_fixture(
        "bad_item_too_big.parquet",
        "row 3, column `items`: the value at index 2 is 4294967296, outside 1..=4294967295",
    );
}

#[test]
fn null_item_list() {
    check_fixture("bad_null_list.parquet", "row 2, column `items`: null");
}

#[test]
fn null_item() {
    check_fixture(
        "bad_null_element.parquet",
        "row 1, column `items`: the value at index 1 is null",
    );
}

#[test]
fn items_not_a_list() {
    check_fixture(
        "bad_items_not_list.parquet",
        "column `items` has type Int64; expected a list of an integer type",
    );
}

#[test]
fn items_a_list_of_strings() {
    check_fixture(
        "bad_items_strings.parquet",
        "column `items` has type List(Utf8, field: 'element'); expected a list of an integer type",
    );
}

#[test]
fn no_items_column() {
    check_fixture("bad_no_items.parquet", "no column `items`");
}

#[test]
fn user_in_two_files() {
    let (a, b) = (fixture("dup_user_a.parquet"), fixture("dup_user_b.parquet"));
    check_error(
        &[a.clone(), b.clone()],
        None,
        &format!(
            "{}: row 2, column `user_id`: user 2 appears again (first at {}: row 2)",
            b.display(),
            a.display()
        ),
    );
}

#[test]
fn user_id_of_a_float_type() {
    let path = scratch("float").join("float.parquet");
    let items = arrow_array::ListArray::from_iter_primitive::<arrow_array::types::Int64Type, _, _>(
        [Some(vec![Some(1)])],
    );
    let batch = arrow_array::RecordBatch::try_from_iter([
        (
            "user_id",
            std::sync::Arc::new(arrow_array::Float64Array::from(vec![1.0])) as _,
        ),
        ("items", std::sync::Arc::new(items) as _),
    ])
    .unwrap();
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    check_error(
        std::slice::from_ref(&path),
        None,
        &format!(
            "{}: column `user_id` has type Float64; expected an integer type",
            path.display()
        ),
    );
}

#[test]
fn rust_written_bad_values_are_placed_across_row_groups() {
    let dir = scratch("raw");
    let good: RawFeed = (Some(1), Some(vec![Some(1)]));
    let cases: [(RawFeed, &str); 5] = [
        ((None, Some(vec![Some(1)])), "column `user_id`: null"),
        (
            (Some(-1), Some(vec![Some(1)])),
            "column `user_id`: -1 is outside 0..=18446744073709551615",
        ),
        ((Some(9), None), "column `items`: null"),
        (
            (Some(9), Some(vec![Some(4), None])),
            "column `items`: the value at index 1 is null",
        ),
        (
            (Some(9), Some(vec![Some(4), Some(4), Some(-7)])),
            "column `items`: the value at index 2 is -7, outside 1..=4294967295",
        ),
    ];
    for (k, (bad, message)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("case{k}.parquet"));
        // Users 100.. in front, so the bad row is the 6th, in the third row group.
        let mut feeds: Vec<RawFeed> = (0..5).map(|u| (Some(100 + u), good.1.clone())).collect();
        feeds.push(bad);
        let layout = Layout {
            user_type: arrow_schema::DataType::Int64,
            row_group_rows: 2,
            ..Layout::default()
        };
        write_raw_parquet(&path, &feeds, &layout);
        check_error(
            std::slice::from_ref(&path),
            None,
            &format!("{}: row 6, {message}", path.display()),
        );
    }
}

#[test]
fn a_bad_value_past_the_first_record_batch_stops_the_read_at_its_row() {
    // Record batches are 8192 rows: row 9000 is in the second, and the
    // decoder thread is ahead of the checks when they stop.
    let path = scratch("large").join("large.parquet");
    let mut feeds: Vec<RawFeed> = (0..30_000)
        .map(|u| (Some(u), Some(vec![Some(u + 1)])))
        .collect();
    feeds[8999].1 = Some(vec![Some(1), Some(0)]);
    let layout = Layout {
        row_group_rows: 5000,
        ..Layout::default()
    };
    write_raw_parquet(&path, &feeds, &layout);
    check_error(
        std::slice::from_ref(&path),
        None,
        &format!(
            "{}: row 9000, column `items`: the value at index 1 is 0, outside 1..=4294967295",
            path.display()
        ),
    );
}

/// A JSON Lines file whose third line is `line` (a good line and a blank
/// line before it) fails with `{path}: {message}`, `PATH` in `message` also
/// standing for the file.
fn check_jsonl(line: &str, message: &str) {
    let path = scratch("jsonl").join("feeds.jsonl");
    let text = format!(
        "{{\"user_id\": 1, \"items\": [1]}}\n\n{line}\n{{\"user_id\": 2, \"items\": []}}\n"
    );
    std::fs::write(&path, text).unwrap();
    let message = message.replace("PATH", &path.display().to_string());
    check_error(
        std::slice::from_ref(&path),
        None,
        &format!("{}: {message}", path.display()),
    );
}

#[test]
fn jsonl_malformed_lines() {
    check_jsonl(
        r#"{"user_id": 3, "items": [1, 2}"#,
        "line 3, character 30: malformed JSON: expected `,` or `]`",
    );
    check_jsonl(
        "  [3, [1]]",
        "line 3, character 3: malformed JSON: expected an object with `user_id` and `items`",
    );
    check_jsonl(
        r#"{"user_id": 3, "user_id": 4, "items": []}"#,
        "line 3, character 24: malformed JSON: duplicate field `user_id`",
    );
}

#[test]
fn jsonl_bad_user_ids() {
    check_jsonl(r#"{"items": [1]}"#, "line 3, column `user_id`: missing");
    check_jsonl(
        r#"{"user_id": null, "items": [1]}"#,
        "line 3, column `user_id`: null",
    );
    check_jsonl(
        r#"{"user_id": -1, "items": [1]}"#,
        "line 3, column `user_id`: -1 is outside 0..=18446744073709551615",
    );
    check_jsonl(
        r#"{"user_id": 18446744073709551616, "items": [1]}"#,
        "line 3, column `user_id`: 18446744073709551616 is outside 0..=18446744073709551615",
    );
    check_jsonl(
        r#"{"user_id": "7", "items": [1]}"#,
        r#"line 3, column `user_id`: "7" is not an integer"#,
    );
    check_jsonl(
        r#"{"user_id": 1.5, "items": [1]}"#,
        "line 3, column `user_id`: 1.5 is not an integer",
    );
}

#[test]
fn jsonl_bad_item_lists() {
    check_jsonl(r#"{"user_id": 3}"#, "line 3, column `items`: missing");
    check_jsonl(
        r#"{"user_id": 3, "items": null}"#,
        "line 3, column `items`: null",
    );
    check_jsonl(
        r#"{"user_id": 3, "items": 5}"#,
        "line 3, column `items`: 5 is not a list",
    );
    check_jsonl(
        r#"{"user_id": 3, "items": [1, null]}"#,
        "line 3, column `items`: the value at index 1 is null",
    );
    check_jsonl(
        r#"{"user_id": 3, "items": [1, -2]}"#,
        "line 3, column `items`: the value at index 1 is -2, outside 1..=4294967295",
    );
    check_jsonl(
        r#"{"user_id": 3, "items": [0]}"#,
        "line 3, column `items`: the value at index 0 is 0, outside 1..=4294967295",
    );
    check_jsonl(
        r#"{"user_id": 3, "items": [1, 4294967296]}"#,
        "line 3, column `items`: the value at index 1 is 4294967296, outside 1..=4294967295",
    );
    check_jsonl(
        r#"{"user_id": 3, "items": ["x"]}"#,
        r#"line 3, column `items`: the value at index 0 ("x") is not an integer"#,
    );
    check_jsonl(
        r#"{"user_id": 3, "items": [2.5]}"#,
        "line 3, column `items`: the value at index 0 (2.5) is not an integer",
    );
}

/// Pandas writes an int64 column that holds a NaN as floats: a JSON float
/// is not an id even when whole, and is never rounded to another one. The
/// message shows the float as serde_json read it (`1e3` as `1000.0`).
#[test]
fn jsonl_floats_are_not_ids() {
    for written in ["1.0", "1e3", "9007199254740993.0", "-0.0"] {
        let read = serde_json::from_str::<serde_json::Value>(written)
            .unwrap()
            .to_string();
        assert!(read.contains('.'), "{written} reads as a float: {read}");
        check_jsonl(
            &format!(r#"{{"user_id": {written}, "items": [1]}}"#),
            &format!("line 3, column `user_id`: {read} is not an integer"),
        );
        check_jsonl(
            &format!(r#"{{"user_id": 3, "items": [1, {written}]}}"#),
            &format!("line 3, column `items`: the value at index 1 ({read}) is not an integer"),
        );
    }
    // A NaN: pandas writes `null`, other writers the invalid `NaN`.
    check_jsonl(
        r#"{"user_id": NaN, "items": [1]}"#,
        "line 3, character 13: malformed JSON: expected value",
    );
    check_jsonl(
        r#"{"user_id": 3, "items": [1, NaN]}"#,
        "line 3, character 29: malformed JSON: expected value",
    );
    // pandas writes `null` (as a user id: `jsonl_bad_user_ids`).
    check_jsonl(
        r#"{"user_id": 3, "items": [1, null]}"#,
        "line 3, column `items`: the value at index 1 is null",
    );
}

#[test]
fn jsonl_repeated_user_in_one_file() {
    check_jsonl(
        r#"{"user_id": 1, "items": [2]}"#,
        "line 3, column `user_id`: user 1 appears again (first at PATH: line 1)",
    );
}

#[test]
fn jsonl_invalid_utf8() {
    let path = scratch("utf8").join("feeds.jsonl");
    std::fs::write(
        &path,
        b"{\"user_id\": 1, \"items\": [1]}\n{\"user_id\": \xff}\n",
    )
    .unwrap();
    check_error(
        std::slice::from_ref(&path),
        None,
        &format!(
            "{}: cannot read: line 2: stream did not contain valid UTF-8",
            path.display()
        ),
    );
}

#[test]
fn user_in_a_parquet_file_and_a_jsonl_file() {
    let dir = scratch("mixed-dup");
    let (a, b) = (dir.join("a.parquet"), dir.join("b.jsonl"));
    write_parquet(&a, &[(8, vec![1]), (9, vec![2])], &Layout::default());
    write_jsonl(&b, &[(1, vec![]), (9, vec![3])]);
    // write_jsonl puts a blank line after each feed: user 9 is on line 3.
    check_error(
        &[a.clone(), b.clone()],
        None,
        &format!(
            "{}: line 3, column `user_id`: user 9 appears again (first at {}: row 2)",
            b.display(),
            a.display()
        ),
    );
}

/// Input in user order up to the repeat: the first repeat met.
#[test]
fn in_user_order_the_first_repeat_met_is_reported() {
    let dir = scratch("earliest");
    let a = dir.join("a.jsonl");
    // User 5 repeats on line 5, user 2 (smaller) only on line 7.
    write_jsonl(&a, &[(2, vec![]), (5, vec![]), (5, vec![]), (2, vec![])]);
    check_error(
        std::slice::from_ref(&a),
        None,
        &format!(
            "{0}: line 5, column `user_id`: user 5 appears again (first at {0}: line 3)",
            a.display()
        ),
    );
}

/// Input not in user order is sorted first (in memory, and through a run
/// for every feed: `support::run` tries both): the smallest repeated user,
/// named at its first two places in input order.
#[test]
fn out_of_user_order_the_smallest_repeated_user_is_reported() {
    let dir = scratch("smallest");
    let a = dir.join("a.jsonl");
    // User 9 repeats first (line 5), user 4 later (lines 3, 7 and 9).
    write_jsonl(
        &a,
        &[
            (9, vec![]),
            (4, vec![]),
            (9, vec![]),
            (4, vec![]),
            (4, vec![]),
        ],
    );
    check_error(
        std::slice::from_ref(&a),
        None,
        &format!(
            "{0}: line 7, column `user_id`: user 4 appears again (first at {0}: line 3)",
            a.display()
        ),
    );
}

#[test]
fn bad_fallback_lists() {
    let input = fixture("zstd_v2_pages.parquet");
    let bad = fixture("bad_fallback.parquet");
    check_error(
        std::slice::from_ref(&input),
        Some(&bad),
        &format!(
            "{}: row 2, column `item_id`: 0 is outside 1..=4294967295",
            bad.display()
        ),
    );
    let dir = scratch("fallback");
    for (text, message) in [
        (
            "5\nabc\n",
            r#"line 2, column `item_id`: "abc" is not an integer"#,
        ),
        (
            "5\n\n-3\n",
            "line 3, column `item_id`: -3 is outside 1..=4294967295",
        ),
        (
            "4294967296\n",
            "line 1, column `item_id`: 4294967296 is outside 1..=4294967295",
        ),
        (
            "0\n",
            "line 1, column `item_id`: 0 is outside 1..=4294967295",
        ),
        (
            "5\n1.0\n",
            r#"line 2, column `item_id`: "1.0" is not an integer"#,
        ),
        (
            "1e3\n",
            r#"line 1, column `item_id`: "1e3" is not an integer"#,
        ),
    ] {
        let path = dir.join("fallback.txt");
        std::fs::write(&path, text).unwrap();
        check_error(
            std::slice::from_ref(&input),
            Some(&path),
            &format!("{}: {message}", path.display()),
        );
    }
    let no_column = fixture("bad_no_items.parquet");
    check_error(
        std::slice::from_ref(&input),
        Some(&no_column),
        &format!("{}: no column `item_id`", no_column.display()),
    );
}

#[test]
fn unknown_extensions_fail_before_anything_is_read() {
    let good = fixture("zstd_v2_pages.parquet");
    for name in ["feeds.csv", "feeds", "feeds.parquet.gz"] {
        let path = PathBuf::from(name);
        check_error(
            &[good.clone(), path],
            None,
            &format!("{name}: unknown file type; an input must end in .parquet or .jsonl"),
        );
    }
}

/// An input is read more than once, so it must be a regular file: a FIFO
/// (which would give other rows at each pass; refused without opening it,
/// which would wait for a writer) or a folder is refused before anything
/// is read.
#[test]
fn an_input_that_is_not_a_regular_file_is_refused() {
    let dir = scratch("not-a-file");
    let fifo = dir.join("feeds.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let folder = dir.join("folder.parquet");
    std::fs::create_dir(&folder).unwrap();
    let good = fixture("zstd_v2_pages.parquet");
    for path in [fifo, folder] {
        check_error(
            &[good.clone(), path.clone()],
            None,
            &format!(
                "{}: not a regular file; an input is read more than once, so it must be a file",
                path.display()
            ),
        );
    }
}

#[test]
fn no_inputs_missing_files_and_files_that_are_not_parquet() {
    check_error(&[], None, "no input files given");
    let missing = Path::new("no/such/feeds.parquet").to_path_buf();
    check_error(
        std::slice::from_ref(&missing),
        None,
        "no/such/feeds.parquet: cannot read: No such file or directory (os error 2)",
    );
    let garbage = scratch("garbage").join("feeds.parquet");
    std::fs::write(&garbage, "user_id,items\n1,2\n").unwrap();
    let err = crate::support::run(std::slice::from_ref(&garbage), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{}: not a readable Parquet file: ",
            garbage.display()
        )),
        "{err}"
    );
}
