//! Reads the feeds that offline jobs compute, checks them, and gives them,
//! one user at a time and sorted by user, to a [`FeedSink`], in memory
//! bounded whatever the size of the input.
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
//!   columns only. An input must be a regular file: it is read more than
//!   once (measured, read, and read again into the sort when it is not in
//!   user order), and a FIFO or a device could give other rows each time.
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
//! what it gives its [`FeedSink`]; it depends on no other crate of this
//! workspace.
//!
//! **Order and memory.** Input already in user order (across the inputs,
//! in the order given) streams straight to the sink: nothing is held but
//! the batch being read. Other input is sorted in bounded memory
//! (`sort`): runs of [`ImportOptions::run_bytes`] are sorted and written
//! to a hidden temporary folder, then merged k-way into the sink; each
//! record carries the file and row (or line) it was read at, so a user
//! read twice is named at both places whichever runs they fell into. The
//! import holds nothing per user: its memory is the sort's runs (or half
//! of that while merging), the Parquet decoder's few batches and, when no
//! fallback list is given, the set of distinct items ([`ItemSet`], at most
//! 512 MiB). Chosen over sorting in memory, which held every item (4 bytes
//! each) and more: a 5M x 200 input needed over 4 GiB. The cost is a
//! second pass over the input when it turns out not to be in user order
//! (found, for a random order, within the first rows), and the runs' bytes
//! on disk (see [`Expected::temporary_bytes`]).
//!
//! **The way back.** [`export`] writes what users were delivered as a
//! Parquet file ([`DeliveredWriter`], streaming), for the offline job to
//! leave out of its next run; this crate reads such a file like any job's
//! output.
//!
//! [`ImportedFeeds`] is the sink that keeps everything in memory, as
//! compressed sparse rows: the reference the tests compare with, and
//! [`import_to_memory`] for small inputs.

mod collect;
mod error;
pub mod export;
mod items;
mod parquet_input;
mod progress;
mod sort;
mod text_input;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub use error::{ImportError, Position, Problem};
pub use export::{DeliveredWriter, ExportError, Exported, UserIdType};
pub use items::ItemSet;
pub use progress::ProgressReporter;

use collect::{Collector, Place, Refused, Stats, Target};
use sort::{SortStop, Sorter};

/// What consumes the feeds of an import: every user's feed, once, in
/// increasing user order (the snapshot writer of `feed-server import`, or
/// [`ImportedFeeds`] in memory).
pub trait FeedSink {
    /// What the sink fails with.
    type Error;

    /// Called before the first feed, with what is known of the input.
    /// Called again, before any feed, when the input turns out not to be
    /// in user order: everything given before is then to be discarded.
    ///
    /// # Errors
    /// Whatever stops the sink (the import returns it as [`Failure::Sink`]).
    fn start(&mut self, expected: &Expected) -> Result<(), Self::Error>;

    /// Takes `user`'s feed: users strictly increase; items are in
    /// `1..=u32::MAX`, each once.
    ///
    /// # Errors
    /// Whatever stops the sink (the import returns it as [`Failure::Sink`]).
    fn feed(&mut self, user: u64, items: &[u32]) -> Result<(), Self::Error>;
}

/// What an import knows of its input before reading it, for the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The users to come, if the import succeeds (one per row or non-blank
    /// line); never more.
    pub users: u64,
    /// At most this many items in all feeds (Parquet: the values the
    /// `items` column holds, from the file's metadata; JSON Lines: the
    /// commas and lines, counted).
    pub items: u64,
    /// Items in the fallback list given; 0 without one (the distinct items
    /// of the feeds are known only at the end).
    pub fallback: u64,
    /// Bytes the import's temporary files (the sorted runs) may take at
    /// most beside the sink's own, in [`ImportOptions::temporary_parent`];
    /// 0 when the input is read in user order or fits in memory.
    pub temporary_bytes: u64,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum Failure<E> {
    /// An input was unreadable or invalid, or the sorting failed.
    #[error(transparent)]
    Input(#[from] ImportError),
    /// The sink said stop.
    #[error(transparent)]
    Sink(E),
}

/// How an import may sort an input that is not in user order.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The folder in which a hidden temporary folder
    /// (`.feed-import-XXXXXX`) holds the sorted runs; it is removed when the
    /// import ends, whether it succeeds, fails or is interrupted.
    pub temporary_parent: PathBuf,
    /// Bytes of feeds held in memory before a sorted run is written out:
    /// the sort's memory.
    pub run_bytes: usize,
}

