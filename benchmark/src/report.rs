//! The results of one `benchmark/run.sh` run: what the runner measured
//! ([`Run`], the JSON it writes), what follows from it ([`Summary`]), and
//! the markdown table ([`markdown`]).
//!
//! A run has up to three parts, each optional in the JSON: the shared-core
//! rounds (wrk and both servers on all cores, plus the mixed workload and
//! oha), the pinned rounds ([`Pinned`]: server and wrk on separate CPUs),
//! and the instruction counts under callgrind ([`Callgrind`]). Every wrk
//! run may carry the server's CPU time over it ([`ServerCpu`]). Files
//! written before a part existed read as runs without it, and render as
//! they did.
//!
//! The runner collects the raw numbers (wrk's Lua `done` hook and oha's JSON,
//! reshaped by `jq`); everything computed from them is computed here, so the
//! arithmetic is tested and a stored run can be re-rendered at any time with
//! `feed-report`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One run, as written to `benchmark/results/*.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `smoke` or `full`.
    pub mode: String,
    /// A word given with `--label` (`before`, say), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The command line that produced the run.
    pub command: String,
    /// The machine and the code it ran on.
    pub machine: Machine,
    /// The server binaries that were measured (absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binaries: Option<Binaries>,
    /// What was asked of the servers and the load generators.
    pub config: Config,
    /// The feed server's start-up and memory, when the shared-core part ran.
    #[serde(default)]
    pub server: Option<Server>,
    /// The closed-loop wrk runs on shared cores, alternating feed and floor.
    #[serde(default)]
    pub rounds: Vec<Round>,
    /// The mixed workload against the feed server, if it ran.
    #[serde(default)]
    pub mixed: Option<Wrk>,
    /// The fixed-rate oha runs.
    #[serde(default)]
    pub oha: Vec<OhaRun>,
    /// The pinned rounds, if they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
    /// The instruction counts under callgrind, if they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callgrind: Option<Callgrind>,
    /// Computed by [`Summary::of`]: never read from the input, always
    /// written.
    #[serde(default, skip_deserializing)]
    pub summary: Option<Summary>,
}

/// The binaries a run measured, so that a run of an older build (given
/// with `--feed-bin`) says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binaries {
    /// Path of the `feed-server` binary.
    pub feed: String,
    /// Its SHA-256.
    pub feed_sha256: String,
    /// What it was built from: a commit when the run built it, else what
    /// `--feed-commit` said, else `unknown`.
    pub feed_commit: String,
    /// The TOML configuration it was started with (environment variables
    /// override most of it).
    pub feed_config: String,
    /// Path of the `feed-floor` binary.
    pub floor: String,
    /// Its SHA-256.
    pub floor_sha256: String,
}

/// Facts about the machine and the code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `nproc`.
    pub nproc: u32,
    /// `MemTotal` of `/proc/meminfo`.
    pub mem_total_kib: u64,
    /// `uname -r`.
    pub kernel: String,
    /// The CPU model name of `/proc/cpuinfo`.
    pub cpu: String,
    /// `git rev-parse HEAD`.
    pub git_commit: String,
    /// The work tree had uncommitted changes.
    pub git_dirty: bool,
    /// When the run started, UTC, RFC 3339.
    pub date: String,
}

/// The run's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Users in the feed table.
    pub users: u64,
    /// Items per feed.
    pub feed_len: u64,
    /// Catalog items.
    pub catalog_size: u64,
    /// The largest size a request may ask for.
    pub max_size: u64,
    /// HTTP worker threads of both servers.
    pub workers: u64,
    /// wrk `-t`.
    pub wrk_threads: u64,
    /// wrk `-c`.
    pub wrk_connections: u64,
    /// wrk `-d`, seconds.
    pub duration_s: u64,
    /// Unmeasured wrk seconds against each server before the rounds.
    pub warmup_s: u64,
    /// Rounds of (feed, floor).
    pub rounds: u64,
    /// oha `-z`, seconds.
    pub oha_duration_s: u64,
    /// oha `-c`.
    pub oha_connections: u64,
    /// The ids oha asks for (a regex over user ids).
    pub oha_url_regex: String,
    /// Mixed workload: percent of requests for users that do not exist.
    pub mixed_unknown_pct: u64,
    /// Mixed workload: percent of requests for the few hot users, who soon exhaust their feeds.
    pub mixed_hot_pct: u64,
    /// Mixed workload: how many hot users.
    pub mixed_hot_users: u64,
}

/// The feed server's start-up and memory, and the floor's memory, in the
/// shared-core part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// From spawning the process to the first successful `GET /feed/1`.
    pub ready_ms: u64,
    /// `load_ms` (formerly `generation_ms`) of the server's ready log line.
    pub generation_ms: u64,
    /// `VmRSS` once ready.
    pub rss_ready_kib: u64,
    /// `VmRSS` after the wrk rounds.
    pub rss_after_wrk_kib: u64,
    /// `VmRSS` at the end of the run.
    pub rss_end_kib: u64,
    /// `VmHWM` (peak RSS) at the end of the run.
    pub hwm_end_kib: u64,
    /// Mean body length of default-size answers, which the floor copies.
    pub body_bytes: u64,
    /// The floor's `VmRSS` at the end of the run.
    pub floor_rss_end_kib: u64,
}

/// Which server a measurement was taken against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `feed-server`.
    Feed,
    /// `feed-floor`.
    Floor,
}

/// One wrk run in a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// 1-based.
    pub round: u64,
    /// Which server.
    pub target: Target,
    /// What wrk measured.
    pub wrk: Wrk,
}

