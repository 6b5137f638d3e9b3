//! The other direction: what each user was delivered, written as a Parquet
//! file for the offline job to read (to leave those items out of its next
//! run). [`DeliveredWriter`] takes rows one at a time and streams them to
//! the file, holding at most one record batch and the row group being
//! encoded, whatever the number of users.
//!
//! The file has two columns, both without nulls:
//! - `user_id`: `int64` ([`UserIdType::Int64`]) when the caller says every
//!   id is below 2^63, `uint64` otherwise. Spark has no unsigned types (it
//!   refuses a `uint64` column unless told to widen it), so the signed type
//!   is used whenever the ids allow it; the caller decides once, from the
//!   largest id the data can hold ([`UserIdType::for_largest`]), so that
//!   every export of one data version has the same schema however many
//!   users have progress.
//! - `items`: `list<int64>`, the item ids in the order they were given.
//!   Item ids are `u32`: `int32` would overflow above 2^31, and Spark reads
//!   no `uint32`, so every item id fits `int64` exactly and Spark reads it
//!   as `bigint`.
//!
//! Compression is snappy (what pyarrow and Spark write by default, and
//! read without options); row groups hold [`ROW_GROUP_USERS`] users.
//!
//! The file is written under a hidden temporary name beside the output,
//! synced, and renamed over it only when complete, then the folder is
//! synced: a reader never sees half a file, and a failed or interrupted
//! export leaves the previous file as it was (and, when dropped, no
//! temporary file).
//!
//! `feed-import` reads such a file back like any job's output (any integer
//! types are accepted), which is what its tests check.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, ListBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Users in one row group of the file.
pub const ROW_GROUP_USERS: usize = 65_536;
/// Rows handed to the Parquet encoder at once, at most.
const BATCH_USERS: usize = 8_192;
/// Items handed to the Parquet encoder at once, at most (8 MiB as `int64`).
const BATCH_ITEMS: usize = 1 << 20;

/// The type of the `user_id` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserIdType {
    /// `int64`: every id is below 2^63.
    Int64,
    /// `uint64`: some id may be 2^63 or more.
    UInt64,
}

impl UserIdType {
    /// `int64` when `largest` (the largest user id the data holds, `None`
    /// for no users) is below 2^63, else `uint64`.
    pub fn for_largest(largest: Option<u64>) -> Self {
        match largest {
            Some(id) if i64::try_from(id).is_err() => Self::UInt64,
            _ => Self::Int64,
        }
    }

    const fn data_type(self) -> DataType {
        match self {
            Self::Int64 => DataType::Int64,
            Self::UInt64 => DataType::UInt64,
        }
    }
}

/// Why an export could not be written. One line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The output (or its temporary file, or its folder) could not be
    /// created, written, synced or renamed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    /// The Parquet encoder failed.
    #[error("{}: cannot write Parquet: {cause}", path.display())]
    Parquet {
        /// The output.
        path: PathBuf,
        /// What the encoder said.
        cause: parquet::errors::ParquetError,
    },
    /// A user id that the `user_id` column's type cannot hold (the caller
    /// chose `int64` for data with larger ids).
    #[error("{}: user {user} does not fit the int64 user_id column", path.display())]
    UserIdTooLarge {
        /// The output.
        path: PathBuf,
        /// The user.
        user: u64,
    },
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The file.
    pub path: PathBuf,
    /// Rows: users with progress.
    pub users: u64,
    /// Items in all rows.
    pub items: u64,
    /// The type of the `user_id` column.
    pub user_ids: UserIdType,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Streams rows of `(user_id, items)` into a Parquet file. See the module
/// doc.
pub struct DeliveredWriter {
    output: PathBuf,
    temporary: tempfile::NamedTempFile,
    writer: ArrowWriter<BufWriter<File>>,
    schema: SchemaRef,
    user_ids: UserIdType,
    /// The batch being gathered.
    users: Vec<u64>,
    items: ListBuilder<Int64Builder>,
    items_in_batch: usize,
    /// Totals.
    rows: u64,
    all_items: u64,
}

impl std::fmt::Debug for DeliveredWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveredWriter")
            .field("output", &self.output)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// The list's element field: `item`, `int64`, never null.
fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Int64, false))
}