impl ImportOptions {
    /// The default [`run_bytes`](Self::run_bytes): 512 MiB.
    pub const DEFAULT_RUN_BYTES: usize = 512 << 20;

    /// Runs of the default size in a folder inside `temporary_parent`.
    pub fn new(temporary_parent: &Path) -> Self {
        Self {
            temporary_parent: temporary_parent.to_owned(),
            run_bytes: Self::DEFAULT_RUN_BYTES,
        }
    }
}

/// The fallback list an import produced.
#[derive(Debug, Clone)]
pub enum Fallback {
    /// The list given, checked, later repeats dropped, in file order.
    Given(Vec<u32>),
    /// None given: every distinct item of the feeds, in increasing order.
    Distinct(ItemSet),
}

impl Fallback {
    /// The items.
    pub fn iter(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            Fallback::Given(list) => Box::new(list.iter().copied()),
            Fallback::Distinct(set) => Box::new(set.iter()),
        }
    }

    /// How many items.
    pub fn len(&self) -> u64 {
        match self {
            Fallback::Given(list) => list.len() as u64,
            Fallback::Distinct(set) => set.len(),
        }
    }

    /// Whether it holds no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an import gives back besides the feeds it gave the sink.
#[derive(Debug)]
pub struct Imported {
    /// What was read.
    pub summary: ImportSummary,
    /// The fallback list.
    pub fallback: Fallback,
}

/// Every user's feed, sorted by user id, as compressed sparse rows: the
/// feeds held in memory, a [`FeedSink`] for tests and small imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedFeeds {
    /// The users, strictly increasing.
    pub user_ids: Vec<u64>,
    /// `user_ids.len() + 1` entries: `offsets[0] = 0`, non-decreasing; user
    /// `i`'s feed is `items[offsets[i]..offsets[i + 1]]`.
    pub offsets: Vec<u64>,
    /// Every feed, in rank order: each item in `1..=u32::MAX`, distinct
    /// within its feed.
    pub items: Vec<u32>,
}

impl Default for ImportedFeeds {
    fn default() -> Self {
        Self {
            user_ids: Vec::new(),
            offsets: vec![0],
            items: Vec::new(),
        }
    }
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

impl FeedSink for ImportedFeeds {
    type Error = std::convert::Infallible;

    fn start(&mut self, _: &Expected) -> Result<(), Self::Error> {
        *self = Self::default();
        Ok(())
    }

    fn feed(&mut self, user: u64, items: &[u32]) -> Result<(), Self::Error> {
        self.user_ids.push(user);
        self.items.extend_from_slice(items);
        self.offsets.push(self.items.len() as u64);
        Ok(())
    }
}

/// How the input was put in user order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// It was in user order: streamed straight to the sink.
    Streamed,
    /// It was not, and fitted in memory: sorted there.
    SortedInMemory,
    /// It was not: sorted through `runs` runs of `bytes` in all, in a
    /// temporary folder.
    SortedOnDisk {
        /// Runs written.
        runs: usize,
        /// Bytes written to them.
        bytes: u64,
    },
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
    /// How the input was put in user order.
    pub order: Order,
    /// Time spent, from the start to the last feed given to the sink.
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
        match self.order {
            Order::Streamed => writeln!(f, "input in user order: streamed")?,
            Order::SortedInMemory => writeln!(f, "input not in user order: sorted in memory")?,
            Order::SortedOnDisk { runs, bytes } => writeln!(
                f,
                "input not in user order: sorted through {runs} runs ({bytes} bytes) on disk"
            )?,
        }
        writeln!(f, "{} users, {} items", self.users, self.items)?;
        writeln!(
            f,
            "feed length: shortest {}, longest {}, mean {:.1}",
            self.shortest, self.longest, self.mean
        )?;
        write!(f, "{} repeated items dropped", self.duplicates_dropped)
    }
}

/// How far an import has gone; given to the `progress` callback of
/// [`import`] after every record batch (Parquet) or few thousand lines
/// (JSON Lines), at the end of each file, and every few thousand users
/// merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What the import is doing.
    pub stage: Stage,
    /// Rows read so far over all files (reading), or users given to the
    /// sink so far (merging).
    pub rows: u64,
}

/// What an import is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the input of index `file`; `sorting` once the input turned
    /// out not to be in user order (the reading starts over then).
    Reading {
        /// The index in `inputs` of the file being read.
        file: usize,
        /// Whether the feeds go to the sort rather than to the sink.
        sorting: bool,
    },
    /// Merging the sorted runs into the sink.
    Merging {
        /// Runs being merged.
        runs: usize,
    },
}

