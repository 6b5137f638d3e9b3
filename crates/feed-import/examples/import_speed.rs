//! Measures an import: writes a synthetic Parquet file as pyarrow would
//! (snappy, `user_id` int64, `items` list<int64>) unless it exists, imports
//! it (the feeds counted, not kept) and prints the summary, rows/s and the
//! peak resident memory.
//!
//! ```text
//! cargo run --release -p feed-import --example import_speed -- [USERS] [ITEMS] [sorted|shuffled]
//! ```
//!
//! Defaults: 1 000 000 users, 200 items each, users shuffled (so the sort
//! runs). The file is cached under `target/tmp/`.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, ListArray, RecordBatch};
use feed_import::{Expected, FeedSink, ImportOptions, ProgressReporter, import};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// A small deterministic generator (xorshift64*), so no dependency is needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn write(path: &PathBuf, users: u64, items: usize, shuffled: bool) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut order: Vec<u64> = (0..users).collect();
    if shuffled {
        for k in (1..order.len()).rev() {
            order.swap(k, (rng.next() % (k as u64 + 1)) as usize);
        }
    }
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer: Option<ArrowWriter<File>> = None;
    for chunk in order.chunks(65_536) {
        let user_ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
            chunk.iter().map(|&u| u as i64 * 3 + 1),
        ));
        let feeds: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            chunk.iter().map(|_| {
                Some(
                    (0..items)
                        .map(|_| Some((rng.next() % 1_000_000) as i64 + 1))
                        .collect::<Vec<_>>(),
                )
            }),
        ));
        let batch = RecordBatch::try_from_iter([("user_id", user_ids), ("items", feeds)]).unwrap();
        let writer = writer.get_or_insert_with(|| {
            ArrowWriter::try_new(
                File::create(path).unwrap(),
                batch.schema(),
                Some(properties.clone()),
            )
            .unwrap()
        });
        writer.write(&batch).unwrap();
    }
    if let Some(writer) = writer {
        writer.close().unwrap();
    }
}

fn peak_resident_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "VmHWM: unknown".to_owned())
}

/// Takes the feeds and keeps only their count: the import alone is measured.
#[derive(Default)]
struct Count(u64);

impl FeedSink for Count {
    type Error = std::convert::Infallible;
    fn start(&mut self, _: &Expected) -> Result<(), Self::Error> {
        self.0 = 0;
        Ok(())
    }
    fn feed(&mut self, _: u64, items: &[u32]) -> Result<(), Self::Error> {
        self.0 += items.len() as u64;
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let users: u64 = args
        .first()
        .map_or(1_000_000, |a| a.parse().expect("USERS"));
    let items: usize = args.get(1).map_or(200, |a| a.parse().expect("ITEMS"));
    let shuffled = args.get(2).is_none_or(|a| a != "sorted");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let order = if shuffled { "shuffled" } else { "sorted" };
    let path = dir.join(format!("feeds-{users}x{items}-{order}.parquet"));
    if !path.exists() {
        let start = Instant::now();
        write(&path, users, items, shuffled);
        eprintln!(
            "wrote {} in {:.1} s",
            path.display(),
            start.elapsed().as_secs_f64()
        );
    }
    let size = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "{}: {:.0} MiB",
        path.display(),
        size as f64 / (1 << 20) as f64
    );

    let inputs = vec![path];
    let mut reporter = ProgressReporter::new(inputs.len());
    let mut count = Count::default();
    let options = ImportOptions::new(&dir);
    let result = import(
        &inputs,
        None,
        &options,
        None,
        &mut |p| reporter.update(p),
        &mut count,
    );
    reporter.finish();
    let summary = result.unwrap_or_else(|e| panic!("{e}")).summary;
    println!("{summary}");
    println!(
        "{:.0} rows/s, {:.0} items/s; items {} MiB; {}",
        summary.rows as f64 / summary.elapsed.as_secs_f64(),
        summary.items as f64 / summary.elapsed.as_secs_f64(),
        (count.0 * 4) >> 20,
        peak_resident_memory()
    );
}