/// What wrk's `done` hook reports (see `benchmark/wrk/report.lua`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wrk {
    /// Completed requests.
    pub requests: u64,
    /// Measured time, microseconds.
    pub duration_us: u64,
    /// Response bytes read.
    pub bytes: u64,
    /// Socket errors and non-2xx/3xx answers.
    pub errors: WrkErrors,
    /// Latency distribution, microseconds.
    pub latency_us: WrkLatency,
    /// wrk's own text output, for the record.
    #[serde(default)]
    pub text: String,
    /// The loaded server's CPU time over the run (not measured by wrk: the
    /// runner reads `/proc/PID/stat` before and after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu: Option<ServerCpu>,
    /// The load generator's CPU over the run, when it was pinned to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_cpu: Option<CoreTicks>,
    /// wrk's own CPU time (user + system), seconds, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrk_cpu_s: Option<f64>,
}

/// The CPU time a server process used over one wrk run: the difference of
/// `utime` and `stime` of `/proc/PID/stat` (all threads) after and before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCpu {
    /// User time, clock ticks.
    pub utime_ticks: u64,
    /// System (kernel) time, clock ticks.
    pub stime_ticks: u64,
    /// Clock ticks a second (`getconf CLK_TCK`).
    pub clk_tck: u64,
    /// The server's CPU over the same run, when the server was pinned to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<CoreTicks>,
}

/// What one CPU did over a run, from its line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreTicks {
    /// The CPU's number.
    pub cpu: u32,
    /// Ticks busy: user, nice, system, irq, softirq and steal.
    pub busy_ticks: u64,
    /// Of those, irq and softirq (on loopback, much of the network stack).
    /// With tick-based accounting these ticks are also counted in the time
    /// of the process that was running, so they overlap its `stime`.
    #[serde(default)]
    pub irq_ticks: u64,
    /// All ticks: busy, idle and iowait.
    pub total_ticks: u64,
}

impl CoreTicks {
    /// The share of the time the CPU was busy.
    pub fn busy_share(&self) -> Option<f64> {
        (self.total_ticks > 0).then(|| self.busy_ticks as f64 / self.total_ticks as f64)
    }
}

impl ServerCpu {
    /// User plus system time, seconds.
    pub fn seconds(&self) -> f64 {
        if self.clk_tck == 0 {
            return f64::NAN;
        }
        (self.utime_ticks + self.stime_ticks) as f64 / self.clk_tck as f64
    }

    /// The share of its CPU's time the server process used; `None` when
    /// the CPU was not recorded. Near 1: the server set the pace.
    pub fn share_of_core(&self) -> Option<f64> {
        let core = self.core?;
        let own = self.utime_ticks + self.stime_ticks;
        (core.total_ticks > 0).then(|| (own as f64 / core.total_ticks as f64).min(1.0))
    }

    /// The share of the server's CPU's time that went to anything but the
    /// server process: other processes, and interrupts and softirqs that
    /// came while they or the idle task ran; `None` when the CPU was not
    /// recorded. Well above a few percent means the run was disturbed.
    pub fn others_on_core(&self) -> Option<f64> {
        let core = self.core?;
        let own = self.utime_ticks + self.stime_ticks;
        (core.total_ticks > 0)
            .then(|| core.busy_ticks.saturating_sub(own) as f64 / core.total_ticks as f64)
    }
}

/// wrk's error counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrkErrors {
    /// Connect errors.
    pub connect: u64,
    /// Read errors.
    pub read: u64,
    /// Write errors.
    pub write: u64,
    /// Answers with a status above 399.
    pub status: u64,
    /// Requests that timed out.
    pub timeout: u64,
}

impl WrkErrors {
    /// All of them.
    pub const fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }
}

/// wrk's latency distribution, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WrkLatency {
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Largest.
    pub max: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl Wrk {
    /// Requests a second.
    pub fn rps(&self) -> f64 {
        if self.duration_us == 0 {
            return 0.0;
        }
        self.requests as f64 * 1e6 / self.duration_us as f64
    }

    /// The server's CPU time per request wrk counted, microseconds; `None`
    /// when it was not measured or no request completed. The few requests
    /// still in flight when wrk stops cost CPU but are not counted: at most
    /// `connections` of hundreds of thousands.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.requests > 0).then(|| cpu.seconds() * 1e6 / self.requests as f64)
    }
}

/// The pinned rounds: each server with one HTTP worker bound to one CPU,
/// wrk with one thread bound to another, rounds of feed then floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pinned {
    /// The CPU of both servers (`taskset -c`).
    pub server_cpu: u32,
    /// The CPU of wrk.
    pub load_cpu: u32,
    /// HTTP workers of each server.
    pub workers: u64,
    /// wrk `-t`.
    pub wrk_threads: u64,
    /// wrk `-c`.
    pub wrk_connections: u64,
    /// wrk `-d`, seconds.
    pub duration_s: u64,
    /// Unmeasured wrk seconds against each server before the rounds.
    pub warmup_s: u64,
    /// Rounds of (feed, floor).
    pub rounds: u64,
    /// Users in the feed table.
    pub users: u64,
    /// The floor's body length (the mean of the feed's default answers).
    pub body_bytes: u64,
    /// The pinned feed server's time to its first answer.
    pub feed_ready_ms: u64,
    /// With `--idle-below`: each wrk run waited until the machine was less
    /// busy than this share, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_below_pct: Option<u64>,
    /// Seconds spent waiting for that, in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_waited_s: Option<u64>,
    /// The waiting hit `--idle-timeout` and the runs went on regardless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_gave_up: Option<bool>,
    /// With `--retry-above`: a run in which other processes took more than
    /// this share of the server's CPU, percent, was run again (at most 3
    /// times); the runs kept are the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_above_pct: Option<u64>,
    /// How many runs were run again for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated_runs: Option<u64>,
    /// The wrk runs, each with the server's CPU time.
    pub runs: Vec<Round>,
}

