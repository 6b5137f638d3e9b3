//! The run's plot: panels of bars, feed next to floor, three to a row,
//! one panel for each thing the run measured:
//!
//! 1. requests a second under wrk on shared cores, by round (and the median);
//! 2. wrk's p50 and p99 there (closed loop, so coordinated omission hides
//!    the worst), median over the rounds;
//! 3. oha's p50, p99 and p99.9 at each fixed rate (corrected), on a log
//!    scale because the tail can be orders of magnitude above the median;
//! 4. and 5. the same as 1 and 2 for the pinned rounds;
//! 6. the servers' CPU time per request (medians, shared and pinned);
//! 7. instructions per request under callgrind.
//!
//! A part that did not run has no panels. It is an SVG drawn by `plotters`
//! with its SVG backend only: no system fonts and no image libraries, so it
//! builds on any machine that builds the rest.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Ratios, Run, Summary, Target, cpu, latency, rate, target_name};

const FEED: RGBColor = RGBColor(31, 119, 180);
const FLOOR: RGBColor = RGBColor(160, 160, 160);
const WIDTH: u32 = 1500;
const TITLE_HEIGHT: u32 = 36;
const ROW_HEIGHT: u32 = 524;
const COLUMNS: usize = 3;

/// One group of two bars: a label and the feed and floor values.
struct Group {
    label: String,
    feed: f64,
    floor: f64,
}

/// One chart.
struct Panel {
    caption: String,
    y_desc: &'static str,
    groups: Vec<Group>,
    log: bool,
    show: fn(f64) -> String,
}

/// An error while drawing (plotters' error, as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotError(String);

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot draw the plot: {}", self.0)
    }
}

impl std::error::Error for PlotError {}

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

fn x(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "n/a".into()
    }
}

/// Requests a second by round, and the median when there are several rounds.
fn throughput(ratios: &Ratios) -> Vec<Group> {
    let mut groups: Vec<Group> = ratios
        .rounds
        .iter()
        .map(|r| Group {
            label: format!("round {}", r.round),
            feed: r.feed_rps,
            floor: r.floor_rps,
        })
        .collect();
    if let (true, Some(m)) = (ratios.rounds.len() > 1, &ratios.median) {
        groups.push(Group {
            label: "median".into(),
            feed: m.feed_rps,
            floor: m.floor_rps,
        });
    }
    groups
}

/// The median p50 and p99.
fn wrk_latency(ratios: &Ratios) -> Vec<Group> {
    ratios.median.as_ref().map_or_else(Vec::new, |m| {
        vec![
            Group {
                label: "p50".into(),
                feed: m.feed_p50_us,
                floor: m.floor_p50_us,
            },
            Group {
                label: "p99".into(),
                feed: m.feed_p99_us,
                floor: m.floor_p99_us,
            },
        ]
    })
}

