//! Text inputs: JSON Lines feeds (`{"user_id": 17, "items": [5, 9, 2]}` a
//! line) and the fallback list as plain text (one item id a line). Blank
//! lines are skipped but counted, so an error's line is the editor's.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Deserializer};
use serde_json::{Number, Value};

use crate::collect::Collector;
use crate::error::{ImportError, MAX_ITEM, Position, Problem, shorten};
use crate::{Stop, refused};

/// Lines between two progress reports.
const REPORT_EVERY: u64 = 8192;

/// One line of a JSON Lines input. A field that is absent is `None`; one
/// that is `null` is `Some(Value::Null)`. Other fields are skipped.
#[derive(Deserialize)]
#[serde(expecting = "an object with `user_id` and `items`")]
struct Record {
    #[serde(default, deserialize_with = "present")]
    user_id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    items: Option<Value>,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// At most how many users (non-blank lines) the JSON Lines file at `path`
/// holds, and at most how many items (commas and lines: each item but the
/// last of a list is followed by a comma), in one pass over its bytes that
/// parses nothing. A line of only ASCII whitespace is blank; one of other
/// whitespace is counted (an upper bound is all the sink needs).
pub(crate) fn measure(path: &Path) -> Result<(u64, u64), ImportError> {
    let io = |cause| ImportError::Io {
        path: path.to_owned(),
        cause,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut buffer = vec![0u8; 1 << 20];
    let (mut lines, mut commas, mut content) = (0u64, 0u64, false);
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        for &byte in &buffer[..read] {
            match byte {
                b'\n' => {
                    lines += u64::from(content);
                    content = false;
                }
                b',' => {
                    commas += 1;
                    content = true;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => content = true,
            }
        }
    }
    lines += u64::from(content);
    Ok((lines, commas + lines))
}

/// Reads the feeds of one JSON Lines file; `report(rows)` every few
/// thousand lines and at the end, with the rows read so far in all files.
pub(crate) fn read_feeds(
    path: &Path,
    collector: &mut Collector<'_>,
    report: &mut dyn FnMut(u64),
) -> Result<(), Stop> {
    for_each_line(path, |line, text| -> Result<(), Stop> {
        // serde would also take a JSON array for a struct; a line is an object.
        let start = text.len() - text.trim_start().len();
        if !text[start..].starts_with('{') {
            return Err(ImportError::Json {
                path: path.to_owned(),
                line,
                character: text[..start].chars().count() + 1,
                message: "expected an object with `user_id` and `items`".to_owned(),
            }
            .into());
        }
        let record: Record = serde_json::from_str(text).map_err(|e| malformed(path, line, &e))?;
        let fault = |column, problem| ImportError::Value {
            path: path.to_owned(),
            position: Position::Line(line),
            column,
            problem,
        };
        let user = match record.user_id {
            None => Err(Problem::Missing),
            Some(Value::Number(number)) => integer(&number, 0, u64::MAX),
            Some(Value::Null) => Err(Problem::Null),
            Some(other) => Err(not_integer(&other)),
        }
        .map_err(|problem| fault("user_id", problem))?;
        let items = match record.items {
            None => Err(Problem::Missing),
            Some(Value::Array(items)) => Ok(items),
            Some(Value::Null) => Err(Problem::Null),
            Some(other) => Err(Problem::NotList {
                found: shorten(&other.to_string()),
            }),
        }
        .map_err(|problem| fault("items", problem))?;
        collector
            .push_feed(user, line, items.len(), |index| {
                element(&items[index], index)
            })
            .map_err(|refusal| refused(refusal, |problem| fault("items", problem)))?;
        if collector.rows().is_multiple_of(REPORT_EVERY) {
            report(collector.rows());
        }
        Ok(())
    })?;
    report(collector.rows());
    Ok(())
}

/// Reads a fallback list written as text, one item id a line, in file
/// order, repeats included.
pub(crate) fn read_item_ids(path: &Path) -> Result<Vec<u32>, ImportError> {
    let mut ids = Vec::new();
    for_each_line(path, |line, text| {
        let text = text.trim();
        let id = match text.parse::<i128>() {
            Ok(value) => match u32::try_from(value) {
                Ok(id) if id != 0 => Ok(id),
                _ => Err(Problem::OutOfRange {
                    value,
                    min: 1,
                    max: MAX_ITEM,
                }),
            },
            Err(_) => Err(Problem::NotInteger {
                found: format!("{:?}", shorten(text)),
            }),
        };
        ids.push(id.map_err(|problem| ImportError::Value {
            path: path.to_owned(),
            position: Position::Line(line),
            column: "item_id",
            problem,
        })?);
        Ok(())
    })?;
    Ok(ids)
}

/// Calls `each(line, text)` for every line of the file that is not blank,
/// with the 1-based line number.
fn for_each_line<E: From<ImportError>>(
    path: &Path,
    mut each: impl FnMut(u64, &str) -> Result<(), E>,
) -> Result<(), E> {
    let io = |cause| ImportError::Io {
        path: path.to_owned(),
        cause,
    };
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path).map_err(io)?);
    let mut text = String::new();
    let mut line = 0u64;
    loop {
        text.clear();
        line += 1;
        let read = reader
            .read_line(&mut text)
            .map_err(|cause| ImportError::Io {
                path: path.to_owned(),
                cause: std::io::Error::new(cause.kind(), format!("line {line}: {cause}")),
            })?;
        if read == 0 {
            return Ok(());
        }
        // A byte-order mark, as some Windows tools write, is not content.
        let content = match line {
            1 => text.strip_prefix('\u{feff}').unwrap_or(&text),
            _ => &text,
        };
        if !content.trim().is_empty() {
            each(line, content)?;
        }
    }
}

