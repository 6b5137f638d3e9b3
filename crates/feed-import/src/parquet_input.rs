//! Parquet inputs, read column-wise: only the needed columns are decoded,
//! into Arrow record batches, and each batch is checked and appended in one
//! pass over its value buffers.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, GenericListArray, OffsetSizeTrait, PrimitiveArray, RecordBatch, RecordBatchReader,
};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::collect::{Collector, Refused, item_id};
use crate::error::{ImportError, MAX_ITEM, Position, Problem};
use crate::{Stop, refused};

/// Rows per record batch: large enough that the per-batch work is noise,
/// small enough that a batch of 200-item feeds stays a few megabytes.
const BATCH_ROWS: usize = 8192;

/// Batches decoded ahead of the checks, at most.
const DECODE_AHEAD: usize = 2;

const INTEGER: &str = "an integer type";
const INTEGER_LIST: &str = "a list of an integer type";

/// Runs `$body` with `$t` bound to the Arrow type of the integer
/// `DataType` `$dt`; `$other` otherwise.
macro_rules! with_integer_type {
    ($dt:expr, $t:ident => $body:expr, _ => $other:expr) => {
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
            _ => $other,
        }
    };
}

/// The rows of the Parquet file at `path` and at most how many items its
/// `items` column holds (the values of its leaf column, from the footer:
/// nulls and empty lists count one each, so this is an upper bound).
pub(crate) fn measure(path: &Path) -> Result<(u64, u64), ImportError> {
    let file = File::open(path).map_err(|cause| ImportError::Io {
        path: path.to_owned(),
        cause,
    })?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|cause| ImportError::Parquet {
            path: path.to_owned(),
            cause,
        })?;
    let metadata = builder.metadata();
    let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
    let schema = metadata.file_metadata().schema_descr();
    let leaves: Vec<usize> = (0..schema.num_columns())
        .filter(|&at| schema.column(at).path().parts().first().map(String::as_str) == Some("items"))
        .collect();
    let items = metadata
        .row_groups()
        .iter()
        .flat_map(|group| leaves.iter().map(move |&at| group.column(at).num_values()))
        .map(|values| u64::try_from(values).unwrap_or(0))
        .sum();
    Ok((rows, items))
}

