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
    flags: piperider_ingest::Flags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    piperider_ingest::run("piperider-ingest", cli.flags, |router| router)
}
