//! The one failure domain of an import: [`ImportError`], and the [`Problem`]
//! with one value that it names.

use std::fmt;
use std::path::PathBuf;

use arrow_schema::{ArrowError, DataType};
use parquet::errors::ParquetError;

/// The largest item id; item ids are `1..=MAX_ITEM`, and 0 is invalid.
pub(crate) const MAX_ITEM: u64 = u32::MAX as u64;

/// Why an import failed. Its `Display` is one line that names the file and,
/// where one value is at fault, the row (Parquet: 1-based, counted across
/// the whole file, not the row group) or line (JSON Lines and text files:
/// 1-based, blank lines counted) and the column.
///
/// The cause of a read or decode failure is part of that line, so it is not
/// also returned by [`std::error::Error::source`]: a reporter that prints the
/// chain would print it twice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// `import` was given no input files.
    #[error("no input files given")]
    NoInputs,
    /// The input's extension is neither `.parquet` nor `.jsonl`.
    #[error("{}: unknown file type; an input must end in .parquet or .jsonl", path.display())]
    UnknownFormat {
        /// The input.
        path: PathBuf,
    },
    /// The file could not be opened or read.
    #[error("{}: cannot read: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        cause: std::io::Error,
    },
    /// The file is not a Parquet file, or its footer or schema is unreadable.
    #[error("{}: not a readable Parquet file: {cause}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the Parquet reader said.
        cause: ParquetError,
    },
    /// A Parquet page could not be decoded.
    #[error("{}: cannot decode the rows after row {row}: {cause}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The rows of the file read without fault before this one.
        row: u64,
        /// What the Parquet reader said.
        cause: ArrowError,
    },
    /// A Parquet file lacks a column this import needs.
    #[error("{}: no column `{column}`", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column's name.
        column: &'static str,
    },
    /// A Parquet column has a type this import cannot read.
    #[error("{}: column `{column}` has type {found}; expected {expected}", path.display())]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column's name.
        column: &'static str,
        /// The column's type, as Arrow reads it.
        found: DataType,
        /// What the column must hold.
        expected: &'static str,
    },
    /// One value is missing, null, out of range or of the wrong kind.
    #[error("{}: {position}, column `{column}`: {problem}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The row or line.
        position: Position,
        /// The column's name (`item_id` for a text fallback file's one column).
        column: &'static str,
        /// What is wrong with the value.
        problem: Problem,
    },
    /// A line of a JSON Lines file is not a JSON object.
    #[error("{}: line {line}, character {character}: malformed JSON: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The line, 1-based.
        line: u64,
        /// Where in the line the parser stopped, 1-based.
        character: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// More inputs than one import reads.
    #[error("{count} input files; at most 16777216 in one import")]
    TooManyInputs {
        /// The inputs given.
        count: usize,
    },
    /// The sorted runs of an unsorted input could not be written or read.
    #[error("{}: cannot write or read the import's sorted runs: {cause}", folder.display())]
    Temporary {
        /// The temporary folder (or the folder it was to be made in).
        folder: PathBuf,
        /// What the operating system said.
        cause: std::io::Error,
    },
    /// An input that is not a regular file (a FIFO, a device, a folder):
    /// an import reads its inputs more than once (to measure them, then to
    /// read them, and again to sort them), and such an input could give
    /// other rows each time.
    #[error("{}: not a regular file; an input is read more than once, so it must be a file", path.display())]
    NotAFile {
        /// The input.
        path: PathBuf,
    },
    /// The import was interrupted (a signal); nothing was written.
    #[error("interrupted")]
    Interrupted,
    /// A user id appears a second time, in the same input or another.
    #[error(
        "{}: {position}, column `user_id`: user {user} appears again (first at {}: {first_position})",
        path.display(),
        first_path.display()
    )]
    DuplicateUser {
        /// The user id.
        user: u64,
        /// The file of the second appearance (in the order the inputs were given).
        path: PathBuf,
        /// The row or line of the second appearance.
        position: Position,
        /// The file of the first appearance.
        first_path: PathBuf,
        /// The row or line of the first appearance.
        first_position: Position,
    },
}

/// Where a value sits in its file: a Parquet row or a text line, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A Parquet row, counted across the whole file.
    Row(u64),
    /// A line of a text file, blank lines counted.
    Line(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Row(row) => write!(f, "row {row}"),
            Position::Line(line) => write!(f, "line {line}"),
        }
    }
}

/// What is wrong with one value. `Display` reads after "column `items`: ".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The field is absent (JSON Lines).
    Missing,
    /// The value is null.
    Null,
    /// The value is not an integer (JSON Lines and text files); `found` is
    /// the value as written, shortened.
    NotInteger {
        /// The value as written.
        found: String,
    },
    /// The integer is outside `min..=max`.
    OutOfRange {
        /// The value.
        value: i128,
        /// The smallest valid value.
        min: u64,
        /// The largest valid value.
        max: u64,
    },
    /// The value is not a list (JSON Lines); `found` is the value as written.
    NotList {
        /// The value as written, shortened.
        found: String,
    },
    /// An element of the item list is null.
    NullElement {
        /// The element's 0-based index in the list.
        index: usize,
    },
    /// An element of the item list is not an integer.
    ElementNotInteger {
        /// The element's 0-based index in the list.
        index: usize,
        /// The element as written, shortened.
        found: String,
    },
    /// An element of the item list is outside `1..=4294967295`.
    ElementOutOfRange {
        /// The element's 0-based index in the list.
        index: usize,
        /// The element.
        value: i128,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("missing"),
            Problem::Null => f.write_str("null"),
            Problem::NotInteger { found } => write!(f, "{found} is not an integer"),
            Problem::OutOfRange { value, min, max } => {
                write!(f, "{value} is outside {min}..={max}")
            }
            Problem::NotList { found } => write!(f, "{found} is not a list"),
            Problem::NullElement { index } => write!(f, "the value at index {index} is null"),
            Problem::ElementNotInteger { index, found } => {
                write!(f, "the value at index {index} ({found}) is not an integer")
            }
            Problem::ElementOutOfRange { index, value } => write!(
                f,
                "the value at index {index} is {value}, outside 1..={MAX_ITEM}"
            ),
        }
    }
}

/// A value as written, cut to a length fit for one line of an error.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