/// Instructions per request under callgrind: each server started under
/// `valgrind --tool=callgrind --instr-atstart=no`, warmed up, then counted
/// over a fixed number of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callgrind {
    /// `valgrind --version`.
    pub valgrind: String,
    /// Users in the feed table.
    pub users: u64,
    /// Requests sent before instrumentation was switched on.
    pub warmup_requests: u64,
    /// Requests counted.
    pub requests: u64,
    /// HTTP workers of each server.
    pub workers: u64,
    /// The CPU of the server.
    pub server_cpu: u32,
    /// The CPU of the client.
    pub load_cpu: u32,
    /// The floor's body length.
    pub body_bytes: u64,
    /// The client, in words.
    pub client: String,
    /// One per server.
    pub runs: Vec<CallgrindRun>,
}

/// One server's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallgrindRun {
    /// Which server.
    pub target: Target,
    /// Requests sent (and answered 200) while instrumentation was on.
    pub requests: u64,
    /// Instructions executed meanwhile, all threads, user space only: the
    /// `totals:` line of callgrind's dump (event `Ir`).
    pub instructions: u64,
}

impl CallgrindRun {
    /// Instructions per request.
    pub fn per_request(&self) -> f64 {
        ratio(self.instructions as f64, self.requests as f64)
    }
}

/// One oha run at a fixed rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OhaRun {
    /// Which server.
    pub target: Target,
    /// The rate asked for, requests a second (`-q`).
    pub rate: u64,
    /// The rate as a share of the feed server's median wrk rate, when it
    /// was derived from it (absent when the rate was given).
    pub share: Option<f64>,
    /// Requests a second achieved.
    pub rps: f64,
    /// Share of requests that got an answer (oha's `successRate`).
    pub success_rate: f64,
    /// Answers by status code.
    pub status: std::collections::BTreeMap<String, u64>,
    /// Failures by message.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Latency percentiles, microseconds, corrected for coordinated omission.
    pub latency_us: OhaLatency,
}

/// oha's latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OhaLatency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl OhaRun {
    /// Answers other than 200 plus failures.
    pub fn bad(&self) -> u64 {
        let not_ok: u64 = self
            .status
            .iter()
            .filter(|(code, _)| code.as_str() != "200")
            .map(|(_, n)| n)
            .sum();
        not_ok + self.errors.values().sum::<u64>()
    }
}

/// What follows from a [`Run`]: feed/floor ratios by round and their
/// medians, for the shared-core rounds and the pinned ones, and the ratio
/// of instructions per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The shared-core rounds (flattened: `rounds` and `median` at the top,
    /// as in files written before the other parts existed).
    #[serde(flatten)]
    pub shared: Ratios,
    /// The pinned rounds, if they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Ratios>,
    /// The callgrind counts, if both servers were counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callgrind: Option<CallgrindSummary>,
}

/// Feed/floor by round, and the medians.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// One entry per round that has both a feed and a floor run.
    pub rounds: Vec<RoundSummary>,
    /// Medians over the rounds; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<RoundSummary>,
}

/// Instructions per request of both servers, and their ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CallgrindSummary {
    /// Feed instructions per request.
    pub feed_per_request: f64,
    /// Floor instructions per request.
    pub floor_per_request: f64,
    /// feed/floor (above 1: the feed does more).
    pub ratio: f64,
    /// feed - floor: what the feed's own work costs a request, in
    /// instructions. Unlike the ratio, it does not depend on how much the
    /// floor does.
    pub difference: f64,
}

/// Feed and floor side by side, and feed/floor ratios.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// The round (0 for the medians).
    pub round: u64,
    /// Feed requests a second.
    pub feed_rps: f64,
    /// Floor requests a second.
    pub floor_rps: f64,
    /// Feed p50, microseconds.
    pub feed_p50_us: f64,
    /// Floor p50, microseconds.
    pub floor_p50_us: f64,
    /// Feed p99, microseconds.
    pub feed_p99_us: f64,
    /// Floor p99, microseconds.
    pub floor_p99_us: f64,
    /// feed/floor of requests a second (below 1: the feed is slower).
    pub rps_ratio: f64,
    /// feed/floor of p50 (above 1: the feed is slower).
    pub p50_ratio: f64,
    /// feed/floor of p99.
    pub p99_ratio: f64,
    /// wrk errors against the feed.
    pub feed_errors: u64,
    /// wrk errors against the floor.
    pub floor_errors: u64,
    /// The feed server's CPU time per request, microseconds, if measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_cpu_us: Option<f64>,
    /// The floor's CPU time per request, microseconds, if measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_cpu_us: Option<f64>,
    /// feed/floor of CPU time per request (above 1: the feed costs more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ratio: Option<f64>,
}

/// The median of `values` (the mean of the middle two for an even count);
/// NaN for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// The median of values that are all present, else `None`.
fn median_of_all(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let values: Option<Vec<f64>> = values.into_iter().collect();
    values.filter(|v| !v.is_empty()).map(median)
}

