//! `feed-floor`: the constant-response server the load runner compares
//! `feed-server` with. See the `feed_bench::floor` module for why.

use std::process::ExitCode;

use clap::Parser;
use feed_bench::floor;

/// Answers every `GET /feed/{user_id}` with the same fixed JSON array.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8081)]
    port: u16,
    /// HTTP worker threads; 0 means one per core, as in feed-server.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Length of the body in bytes: give the mean length of the feed
    /// server's default-size answers.
    #[arg(long, default_value_t = floor::DEFAULT_BODY_BYTES)]
    body_bytes: usize,
    /// Numbers in the body's array.
    #[arg(long, default_value_t = floor::DEFAULT_ITEMS)]
    items: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let body = match floor::fixed_body(cli.body_bytes, cli.items) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("feed-floor: {e}");
            return ExitCode::from(2);
        }
    };
    // Leaked once, so that every response shares it without copying.
    let body: &'static [u8] = Box::leak(body.into_boxed_slice());
    eprintln!(
        "feed-floor: listening on {}:{} with a {}-byte body",
        cli.host,
        cli.port,
        body.len()
    );
    let served =
        actix_web::rt::System::new().block_on(floor::serve(&cli.host, cli.port, cli.workers, body));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("feed-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
