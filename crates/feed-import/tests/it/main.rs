//! feed-import's integration tests, one binary: files written by the Rust
//! Parquet writer and by hand (`round_trip`), files written by pyarrow and
//! pandas (`pyarrow_fixtures`, from `fixtures/make_fixtures.py`), and every
//! kind of bad input with the exact message it must produce (`bad_inputs`).

mod bad_inputs;
mod pyarrow_fixtures;
mod round_trip;
mod support;
