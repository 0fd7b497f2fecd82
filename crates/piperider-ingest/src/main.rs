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
    /// Without a command, the service runs.
    #[command(subcommand)]
    command: Option<piperider_ingest::Transfer>,
    #[command(flatten)]
    flags: piperider_ingest::Flags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(transfer) => piperider_ingest::run_transfer("piperider-ingest", transfer),
        None => piperider_ingest::run("piperider-ingest", cli.flags, |router| router),
    }
}
