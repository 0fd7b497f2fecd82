//! The `piperider-ingest` binary: flags and environment into a
//! configuration, then [`piperider_ingest::run`].

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "piperider-ingest",
    version,
    about = "PipeRider telemetry backend."
)]
struct Cli {
    #[command(flatten)]
    config: piperider_ingest::Config,
    /// Log as JSON lines (default: human-readable).
    #[arg(long, env = "PIPERIDER_INGEST_LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    piperider_ingest::run("piperider-ingest", cli.config, cli.log_json, |router| {
        router
    })
}