impl Summary {
    /// The summary of every part of `run`.
    pub fn of(run: &Run) -> Self {
        let callgrind = run.callgrind.as_ref().and_then(|c| {
            let find = |t| c.runs.iter().find(|r| r.target == t);
            let (feed, floor) = (find(Target::Feed)?, find(Target::Floor)?);
            Some(CallgrindSummary {
                feed_per_request: feed.per_request(),
                floor_per_request: floor.per_request(),
                ratio: ratio(feed.per_request(), floor.per_request()),
                difference: feed.per_request() - floor.per_request(),
            })
        });
        Self {
            shared: Ratios::of(&run.rounds),
            pinned: run.pinned.as_ref().map(|p| Ratios::of(&p.runs)),
            callgrind,
        }
    }
}

impl Ratios {
    /// Pairs each round's feed and floor runs and takes medians. The median
    /// ratio is the median of the per-round ratios, not the ratio of the
    /// medians: each round's two runs are neighbours in time, which is what
    /// makes their ratio comparable on a shared machine.
    pub fn of(rounds: &[Round]) -> Self {
        let mut numbers: Vec<u64> = rounds.iter().map(|r| r.round).collect();
        numbers.sort_unstable();
        numbers.dedup();
        let find = |round, target| {
            rounds
                .iter()
                .find(|r| r.round == round && r.target == target)
        };
        let per_round: Vec<RoundSummary> = numbers
            .into_iter()
            .filter_map(|round| {
                let feed = &find(round, Target::Feed)?.wrk;
                let floor = &find(round, Target::Floor)?.wrk;
                let (feed_cpu, floor_cpu) = (feed.cpu_us_per_request(), floor.cpu_us_per_request());
                Some(RoundSummary {
                    round,
                    feed_rps: feed.rps(),
                    floor_rps: floor.rps(),
                    feed_p50_us: feed.latency_us.p50,
                    floor_p50_us: floor.latency_us.p50,
                    feed_p99_us: feed.latency_us.p99,
                    floor_p99_us: floor.latency_us.p99,
                    rps_ratio: ratio(feed.rps(), floor.rps()),
                    p50_ratio: ratio(feed.latency_us.p50, floor.latency_us.p50),
                    p99_ratio: ratio(feed.latency_us.p99, floor.latency_us.p99),
                    feed_errors: feed.errors.total(),
                    floor_errors: floor.errors.total(),
                    feed_cpu_us: feed_cpu,
                    floor_cpu_us: floor_cpu,
                    cpu_ratio: feed_cpu.zip(floor_cpu).map(|(a, b)| ratio(a, b)),
                })
            })
            .collect();
        if per_round.is_empty() {
            return Self {
                rounds: per_round,
                median: None,
            };
        }
        let m = |f: fn(&RoundSummary) -> f64| median(per_round.iter().map(f));
        let mo = |f: fn(&RoundSummary) -> Option<f64>| median_of_all(per_round.iter().map(f));
        let median = RoundSummary {
            round: 0,
            feed_rps: m(|r| r.feed_rps),
            floor_rps: m(|r| r.floor_rps),
            feed_p50_us: m(|r| r.feed_p50_us),
            floor_p50_us: m(|r| r.floor_p50_us),
            feed_p99_us: m(|r| r.feed_p99_us),
            floor_p99_us: m(|r| r.floor_p99_us),
            rps_ratio: m(|r| r.rps_ratio),
            p50_ratio: m(|r| r.p50_ratio),
            p99_ratio: m(|r| r.p99_ratio),
            feed_errors: per_round.iter().map(|r| r.feed_errors).sum(),
            floor_errors: per_round.iter().map(|r| r.floor_errors).sum(),
            feed_cpu_us: mo(|r| r.feed_cpu_us),
            floor_cpu_us: mo(|r| r.floor_cpu_us),
            cpu_ratio: mo(|r| r.cpu_ratio),
        };
        Self {
            rounds: per_round,
            median: Some(median),
        }
    }
}

impl Run {
    /// The run with its [`Summary`] (re)computed.
    pub fn summarized(mut self) -> Self {
        self.summary = Some(Summary::of(&self));
        self
    }
}