/// Reads the feeds of one Parquet file (columns `user_id` and `items`);
/// `report(rows)` after each batch with the rows read so far in all files.
pub(crate) fn read_feeds(
    path: &Path,
    collector: &mut Collector<'_>,
    report: &mut dyn FnMut(u64),
) -> Result<(), Stop> {
    let reader = open(path, &["user_id", "items"])?;
    let schema = reader.schema();
    let user_type = schema
        .field_with_name("user_id")
        .map_or(DataType::Null, |f| f.data_type().clone());
    if !user_type.is_integer() {
        return Err(column_type(path, "user_id", user_type, INTEGER).into());
    }
    let items_type = schema
        .field_with_name("items")
        .map_or(DataType::Null, |f| f.data_type().clone());
    let element_is_integer = match &items_type {
        DataType::List(element) | DataType::LargeList(element) => element.data_type().is_integer(),
        _ => false,
    };
    if !element_is_integer {
        return Err(column_type(path, "items", items_type, INTEGER_LIST).into());
    }

    // Decoding (decompression, levels, Arrow buffers) is most of the work:
    // it runs on a thread of its own, a few batches ahead of the checks
    // here. When the checks stop early, dropping `batches` stops it.
    std::thread::scope(|scope| {
        let (sender, batches) = std::sync::mpsc::sync_channel(DECODE_AHEAD);
        scope.spawn(move || {
            for batch in reader {
                let failed = batch.is_err();
                if sender.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        let mut users = Vec::with_capacity(BATCH_ROWS);
        let mut row = 0u64;
        for batch in batches {
            let batch = batch.map_err(|cause| ImportError::Decode {
                path: path.to_owned(),
                row,
                cause,
            })?;
            let fault = |column, index: usize, problem| ImportError::Value {
                path: path.to_owned(),
                position: Position::Row(row + index as u64 + 1),
                column,
                problem,
            };
            user_ids(&batch, &mut users)
                .map_err(|(index, problem)| fault("user_id", index, problem))?;
            push_feeds(&batch, &users, row, collector).map_err(|(index, refusal)| {
                refused(refusal, |problem| fault("items", index, problem))
            })?;
            row += batch.num_rows() as u64;
            report(collector.rows());
        }
        Ok(())
    })
}

/// Reads the fallback list of a Parquet file (column `item_id`), in file
/// order, repeats included.
pub(crate) fn read_item_ids(path: &Path) -> Result<Vec<u32>, ImportError> {
    let reader = open(path, &["item_id"])?;
    let item_type = reader.schema().field(0).data_type().clone();
    if !item_type.is_integer() {
        return Err(column_type(path, "item_id", item_type, INTEGER));
    }
    let mut ids = Vec::new();
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|cause| ImportError::Decode {
            path: path.to_owned(),
            row,
            cause,
        })?;
        let column = batch.column(0);
        with_integer_type!(column.data_type(), T => integers(column.as_primitive::<T>(), 1, MAX_ITEM, &mut ids), _ => unreachable!("checked above"))
            .map_err(|(index, problem)| ImportError::Value {
                path: path.to_owned(),
                position: Position::Row(row + index as u64 + 1),
                column: "item_id",
                problem,
            })?;
        row += batch.num_rows() as u64;
    }
    Ok(ids)
}

/// A reader of `columns` (top-level columns, by name) of the file at `path`.
fn open(path: &Path, columns: &[&'static str]) -> Result<ParquetRecordBatchReader, ImportError> {
    let parquet = |cause| ImportError::Parquet {
        path: path.to_owned(),
        cause,
    };
    let file = File::open(path).map_err(|cause| ImportError::Io {
        path: path.to_owned(),
        cause,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
    let schema = builder.parquet_schema();
    let roots = schema.root_schema().get_fields();
    let mut wanted = Vec::with_capacity(columns.len());
    for &column in columns {
        match roots.iter().position(|field| field.name() == column) {
            Some(root) => wanted.push(root),
            None => {
                return Err(ImportError::MissingColumn {
                    path: path.to_owned(),
                    column,
                });
            }
        }
    }
    let mask = ProjectionMask::roots(schema, wanted);
    builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet)
}

fn column_type(
    path: &Path,
    column: &'static str,
    found: DataType,
    expected: &'static str,
) -> ImportError {
    ImportError::ColumnType {
        path: path.to_owned(),
        column,
        found,
        expected,
    }
}

/// The batch's user ids, checked, into `out`; or the first bad one's index
/// in the batch.
fn user_ids(batch: &RecordBatch, out: &mut Vec<u64>) -> Result<(), (usize, Problem)> {
    out.clear();
    let column = batch.column_by_name("user_id").expect("projected");
    with_integer_type!(column.data_type(), T => integers(column.as_primitive::<T>(), 0, u64::MAX, out), _ => unreachable!("checked before reading"))
}

/// The values of `array`, checked to be in `min..=max`, appended to `out`.
fn integers<T, U>(
    array: &PrimitiveArray<T>,
    min: u64,
    max: u64,
    out: &mut Vec<U>,
) -> Result<(), (usize, Problem)>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
    U: TryFrom<i128>,
{
    if let Some(nulls) = array.nulls()
        && let Some(index) = nulls.iter().position(|valid| !valid)
    {
        return Err((index, Problem::Null));
    }
    out.reserve(array.len());
    for (index, &value) in array.values().iter().enumerate() {
        let value: i128 = value.into();
        match U::try_from(value) {
            Ok(id) if (i128::from(min)..=i128::from(max)).contains(&value) => out.push(id),
            _ => return Err((index, Problem::OutOfRange { value, min, max })),
        }
    }
    Ok(())
}

/// Hands on the batch's feeds for the checked `users` (the first at row
/// `row + 1` of the file); or the first refused row's index in the batch.
fn push_feeds(
    batch: &RecordBatch,
    users: &[u64],
    row: u64,
    collector: &mut Collector<'_>,
) -> Result<(), (usize, Refused)> {
    let column = batch.column_by_name("items").expect("projected");
    match column.data_type() {
        DataType::List(element) => {
            let list = column.as_list::<i32>();
            with_integer_type!(element.data_type(), T => push_lists::<i32, T>(list, users, row, collector), _ => unreachable!("checked before reading"))
        }
        DataType::LargeList(element) => {
            let list = column.as_list::<i64>();
            with_integer_type!(element.data_type(), T => push_lists::<i64, T>(list, users, row, collector), _ => unreachable!("checked before reading"))
        }
        _ => unreachable!("checked before reading"),
    }
}

fn push_lists<O, T>(
    list: &GenericListArray<O>,
    users: &[u64],
    first_row: u64,
    collector: &mut Collector<'_>,
) -> Result<(), (usize, Refused)>
where
    O: OffsetSizeTrait,
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    let elements = list.values().as_primitive::<T>();
    let values = elements.values();
    let list_nulls = list.nulls().filter(|nulls| nulls.null_count() > 0);
    let element_nulls = elements.nulls().filter(|nulls| nulls.null_count() > 0);
    let offsets = list.value_offsets();
    for (row, &user) in users.iter().enumerate() {
        if list_nulls.is_some_and(|nulls| nulls.is_null(row)) {
            return Err((row, Refused::Value(Problem::Null)));
        }
        let (start, end) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
        if let Some(nulls) = element_nulls
            && let Some(index) = (start..end).position(|k| nulls.is_null(k))
        {
            return Err((row, Refused::Value(Problem::NullElement { index })));
        }
        let feed = &values[start..end];
        collector
            .push_feed(user, first_row + row as u64 + 1, feed.len(), |index| {
                item_id(feed[index].into(), index)
            })
            .map_err(|problem| (row, problem))?;
    }
    Ok(())
}
