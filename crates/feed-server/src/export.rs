//! `feed-server export-delivered`: what every user with progress was
//! delivered of the data served now, as a Parquet file, while the server
//! serves. Only the composition: the data served and its progress come
//! from `feed_memory::delivered` (memory mode, the version the admin
//! listener names) or `feed_redis::ProgressScan` joined with the mapped
//! snapshot (Redis mode, the version the cluster's pointer names); the
//! rows go to `feed_import`'s streaming [`DeliveredWriter`].

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use feed_http::probe::{self, ProbeError, Served as Asked};
use feed_import::{DeliveredWriter, ExportError, Exported, UserIdType};
use feed_memory::delivered::{DeliveredCounts, DeliveredError, Join, Served, ServedData};
use feed_memory::{Snapshot, SnapshotError};
use feed_redis::{ClusterSettings, ProgressScan, ScanError};
use slog::Logger;

use crate::import::on_interrupt;
use crate::settings::{ServiceSpec, Settings};

/// How long the admin listener may take to say what it serves.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why nothing was exported. One line.
#[derive(Debug, thiserror::Error)]
pub enum ExportFailure {
    /// The admin listener answered wrongly.
    #[error(transparent)]
    Ask(#[from] ProbeError),
    /// The server is still loading its data: nothing is served yet.
    #[error("the server at {0} is still loading its data: export once it is ready")]
    Loading(String),
    /// The data or its progress could not be read (memory mode).
    #[error(transparent)]
    Data(#[from] DeliveredError),
    /// The snapshot a version names could not be found or read.
    #[error("redis.snapshots: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The cluster could not be read.
    #[error(transparent)]
    Cluster(#[from] ScanError),
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] ExportError),
    /// SIGINT or SIGTERM.
    #[error("interrupted: nothing was written")]
    Interrupted,
}

/// What an export wrote.
#[derive(Debug)]
pub struct Summary {
    /// Which data, as found.
    pub data: String,
    /// The file.
    pub exported: Exported,
    /// Users and items given, and what was passed over.
    pub counts: DeliveredCounts,
    /// How long it took.
    pub took: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.exported;
        let user_id = match e.user_ids {
            UserIdType::Int64 => "int64",
            UserIdType::UInt64 => "uint64",
        };
        write!(
            f,
            "wrote {} in {:.1} s: {} users with progress, {} items delivered (user_id {user_id}, {} bytes) of {}",
            e.path.display(),
            self.took.as_secs_f64(),
            e.users,
            e.items,
            e.bytes,
            self.data
        )?;
        let c = &self.counts;
        if c.clamped > 0 {
            write!(
                f,
                "\n{} offsets beyond their feed's end were clamped to it",
                c.clamped
            )?;
        }
        if c.unknown > 0 {
            write!(
                f,
                "\n{} offsets of users the snapshot does not hold were passed over",
                c.unknown
            )?;
        }
        Ok(())
    }
}

/// The memory mode's export: asks the admin listener (`admin.host`,
/// `admin.port`) which data the server serves; when nothing listens
/// there, exports the configured data (what a server started now would
/// serve). Reads that data's progress file without its lock.
///
/// # Errors
/// [`ExportFailure`]; nothing is left at `output` but what was there.
pub fn memory(
    settings: &Settings,
    spec: &ServiceSpec,
    output: &Path,
    logger: &Logger,
) -> Result<Summary, ExportFailure> {
    let started = Instant::now();
    let asked = match settings.admin.local_address() {
        Some(addr) => match probe::served(&addr, settings.admin.bearer(), ASK_TIMEOUT)? {
            Asked::Loading => return Err(ExportFailure::Loading(addr)),
            asked => asked,
        },
        None => Asked::NoServer,
    };
    let served = match asked {
        Asked::NoServer | Asked::Loading => None,
        Asked::Unversioned => Some(ServedData::Synthetic),
        Asked::Version { id, source } => Some(ServedData::Snapshot {
            id,
            path: source.into(),
        }),
    };
    let served = Served::open(
        &settings.data,
        &spec.data,
        &settings.progress,
        served,
        logger,
    )?;
    let mut writer =
        DeliveredWriter::create(output, UserIdType::for_largest(served.largest_user()))?;
    let interrupted = on_interrupt();
    let counts = served.each(|user, items| {
        if interrupted.load(Ordering::Relaxed) {
            return Err(ExportFailure::Interrupted);
        }
        Ok(writer.push(user, items)?)
    })?;
    let exported = writer.finish()?;
    let data = match &served.progress {
        Some(view) => format!("{} (progress {})", served.source, view.path().display()),
        None => format!("{} (no progress file yet)", served.source),
    };
    Ok(Summary {
        data,
        exported,
        counts,
        took: started.elapsed(),
    })
}

/// The Redis mode's export: the version the cluster's pointer names, its
/// users' offsets read on every master, joined with the snapshot the
/// version names (found in `redis.snapshots`, as a frontend finds it).
///
/// # Errors
/// [`ExportFailure`]; nothing is left at `output` but what was there.
pub fn redis(
    settings: &Settings,
    cluster: &ClusterSettings,
    output: &Path,
) -> Result<Summary, ExportFailure> {
    let started = Instant::now();
    let mut scan = ProgressScan::connect(cluster)?;
    let version = scan.current()?;
    let folder = settings.redis.snapshots.trim();
    let snapshot = Snapshot::find(Path::new(folder), version.snapshot, |_| false)?;
    let data = format!(
        "version {} ({})",
        version.version,
        snapshot.path().display()
    );
    let (_, table, _) = snapshot.into_parts();
    let mut writer =
        DeliveredWriter::create(output, UserIdType::for_largest(table.largest_user()))?;
    let mut join = Join::new(&table);
    let interrupted = on_interrupt();
    scan.offsets(version.version, |user, offset| {
        if interrupted.load(Ordering::Relaxed) {
            return Err(ExportFailure::Interrupted);
        }
        if let Some(items) = join.row(user, offset) {
            writer.push(user, items)?;
        }
        Ok(())
    })?;
    let exported = writer.finish()?;
    Ok(Summary {
        data,
        exported,
        counts: join.counts(),
        took: started.elapsed(),
    })
}
