//! Putting an input that is not in user order into user order, in bounded
//! memory: [`Sorter`] takes the feeds as they are read into a buffer of a
//! fixed size; when it is full, it sorts the buffer by user and writes it
//! out as a *run* to a temporary folder. At the end the runs are merged
//! (k-way, through a heap) and every feed comes out in user order,
//! exactly once, with the place it was read at.
//!
//! Input that fits in the buffer is sorted there and no file is written.
//!
//! A run is a file of records, each `user: u64`, `place: u64`, `len: u32`
//! and `len` items as `u32`, in native byte order (a run lives and dies
//! with one process on one machine). Records sort by user and then by
//! place, so of a user read twice, the first place comes out first.
//!
//! Memory: the buffer (`ImportOptions::run_bytes`) while reading; while
//! merging, one read buffer per run, half the buffer's size in all (at
//! least [`MIN_READ_BUFFER`] each). More than [`FAN_IN`] runs are first
//! merged [`FAN_IN`] at a time into longer runs, so the open files and the
//! read buffers stay bounded whatever the size of the input.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::collect::{Place, Target};

/// Bytes of a record before its items.
pub(crate) const RECORD_HEADER: u64 = 20;
/// Bytes the buffer spends on each feed besides its items.
pub(crate) const BUFFERED_RECORD: usize = size_of::<Record>();
/// The most runs merged at once.
pub(crate) const FAN_IN: usize = 256;
/// The smallest read buffer of a run being merged.
const MIN_READ_BUFFER: usize = 64 << 10;
/// The largest read buffer of a run being merged.
const MAX_READ_BUFFER: usize = 8 << 20;
/// Bytes of the write buffer of a run.
const WRITE_BUFFER: usize = 1 << 20;
/// Feeds merged between two looks at the interruption flag.
const LOOK_EVERY: u64 = 4096;

/// One buffered feed: its items are `items[start..start + len]`.
#[derive(Debug, Clone, Copy)]
struct Record {
    user: u64,
    place: Place,
    start: usize,
    len: u32,
}

/// Why the sorting stopped.
#[derive(Debug)]
pub(crate) enum SortStop<E> {
    /// A run could not be written or read.
    Io(std::io::Error),
    /// A user read twice: the first and the second place.
    Repeat {
        user: u64,
        first: Place,
        again: Place,
    },
    /// The consumer of the sorted feeds said stop.
    Out(E),
    /// The interruption flag was set.
    Interrupted,
}

/// The sorter (see the module doc); a [`Target`] for the collector.
pub(crate) struct Sorter {
    budget: usize,
    parent: PathBuf,
    folder: Option<tempfile::TempDir>,
    items: Vec<u32>,
    records: Vec<Record>,
    runs: Vec<PathBuf>,
    /// Runs ever named (names are never reused).
    named: usize,
    written: u64,
    /// The first error writing a run, kept for the caller.
    pub(crate) error: Option<std::io::Error>,
}

impl Sorter {
    /// A sorter that holds `budget` bytes of feeds in memory and writes
    /// its runs into a hidden temporary folder it makes inside `parent`
    /// (when the first run is written), removed when the sorter is dropped.
    pub(crate) fn new(budget: usize, parent: &Path) -> Self {
        Self {
            budget: budget.max(1),
            parent: parent.to_owned(),
            folder: None,
            items: Vec::new(),
            records: Vec::new(),
            runs: Vec::new(),
            named: 0,
            written: 0,
            error: None,
        }
    }

    /// The temporary folder, once made.
    pub(crate) fn folder(&self) -> Option<&Path> {
        self.folder.as_ref().map(tempfile::TempDir::path)
    }

    fn used(&self) -> usize {
        self.items.len() * 4 + self.records.len() * BUFFERED_RECORD
    }

    fn sort_buffer(&mut self) {
        self.records
            .sort_unstable_by_key(|record| (record.user, record.place));
    }