/// The input formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The inputs, for naming the place of a feed.
struct Sources<'a> {
    paths: &'a [PathBuf],
    formats: Vec<Format>,
}

impl Sources<'_> {
    fn locate(&self, place: Place) -> (PathBuf, Position) {
        let file = place.file();
        let position = match self.formats[file] {
            Format::Parquet => Position::Row(place.position()),
            Format::JsonLines => Position::Line(place.position()),
        };
        (self.paths[file].clone(), position)
    }

    fn repeat(&self, user: u64, first: Place, again: Place) -> ImportError {
        let (first_path, first_position) = self.locate(first);
        let (path, position) = self.locate(again);
        ImportError::DuplicateUser {
            user,
            path,
            position,
            first_path,
            first_position,
        }
    }
}

/// Why reading stopped early.
pub(crate) enum Stop {
    /// A bad input.
    Input(ImportError),
    /// The target (or an interruption) stopped it; the reason is kept there.
    Halt,
}

impl From<ImportError> for Stop {
    fn from(error: ImportError) -> Self {
        Self::Input(error)
    }
}

/// Hands feeds to the sink and keeps what the summary and the fallback list
/// need of them.
struct Emitter<'s, S> {
    sink: &'s mut S,
    distinct: Option<ItemSet>,
    users: u64,
    items: u64,
    shortest: u64,
    longest: u64,
}

impl<'s, S: FeedSink> Emitter<'s, S> {
    fn new(sink: &'s mut S, distinct: bool) -> Self {
        Self {
            sink,
            distinct: distinct.then(ItemSet::new),
            users: 0,
            items: 0,
            shortest: u64::MAX,
            longest: 0,
        }
    }

    #[inline]
    fn emit(&mut self, user: u64, feed: &[u32]) -> Result<(), S::Error> {
        self.sink.feed(user, feed)?;
        if let Some(distinct) = &mut self.distinct {
            distinct.extend_from_slice(feed);
        }
        let len = feed.len() as u64;
        self.users += 1;
        self.items += len;
        self.shortest = self.shortest.min(len);
        self.longest = self.longest.max(len);
        Ok(())
    }
}

/// Why streaming straight to the sink stopped.
enum Halt<E> {
    /// A user came after a larger one.
    Unsorted,
    /// A user came again right after itself.
    Repeat {
        user: u64,
        first: Place,
        again: Place,
    },
    /// The sink said stop.
    Sink(E),
}

/// The target of a first read: the sink itself, for as long as the users
/// increase.
struct Straight<'e, 's, S: FeedSink> {
    emitter: &'e mut Emitter<'s, S>,
    last: Option<(u64, Place)>,
    halt: Option<Halt<S::Error>>,
}

impl<S: FeedSink> Target for Straight<'_, '_, S> {
    fn accept(&mut self, user: u64, place: Place, feed: &[u32]) -> Result<(), ()> {
        if let Some((last, first)) = self.last
            && user <= last
        {
            self.halt = Some(if user == last {
                Halt::Repeat {
                    user,
                    first,
                    again: place,
                }
            } else {
                Halt::Unsorted
            });
            return Err(());
        }
        self.last = Some((user, place));
        self.emitter.emit(user, feed).map_err(|e| {
            self.halt = Some(Halt::Sink(e));
        })
    }
}