impl DeliveredWriter {
    /// Starts writing `output`: a hidden temporary file beside it is
    /// created now (mode 0600 until the rename; the file is made 0640, as
    /// snapshots are).
    ///
    /// # Errors
    /// [`ExportError::Io`] when the temporary file cannot be created,
    /// [`ExportError::Parquet`] when the encoder cannot start.
    pub fn create(output: &Path, user_ids: UserIdType) -> Result<Self, ExportError> {
        let folder = folder_of(output);
        let name = output
            .file_name()
            .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
        let temporary = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(folder)
            .map_err(|cause| io(folder, cause))?;
        let file = temporary
            .as_file()
            .try_clone()
            .map_err(|cause| io(temporary.path(), cause))?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", user_ids.data_type(), false),
            Field::new("items", DataType::List(item_field()), false),
        ]));
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_USERS))
            .build();
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            Arc::clone(&schema),
            Some(properties),
        )
        .map_err(|cause| parquet_error(output, cause))?;
        Ok(Self {
            output: output.to_owned(),
            temporary,
            writer,
            schema,
            user_ids,
            users: Vec::with_capacity(BATCH_USERS),
            items: ListBuilder::new(Int64Builder::new()).with_field(item_field()),
            items_in_batch: 0,
            rows: 0,
            all_items: 0,
        })
    }

    /// Adds the row of `user`, who was given `items`, in that order.
    ///
    /// # Errors
    /// [`ExportError::UserIdTooLarge`] for an id of 2^63 or more in an
    /// `int64` column; [`ExportError::Parquet`] when the encoder fails.
    pub fn push(&mut self, user: u64, items: &[u32]) -> Result<(), ExportError> {
        if self.user_ids == UserIdType::Int64 && i64::try_from(user).is_err() {
            return Err(ExportError::UserIdTooLarge {
                path: self.output.clone(),
                user,
            });
        }
        self.users.push(user);
        let values = self.items.values();
        for &item in items {
            values.append_value(i64::from(item));
        }
        self.items.append(true);
        self.items_in_batch += items.len();
        self.rows += 1;
        self.all_items += items.len() as u64;
        if self.users.len() >= BATCH_USERS || self.items_in_batch >= BATCH_ITEMS {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Hands the gathered rows to the encoder.
    fn write_batch(&mut self) -> Result<(), ExportError> {
        if self.users.is_empty() {
            return Ok(());
        }
        let users: ArrayRef = match self.user_ids {
            // Checked in `push`: every id fits.
            UserIdType::Int64 => Arc::new(Int64Array::from_iter_values(
                self.users.iter().map(|&id| id as i64),
            )),
            UserIdType::UInt64 => {
                Arc::new(UInt64Array::from_iter_values(self.users.iter().copied()))
            }
        };
        let items: ArrayRef = Arc::new(self.items.finish());
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), vec![users, items])
            .map_err(|cause| parquet_error(&self.output, cause.into()))?;
        self.writer
            .write(&batch)
            .map_err(|cause| parquet_error(&self.output, cause))?;
        self.users.clear();
        self.items_in_batch = 0;
        Ok(())
    }

    /// Rows so far.
    pub const fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the last rows and the footer, syncs the file, renames it
    /// over the output and syncs the folder.
    ///
    /// # Errors
    /// [`ExportError`]; the output is then as it was, and the temporary
    /// file removed.
    pub fn finish(mut self) -> Result<Exported, ExportError> {
        self.write_batch()?;
        let output = self.output;
        // Writes the footer and flushes every buffer into the file.
        self.writer
            .close()
            .map_err(|cause| parquet_error(&output, cause))?;
        let file = self.temporary.as_file();
        let written = || -> std::io::Result<u64> {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
            file.sync_all()?;
            Ok(file.metadata()?.len())
        };
        let bytes = written().map_err(|cause| io(self.temporary.path(), cause))?;
        self.temporary
            .persist(&output)
            .map_err(|e| io(&output, e.error))?;
        sync_folder(folder_of(&output)).map_err(|cause| io(folder_of(&output), cause))?;
        Ok(Exported {
            path: output,
            users: self.rows,
            items: self.all_items,
            user_ids: self.user_ids,
            bytes,
        })
    }
}