    /// Sorts the buffer and writes it out as a run.
    fn spill(&mut self) -> std::io::Result<()> {
        self.sort_buffer();
        let path = self.next_run()?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, File::create(&path)?);
        for record in &self.records {
            let feed = &self.items[record.start..record.start + record.len as usize];
            write_record(&mut out, record.user, record.place, feed)?;
            self.written += RECORD_HEADER + 4 * feed.len() as u64;
        }
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        self.runs.push(path);
        self.items.clear();
        self.records.clear();
        Ok(())
    }

    /// The path of a new run (the folder made if need be).
    fn next_run(&mut self) -> std::io::Result<PathBuf> {
        if self.folder.is_none() {
            let folder = tempfile::Builder::new()
                .prefix(".feed-import-")
                .tempdir_in(&self.parent)?;
            self.folder = Some(folder);
        }
        let folder = self.folder.as_ref().map(tempfile::TempDir::path);
        let name = format!("run-{:06}", self.named);
        self.named += 1;
        Ok(folder.unwrap_or(&self.parent).join(name))
    }

    /// Gives every feed taken, in user order, to `out(user, place, feed)`;
    /// a user taken twice is [`SortStop::Repeat`] with its first two
    /// places. `progress(users)` is told how many users came out, now and
    /// then. Returns the runs written from the buffer (0: sorted in memory)
    /// and the bytes written to runs (intermediate merges included).
    pub(crate) fn finish<E>(
        mut self,
        interrupt: Option<&AtomicBool>,
        progress: &mut dyn FnMut(usize, u64),
        mut out: impl FnMut(u64, &[u32]) -> Result<(), E>,
    ) -> Result<(usize, u64), SortStop<E>> {
        if !self.runs.is_empty() && !self.records.is_empty() {
            self.spill().map_err(SortStop::Io)?;
        }
        let spilled = self.runs.len();
        let mut last: Option<(u64, Place)> = None;
        let mut count = 0u64;
        let mut each = |user: u64, place: Place, feed: &[u32]| -> Result<(), SortStop<E>> {
            if let Some((previous, first)) = last
                && previous == user
            {
                return Err(SortStop::Repeat {
                    user,
                    first,
                    again: place,
                });
            }
            last = Some((user, place));
            out(user, feed).map_err(SortStop::Out)?;
            count += 1;
            if count.is_multiple_of(LOOK_EVERY) {
                progress(spilled, count);
                if interrupt.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
                    return Err(SortStop::Interrupted);
                }
            }
            Ok(())
        };
        if spilled == 0 {
            self.sort_buffer();
            for record in &self.records {
                let feed = &self.items[record.start..record.start + record.len as usize];
                each(record.user, record.place, feed)?;
            }
            progress(0, count);
            return Ok((0, 0));
        }
        self.items = Vec::new();
        self.records = Vec::new();
        while self.runs.len() > FAN_IN {
            let group: Vec<PathBuf> = self.runs.drain(..FAN_IN).collect();
            let path = self.next_run().map_err(SortStop::Io)?;
            let file = File::create(&path).map_err(SortStop::Io)?;
            let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);
            let mut written = 0u64;
            merge(&group, self.budget, |user, place, feed| {
                written += RECORD_HEADER + 4 * feed.len() as u64;
                write_record(&mut file, user, place, feed).map_err(SortStop::Io)
            })?;
            file.into_inner()
                .map_err(|e| SortStop::Io(e.into_error()))?;
            self.written += written;
            self.runs.push(path);
        }
        let runs = std::mem::take(&mut self.runs);
        merge(&runs, self.budget, &mut each)?;
        progress(spilled, count);
        Ok((spilled, self.written))
    }
}

impl Target for Sorter {
    fn accept(&mut self, user: u64, place: Place, feed: &[u32]) -> Result<(), ()> {
        let adds = feed.len() * 4 + BUFFERED_RECORD;
        if !self.records.is_empty()
            && self.used() + adds > self.budget
            && let Err(error) = self.spill()
        {
            self.error = Some(error);
            return Err(());
        }
        self.records.push(Record {
            user,
            place,
            start: self.items.len(),
            len: feed.len() as u32,
        });
        self.items.extend_from_slice(feed);
        Ok(())
    }
}

fn write_record(
    out: &mut impl Write,
    user: u64,
    place: Place,
    feed: &[u32],
) -> std::io::Result<()> {
    let mut header = [0u8; RECORD_HEADER as usize];
    header[..8].copy_from_slice(&user.to_ne_bytes());
    header[8..16].copy_from_slice(&place.0.to_ne_bytes());
    header[16..].copy_from_slice(&(feed.len() as u32).to_ne_bytes());
    out.write_all(&header)?;
    out.write_all(bytemuck::cast_slice(feed))
}

/// A run being read: its current record.
struct RunReader {
    file: BufReader<File>,
    user: u64,
    place: Place,
    items: Vec<u32>,
}

impl RunReader {
    fn open(path: &Path, buffer: usize) -> std::io::Result<Self> {
        let file = File::open(path)?;
        // The run is read once: its pages need not stay cached, nor the file.
        std::fs::remove_file(path)?;
        Ok(Self {
            file: BufReader::with_capacity(buffer, file),
            user: 0,
            place: Place(0),
            items: Vec::new(),
        })
    }

