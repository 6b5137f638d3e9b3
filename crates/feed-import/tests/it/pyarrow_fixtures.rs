//! Files written by pandas and pyarrow as offline jobs write them
//! (`fixtures/make_fixtures.py` states each file's contents; they are
//! repeated here exactly).

use crate::support::{check, feeds_of, fixture, run};

const PANDAS: &[(u64, &[u32])] = &[
    (3, &[5]),
    (7, &[1, 4294967295]),
    (42, &[7, 3, 9]),
    (1000, &[]),
];
const ZSTD: &[(u64, &[u32])] = &[(10, &[2, 1]), (11, &[3]), (12, &[])];
const ROW_GROUPS: &[(u64, &[u32])] = &[
    (100, &[1]),
    (101, &[2, 3]),
    (102, &[3, 5]),
    (103, &[4, 7]),
    (104, &[5, 9]),
    (105, &[6, 11]),
    (106, &[7, 13]),
    (107, &[8, 15]),
];
const INT32_USERS: &[(u64, &[u32])] = &[(0, &[300]), (2147483647, &[1, 2])];
const UINT64_USERS: &[(u64, &[u32])] = &[
    (9223372036854775808, &[4294967294, 4294967295]),
    (18446744073709551614, &[2]),
    (18446744073709551615, &[4294967295, 1]),
];
const SPARK_LIKE: &[(u64, &[u32])] = &[(500, &[]), (501, &[10]), (502, &[8, 9])];
const LEGACY: &[(u64, &[u32])] = &[(600, &[1, 2, 3]), (601, &[4])];

#[test]
fn pandas_defaults_snappy_with_an_extra_column() {
    check(&[fixture("pandas_snappy.parquet")], PANDAS, 3);
}

#[test]
fn zstd_with_version_2_data_pages() {
    check(&[fixture("zstd_v2_pages.parquet")], ZSTD, 0);
}

#[test]
fn uncompressed_in_three_row_groups() {
    check(&[fixture("uncompressed_row_groups.parquet")], ROW_GROUPS, 1);
}

#[test]
fn int32_user_ids_and_int16_items() {
    check(&[fixture("int32_users.parquet")], INT32_USERS, 0);
}

#[test]
fn uint64_user_ids_near_two_to_the_64_and_large_lists_of_uint32() {
    check(&[fixture("uint64_users.parquet")], UINT64_USERS, 1);
}

#[test]
fn spark_like_without_an_arrow_schema() {
    check(&[fixture("spark_like.parquet")], SPARK_LIKE, 0);
}

#[test]
fn legacy_list_nesting() {
    check(&[fixture("legacy_list_nesting.parquet")], LEGACY, 0);
}

#[test]
fn all_of_them_in_one_import() {
    let names = [
        "uint64_users.parquet",
        "pandas_snappy.parquet",
        "zstd_v2_pages.parquet",
        "uncompressed_row_groups.parquet",
        "int32_users.parquet",
        "spark_like.parquet",
        "legacy_list_nesting.parquet",
    ];
    let inputs: Vec<_> = names.iter().map(|name| fixture(name)).collect();
    let mut want: Vec<(u64, &[u32])> = [
        PANDAS,
        ZSTD,
        ROW_GROUPS,
        INT32_USERS,
        UINT64_USERS,
        SPARK_LIKE,
        LEGACY,
    ]
    .concat();
    want.sort_by_key(|(user, _)| *user);
    let summary = check(&inputs, &want, 5);
    assert_eq!(summary.rows, 25);
}

#[test]
fn fallback_lists_from_parquet_and_text() {
    for name in ["fallback.parquet", "fallback.txt"] {
        let (feeds, _) = run(&[fixture("zstd_v2_pages.parquet")], Some(&fixture(name))).unwrap();
        assert_eq!(feeds_of(&feeds).len(), 3);
        assert_eq!(feeds.fallback, Some(vec![5, 3, 9, 4294967295]), "{name}");
    }
}
