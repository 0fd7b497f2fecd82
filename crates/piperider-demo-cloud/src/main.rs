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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PIPERIDER_INGEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let result = cli
        .config
        .resolve()
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
                tracing::info!(listen = %config.listen, "piperider-demo-cloud started");
                piperider_ingest::serve_router(
                    config,
                    listener,
                    piperider_ingest::shutdown_signal(),
                    |router| router.merge(piperider_demo_cloud::routes()),
                )
                .await
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("piperider-demo-cloud: {e:#}");
            ExitCode::from(2)
        }
    }
}
