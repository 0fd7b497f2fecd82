//! `piperider-demo-cloud`: the telemetry backend with the demo Cloud site
//! at `/`, for trying the consent banner and Cloud telemetry
//! (`cargo xtask dev` runs it). Takes every flag of `piperider-ingest`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "piperider-demo-cloud",
    version,
    about = "The PipeRider telemetry backend with the demo Cloud site at /."
)]
struct Cli {
    #[command(flatten)]
    flags: piperider_ingest::Flags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    piperider_ingest::run("piperider-demo-cloud", cli.flags, |router| {
        router.merge(piperider_demo_cloud::routes())
    })
}