    /// Reads the next record; false at the end of the run.
    fn advance(&mut self) -> std::io::Result<bool> {
        let mut header = [0u8; RECORD_HEADER as usize];
        match self.file.read_exact(&mut header[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        self.file.read_exact(&mut header[1..])?;
        let field =
            |at: usize| u64::from_ne_bytes(header[at..at + 8].try_into().unwrap_or_default());
        self.user = field(0);
        self.place = Place(field(8));
        let len = u32::from_ne_bytes(header[16..20].try_into().unwrap_or_default()) as usize;
        self.items.resize(len, 0);
        self.file
            .read_exact(bytemuck::cast_slice_mut(&mut self.items))?;
        Ok(true)
    }
}

/// Merges the runs at `paths` (each in (user, place) order, removed as
/// they are opened) into one sequence in that order, given to `out`.
fn merge<E>(
    paths: &[PathBuf],
    budget: usize,
    mut out: impl FnMut(u64, Place, &[u32]) -> Result<(), SortStop<E>>,
) -> Result<(), SortStop<E>> {
    let buffer = (budget / 2 / paths.len().max(1)).clamp(MIN_READ_BUFFER, MAX_READ_BUFFER);
    let mut runs = Vec::with_capacity(paths.len());
    let mut heap = BinaryHeap::with_capacity(paths.len());
    for path in paths {
        let mut run = RunReader::open(path, buffer).map_err(SortStop::Io)?;
        if run.advance().map_err(SortStop::Io)? {
            heap.push(Reverse((run.user, run.place, runs.len())));
        }
        runs.push(run);
    }
    while let Some(Reverse((user, place, at))) = heap.pop() {
        let run = &mut runs[at];
        out(user, place, &run.items)?;
        if run.advance().map_err(SortStop::Io)? {
            heap.push(Reverse((run.user, run.place, at)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "feed-import-sort-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Users and their feeds.
    type Feeds = Vec<(u64, Vec<u32>)>;

    /// The place of the `row`-th feed: three files of 100 rows, then one.
    fn place(row: usize) -> Place {
        Place::new((row / 100).min(3), (row % 100) as u64 + 1)
    }

    /// Sorts `feeds` (user, feed) through a sorter of `budget` bytes; the
    /// output, or the repeat found; and whether any run was written.
    fn sort(
        feeds: &[(u64, Vec<u32>)],
        budget: usize,
    ) -> (Result<Feeds, (u64, Place, Place)>, usize) {
        let parent = scratch();
        let mut sorter = Sorter::new(budget, &parent);
        for (row, (user, feed)) in feeds.iter().enumerate() {
            sorter.accept(*user, place(row), feed).unwrap();
        }
        let mut got = Vec::new();
        let result = sorter.finish(None, &mut |_, _| {}, |user, feed| {
            got.push((user, feed.to_vec()));
            Ok::<(), ()>(())
        });
        let left = std::fs::read_dir(&parent).unwrap().count();
        assert_eq!(left, 0, "the temporary folder was left behind");
        std::fs::remove_dir(&parent).unwrap();
        match result {
            Ok((runs, _)) => (Ok(got), runs),
            Err(SortStop::Repeat { user, first, again }) => (Err((user, first, again)), 0),
            Err(other) => panic!("{other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any order, any budget (down to one feed a run, many runs and
        /// intermediate merges): the feeds come out sorted, each once.
        #[test]
        fn any_order_comes_out_sorted(
            users in proptest::collection::btree_set(any::<u64>(), 0..400),
            seed in any::<u64>(),
            budget in 1usize..4000,
        ) {
            let mut rng = fastrand_like(seed);
            let mut feeds: Vec<(u64, Vec<u32>)> = users
                .iter()
                .map(|&user| (user, (0..rng() % 9).map(|_| (rng() % 50 + 1) as u32).collect()))
                .collect();
            let expected = feeds.clone();
            for k in (1..feeds.len()).rev() {
                feeds.swap(k, (rng() % (k as u64 + 1)) as usize);
            }
            let (got, _) = sort(&feeds, budget);
            prop_assert_eq!(got.unwrap(), expected);
        }

        /// A user read twice, in any two runs, is named with its first
        /// two places in input order.
        #[test]
        fn a_repeat_across_runs_names_both_places(
            count in 2usize..300,
            first in any::<prop::sample::Index>(),
            again in any::<prop::sample::Index>(),
            budget in 1usize..2000,
        ) {
            let mut feeds: Vec<(u64, Vec<u32>)> = (0..count as u64).map(|k| ((k * 7919) % 1000, vec![1; (k % 4) as usize])).collect();
            let (first, again) = (first.index(count), again.index(count));
            prop_assume!(first != again);
            let (first, again) = (first.min(again), first.max(again));
            feeds[again].0 = feeds[first].0;
            let (got, _) = sort(&feeds, budget);
            prop_assert_eq!(got.unwrap_err(), (feeds[first].0, place(first), place(again)));
        }
    }

    /// A small xorshift, so the test needs no generator crate.
    fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn input_that_fits_writes_no_run_and_more_than_the_fan_in_merges_twice() {
        let feeds: Vec<(u64, Vec<u32>)> =
            (0..50u64).rev().map(|k| (k, vec![k as u32 + 1])).collect();
        let (got, runs) = sort(&feeds, 1 << 20);
        assert_eq!(runs, 0);
        assert_eq!(got.unwrap().len(), 50);
        let feeds: Vec<(u64, Vec<u32>)> = (0..(FAN_IN as u64 * 2 + 5))
            .rev()
            .map(|k| (k, vec![7]))
            .collect();
        let (got, runs) = sort(&feeds, 1);
        assert!(runs > FAN_IN, "{runs}");
        let got = got.unwrap();
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(got.len(), feeds.len());
    }
}
