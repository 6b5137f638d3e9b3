//! `feed-server --config PATH`: serves every user's feed from memory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use feed_server::settings::Settings;
use feed_server::{Stopped, Stops};
use slog::error;

/// Serves recommendation feeds from memory over HTTP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML configuration file; `FEED__SECTION__KEY` variables override it.
    #[arg(long, default_value = "config/default.toml")]
    config: PathBuf,
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
    let (logger, _flush_on_exit) = feed_server::logging::logger(&settings.log);

    let bind = |host: &str, port| {
        feed_server::bind(host, port).map_err(|e| {
            error!(logger, "cannot listen"; "host" => host, "port" => port, "error" => %e);
        })
    };
    let (Ok(public), Ok(admin)) = (
        bind(&settings.server.host, settings.server.port),
        bind(&settings.admin.host, settings.admin.port),
    ) else {
        return ExitCode::FAILURE;
    };
    let listeners = feed_server::Listeners { public, admin };
    let loader = feed_server::synthetic_loader(spec);
    match feed_server::run(&settings, listeners, &logger, loader, Stops::Signals) {
        Ok(Stopped::Drained) => ExitCode::SUCCESS,
        // A second stop signal: requests in flight were abandoned.
        Ok(Stopped::Forced) => ExitCode::from(130),
        Err(e) => {
            error!(logger, "server failed"; "error" => %e);
            ExitCode::FAILURE
        }
    }
}
