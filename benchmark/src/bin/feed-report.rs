//! `feed-report RUN.json`: computes the summary of a load-test run written
//! by `benchmark/run.sh`, and writes it back with its markdown table and SVG
//! plot next to it (`RUN.md`, `RUN.svg`). Running it again on the same file
//! gives the same output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use feed_bench::report::{self, Run};

/// Summarizes a benchmark run: JSON in, JSON + markdown + SVG out.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The run's JSON, as written by benchmark/run.sh.
    run: PathBuf,
    /// Print the markdown table on stdout too.
    #[arg(long)]
    print: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match write_all(&cli.run) {
        Ok(markdown) => {
            if cli.print {
                print!("{markdown}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("feed-report: {}: {e}", cli.run.display());
            ExitCode::FAILURE
        }
    }
}

fn write_all(path: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let run: Run = serde_json::from_slice(&std::fs::read(path)?)?;
    let run = run.summarized();
    let markdown = report::markdown(&run);
    let svg = feed_bench::plot::svg(&run)?;
    std::fs::write(path, serde_json::to_string_pretty(&run)? + "\n")?;
    std::fs::write(path.with_extension("md"), &markdown)?;
    std::fs::write(path.with_extension("svg"), svg)?;
    Ok(markdown)
}
