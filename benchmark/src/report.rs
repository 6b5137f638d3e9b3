//! The results of one `benchmark/run.sh` run: what the runner measured
//! ([`Run`], the JSON it writes), what follows from it ([`Summary`]), and
//! the markdown table ([`markdown`]).
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
    /// The command line that produced the run.
    pub command: String,
    /// The machine and the code it ran on.
    pub machine: Machine,
    /// What was asked of the servers and the load generators.
    pub config: Config,
    /// The feed server's start-up and memory.
    pub server: Server,
    /// The closed-loop wrk runs, alternating feed and floor.
    pub rounds: Vec<Round>,
    /// The mixed workload against the feed server, if it ran.
    pub mixed: Option<Wrk>,
    /// The fixed-rate oha runs.
    pub oha: Vec<OhaRun>,
    /// Computed by [`Summary::of`]; any value in the input is replaced.
    #[serde(default)]
    pub summary: Option<Summary>,
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

/// The feed server's start-up and memory, and the floor's memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// From spawning the process to the first successful `GET /feed/1`.
    pub ready_ms: u64,
    /// `generation_ms` of the server's ready log line.
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

/// What follows from a [`Run`]: feed/floor ratios by round and their medians.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// One entry per round that has both a feed and a floor run.
    pub rounds: Vec<RoundSummary>,
    /// Medians over the rounds.
    pub median: RoundSummary,
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

impl Summary {
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
                })
            })
            .collect();
        let m = |f: fn(&RoundSummary) -> f64| median(per_round.iter().map(f));
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
        };
        Self {
            rounds: per_round,
            median,
        }
    }
}

impl Run {
    /// The run with its [`Summary`] (re)computed.
    pub fn summarized(mut self) -> Self {
        self.summary = Some(Summary::of(&self.rounds));
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

/// A rate for people, with thousands separated by commas.
pub fn rate(rps: f64) -> String {
    if !rps.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", rps.round());
    let mut out = String::new();
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

/// The run as markdown: the parameters, the wrk rounds with their ratios and
/// medians, the mixed workload, the fixed-rate latencies, the server's start
/// and memory, and the machine.
pub fn markdown(run: &Run) -> String {
    let summary = run
        .summary
        .clone()
        .unwrap_or_else(|| Summary::of(&run.rounds));
    let c = &run.config;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Run `{}` ({} mode) at {}, commit `{}`{}.\n",
        run.command,
        run.mode,
        run.machine.date,
        short(&run.machine.git_commit),
        if run.machine.git_dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    );
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
    md.push_str("| round | feed req/s | floor req/s | req/s feed/floor | feed p50 | floor p50 | p50 feed/floor | feed p99 | floor p99 | p99 feed/floor | errors feed / floor |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let row = |md: &mut String, label: &str, r: &RoundSummary| {
        let _ = writeln!(
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
    };
    for r in &summary.rounds {
        row(&mut md, &r.round.to_string(), r);
    }
    if summary.rounds.len() > 1 {
        row(&mut md, "**median**", &summary.median);
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
    let s = &run.server;
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
    let m = &run.machine;
    let _ = writeln!(
        md,
        "\nMachine: {} cores ({}), {:.1} GiB, Linux {}.",
        m.nproc,
        m.cpu,
        m.mem_total_kib as f64 / 1024.0 / 1024.0,
        m.kernel
    );
    md
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
        }
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
        let s = Summary::of(&rounds);
        assert_eq!(s.rounds.len(), 3);
        assert_eq!(s.rounds[0].rps_ratio, 0.5);
        assert_eq!(s.rounds[0].feed_rps, 50.0);
        assert_eq!(
            s.rounds.iter().map(|r| r.rps_ratio).collect::<Vec<_>>(),
            [0.5, 0.75, 1.0]
        );
        assert_eq!(s.median.rps_ratio, 0.75);
        assert_eq!(s.median.p50_ratio, 1.25);
        assert_eq!(s.median.p99_ratio, 3.0);
        assert_eq!(s.median.feed_rps, 50.0);
        assert_eq!((s.median.feed_errors, s.median.floor_errors), (1, 2));
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
    }
}