fn malformed(path: &Path, line: u64, error: &serde_json::Error) -> ImportError {
    let full = error.to_string();
    // serde_json ends its message with the place in the one-line text,
    // which would read as a line of the file; the character is kept apart.
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    ImportError::Json {
        path: path.to_owned(),
        line,
        character: error.column(),
        message,
    }
}

/// A JSON number as an integer in `min..=max`.
///
/// Only a JSON integer is one: `1.0`, `1e3` and `-0.0` are refused, not
/// rounded, since pandas writes an int64 column that holds a NaN as floats,
/// and `9007199254740993.0` would read as user `9007199254740992`.
fn integer<U: TryFrom<i128>>(number: &Number, min: u64, max: u64) -> Result<U, Problem> {
    /// serde_json reads an integer below `i64::MIN` or above `u64::MAX` as
    /// a float, rounded to no less than these in size; every other float
    /// was written with a fraction or an exponent (or is `-0`, which it also
    /// reads as a float).
    const BELOW_I64: f64 = -9_223_372_036_854_775_808.0;
    const ABOVE_U64: f64 = 18_446_744_073_709_551_616.0;
    let value = if let Some(value) = number.as_u64() {
        i128::from(value)
    } else if let Some(value) = number.as_i64() {
        i128::from(value)
    } else {
        // A float: one that may be a written integer (such as 2^64) is out
        // of range, every other one is not an integer.
        match number.as_f64() {
            Some(float)
                if float.fract() == 0.0
                    && (float <= BELOW_I64 || float >= ABOVE_U64)
                    && float.abs() < 1e38 =>
            {
                float as i128
            }
            _ => {
                return Err(Problem::NotInteger {
                    found: shorten(&number.to_string()),
                });
            }
        }
    };
    match U::try_from(value) {
        Ok(id) if (i128::from(min)..=i128::from(max)).contains(&value) => Ok(id),
        _ => Err(Problem::OutOfRange { value, min, max }),
    }
}

fn not_integer(value: &Value) -> Problem {
    Problem::NotInteger {
        found: shorten(&value.to_string()),
    }
}

/// The `index`-th element of a feed as an item id.
fn element(value: &Value, index: usize) -> Result<u32, Problem> {
    match value {
        Value::Number(number) => match integer::<u32>(number, 1, MAX_ITEM) {
            Ok(id) => Ok(id),
            Err(Problem::OutOfRange { value, .. }) => {
                Err(Problem::ElementOutOfRange { index, value })
            }
            Err(_) => Err(Problem::ElementNotInteger {
                index,
                found: shorten(&number.to_string()),
            }),
        },
        Value::Null => Err(Problem::NullElement { index }),
        other => Err(Problem::ElementNotInteger {
            index,
            found: shorten(&other.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(text: &str) -> (u64, u64) {
        let path = std::env::temp_dir().join(format!(
            "feed-import-measure-{}-{}.jsonl",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let measured = measure(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        measured
    }

    #[test]
    fn measure_counts_non_blank_lines_and_bounds_the_items() {
        assert_eq!(measured(""), (0, 0));
        assert_eq!(measured("\n \r\n\t\n"), (0, 0));
        let text =
            "{\"user_id\": 1, \"items\": [1, 2, 3]}\r\n\n  \n{\"user_id\": 2, \"items\": []}";
        // Two rows; items at most 4 commas + 2 lines (there are 3).
        assert_eq!(measured(text), (2, 6));
    }
}