/// A latency for people: microseconds below 1 ms, else milliseconds.
pub fn latency(us: f64) -> String {
    if !us.is_finite() {
        "n/a".into()
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

/// A rate (or any count) for people, rounded, with thousands separated by
/// commas.
pub fn rate(rps: f64) -> String {
    if !rps.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", rps.abs().round());
    let mut out = String::new();
    if rps.round() < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn x(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "n/a".into()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// CPU time for people: microseconds with two decimals below 100 µs, one
/// below 1 ms, else as [`latency`].
pub fn cpu(us: f64) -> String {
    if !us.is_finite() {
        "n/a".into()
    } else if us < 100.0 {
        format!("{us:.2} µs")
    } else if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        latency(us)
    }
}

/// The run as markdown: the binaries, then each part that ran: the
/// shared-core wrk rounds with their ratios and medians, the mixed workload,
/// the fixed-rate latencies, the pinned rounds, the callgrind counts; the
/// server's start and memory, and the machine.
pub fn markdown(run: &Run) -> String {
    let summary = run.summary.clone().unwrap_or_else(|| Summary::of(run));
    let c = &run.config;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Run `{}` ({} mode{}) at {}, commit `{}`{}.\n",
        run.command,
        run.mode,
        run.label
            .as_ref()
            .map_or_else(String::new, |l| format!(", label `{l}`")),
        run.machine.date,
        short(&run.machine.git_commit),
        if run.machine.git_dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    );
    if let Some(b) = &run.binaries {
        let _ = writeln!(
            md,
            "Binaries: `{}` (built from {}; configuration `{}`), floor `{}`.\n",
            b.feed, b.feed_commit, b.feed_config, b.floor
        );
    }
    if !summary.shared.rounds.is_empty() {
        let _ = writeln!(
            md,
            "Data: {} users x {} items, catalog {}; {} HTTP workers per server. \
             wrk `-t{} -c{} -d{}s --latency`, {} round(s) of feed then floor after {} s of warm-up each.\n",
            rate(c.users as f64),
            c.feed_len,
            rate(c.catalog_size as f64),
            c.workers,
            c.wrk_threads,
            c.wrk_connections,
            c.duration_s,
            c.rounds,
            c.warmup_s
        );
        let _ = writeln!(
            md,
            "wrk shares the machine's {} cores with the server it loads, so absolute numbers \
             say little about the server alone: compare feed with floor within this run only \
             (the ratio columns).\n",
            run.machine.nproc
        );
        ratio_table(&mut md, &summary.shared);
    }
    if let Some(mixed) = &run.mixed {
        let _ = writeln!(
            md,
            "\nMixed workload against the feed (sizes 1..={}, {}% unknown users, {}% of requests \
             on {} hot users who exhaust their feeds), same wrk settings:\n",
            c.max_size, c.mixed_unknown_pct, c.mixed_hot_pct, c.mixed_hot_users
        );
        md.push_str("| req/s | p50 | p90 | p99 | p99.9 | MB/s read | errors |\n");
        md.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.1} | {} |",
            rate(mixed.rps()),
            latency(mixed.latency_us.p50),
            latency(mixed.latency_us.p90),
            latency(mixed.latency_us.p99),
            latency(mixed.latency_us.p999),
            mixed.bytes as f64 / mixed.duration_us.max(1) as f64,
            mixed.errors.total()
        );
    }
    if !run.oha.is_empty() {
        let _ = writeln!(
            md,
            "\nLatency at a fixed rate, corrected for coordinated omission: \
             `oha -z {}s -c {} -q RATE --latency-correction`, user ids `{}`:\n",
            c.oha_duration_s, c.oha_connections, c.oha_url_regex
        );
        md.push_str("| rate asked | share of feed max | target | req/s achieved | p50 | p99 | p99.9 | not 200 or failed |\n");
        md.push_str("|---:|---:|---|---:|---:|---:|---:|---:|\n");
        for o in &run.oha {
            let share = o
                .share
                .map_or_else(|| "given".to_owned(), |s| format!("{:.0}%", s * 100.0));
            let _ = writeln!(
                md,
                "| {} | {share} | {} | {} | {} | {} | {} | {} |",
                rate(o.rate as f64),
                target_name(o.target),
                rate(o.rps),
                latency(o.latency_us.p50),
                latency(o.latency_us.p99),
                latency(o.latency_us.p999),
                o.bad()
            );
        }
    }
    if let (Some(p), Some(ratios)) = (&run.pinned, &summary.pinned) {
        let _ = writeln!(
            md,
            "\nPinned: each server alone on CPU {} with {} (`taskset -c {}`), \
             wrk `-t{} -c{} -d{}s --latency` on CPU {} (`taskset -c {}`); {} users x {} items, \
             {} round(s) of feed then floor after {} s of warm-up each. Server CPU is utime + \
             stime of the server process (all its threads) over the round, divided by the \
             requests wrk counted.\n",
            p.server_cpu,
            workers(p.workers),
            p.server_cpu,
            p.wrk_threads,
            p.wrk_connections,
            p.duration_s,
            p.load_cpu,
            p.load_cpu,
            rate(p.users as f64),
            c.feed_len,
            p.rounds,
            p.warmup_s
        );
        if let Some(pct) = p.idle_below_pct {
            let _ = writeln!(
                md,
                "Each wrk run waited until the machine was less than {pct}% busy: {} s of \
                 waiting in all{}.\n",
                p.idle_waited_s.unwrap_or(0),
                if p.idle_gave_up == Some(true) {
                    ", and then gave up and went on regardless"
                } else {
                    ""
                }
            );
        }
        if let Some(pct) = p.retry_above_pct {
            let _ = writeln!(
                md,
                "A run in which other processes took more than {pct}% of the server's CPU \
                 was run again, at most 3 times: {} run(s) were.\n",
                p.repeated_runs.unwrap_or(0)
            );
        }
        ratio_table(&mut md, ratios);
        cpu_shares(&mut md, p);
    }
    if let Some(cg) = &run.callgrind {
        let _ = writeln!(
            md,
            "\nInstructions per request under callgrind ({}): each server with {} \
             on CPU {}, {} users, {} requests with instrumentation off, then {} counted \
             ({}). Instructions executed in user space by all the server's threads (`Ir`); \
             the kernel's work is not counted.\n",
            cg.valgrind,
            workers(cg.workers),
            cg.server_cpu,
            rate(cg.users as f64),
            rate(cg.warmup_requests as f64),
            rate(cg.requests as f64),
            cg.client
        );
        md.push_str("| target | requests | instructions | per request |\n");
        md.push_str("|---|---:|---:|---:|\n");
        for r in &cg.runs {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                target_name(r.target),
                rate(r.requests as f64),
                rate(r.instructions as f64),
                rate(r.per_request())
            );
        }
        if let Some(s) = &summary.callgrind {
            let _ = writeln!(md, "| **feed/floor** | | | **{}** |", x(s.ratio));
            let _ = writeln!(md, "| feed - floor | | | {} |", rate(s.difference));
        }
    }
    if let Some(s) = &run.server {
        md.push_str("\n| feed-server: time to ready | generation | RSS at ready | RSS after wrk | RSS at end | peak RSS | body of a default answer | floor RSS |\n");
        md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let _ = writeln!(
            md,
            "| {:.2} s | {:.2} s | {} | {} | {} | {} | {} bytes | {} |",
            s.ready_ms as f64 / 1000.0,
            s.generation_ms as f64 / 1000.0,
            mib(s.rss_ready_kib),
            mib(s.rss_after_wrk_kib),
            mib(s.rss_end_kib),
            mib(s.hwm_end_kib),
            s.body_bytes,
            mib(s.floor_rss_end_kib)
        );
    }
    let m = &run.machine;
    let _ = writeln!(
        md,
        "\nMachine: {} cores ({}), {:.1} GiB, Linux {}.",
        m.nproc,
        m.cpu,
        m.mem_total_kib as f64 / 1024.0 / 1024.0,
        m.kernel
    );
    // A part that did not run leaves its blank line behind.
    while md.contains("\n\n\n") {
        md = md.replace("\n\n\n", "\n\n");
    }
    md
}