/// The folder `path` is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes a rename in `dir` durable.
fn sync_folder(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io(path: &Path, cause: std::io::Error) -> ExportError {
    ExportError::Io {
        path: path.to_owned(),
        cause,
    }
}

fn parquet_error(path: &Path, cause: parquet::errors::ParquetError) -> ExportError {
    ExportError::Parquet {
        path: path.to_owned(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import_to_memory;

    fn scratch() -> PathBuf {
        let dir = tempfile::Builder::new()
            .prefix("feed-import-export-")
            .tempdir()
            .unwrap();
        dir.keep()
    }

    /// Writes `rows` with `user_ids`, reads the file back through this
    /// crate's own reader, and checks it holds exactly the rows (and no
    /// temporary file is left).
    fn check(rows: &[(u64, Vec<u32>)], user_ids: UserIdType) {
        let dir = scratch();
        let output = dir.join("delivered.parquet");
        let mut writer = DeliveredWriter::create(&output, user_ids).unwrap();
        for (user, items) in rows {
            writer.push(*user, items).unwrap();
        }
        let exported = writer.finish().unwrap();
        assert_eq!(exported.users, rows.len() as u64);
        assert_eq!(
            exported.items,
            rows.iter()
                .map(|(_, items)| items.len() as u64)
                .sum::<u64>()
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["delivered.parquet"]);
        let (feeds, _) =
            import_to_memory(std::slice::from_ref(&output), None, &mut |_| {}).unwrap();
        let read: Vec<(u64, Vec<u32>)> = (0..feeds.user_ids.len())
            .map(|at| (feeds.user_ids[at], feeds.feed(at).to_vec()))
            .collect();
        assert_eq!(read, rows);
        let reader =
            parquet::file::reader::SerializedFileReader::new(File::open(&output).unwrap()).unwrap();
        use parquet::file::reader::FileReader;
        let schema = reader.metadata().file_metadata().schema_descr();
        // As Spark sees the columns: both physical INT64; only an unsigned
        // `user_id` says so in its logical type.
        let columns: Vec<String> = (0..schema.num_columns())
            .map(|at| {
                let column = schema.column(at);
                format!("{} {:?}", column.physical_type(), column.logical_type_ref())
            })
            .collect();
        let user_id = match user_ids {
            UserIdType::Int64 => "INT64 None",
            UserIdType::UInt64 => {
                "INT64 Some(Integer(IntType { bit_width: 64, is_signed: false }))"
            }
        };
        assert_eq!(columns, [user_id, "INT64 None"]);
    }

    #[test]
    fn rows_read_back_as_written_across_batches_and_row_groups() {
        // More users than a batch and a row group, items past a batch's
        // item bound, empty and long lists, the largest item id.
        let rows: Vec<(u64, Vec<u32>)> = (0..(ROW_GROUP_USERS as u64 + 3_000))
            .map(|user| {
                let len = (user % 7) as u32 * 5;
                let items = (1..=len).map(|i| i * 3 + (user as u32 % 11)).collect();
                (user * 2 + 1, items)
            })
            .chain([(u64::from(u32::MAX) << 8, vec![u32::MAX, 1])])
            .collect();
        check(&rows, UserIdType::Int64);
    }

    #[test]
    fn ids_from_2_to_the_63_need_and_get_uint64() {
        assert_eq!(UserIdType::for_largest(None), UserIdType::Int64);
        assert_eq!(
            UserIdType::for_largest(Some(i64::MAX as u64)),
            UserIdType::Int64
        );
        assert_eq!(UserIdType::for_largest(Some(1 << 63)), UserIdType::UInt64);
        check(
            &[
                (5, vec![1, 2]),
                (1 << 63, vec![3]),
                (u64::MAX, vec![4, 5, 6]),
            ],
            UserIdType::UInt64,
        );
        let dir = scratch();
        let output = dir.join("x.parquet");
        let mut writer = DeliveredWriter::create(&output, UserIdType::Int64).unwrap();
        let error = writer.push(1 << 63, &[1]).unwrap_err().to_string();
        assert!(error.contains("does not fit the int64"), "{error}");
    }

    #[test]
    fn no_rows_is_a_valid_file_and_a_dropped_writer_leaves_nothing() {
        check(&[], UserIdType::Int64);
        let dir = scratch();
        let output = dir.join("x.parquet");
        std::fs::write(&output, b"before").unwrap();
        let mut writer = DeliveredWriter::create(&output, UserIdType::Int64).unwrap();
        writer.push(1, &[1, 2]).unwrap();
        drop(writer);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x.parquet"]);
        assert_eq!(std::fs::read(&output).unwrap(), b"before");
    }

    #[test]
    fn an_unwritable_folder_is_named() {
        let error = DeliveredWriter::create(
            Path::new("/nonexistent-folder/x.parquet"),
            UserIdType::Int64,
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("/nonexistent-folder"), "{error}");
    }
}
