//! `feed-server --config PATH`: serves every user's feed, from memory or
//! from a Redis Cluster (`[storage] kind`).
//! `feed-server import ...`: turns an offline job's output into a snapshot.
//! `feed-server redis-load ...` / `redis-rollback`: publishes a snapshot to
//! the cluster as a new data version / serves the previous one again.
//! `feed-server export-delivered --output FILE.parquet`: what every user was
//! delivered of the data served now, for the offline job's next run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use feed_redis::ClusterSettings;
use feed_server::settings::{Settings, StorageKind, parse_nodes};
use feed_server::{Stopped, Stops};
use slog::error;

/// Serves recommendation feeds from memory over HTTP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML configuration file; `FEED__SECTION__KEY` variables override it.
    #[arg(long, default_value = "config/default.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a snapshot file from Parquet or JSON Lines feeds (or from the
    /// configured synthetic data set), for `[data] source = "snapshot"`.
    Import(ImportArgs),
    /// Writes a snapshot into the Redis Cluster as a new data version, then
    /// moves the version pointer to it (frontends switch within
    /// `redis.poll_ms`). The previous version is kept for rollback; older
    /// ones are deleted.
    RedisLoad(RedisLoadArgs),
    /// Serves the previous data version again (the current one is kept, so
    /// a second rollback rolls forward).
    RedisRollback(RedisArgs),
    /// Writes, for every user with progress in the data served now, the
    /// items they were delivered (skipped ones included), in order, as
    /// Parquet (`user_id`, `items`), while the server serves: in memory
    /// mode from the progress file of the data the admin listener names
    /// (or the configured data when no server runs), in Redis mode from
    /// the cluster's current version.
    ExportDelivered(ExportArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The Parquet file to write (atomically: written beside it, synced,
    /// renamed).
    #[arg(long)]
    output: PathBuf,
    /// Redis mode: seed nodes, `redis://HOST:PORT[,...]`; default:
    /// `[redis] nodes`.
    #[arg(long)]
    nodes: Option<String>,
}

#[derive(Debug, Args)]
struct RedisArgs {
    /// Seed nodes, `redis://HOST:PORT[,...]`; default: `[redis] nodes`.
    #[arg(long)]
    nodes: Option<String>,
}

#[derive(Debug, Args)]
struct RedisLoadArgs {
    /// The snapshot file (written by `feed-server import`).
    #[arg(long)]
    snapshot: PathBuf,
    #[command(flatten)]
    redis: RedisArgs,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// An input file: `.parquet` (columns `user_id` and `items`) or `.jsonl`
    /// (`{"user_id": 17, "items": [5, 9, 2]}` a line). Repeat for several.
    #[arg(long = "input", required_unless_present = "synthetic")]
    inputs: Vec<PathBuf>,
    /// Items to fill short feeds with: `.parquet` with a column `item_id`,
    /// or a text file with one id a line. Default: every distinct item of
    /// the feeds.
    #[arg(long, conflicts_with = "synthetic")]
    fallback: Option<PathBuf>,
    /// Write the configured synthetic data set (`[data]` users, feed_len,
    /// catalog_size, seed) instead of reading inputs.
    #[arg(long, conflicts_with = "inputs")]
    synthetic: bool,
    /// The snapshot file to write (atomically: written beside it, synced,
    /// renamed).
    #[arg(long)]
    output: PathBuf,
    /// Memory for sorting input that is not in user order: feeds are held
    /// up to this size, then written as a sorted run to a hidden folder
    /// beside the output (e.g. `512MiB`, `2GiB`; the default is 512MiB).
    #[arg(long, value_parser = parse_bytes, conflicts_with = "synthetic")]
    sort_memory: Option<usize>,
    /// Assume this many bytes free in the output's folder (tests).
    #[arg(long, hide = true)]
    assume_free_bytes: Option<u64>,
}

/// A size in bytes: digits, optionally followed by K, M or G (powers of
/// 1024), with or without `iB` or `B`.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("unknown unit {unit:?}: use K, M or G")),
    };
    let value: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB"))?;
    value
        .checked_mul(1 << shift)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
    let (settings, spec) = match Settings::load(&cli.config, env) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("feed-server: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Import(args)) => return import(&args, &spec),
        Some(Command::RedisLoad(args)) => {
            return redis_load(&args, &settings, spec.limits.max_size().get());
        }
        Some(Command::RedisRollback(args)) => return redis_rollback(&args, &settings),
        Some(Command::ExportDelivered(args)) => return export(args, &settings, &spec),
        None => {}
    }
    let (logger, _flush_on_exit) = feed_server::logging::logger(&settings.log);
    if settings.storage.kind == StorageKind::Redis {
        let Some(listeners) = listen(&settings, &logger) else {
            return ExitCode::FAILURE;
        };
        let served =
            feed_server::run_redis(&settings, spec.limits, listeners, &logger, Stops::Signals);
        return exit(served, &logger);
    }
    // The data to serve and its progress are opened before anything
    // listens: a bad snapshot or an unusable progress file is a bad
    // configuration (exit 2, one line naming the file).
    let loader = feed_memory::lifecycle::First::open(
        &settings.data,
        spec.data,
        spec.limits,
        &settings.progress.place(),
        &logger,
    )
    .map(|first| feed_server::first_loader(first, spec.limits));
    let loader = match loader {
        Ok(loader) => loader,
        Err(line) => {
            eprintln!("feed-server: {line}");
            return ExitCode::from(2);
        }
    };

    let Some(listeners) = listen(&settings, &logger) else {
        return ExitCode::FAILURE;
    };
    let served = feed_server::run(
        &settings,
        spec.limits,
        listeners,
        &logger,
        loader,
        Stops::Signals,
    );
    exit(served, &logger)
}