/// Where the two CPUs' time went in each pinned run, when recorded.
fn cpu_shares(md: &mut String, p: &Pinned) {
    let rows: Vec<_> = p
        .runs
        .iter()
        .filter_map(|r| {
            let server = r.wrk.server_cpu?;
            let load = r.wrk.load_cpu?;
            let wrk = r.wrk.wrk_cpu_s.and_then(|s| {
                let seconds = load.total_ticks as f64 / server.clk_tck as f64;
                (seconds > 0.0).then(|| (s / seconds).min(1.0))
            });
            Some((
                r,
                server.share_of_core()?,
                server.others_on_core()?,
                load.busy_share()?,
                wrk,
            ))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nWhere the two CPUs' time went (`/proc/stat` and `/proc/PID/stat`). With wrk's \
         CPU near 100% busy with wrk while the server used less than all of its own and \
         other processes little of it, wrk set the pace, not the server: the req/s and latency \
         ratios then say little, and CPU time per request is the figure to read. The rest \
         of the server's CPU went to whatever else the machine ran there (and to the \
         interrupts that came meanwhile): a run with more than a few percent of it was \
         disturbed.\n"
    );
    let _ = writeln!(
        md,
        "| round | target | server process on CPU {0} | anything else on CPU {0} | CPU {1} busy | of which wrk |",
        p.server_cpu, p.load_cpu
    );
    md.push_str("|---|---|---:|---:|---:|---:|\n");
    let pct = |v: f64| format!("{:.0}%", v * 100.0);
    for (r, server, others, load, wrk) in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.round,
            target_name(r.target),
            pct(server),
            pct(others),
            pct(load),
            wrk.map_or_else(|| "n/a".into(), pct)
        );
    }
}

fn workers(n: u64) -> String {
    if n == 1 {
        "1 HTTP worker".into()
    } else {
        format!("{n} HTTP workers")
    }
}

/// The rounds of `ratios` and their median as a table; the server-CPU
/// columns only when some round has them.
fn ratio_table(md: &mut String, ratios: &Ratios) {
    let with_cpu = ratios.rounds.iter().any(|r| r.cpu_ratio.is_some());

    md.push_str("| round | feed req/s | floor req/s | req/s feed/floor | feed p50 | floor p50 | p50 feed/floor | feed p99 | floor p99 | p99 feed/floor | errors feed / floor |");
    if with_cpu {
        md.push_str(" feed CPU/request | floor CPU/request | CPU feed/floor |");
    }

    md.push_str("\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if with_cpu {
        md.push_str("---:|---:|---:|");
    }

    md.push('\n');
    let row = |md: &mut String, label: &str, r: &RoundSummary| {
        let _ = write!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            rate(r.feed_rps),
            rate(r.floor_rps),
            x(r.rps_ratio),
            latency(r.feed_p50_us),
            latency(r.floor_p50_us),
            x(r.p50_ratio),
            latency(r.feed_p99_us),
            latency(r.floor_p99_us),
            x(r.p99_ratio),
            r.feed_errors,
            r.floor_errors
        );
        if with_cpu {
            let or_na = |v: Option<f64>, f: fn(f64) -> String| v.map_or_else(|| "n/a".into(), f);
            let _ = write!(
                md,
                " {} | {} | {} |",
                or_na(r.feed_cpu_us, cpu),
                or_na(r.floor_cpu_us, cpu),
                or_na(r.cpu_ratio, x)
            );
        }
        md.push('\n');
    };
    for r in &ratios.rounds {
        row(md, &r.round.to_string(), r);
    }
    if ratios.rounds.len() > 1
        && let Some(median) = &ratios.median
    {
        row(md, "**median**", median);
    }
}