fn panels(run: &Run, summary: &Summary) -> Vec<Panel> {
    let mut panels = Vec::new();
    let median_ratio = |r: &Ratios, f: fn(&crate::report::RoundSummary) -> f64| {
        r.median.as_ref().map_or(f64::NAN, f)
    };
    if !summary.shared.rounds.is_empty() {
        panels.push(Panel {
            caption: format!(
                "req/s under wrk (median feed/floor {:.2})",
                median_ratio(&summary.shared, |m| m.rps_ratio)
            ),
            y_desc: "requests per second",
            groups: throughput(&summary.shared),
            log: false,
            show: rate,
        });
        panels.push(Panel {
            caption: "wrk latency, median of rounds (closed loop)".into(),
            y_desc: "latency",
            groups: wrk_latency(&summary.shared),
            log: false,
            show: latency,
        });
    }
    if !run.oha.is_empty() {
        let mut rates: Vec<u64> = run.oha.iter().map(|o| o.rate).collect();
        rates.sort_unstable();
        rates.dedup();
        let mut oha = Vec::new();
        for r in rates {
            let find = |t| run.oha.iter().find(|o| o.rate == r && o.target == t);
            let (Some(feed), Some(floor)) = (find(Target::Feed), find(Target::Floor)) else {
                continue;
            };
            for (name, f, g) in [
                ("p50", feed.latency_us.p50, floor.latency_us.p50),
                ("p99", feed.latency_us.p99, floor.latency_us.p99),
                ("p99.9", feed.latency_us.p999, floor.latency_us.p999),
            ] {
                oha.push(Group {
                    label: format!("{name} @{}", rate(r as f64)),
                    feed: f,
                    floor: g,
                });
            }
        }
        panels.push(Panel {
            caption: "oha at fixed rates (corrected), log scale".into(),
            y_desc: "latency",
            groups: oha,
            log: true,
            show: latency,
        });
    }
    if let (Some(p), Some(pinned)) = (&run.pinned, &summary.pinned) {
        panels.push(Panel {
            caption: format!(
                "pinned req/s, wrk -t{} -c{} (median feed/floor {})",
                p.wrk_threads,
                p.wrk_connections,
                x(median_ratio(pinned, |m| m.rps_ratio))
            ),
            y_desc: "requests per second",
            groups: throughput(pinned),
            log: false,
            show: rate,
        });
        panels.push(Panel {
            caption: format!(
                "pinned wrk latency, median (p99 feed/floor {})",
                x(median_ratio(pinned, |m| m.p99_ratio))
            ),
            y_desc: "latency",
            groups: wrk_latency(pinned),
            log: false,
            show: latency,
        });
    }
    let mut cpu_groups = Vec::new();
    let mut cpu_ratios = Vec::new();
    for (name, ratios) in [
        ("shared", Some(&summary.shared)),
        ("pinned", summary.pinned.as_ref()),
    ] {
        let Some(m) = ratios.and_then(|r| r.median.as_ref()) else {
            continue;
        };
        if let (Some(feed), Some(floor), Some(ratio)) = (m.feed_cpu_us, m.floor_cpu_us, m.cpu_ratio)
        {
            cpu_groups.push(Group {
                label: name.into(),
                feed,
                floor,
            });
            cpu_ratios.push(format!("{name} {}", x(ratio)));
        }
    }
    if !cpu_groups.is_empty() {
        panels.push(Panel {
            caption: format!(
                "server CPU per request, median (feed/floor {})",
                cpu_ratios.join(", ")
            ),
            y_desc: "CPU time per request",
            groups: cpu_groups,
            log: false,
            show: cpu,
        });
    }
    if let Some(cg) = &summary.callgrind {
        panels.push(Panel {
            caption: format!(
                "instructions per request, callgrind (feed/floor {})",
                x(cg.ratio)
            ),
            y_desc: "instructions per request",
            groups: vec![Group {
                label: "user-space instructions".into(),
                feed: cg.feed_per_request,
                floor: cg.floor_per_request,
            }],
            log: false,
            show: rate,
        });
    }
    panels
}

fn title(run: &Run) -> String {
    let label = run
        .label
        .as_ref()
        .map_or_else(String::new, |l| format!(", {l}"));
    if !run.rounds.is_empty() {
        return format!(
            "feed-server vs constant-response floor: {} users x {}, wrk -t{} -c{} -d{}s, {} mode{label}, {}",
            rate(run.config.users as f64),
            run.config.feed_len,
            run.config.wrk_threads,
            run.config.wrk_connections,
            run.config.duration_s,
            run.mode,
            run.machine.date
        );
    }
    let mut parts = Vec::new();
    if let Some(p) = &run.pinned {
        parts.push(format!(
            "pinned {} users x {}, wrk -t{} -c{} -d{}s",
            rate(p.users as f64),
            run.config.feed_len,
            p.wrk_threads,
            p.wrk_connections,
            p.duration_s
        ));
    }
    if let Some(c) = &run.callgrind {
        parts.push(format!(
            "callgrind {} users, {} requests",
            rate(c.users as f64),
            rate(c.requests as f64)
        ));
    }
    format!(
        "feed-server vs constant-response floor: {}, {} mode{label}, {}",
        parts.join("; "),
        run.mode,
        run.machine.date
    )
}