/// Reads `inputs` (`.parquet` or `.jsonl`, in this order) and the optional
/// `fallback` list (`.parquet` with an integer column `item_id`; any other
/// extension is text, one item id a line, blank lines ignored), checks every
/// value, and gives every feed to `sink` in increasing user order.
///
/// Every extension is checked, the fallback list read and the inputs
/// measured (Parquet: the footer; JSON Lines: one pass counting lines)
/// before the first feed, so a typo fails at once. The feeds then go
/// straight to the sink for as long as the users increase (across the
/// inputs, in the order given). When a user comes after a larger one, the
/// sink is started again and the inputs are read again into the sort
/// ([`ImportOptions`]: runs of `run_bytes` written to a temporary folder
/// and merged), whose output goes to the sink. Values are checked as they
/// are read and the first bad one stops the import. A user that appears
/// twice stops it too: in input that is in user order, at its second
/// appearance; otherwise the smallest such user id, named with its first
/// two places.
///
/// Memory: nothing per user. It is the Parquet decoder's few batches, the
/// sort's `run_bytes` while reading input not in user order (and about
/// half that to merge: 64 KiB to 8 MiB for each of at most 256 runs), and
/// without a fallback list the set of distinct items ([`ItemSet`], at most
/// 512 MiB).
///
/// `interrupt`, when set (by a signal handler), stops the import within a
/// few thousand rows with [`ImportError::Interrupted`].
///
/// # Errors
/// [`Failure::Input`]: [`ImportError::NoInputs`] for an empty `inputs`;
/// otherwise the first unreadable file or bad value met, a repeated user,
/// a run that could not be written or read; or [`Failure::Sink`] with the
/// sink's error.
pub fn import<S: FeedSink>(
    inputs: &[PathBuf],
    fallback: Option<&Path>,
    options: &ImportOptions,
    interrupt: Option<&AtomicBool>,
    progress: &mut dyn FnMut(Progress),
    sink: &mut S,
) -> Result<Imported, Failure<S::Error>> {
    let start = Instant::now();
    if inputs.is_empty() {
        return Err(ImportError::NoInputs.into());
    }
    if inputs.len() > Place::MAX_FILES {
        return Err(ImportError::TooManyInputs {
            count: inputs.len(),
        }
        .into());
    }
    let formats = inputs
        .iter()
        .map(|path| {
            Format::of(path).ok_or_else(|| ImportError::UnknownFormat { path: path.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Checked without opening: opening a FIFO would wait for a writer.
    for path in inputs {
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => {
                return Err(ImportError::NotAFile { path: path.clone() }.into());
            }
            // A missing file is the first pass's error, naming it.
            _ => {}
        }
    }
    let given = fallback.map(read_fallback).transpose()?;
    let sources = Sources {
        paths: inputs,
        formats,
    };
    let mut expected = Expected {
        users: 0,
        items: 0,
        fallback: given.as_ref().map_or(0, |list| list.len() as u64),
        temporary_bytes: 0,
    };
    for (path, format) in inputs.iter().zip(&sources.formats) {
        let (rows, items) = match format {
            Format::Parquet => parquet_input::measure(path)?,
            Format::JsonLines => text_input::measure(path)?,
        };
        expected.users += rows;
        expected.items += items;
    }

    // First: straight to the sink, for as long as the users increase.
    sink.start(&expected).map_err(Failure::Sink)?;
    let mut emitter = Emitter::new(sink, given.is_none());
    let mut straight = Straight {
        emitter: &mut emitter,
        last: None,
        halt: None,
    };
    let read = read_all(&sources, &mut straight, false, interrupt, progress);
    let halt = straight.halt.take();
    let order = match read {
        Ok(stats) => Some((stats, Order::Streamed)),
        Err(Stop::Input(error)) => return Err(error.into()),
        Err(Stop::Halt) => match halt {
            Some(Halt::Unsorted) => None,
            Some(Halt::Repeat { user, first, again }) => {
                return Err(sources.repeat(user, first, again).into());
            }
            Some(Halt::Sink(error)) => return Err(Failure::Sink(error)),
            None => return Err(ImportError::Interrupted.into()),
        },
    };
    let (stats, order) = match order {
        Some(done) => done,
        None => {
            drop(emitter);
            emitter = Emitter::new(sink, given.is_none());
            sorted(
                &sources,
                &mut expected,
                options,
                interrupt,
                progress,
                &mut emitter,
            )?
        }
    };

    let users = emitter.users;
    let summary = ImportSummary {
        files: inputs.len(),
        rows: stats.rows,
        users,
        items: emitter.items,
        shortest: if users == 0 { 0 } else { emitter.shortest },
        longest: emitter.longest,
        mean: if users == 0 {
            0.0
        } else {
            emitter.items as f64 / users as f64
        },
        duplicates_dropped: stats.duplicates_dropped,
        order,
        elapsed: start.elapsed(),
    };
    let fallback = match given {
        Some(list) => Fallback::Given(list),
        None => Fallback::Distinct(emitter.distinct.take().unwrap_or_default()),
    };
    Ok(Imported { summary, fallback })
}

/// The second way through, for input not in user order: starts the sink
/// again (with the room the runs take), reads the inputs into the sort
/// and merges it into `emitter`.
fn sorted<S: FeedSink>(
    sources: &Sources<'_>,
    expected: &mut Expected,
    options: &ImportOptions,
    interrupt: Option<&AtomicBool>,
    progress: &mut dyn FnMut(Progress),
    emitter: &mut Emitter<'_, S>,
) -> Result<(Stats, Order), Failure<S::Error>> {
    let in_memory = expected.users * sort::BUFFERED_RECORD as u64 + 4 * expected.items;
    if in_memory > options.run_bytes as u64 {
        expected.temporary_bytes = expected.users * sort::RECORD_HEADER + 4 * expected.items;
    }
    emitter.sink.start(expected).map_err(Failure::Sink)?;
    let mut sorter = Sorter::new(options.run_bytes, &options.temporary_parent);
    let stats = match read_all(sources, &mut sorter, true, interrupt, progress) {
        Ok(stats) => stats,
        Err(Stop::Input(error)) => return Err(error.into()),
        Err(Stop::Halt) => {
            return Err(match sorter.error.take() {
                Some(cause) => temporary(&sorter, &options.temporary_parent, cause),
                None => ImportError::Interrupted,
            }
            .into());
        }
    };
    let folder = sorter
        .folder()
        .unwrap_or(&options.temporary_parent)
        .to_owned();
    let merged = sorter.finish(
        interrupt,
        &mut |runs, rows| {
            progress(Progress {
                stage: Stage::Merging { runs },
                rows,
            });
        },
        |user, feed| emitter.emit(user, feed),
    );
    let (runs, bytes) = match merged {
        Ok(done) => done,
        Err(SortStop::Io(cause)) => return Err(ImportError::Temporary { folder, cause }.into()),
        Err(SortStop::Repeat { user, first, again }) => {
            return Err(sources.repeat(user, first, again).into());
        }
        Err(SortStop::Out(error)) => return Err(Failure::Sink(error)),
        Err(SortStop::Interrupted) => return Err(ImportError::Interrupted.into()),
    };
    let order = if runs == 0 {
        Order::SortedInMemory
    } else {
        Order::SortedOnDisk { runs, bytes }
    };
    Ok((stats, order))
}

/// A run of `sorter` could not be written.
fn temporary(sorter: &Sorter, parent: &Path, cause: std::io::Error) -> ImportError {
    ImportError::Temporary {
        folder: sorter.folder().unwrap_or(parent).to_owned(),
        cause,
    }
}

/// Reads every input into `target`; the rows read and repeats dropped.
fn read_all(
    sources: &Sources<'_>,
    target: &mut dyn Target,
    sorting: bool,
    interrupt: Option<&AtomicBool>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Stats, Stop> {
    let mut collector = Collector::new(target, interrupt);
    for (file, (path, format)) in sources.paths.iter().zip(&sources.formats).enumerate() {
        collector.begin_source(file);
        let mut report = |rows| {
            progress(Progress {
                stage: Stage::Reading { file, sorting },
                rows,
            });
        };
        let read = match format {
            Format::Parquet => parquet_input::read_feeds(path, &mut collector, &mut report),
            Format::JsonLines => text_input::read_feeds(path, &mut collector, &mut report),
        };
        if let Err(stop) = read {
            return Err(if collector.interrupted {
                Stop::Halt
            } else {
                stop
            });
        }
    }
    Ok(collector.stats())
}

/// A value the readers could not take, as the import's error.
pub(crate) fn refused(refused: Refused, fault: impl FnOnce(Problem) -> ImportError) -> Stop {
    match refused {
        Refused::Value(problem) => Stop::Input(fault(problem)),
        Refused::Halt => Stop::Halt,
    }
}

/// The fallback list at `path`, checked, repeats dropped (first kept).
fn read_fallback(path: &Path) -> Result<Vec<u32>, ImportError> {
    let ids = match Format::of(path) {
        Some(Format::Parquet) => parquet_input::read_item_ids(path)?,
        _ => text_input::read_item_ids(path)?,
    };
    let mut seen = ItemSet::new();
    Ok(ids.into_iter().filter(|&id| seen.insert(id)).collect())
}

/// Reads `inputs` and `fallback` into memory ([`ImportedFeeds`]): [`import`]
/// with the default options, its temporary folder in the system's one.
///
/// # Errors
/// As [`import`].
pub fn import_to_memory(
    inputs: &[PathBuf],
    fallback: Option<&Path>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(ImportedFeeds, Imported), ImportError> {
    let mut feeds = ImportedFeeds::default();
    let options = ImportOptions::new(&std::env::temp_dir());
    match import(inputs, fallback, &options, None, progress, &mut feeds) {
        Ok(imported) => Ok((feeds, imported)),
        Err(Failure::Input(error)) => Err(error),
        Err(Failure::Sink(never)) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            order: Order::SortedOnDisk {
                runs: 3,
                bytes: 2_460_000,
            },
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(
            summary.to_string(),
            "read 3000 rows from 2 file(s) in 1.5 s (2000 rows/s)\n\
             input not in user order: sorted through 3 runs (2460000 bytes) on disk\n\
             3000 users, 600000 items\n\
             feed length: shortest 0, longest 200, mean 200.0\n\
             7 repeated items dropped"
        );
    }
}