/// Both listening sockets, or `None` (logged) when either is unusable.
fn listen(settings: &Settings, logger: &slog::Logger) -> Option<feed_server::Listeners> {
    let bind = |host: &str, port| {
        feed_server::bind(host, port).map_err(|e| {
            error!(logger, "cannot listen"; "host" => host, "port" => port, "error" => %e);
        })
    };
    let (Ok(public), Ok(admin)) = (
        bind(&settings.server.host, settings.server.port),
        bind(&settings.admin.host, settings.admin.port),
    ) else {
        return None;
    };
    Some(feed_server::Listeners { public, admin })
}

/// The exit code of a served run.
fn exit(served: std::io::Result<Stopped>, logger: &slog::Logger) -> ExitCode {
    match served {
        Ok(Stopped::Drained) => ExitCode::SUCCESS,
        // A second stop signal: requests in flight were abandoned.
        Ok(Stopped::Forced) => ExitCode::from(130),
        Err(e) => {
            error!(logger, "server failed"; "error" => %e);
            ExitCode::FAILURE
        }
    }
}

/// The seed nodes of `--nodes`, or of `[redis] nodes`; exit 2 naming the
/// one that is wrong.
fn cluster(args: &RedisArgs, settings: &Settings) -> Result<ClusterSettings, ExitCode> {
    let (key, nodes) = match &args.nodes {
        Some(nodes) => ("--nodes", nodes.as_str()),
        None => ("redis.nodes", settings.redis.nodes.as_str()),
    };
    let nodes = parse_nodes(nodes).map_err(|reason| {
        eprintln!("feed-server: {key}: {reason}");
        ExitCode::from(2)
    })?;
    let credentials = settings.redis.credentials().map_err(|e| {
        eprintln!("feed-server: {e}");
        ExitCode::from(2)
    })?;
    let ca_pem = settings.redis.ca(&nodes).map_err(|e| {
        eprintln!("feed-server: {e}");
        ExitCode::from(2)
    })?;
    Ok(ClusterSettings {
        nodes,
        timeout: Duration::from_millis(settings.redis.timeout_ms.max(1_000)),
        credentials,
        ca_pem,
    })
}

/// `feed-server redis-load`: exit 0 with a summary, 2 for a bad snapshot
/// (one whose fallback list is shorter than `max_size` too) or node list,
/// 1 when the cluster fails.
fn redis_load(args: &RedisLoadArgs, settings: &Settings, max_size: usize) -> ExitCode {
    let cluster = match cluster(&args.redis, settings) {
        Ok(cluster) => cluster,
        Err(code) => return code,
    };
    let snapshots = std::path::Path::new(settings.redis.snapshots.trim());
    let mut note = |line: &str| eprintln!("redis-load: {line}");
    match feed_server::redis::load(&args.snapshot, &cluster, max_size, snapshots, &mut note) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) if e.starts_with("--snapshot") => {
            eprintln!("feed-server redis-load: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("feed-server redis-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `feed-server redis-rollback`: exit 0 naming the version now served.
fn redis_rollback(args: &RedisArgs, settings: &Settings) -> ExitCode {
    let cluster = match cluster(args, settings) {
        Ok(cluster) => cluster,
        Err(code) => return code,
    };
    match feed_server::redis::rollback(&cluster) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("feed-server redis-rollback: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `feed-server import`: exit 0 with a summary, or 2 with one line naming
/// what was wrong.
fn import(args: &ImportArgs, spec: &feed_server::settings::ServiceSpec) -> ExitCode {
    let outcome = if args.synthetic {
        feed_server::import::synthetic(spec, &args.output)
    } else {
        let how = feed_server::import::FileImport {
            sort_memory: args.sort_memory,
            assume_free: args.assume_free_bytes,
        };
        feed_server::import::files(&args.inputs, args.fallback.as_deref(), &args.output, &how)
    };
    match outcome {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("feed-server import: {e}");
            ExitCode::from(2)
        }
    }
}

/// `feed-server export-delivered`: exit 0 with a summary, 2 for a bad
/// configuration, 1 when the data, the progress, the cluster or the
/// output fails.
fn export(
    args: ExportArgs,
    settings: &Settings,
    spec: &feed_server::settings::ServiceSpec,
) -> ExitCode {
    let outcome = if settings.storage.kind == StorageKind::Redis {
        let cluster = match cluster(&RedisArgs { nodes: args.nodes }, settings) {
            Ok(cluster) => cluster,
            Err(code) => return code,
        };
        feed_server::export::redis(settings, &cluster, &args.output)
    } else {
        let quiet = slog::Logger::root(slog::Discard, slog::o!());
        feed_server::export::memory(settings, spec, &args.output, &quiet)
    };
    match outcome {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("feed-server export-delivered: {e}");
            ExitCode::FAILURE
        }
    }
}