/// The plot of `run` as an SVG document.
///
/// # Errors
/// [`PlotError`] if plotters fails (it does not for finite values).
pub fn svg(run: &Run) -> Result<String, PlotError> {
    let summary = run.summary.clone().unwrap_or_else(|| Summary::of(run));
    let panels = panels(run, &summary);
    let rows = panels.len().div_ceil(COLUMNS).max(1);
    let height = TITLE_HEIGHT + ROW_HEIGHT * rows as u32;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, body) = root.split_vertically(TITLE_HEIGHT);
        top.draw_text(
            &title(run),
            &("sans-serif", 17).into_font().color(&BLACK),
            (12, 10),
        )
        .map_err(err)?;
        let areas = body.split_evenly((rows, COLUMNS));
        for (area, panel) in areas.iter().zip(&panels) {
            bars(
                area,
                &panel.caption,
                panel.y_desc,
                &panel.groups,
                panel.log,
                panel.show,
            )?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// Draws `groups` as pairs of bars (feed left, floor right) with the value
/// above each bar.
fn bars(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    groups: &[Group],
    log: bool,
    show: fn(f64) -> String,
) -> Result<(), PlotError> {
    let finite = || {
        groups
            .iter()
            .flat_map(|g| [g.feed, g.floor])
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let top = finite().fold(1.0f64, f64::max);
    let bottom = finite().fold(top, f64::min);
    let n = groups.len().max(1);
    let x_range = -0.5f64..(n as f64 - 0.5);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70);
    let label_of = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            groups
                .get(i as usize)
                .map(|g| g.label.clone())
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    // Bars start at the axis: 0 on a linear scale, below the smallest value on a log one.
    if log {
        let lo = 10f64.powf((bottom / 2.0).log10().floor());
        let hi = 10f64.powf((top * 2.0).log10().ceil());
        let mut chart = builder
            .build_cartesian_2d(x_range, (lo..hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&label_of)
            .y_label_formatter(&|y| show(*y))
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        draw_pairs(&mut chart, groups, lo, show)
    } else {
        let mut chart = builder
            .build_cartesian_2d(x_range, 0f64..top * 1.15)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&label_of)
            .y_label_formatter(&|y| show(*y))
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        draw_pairs(&mut chart, groups, 0.0, show)
    }
}

fn draw_pairs<'a, Y>(
    chart: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    groups: &[Group],
    base: f64,
    show: fn(f64) -> String,
) -> Result<(), PlotError>
where
    Y: Ranged<ValueType = f64>,
{
    const HALF: f64 = 0.18;
    for (target, color, offset) in [(Target::Feed, FEED, -HALF), (Target::Floor, FLOOR, HALF)] {
        let value = |g: &Group| match target {
            Target::Feed => g.feed,
            Target::Floor => g.floor,
        };
        let shown: Vec<(f64, f64)> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| value(g).is_finite() && value(g) > base)
            .map(|(i, g)| (i as f64 + offset, value(g)))
            .collect();
        chart
            .draw_series(shown.iter().map(|&(x, v)| {
                Rectangle::new(
                    [(x - HALF * 0.9, base), (x + HALF * 0.9, v)],
                    color.filled(),
                )
            }))
            .map_err(err)?
            .label(target_name(target))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart
            .draw_series(shown.iter().map(|&(x, v)| {
                // Centred just above the bar.
                EmptyElement::at((x, v))
                    + Text::new(
                        show(v),
                        (0, -3),
                        ("sans-serif", 10)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(err)?;
    Ok(())
}
