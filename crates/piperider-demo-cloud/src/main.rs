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
    config: piperider_ingest::Config,
    /// Log as JSON lines (default: human-readable).
    #[arg(long, env = "PIPERIDER_INGEST_LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    piperider_ingest::run("piperider-demo-cloud", cli.config, cli.log_json, |router| {
        router.merge(piperider_demo_cloud::routes())
    })
}