/// `feed` or `floor`.
pub const fn target_name(target: Target) -> &'static str {
    match target {
        Target::Feed => "feed",
        Target::Floor => "floor",
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrk(requests: u64, p50: f64, p99: f64, errors: u64) -> Wrk {
        Wrk {
            requests,
            duration_us: 2_000_000,
            bytes: requests * 200,
            errors: WrkErrors {
                connect: 0,
                read: 0,
                write: 0,
                status: errors,
                timeout: 0,
            },
            latency_us: WrkLatency {
                mean: p50,
                stdev: 1.0,
                max: p99 * 2.0,
                p50,
                p90: p99 / 2.0,
                p99,
                p999: p99 * 1.5,
            },
            text: String::new(),
            server_cpu: None,
            load_cpu: None,
            wrk_cpu_s: None,
        }
    }

    fn with_cpu(mut w: Wrk, ticks: u64) -> Wrk {
        w.server_cpu = Some(ServerCpu {
            utime_ticks: ticks - ticks / 4,
            stime_ticks: ticks / 4,
            clk_tck: 100,
            core: None,
        });
        w
    }

    fn on_core(mut w: Wrk, busy: u64, irq: u64, total: u64, load_busy: u64) -> Wrk {
        if let Some(c) = &mut w.server_cpu {
            c.core = Some(CoreTicks {
                cpu: 0,
                busy_ticks: busy,
                irq_ticks: irq,
                total_ticks: total,
            });
        }
        w.load_cpu = Some(CoreTicks {
            cpu: 1,
            busy_ticks: load_busy,
            irq_ticks: 0,
            total_ticks: total,
        });
        // wrk itself: 180 of the 200 ticks (at 100 a second).
        w.wrk_cpu_s = Some(1.8);
        w
    }

    fn round(round: u64, target: Target, w: Wrk) -> Round {
        Round {
            round,
            target,
            wrk: w,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median([]).is_nan());
    }

    #[test]
    fn ratios_pair_each_round_and_take_the_median_of_ratios() {
        let rounds = vec![
            round(1, Target::Feed, wrk(100, 1000.0, 4000.0, 0)),
            round(1, Target::Floor, wrk(200, 500.0, 1000.0, 0)),
            round(2, Target::Feed, wrk(150, 1000.0, 3000.0, 1)),
            round(2, Target::Floor, wrk(200, 800.0, 1000.0, 0)),
            round(3, Target::Feed, wrk(100, 900.0, 3000.0, 0)),
            round(3, Target::Floor, wrk(100, 900.0, 2000.0, 2)),
            // A round without its floor run is left out.
            round(4, Target::Feed, wrk(1, 1.0, 1.0, 0)),
        ];
        let s = Ratios::of(&rounds);
        assert_eq!(s.rounds.len(), 3);
        assert_eq!(s.rounds[0].rps_ratio, 0.5);
        assert_eq!(s.rounds[0].feed_rps, 50.0);
        assert_eq!(
            s.rounds.iter().map(|r| r.rps_ratio).collect::<Vec<_>>(),
            [0.5, 0.75, 1.0]
        );
        let median = s.median.unwrap();
        assert_eq!(median.rps_ratio, 0.75);
        assert_eq!(median.p50_ratio, 1.25);
        assert_eq!(median.p99_ratio, 3.0);
        assert_eq!(median.feed_rps, 50.0);
        assert_eq!((median.feed_errors, median.floor_errors), (1, 2));
        // No server CPU was measured: no CPU figures, not zeros.
        assert_eq!(median.cpu_ratio, None);
        assert_eq!(Ratios::of(&[]).median, None);
    }

    #[test]
    fn cpu_per_request_is_ticks_over_requests_and_its_ratio_the_median_of_ratios() {
        // 100 ticks at 100 a second is 1 s; over 100,000 requests 10 µs.
        let w = with_cpu(wrk(100_000, 1.0, 2.0, 0), 100);
        assert_eq!(w.cpu_us_per_request(), Some(10.0));
        assert_eq!(
            with_cpu(wrk(0, 1.0, 2.0, 0), 100).cpu_us_per_request(),
            None
        );
        let rounds = vec![
            round(1, Target::Feed, with_cpu(wrk(100_000, 1.0, 2.0, 0), 120)),
            round(1, Target::Floor, with_cpu(wrk(100_000, 1.0, 2.0, 0), 100)),
            round(2, Target::Feed, with_cpu(wrk(200_000, 1.0, 2.0, 0), 300)),
            round(2, Target::Floor, with_cpu(wrk(100_000, 1.0, 2.0, 0), 100)),
            round(3, Target::Feed, with_cpu(wrk(100_000, 1.0, 2.0, 0), 110)),
            round(3, Target::Floor, with_cpu(wrk(100_000, 1.0, 2.0, 0), 100)),
        ];
        let s = Ratios::of(&rounds);
        let ratios: Vec<f64> = s.rounds.iter().map(|r| r.cpu_ratio.unwrap()).collect();
        assert_eq!(ratios.len(), 3);
        for (got, want) in ratios.iter().zip([1.2, 1.5, 1.1]) {
            assert!((got - want).abs() < 1e-12, "{got} != {want}");
        }
        let median = s.median.unwrap();
        assert!((median.cpu_ratio.unwrap() - 1.2).abs() < 1e-12);
        assert!((median.feed_cpu_us.unwrap() - 12.0).abs() < 1e-12);
        assert_eq!(median.floor_cpu_us, Some(10.0));
        // One round without CPU: no median CPU rather than a median of some.
        let mut partial = rounds.clone();
        partial[0].wrk.server_cpu = None;
        assert_eq!(Ratios::of(&partial).median.unwrap().cpu_ratio, None);
    }

    /// The smoke run of `benchmark/results` written before the pinned and
    /// callgrind parts existed, cut down: it must still read and render.
    const OLD_RUN: &str = r#"{
        "mode": "smoke", "command": "benchmark/run.sh --smoke",
        "machine": {"nproc": 2, "mem_total_kib": 24000000, "kernel": "6", "cpu": "x",
                    "git_commit": "0123456789abcdef", "git_dirty": false, "date": "d"},
        "config": {"users": 100000, "feed_len": 200, "catalog_size": 10000000,
                   "max_size": 200, "workers": 2, "wrk_threads": 2, "wrk_connections": 200,
                   "duration_s": 3, "warmup_s": 1, "rounds": 1, "oha_duration_s": 3,
                   "oha_connections": 10, "oha_url_regex": "0[0-9]{5}",
                   "mixed_unknown_pct": 5, "mixed_hot_pct": 10, "mixed_hot_users": 100},
        "server": {"ready_ms": 160, "generation_ms": 80, "rss_ready_kib": 1, "rss_after_wrk_kib": 1,
                   "rss_end_kib": 1, "hwm_end_kib": 1, "body_bytes": 80, "floor_rss_end_kib": 1},
        "rounds": [], "mixed": null, "oha": [],
        "summary": {"rounds": [], "median": {"feed_rps": null}}
    }"#;

    #[test]
    fn a_file_from_before_the_new_parts_reads_renders_and_writes_back_the_same_shape() {
        let run: Run = serde_json::from_str(OLD_RUN).unwrap();
        assert!(run.pinned.is_none() && run.callgrind.is_none() && run.binaries.is_none());
        let run = run.summarized();
        let md = markdown(&run);
        assert!(!md.contains("Pinned") && !md.contains("callgrind") && !md.contains("CPU"));
        assert!(md.contains("time to ready"));
        let written = serde_json::to_value(&run).unwrap();
        for absent in ["pinned", "callgrind", "binaries", "label"] {
            assert!(written.get(absent).is_none(), "{absent} written");
        }
        assert_eq!(written["summary"], serde_json::json!({"rounds": []}));
    }

    #[test]
    fn the_isolated_parts_summarize_and_render() {
        let mut run: Run = serde_json::from_str(OLD_RUN).unwrap();
        run.server = None;
        run.label = Some("before".into());
        run.pinned = Some(Pinned {
            server_cpu: 0,
            load_cpu: 1,
            workers: 1,
            wrk_threads: 1,
            wrk_connections: 50,
            duration_s: 3,
            warmup_s: 1,
            rounds: 1,
            users: 100_000,
            body_bytes: 80,
            feed_ready_ms: 200,
            idle_below_pct: Some(10),
            idle_waited_s: Some(4),
            idle_gave_up: Some(false),
            retry_above_pct: Some(10),
            repeated_runs: Some(2),
            runs: vec![
                // 120 of 200 ticks the server's, 130 busy: 5% else.
                round(
                    1,
                    Target::Feed,
                    on_core(
                        with_cpu(wrk(100_000, 500.0, 900.0, 0), 120),
                        130,
                        10,
                        200,
                        199,
                    ),
                ),
                // Busy less than the server's own (tick rounding): 0%.
                round(
                    1,
                    Target::Floor,
                    on_core(
                        with_cpu(wrk(100_000, 400.0, 600.0, 0), 100),
                        99,
                        4,
                        200,
                        200,
                    ),
                ),
            ],
        });
        run.callgrind = Some(Callgrind {
            valgrind: "valgrind-3.19.0".into(),
            users: 100_000,
            warmup_requests: 500,
            requests: 2000,
            workers: 1,
            server_cpu: 0,
            load_cpu: 1,
            body_bytes: 80,
            client: "curl".into(),
            runs: vec![
                CallgrindRun {
                    target: Target::Feed,
                    requests: 2000,
                    instructions: 50_000_000,
                },
                CallgrindRun {
                    target: Target::Floor,
                    requests: 2000,
                    instructions: 40_000_000,
                },
            ],
        });
        let run = run.summarized();
        let summary = run.summary.as_ref().unwrap();
        assert!(summary.shared.rounds.is_empty() && summary.shared.median.is_none());
        let pinned = summary.pinned.as_ref().unwrap().median.unwrap();
        assert_eq!(pinned.p99_ratio, 1.5);
        assert!((pinned.cpu_ratio.unwrap() - 1.2).abs() < 1e-12);
        let cg = summary.callgrind.unwrap();
        assert_eq!(
            (
                cg.feed_per_request,
                cg.floor_per_request,
                cg.ratio,
                cg.difference
            ),
            (25_000.0, 20_000.0, 1.25, 5_000.0)
        );
        let md = markdown(&run);
        assert!(md.contains("label `before`"));
        assert!(
            md.contains("was run again, at most 3 times: 2 run(s) were."),
            "{md}"
        );
        assert!(
            md.contains(
                "| 1 | feed | 60% | 5% | 100% | 90% |\n| 1 | floor | 50% | 0% | 100% | 90% |\n"
            ),
            "{md}"
        );
        assert!(
            md.contains("less than 10% busy: 4 s of waiting in all.\n"),
            "{md}"
        );
        assert!(
            !md.contains("time to ready") && !md.contains("wrk shares"),
            "{md}"
        );
        assert!(!md.contains("\n\n\n"), "{md}");
        assert!(md.contains("| 1 | 50,000 | 50,000 | 1.00 | 500 µs | 400 µs | 1.25 | 900 µs | 600 µs | 1.50 | 0 / 0 | 12.00 µs | 10.00 µs | 1.20 |"), "{md}");
        assert!(
            md.contains("| feed | 2,000 | 50,000,000 | 25,000 |"),
            "{md}"
        );
        assert!(
            md.contains("| **feed/floor** | | | **1.25** |\n| feed - floor | | | 5,000 |"),
            "{md}"
        );
        // And the JSON it writes reads back.
        let back: Run = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
        assert_eq!(back.pinned, run.pinned);
        assert_eq!(back.callgrind, run.callgrind);
    }

    #[test]
    fn people_numbers() {
        assert_eq!(latency(850.4), "850 µs");
        assert_eq!(latency(1234.0), "1.23 ms");
        assert_eq!(latency(12_345.0), "12.3 ms");
        assert_eq!(latency(f64::NAN), "n/a");
        assert_eq!(rate(1_234_567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(1000.0), "1,000");
        assert_eq!(rate(-123.0), "-123");
        assert_eq!(rate(-1234.0), "-1,234");
        assert_eq!(cpu(9.876), "9.88 µs");
        assert_eq!(cpu(12.344), "12.34 µs");
        assert_eq!(cpu(123.44), "123.4 µs");
    }
}
