//! The run's plot: three panels of bars, feed next to floor.
//!
//! 1. requests a second under wrk, by round (and the median);
//! 2. wrk's p50 and p99 (closed loop, so coordinated omission hides the
//!    worst), median over the rounds;
//! 3. oha's p50, p99 and p99.9 at each fixed rate (corrected), on a log
//!    scale because the tail can be orders of magnitude above the median.
//!
//! It is an SVG drawn by `plotters` with its SVG backend only: no system
//! fonts and no image libraries, so it builds on any machine that builds
//! the rest.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Run, Summary, Target, latency, rate, target_name};

const FEED: RGBColor = RGBColor(31, 119, 180);
const FLOOR: RGBColor = RGBColor(160, 160, 160);
const WIDTH: u32 = 1500;
const HEIGHT: u32 = 560;

/// One group of two bars: a label and the feed and floor values.
struct Group {
    label: String,
    feed: f64,
    floor: f64,
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

/// The plot of `run` as an SVG document.
///
/// # Errors
/// [`PlotError`] if plotters fails (it does not for finite values).
pub fn svg(run: &Run) -> Result<String, PlotError> {
    let summary = run
        .summary
        .clone()
        .unwrap_or_else(|| Summary::of(&run.rounds));
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = format!(
            "feed-server vs constant-response floor: {} users x {}, wrk -t{} -c{} -d{}s, {} mode, {}",
            rate(run.config.users as f64),
            run.config.feed_len,
            run.config.wrk_threads,
            run.config.wrk_connections,
            run.config.duration_s,
            run.mode,
            run.machine.date
        );
        let (top, body) = root.split_vertically(36);
        top.draw_text(
            &title,
            &("sans-serif", 17).into_font().color(&BLACK),
            (12, 10),
        )
        .map_err(err)?;
        let panels = body.split_evenly((1, 3));

        let mut throughput: Vec<Group> = summary
            .rounds
            .iter()
            .map(|r| Group {
                label: format!("round {}", r.round),
                feed: r.feed_rps,
                floor: r.floor_rps,
            })
            .collect();
        if summary.rounds.len() > 1 {
            throughput.push(Group {
                label: "median".into(),
                feed: summary.median.feed_rps,
                floor: summary.median.floor_rps,
            });
        }
        bars(
            &panels[0],
            &format!(
                "req/s under wrk (median feed/floor {:.2})",
                summary.median.rps_ratio
            ),
            "requests per second",
            &throughput,
            false,
            rate,
        )?;

        let wrk_latency = vec![
            Group {
                label: "p50".into(),
                feed: summary.median.feed_p50_us,
                floor: summary.median.floor_p50_us,
            },
            Group {
                label: "p99".into(),
                feed: summary.median.feed_p99_us,
                floor: summary.median.floor_p99_us,
            },
        ];
        bars(
            &panels[1],
            "wrk latency, median of rounds (closed loop)",
            "latency",
            &wrk_latency,
            false,
            latency,
        )?;

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
        bars(
            &panels[2],
            "oha at fixed rates (corrected), log scale",
            "latency",
            &oha,
            true,
            latency,
        )?;
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
